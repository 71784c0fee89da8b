"""Logging: the journald field mapping, format selection, the event registry and its catalog."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from ccgroupd.daemon.logsetup import configure_logging, journal_field_name
from ccgroupd.errors import ConfigError
from ccgroupd.events import EVENTS, PRIORITIES, render_catalog

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ccgroupd"
CATALOG = REPO / "systemd" / "ccgroupd.catalog"

# The event names the shared contract promises (ccgroupd-contracts.md).
CONTRACT_EVENTS = {
    "limits_applied", "limits_changed", "limits_drifted", "engine_started", "engine_exited",
    "engine_restarting", "engine_failed", "engine_stopping", "oom_kill", "oom", "memory_max",
    "memory_high", "swap_max", "pids_max", "cpu_throttled", "cgroup_leftover_killed",
    "config_reload_failed", "state_file_corrupt", "daemon_started", "daemon_stopping",
}
LOG_METHODS = {"debug", "info", "warning", "error", "critical", "exception"}
# Log calls whose event name is a variable, and why each is safe.
VARIABLE_EVENT_CALLS = {
    # Names from eventnames.VIOLATION_EVENTS, which monitor.py looks up in the registry at import.
    ("core.py", "event"),
}


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class Sent(list[dict[str, Any]]):
    """Stands in for systemd.journal.send, with its signature and its CODE_LINE format."""

    def __call__(self, MESSAGE: str, MESSAGE_ID: str | None = None,
                 CODE_FILE: str | None = None, CODE_LINE: int | None = None,
                 CODE_FUNC: str | None = None, **fields: str) -> None:
        if CODE_LINE is not None and not isinstance(CODE_LINE, int):
            raise ValueError("journal.send formats CODE_LINE with {:d}")
        sent = {"MESSAGE": MESSAGE, "MESSAGE_ID": MESSAGE_ID, "CODE_FILE": CODE_FILE,
                "CODE_LINE": CODE_LINE, "CODE_FUNC": CODE_FUNC, **fields}
        self.append({key: value for key, value in sent.items() if value is not None})


def test_journal_record_carries_every_field() -> None:
    sent = Sent()
    assert configure_logging("journal", journal_send=sent) == "journal"

    structlog.get_logger("ccgroupd").warning(
        "oom_kill", cgroup="/sys/fs/cgroup/dagger-engine", delta=1, total=3,
        limit_bytes=8 * 1024**3, usage_bytes=8482560409, peak_bytes=None,
        oom_groups={"buildkit/abc": 1, ".": 2},
        top_processes=[{"pid": 7, "comm": "go", "rss_bytes": 5}])

    [record] = sent
    assert record == {
        "MESSAGE": "OOM killer killed 1 process in /sys/fs/cgroup/dagger-engine (3 since start);"
                   " memory.max 8 GiB, usage 7.9 GiB;"
                   " killed in buildkit/abc: 1, the group itself: 2",
        "PRIORITY": "4",
        "MESSAGE_ID": EVENTS["oom_kill"].message_id,
        "SYSLOG_IDENTIFIER": "ccgroupd",
        "CCGROUPD_EVENT": "oom_kill",
        "CCGROUPD_CGROUP": "/sys/fs/cgroup/dagger-engine",
        "CCGROUPD_DELTA": "1",
        "CCGROUPD_TOTAL": "3",
        "CCGROUPD_LIMIT_BYTES": "8589934592",
        "CCGROUPD_USAGE_BYTES": "8482560409",
        "CCGROUPD_OOM_GROUPS": '{".": 2, "buildkit/abc": 1}',
        "CCGROUPD_TOP_PROCESSES": '[{"comm": "go", "pid": 7, "rss_bytes": 5}]',
        "CODE_FILE": __file__,
        "CODE_LINE": record["CODE_LINE"],
        "CODE_FUNC": "test_journal_record_carries_every_field",
    }
    assert isinstance(record["CODE_LINE"], int)


def test_a_failing_journal_send_does_not_raise() -> None:
    def send(**_fields: object) -> None:
        raise ConnectionRefusedError("journald is restarting")

    stream = io.StringIO()
    configure_logging("journal", journal_send=send, stream=stream)
    structlog.get_logger("ccgroupd").warning("pids_max", delta=1)
    record = json.loads(stream.getvalue())
    assert record["CCGROUPD_EVENT"] == "pids_max"
    assert "journald is restarting" in record["JOURNAL_SEND_ERROR"]


@pytest.mark.parametrize(("method", "priority"), [("info", "6"), ("warning", "4"),
                                                   ("error", "3")])
def test_priority_follows_the_log_level(method: str, priority: str) -> None:
    sent = Sent()
    configure_logging("journal", journal_send=sent)
    getattr(structlog.get_logger("ccgroupd"), method)("engine_exited", pid=5, exit_code=1)
    assert sent[0]["PRIORITY"] == priority
    assert sent[0]["MESSAGE"] == "Dagger engine (pid 5) exited with code 1"


def test_debug_is_filtered_out() -> None:
    sent = Sent()
    configure_logging("journal", journal_send=sent)
    structlog.get_logger("ccgroupd").debug("engine_started", pid=5)
    assert sent == []


def test_an_exception_goes_into_the_message() -> None:
    sent = Sent()
    configure_logging("journal", journal_send=sent)
    try:
        int("boom")
    except ValueError:
        structlog.get_logger("ccgroupd").exception("engine_failed", reason="crashed")
    assert sent[0]["PRIORITY"] == "3"
    first_line, traceback = sent[0]["MESSAGE"].split("\n", 1)
    assert first_line == "Dagger engine failed and will not be restarted: crashed"
    assert "ValueError: invalid literal" in traceback


def test_unregistered_event_has_no_message_id_but_is_not_lost() -> None:
    sent = Sent()
    configure_logging("journal", journal_send=sent)
    structlog.get_logger("ccgroupd").info("no_such_event", pid=3)
    assert "MESSAGE_ID" not in sent[0]
    assert sent[0]["MESSAGE"] == "no_such_event pid=3"
    assert sent[0]["CCGROUPD_PID"] == "3"


def test_field_names_are_valid_journal_fields() -> None:
    assert journal_field_name("limit_bytes") == "CCGROUPD_LIMIT_BYTES"
    assert journal_field_name("memory.max") == "CCGROUPD_MEMORY_MAX"
    assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", journal_field_name("throttled_periods_fraction"))


def test_json_lines_carry_the_message_and_fields() -> None:
    stream = io.StringIO()
    assert configure_logging("json", stream=stream) == "json"
    structlog.get_logger("ccgroupd").warning("pids_max", cgroup="/g", delta=2, total=5,
                                             limit_pids=20)
    record = json.loads(stream.getvalue())
    assert record["event"] == "pids_max"
    assert record["level"] == "warning"
    assert record["message"] == "/g: fork() refused at pids.max 20 2 times (5 since start)"
    assert record["message_id"] == EVENTS["pids_max"].message_id
    assert (record["delta"], record["total"]) == (2, 5)


def test_console_shows_the_sentence() -> None:
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    structlog.get_logger("ccgroupd").info("engine_started", pid=5, cgroup="/g")
    assert "Dagger engine started as pid 5 in /g" in stream.getvalue()


def test_auto_picks_journal_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        stat = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        sent = Sent()
        assert configure_logging("auto", journal_send=sent, stream=stream,
                                 environ=environ) == "journal"
        other = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}  # inherited, not ours
        assert configure_logging("auto", stream=stream, environ=other) == "json"
        assert configure_logging("auto", stream=stream, environ={}) == "json"


def test_auto_picks_console_on_a_terminal() -> None:
    controller, terminal = os.openpty()
    try:
        with open(terminal, "w", closefd=False) as stream:
            assert configure_logging("auto", stream=stream, environ={}) == "console"
    finally:
        os.close(controller)
        os.close(terminal)


def test_missing_python_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # import raises ImportError
    with pytest.raises(ConfigError, match="python3-systemd"):
        configure_logging("journal")
    with open(tmp_path / "stream", "w+") as stream:
        stat = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert configure_logging("auto", stream=stream, environ=environ) == "json"
        stream.seek(0)
        record = json.loads(stream.read())
    assert record["event"] == "journald_unavailable"


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="log_format"):
        configure_logging("syslog")


# -- the registry ------------------------------------------------------------------


def test_registry_covers_the_contract() -> None:
    assert set(EVENTS) >= CONTRACT_EVENTS


def test_message_ids_are_unique_128_bit_ids() -> None:
    ids = [event.message_id for event in EVENTS.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", message_id) for message_id in ids)
    assert all(event.levels <= set(PRIORITIES) for event in EVENTS.values())


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_message_renders_with_or_without_fields(name: str) -> None:
    event = EVENTS[name]
    assert event.message({})  # missing fields show as "?", never raise
    full = {"cgroup": "/g", "delta": 2, "total": 4, "limit_bytes": 1024, "usage_bytes": 512,
            "pid": 9, "exit_code": 1, "file": "memory.max", "old": "1", "new": "2"}
    assert "{" not in event.message(full)


def test_catalog_file_matches_the_registry() -> None:
    assert CATALOG.read_text() == render_catalog(), (
        "regenerate: python3 -m ccgroupd.events > systemd/ccgroupd.catalog")


def test_catalog_entries_have_the_required_headers() -> None:
    entries = CATALOG.read_text().split("\n-- ")[1:]
    assert len(entries) == len(EVENTS)
    for entry in entries:
        message_id, *lines = entry.splitlines()
        assert message_id in {event.message_id for event in EVENTS.values()}
        assert lines[0].startswith("Subject: ")
        assert lines[1] == "Defined-By: ccgroupd"
        assert lines[2].startswith("Support: ")


def _log_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS and node.args):
            receiver = ast.unparse(node.func.value)
            if re.search(r"(^|\.|_)(log|logger)$", receiver):
                yield node, node.func.attr


def test_every_logged_event_is_registered() -> None:
    """Scans ccgroupd/ for log calls: each event name must be in the registry."""
    problems: list[str] = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for call, method in _log_calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{call.lineno}"
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                checked += 1
                event = EVENTS.get(first.value)
                if event is None:
                    problems.append(f"{where}: {first.value!r} is not in ccgroupd/events.py")
                elif ({"exception": "error"}.get(method, method)) not in event.levels:
                    problems.append(f"{where}: {first.value!r} logged at {method}, "
                                    f"registered for {sorted(event.levels)}")
            elif (path.name, ast.unparse(first)) not in VARIABLE_EVENT_CALLS:
                problems.append(f"{where}: event name {ast.unparse(first)} is not a literal")
    assert checked > 0
    assert problems == []


def test_the_scan_sees_calls_through_any_logger_name() -> None:
    source = 'log.info("a")\nself._log.warning("b")\nlogger.error("c")\nmath.log(2)\n'
    assert [ast.unparse(c.args[0]) for c, _ in _log_calls(ast.parse(source))] == [
        "'a'", "'b'", "'c'"]

