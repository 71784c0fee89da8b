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


def test_the_budget_status_has_the_fields_ccgroupctl_documents_and_shows(tmp_path: Path) -> None:
    # ccgroupctl status (its --help, ccgroupctl(1), render_overview) reads the budget's
    # usage.cpu_cores, guarantees and each share's memory_low_bytes.
    from types import SimpleNamespace

    from ccgroupd.client.ctl import render_status
    from ccgroupd.daemon.engines import EngineCommands

    group = tmp_path / "engines"
    group.mkdir()
    (group / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 0\nsystem_usec 0\n")
    (group / "memory.current").write_text(f"{300 * MiB}\n")
    (group / "pids.current").write_text("13\n")
    budget_limits = Limits.from_mapping({"cpus": 3, "memory": "2G"})
    budget = SimpleNamespace(
        group="engines", cgroupfs=Cgroupfs(tmp_path, page_size=4096),
        controller=SimpleNamespace(cgroup_path=str(group), layers=LimitLayers(budget_limits),
                                   limits=budget_limits))
    engines = {name: SimpleNamespace(commands=None, state=None,  # starting: no document yet
                                     controller=SimpleNamespace(limits=Limits.from_mapping(keys)))
               for name, keys in (("alpha", {"memory_low": "128M", "cpu_weight": 300}),
                                  ("beta", {"memory_low": "64M", "memory_min": "32M"}))}
    now = [10.0]

    async def no_reload(_peer: object) -> None:
        return None

    commands = EngineCommands(engines, lambda: budget, reload=no_reload,  # type: ignore[arg-type, return-value]
                              clock=lambda: now[0])
    assert commands.status()["budget"]["usage"]["cpu_cores"] is None  # one sample: no rate yet
    (group / "cpu.stat").write_text("usage_usec 4000000\nuser_usec 0\nsystem_usec 0\n")
    now[0] = 12.0
    status = commands.status()
    budget_status = status["budget"]
    assert budget_status["usage"]["cpu_cores"] == pytest.approx(1.5)  # 3 CPU-seconds in 2 s
    assert budget_status["guarantees"] == {"memory_min_bytes": 32 * MiB,
                                           "memory_low_bytes": 192 * MiB}
    assert budget_status["shares"] == {
        "alpha": {"cpu_weight": 300, "cpu_share": 0.75, "memory_min_bytes": 0,
                  "memory_low_bytes": 128 * MiB},
        "beta": {"cpu_weight": 100, "cpu_share": 0.25, "memory_min_bytes": 32 * MiB,
                 "memory_low_bytes": 64 * MiB}}
    text = render_status({"engines": [], "budget": budget_status})
    assert "  in use       cpu 1.50 of 3 CPUs, memory 300 MiB of 2 GiB, pids 13" in text
    assert "  guaranteed   memory_low 192 MiB (9%), memory_min 32 MiB (2%) of 2 GiB" in text
