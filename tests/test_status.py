"""The status reply: usage, the CPU meter, the document."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccgroupd.daemon.status import CpuMeter, read_usage, status_document
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits

MiB = 1024**2
CONFIG = Limits.from_mapping({"cpus": 4, "memory": "8G", "pids": 1000})
ENGINE = "/sys/fs/cgroup/system.slice/ccgroupd.service/engine"


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
                                       "restarts": 0},
                               origins={"limits.cpus": "/etc/ccgroupd/config.d/50-local.toml"},
                               state_file="/var/lib/ccgroupd/limits.json")
    assert document["cgroup"] == {"path": str(group)}
    assert document["limits"]["memory"] == {"value": 512 * MiB, "source": "runtime",
                                            "set_by": "ccgroupctl set --runtime"}
    # The file to edit to change a value: the drop-in that set it, or none ("default").
    assert document["limits"]["cpus"]["set_by"] == "/etc/ccgroupd/config.d/50-local.toml"
    assert document["limits"]["pids"]["set_by"] == "default"
    assert set(document) == {"cgroup", "limits", "usage", "events", "engine"}


def test_usage_of_a_vanished_group_is_all_unknown(tmp_path: Path) -> None:
    cgroupfs = Cgroupfs(tmp_path, page_size=4096)
    assert read_usage(cgroupfs, "gone", CONFIG, CpuMeter()) == {
        "cpu_percent": None, "memory_bytes": None, "memory_percent": None,
        "swap_bytes": None, "pids": None}
