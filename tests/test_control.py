from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.status import (
    CpuMeter,
    log_limits_changed,
    read_usage,
    refuse_memory_below_usage,
    status_document,
)
from ccgroupd.errors import LimitsError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits

MiB = 1024**2
CONFIG = Limits.from_mapping({"cpus": 4, "memory": "8G", "pids": 1000})
ENGINE = "/sys/fs/cgroup/system.slice/ccgroupd.service/engine"


def test_effective_limits_layer_runtime_over_persisted_over_config() -> None:
    layers = LimitLayers(CONFIG, persisted={"cpus": 2, "memory": "1G"},
                         runtime={"memory": "512M"})

    effective = layers.effective()
    assert (effective.cpus, effective.memory_max_bytes, effective.pids_max) == (2, 512 * MiB, 1000)
    assert {name: layers.source(name) for name in ("cpus", "memory", "pids")} == {
        "cpus": "persisted", "memory": "runtime", "pids": "config"}


def test_layers_are_validated_as_one_overlay() -> None:
    # memory_high 2G is above the persisted memory 1G, but the runtime memory fixes it
    layers = LimitLayers(CONFIG, persisted={"memory": "1G", "memory_high": "2G"},
                         runtime={"memory": "4G"})
    assert layers.effective().memory_high_bytes == 2048 * MiB
    with pytest.raises(LimitsError, match="memory_high"):
        LimitLayers(CONFIG, persisted={"memory": "1G", "memory_high": "2G"}).effective()


def test_persistent_set_overrides_a_runtime_change_of_the_same_limit() -> None:
    layers = LimitLayers(CONFIG, runtime={"memory": "512M", "cpus": 1})

    after = layers.with_set({"memory": "2G"}, runtime=False)

    assert after.persisted == {"memory": "2G"}
    assert after.runtime == {"cpus": 1}
    assert after.effective().memory_max_bytes == 2048 * MiB


def test_runtime_set_reset_and_reload() -> None:
    layers = LimitLayers(CONFIG, persisted={"cpus": 2}).with_set({"cpus": 1}, runtime=True)
    assert layers.effective().cpus == 1
    assert layers.reset() == LimitLayers(CONFIG)

    reloaded = layers.with_config(Limits.from_mapping({"pids": 50}))
    assert (reloaded.effective().pids_max, reloaded.effective().cpus) == (50, 1)
    assert reloaded.persisted == {"cpus": 2}


def test_describe_lists_every_limit_with_value_and_source() -> None:
    described = LimitLayers(CONFIG, persisted={"memory": "512M"}).describe()
    assert described == {
        "cpus": {"value": 4.0, "source": "config"},
        "memory": {"value": 512 * MiB, "source": "persisted"},
        "memory_high": {"value": None, "source": "config"},
        "memory_swap": {"value": None, "source": "config"},
        "pids": {"value": 1000, "source": "config"},
        "cpu_weight": {"value": None, "source": "config"},
    }


def test_memory_at_or_below_usage_is_refused_with_the_usage() -> None:
    new = CONFIG.with_changes({"memory": "512M"})
    with pytest.raises(LimitsError) as refused:
        refuse_memory_below_usage(CONFIG, new, read_usage_bytes=lambda: 700 * MiB, cgroup=ENGINE,
                                  force=False)
    assert str(refused.value) == (
        f"memory = '512 MiB': at or below current usage 700 MiB of {ENGINE}; "
        "the kernel would OOM-kill the engine instead of failing; use --force")
    assert refused.value.exit_code == 3


@pytest.mark.parametrize(("new_memory", "usage_bytes", "force"), [
    ("512M", 700 * MiB, True),  # forced
    ("512M", 100 * MiB, False),  # well above usage
    ("max", 700 * MiB, False),  # no limit
    ("8G", 9000 * MiB, False),  # unchanged: not this change's doing
    ("512M", None, False),  # usage unknown (no memory controller yet)
])
def test_memory_guard_lets_safe_or_forced_changes_through(new_memory: str,
                                                          usage_bytes: int | None,
                                                          force: bool) -> None:
    refuse_memory_below_usage(CONFIG, CONFIG.with_changes({"memory": new_memory}),
                              read_usage_bytes=lambda: usage_bytes, cgroup=ENGINE, force=force)


