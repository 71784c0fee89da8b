from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ccgroupd.limits.model import Limits
from ccgroupd.limits.store import STATE_FILE_NAME, STATE_FORMAT_VERSION, StateError, StateStore

# 2026-11-28 03:04:05 UTC
FIXED_TIME_S = 1795835045.0
STAMP = "20261128T030405Z"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state", clock=lambda: FIXED_TIME_S)


def write_state(store: StateStore, text: str) -> None:
    store.state_dir.mkdir(parents=True, exist_ok=True)
    store.path.write_text(text)


def test_save_then_load_returns_the_changes_as_given(store: StateStore) -> None:
    store.save({"cpus": 2, "memory": "512M", "pids": "max"})

    assert store.load() == {"cpus": 2, "memory": "512M", "pids": "max"}
    document = json.loads(store.path.read_text())
    assert document == {"version": STATE_FORMAT_VERSION,
                        "limits": {"cpus": 2, "memory": "512M", "pids": "max"}}


def test_save_leaves_no_temporary_file_and_replaces_the_old_one(store: StateStore) -> None:
    store.save({"cpus": 2})
    store.save({"memory": "1G"})

    assert sorted(p.name for p in store.state_dir.iterdir()) == [STATE_FILE_NAME]
    assert store.load() == {"memory": "1G"}


def test_save_fsyncs_the_file_and_then_the_directory(store: StateStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.save({"cpus": 1})

    assert synced == ["file", "dir"]


def test_failed_save_keeps_the_previous_file_and_cleans_up(store: StateStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store.save({"cpus": 2})

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StateError, match="No space left on device"):
        store.save({"cpus": 3})

    monkeypatch.undo()
    assert store.load() == {"cpus": 2}
    assert sorted(p.name for p in store.state_dir.iterdir()) == [STATE_FILE_NAME]


def test_save_refuses_names_that_are_not_limits(store: StateStore) -> None:
    with pytest.raises(ValueError, match="bogus"):
        store.save({"bogus": 1})
    assert not store.path.exists()


def test_missing_file_means_no_changes_and_no_log(store: StateStore) -> None:
    with capture_logs() as logs:
        assert store.load() == {}
    assert logs == []


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"version": 2, "limits": {}}', "format version 2"),
    ('{"limits": {"cpus": 2}}', "format version None"),
    ('{"version": 1, "limits": []}', "'limits' is not a JSON object"),
    ('{"version": 1, "limits": {"cpus": -1}}', "refused by the limits model"),
    ('{"version": 1, "limits": {"memory": "12XB"}}', "refused by the limits model"),
    ('{"version": 1, "limits": {"memory": "1G", "memory_high": "2G"}}',
     "refused by the limits model"),
    ('{"version": 1, "limits": {"swap": "1G"}}', "unknown limit names"),
])
def test_unusable_file_is_moved_aside_and_logged(store: StateStore, text: str,
                                                 reason: str) -> None:
    write_state(store, text)

    with capture_logs() as logs:
        assert store.load() == {}

    aside = store.state_dir / f"{STATE_FILE_NAME}.corrupt-{STAMP}"
    assert not store.path.exists()
    assert aside.read_text() == text
    assert len(logs) == 1
    assert logs[0]["event"] == "state_file_corrupt"
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["file"] == str(store.path)
    assert logs[0]["moved_to"] == str(aside)
    assert reason in logs[0]["reason"]


def test_file_that_is_not_utf8_is_moved_aside(store: StateStore) -> None:
    store.state_dir.mkdir(parents=True)
    store.path.write_bytes(b"\xff\xfe{}")

    with capture_logs() as logs:
        assert store.load() == {}

    assert "unreadable" in logs[0]["reason"]
    assert (store.state_dir / f"{STATE_FILE_NAME}.corrupt-{STAMP}").read_bytes() == b"\xff\xfe{}"


def test_unreadable_file_is_moved_aside(store: StateStore) -> None:
    store.path.mkdir(parents=True)  # a directory where the file should be: EISDIR on read

    with capture_logs() as logs:
        assert store.load() == {}

    assert "unreadable" in logs[0]["reason"]
    assert (store.state_dir / f"{STATE_FILE_NAME}.corrupt-{STAMP}").is_dir()


def test_changes_that_do_not_combine_with_the_config_are_moved_aside(store: StateStore) -> None:
    store.save({"memory_high": "2G"})

    with capture_logs() as logs:
        assert store.load(Limits.from_mapping({"memory": "1G"})) == {}

    assert "does not combine with the config file" in logs[0]["reason"]
    assert store.load(Limits.from_mapping({"memory": "4G"})) == {}  # already set aside


def test_changes_that_combine_with_the_config_load(store: StateStore) -> None:
    store.save({"memory_high": "2G"})
    assert store.load(Limits.from_mapping({"memory": "4G"})) == {"memory_high": "2G"}


def test_second_corrupt_file_in_the_same_second_does_not_overwrite_the_first(
        store: StateStore) -> None:
    write_state(store, "first")
    store.load()
    write_state(store, "second")
    store.load()

    assert (store.state_dir / f"{STATE_FILE_NAME}.corrupt-{STAMP}").read_text() == "first"
    assert (store.state_dir / f"{STATE_FILE_NAME}.corrupt-{STAMP}.1").read_text() == "second"


def test_file_that_cannot_be_moved_aside_still_does_not_stop_loading(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write_state(store, "{not json")

    def failing_replace(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", failing_replace)
    with capture_logs() as logs:
        assert store.load() == {}

    assert logs[0]["event"] == "state_file_corrupt"
    assert logs[0]["moved_to"] is None
    assert "Permission denied" in logs[0]["move_error"]


def two_cpu_host(limits: Limits) -> None:
    limits.check_host(2)


def test_a_persisted_value_the_host_cannot_give_is_set_aside_alone(store: StateStore) -> None:
    store.save({"cpus": 4, "pids": 70})  # set when the VM had more CPUs
    with capture_logs() as logs:
        changes = store.load(Limits.from_mapping({"cpus": 1}), usable=two_cpu_host)
    assert changes == {"pids": 70}
    [record] = logs
    assert (record["event"], record["file"], record["limit"], record["value"]) == (
        "state_value_set_aside", str(store.path), "cpus", "4")
    assert "above the 2 CPUs" in record["reason"]
    assert json.loads(store.path.read_text())["limits"] == {"cpus": 4, "pids": 70}  # kept


def test_the_config_files_own_misfit_is_not_the_state_files_to_fix(store: StateStore) -> None:
    store.save({"pids": 70})
    with capture_logs() as logs:
        changes = store.load(Limits.from_mapping({"cpus": 8}), usable=two_cpu_host)
    assert changes == {"pids": 70}
    assert logs == []