@pytest.mark.parametrize(("changes", "force"), [
    ({"cpus": 1}, False),  # memory unchanged
    ({"memory": "max"}, False),
    ({"memory": "512M"}, True),
])
def test_memory_guard_reads_usage_only_for_a_new_memory_limit(changes: dict[str, object],
                                                              force: bool) -> None:
    def unread() -> int:
        raise AssertionError("memory.current read for a change that cannot OOM-kill")

    refuse_memory_below_usage(CONFIG, CONFIG.with_changes(changes), read_usage_bytes=unread,
                              cgroup=ENGINE, force=force)


def test_memory_equal_to_usage_is_refused() -> None:
    with pytest.raises(LimitsError):
        refuse_memory_below_usage(CONFIG, CONFIG.with_changes({"memory": "512M"}),
                                  read_usage_bytes=lambda: 512 * MiB, cgroup=ENGINE,
                                  force=False)


def test_limits_changed_names_who_and_only_what_changed() -> None:
    new = CONFIG.with_changes({"cpus": 2, "memory": "512M", "cpu_weight": 50})
    with capture_logs() as logs:
        log_limits_changed(CONFIG, new, cgroup=ENGINE, peer=Peer(pid=77, uid=0, gid=0),
                           scope="persistent")
        log_limits_changed(new, new, cgroup=ENGINE, peer=None, scope="reload")
    assert logs == [{
        "event": "limits_changed", "log_level": "info", "cgroup": ENGINE, "scope": "persistent",
        "uid": 0, "pid": 77,
        "old": "cpus=4, memory=8 GiB, cpu_weight=default",
        "new": "cpus=2, memory=512 MiB, cpu_weight=50",
    }]


def test_cpu_meter_reports_percent_of_one_cpu_between_samples() -> None:
    now = [100.0]
    meter = CpuMeter(clock=lambda: now[0])
    assert meter.sample(1_000_000) is None
    now[0] = 102.0
    assert meter.sample(6_000_000) == pytest.approx(250.0)  # 5 CPU-seconds in 2 s
    now[0] = 103.0
    assert meter.sample(5_000_000) == pytest.approx(250.0)  # counter went back: keep last


def test_usage_and_status_document(tmp_path: Path) -> None:
    group = tmp_path / "engine"
    group.mkdir()
    (group / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 600000\nsystem_usec 400000\n")
    (group / "memory.current").write_text(f"{256 * MiB}\n")
    (group / "pids.current").write_text("12\n")  # no memory.swap.current: no swap accounting
    cgroupfs = Cgroupfs(tmp_path, page_size=4096)
    layers = LimitLayers(CONFIG, runtime={"memory": "512M"})

    usage = read_usage(cgroupfs, "engine", layers.effective(), CpuMeter())
    assert usage == {"cpu_percent": None, "memory_bytes": 256 * MiB, "memory_percent": 50.0,
                     "swap_bytes": None, "pids": 12}

    document = status_document(cgroup_path=str(group), layers=layers, usage=usage,
                               events={"oom_kill": 0},
                               engine={"state": "running", "pid": 9, "uptime_s": 1.5,
                                       "restarts": 0})
    assert document["cgroup"] == {"path": str(group)}
    assert document["limits"]["memory"] == {"value": 512 * MiB, "source": "runtime"}
    assert set(document) == {"cgroup", "limits", "usage", "events", "engine"}


def test_usage_of_a_vanished_group_is_all_unknown(tmp_path: Path) -> None:
    cgroupfs = Cgroupfs(tmp_path, page_size=4096)
    assert read_usage(cgroupfs, "gone", CONFIG, CpuMeter()) == {
        "cpu_percent": None, "memory_bytes": None, "memory_percent": None,
        "swap_bytes": None, "pids": None}
