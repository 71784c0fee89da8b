"""The Monitor on the fake kernel, driven deterministically: a fake clock, and the change
handler called directly (inotify cannot watch pyfakefs files; run() has its own test on a
real directory at the end)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem
from structlog.testing import capture_logs

from ccgroupd.config import MonitorSection
from ccgroupd.daemon.monitor.core import OOM_ATTRIBUTION_WINDOW_S, Monitor, MonitorState
from ccgroupd.daemon.monitor.subtree import Subtree
from ccgroupd.engine.supervisor import ENGINE_MAX_DEPTH
from ccgroupd.errors import CgroupReadError
from ccgroupd.eventnames import VIOLATION_EVENTS
from ccgroupd.events import EVENTS
from ccgroupd.kernel.cgroupfs import Cgroupfs, GroupDirectory
from ccgroupd.kernel.files import (
    CGROUP_EVENTS,
    CPU_STAT,
    MEMORY_CURRENT,
    MEMORY_EVENTS,
    MEMORY_PEAK,
    MEMORY_STAT,
    MEMORY_SWAP_EVENTS,
    PIDS_EVENTS,
    PIDS_EVENTS_LOCAL,
)
from ccgroupd.kernel.procfs import Procfs
from doubles import FakeTime
from fakekernel import FakeKernel

GROUP = "dagger-engine"
GROUP_PATH = f"/sys/fs/cgroup/{GROUP}"
MIB = 1024**2
Logs = list[MutableMapping[str, Any]]
SETTINGS = MonitorSection(cpu_poll_interval_s=5.0, throttle_threshold=0.1,
                          report_interval_s=10.0)


def make_group(kernel: FakeKernel, cgroupfs: Cgroupfs, *controllers: str) -> None:
    """The engine's group as the daemon leaves it: limits written, controllers for children."""
    kernel.enable("", *controllers)
    kernel.mkdir(GROUP)
    kernel.enable(GROUP, *controllers)
    cgroupfs.write(GROUP, "memory.max", str(64 * MIB))
    cgroupfs.write(GROUP, "pids.max", "20")
    if "cpu" in controllers:
        cgroupfs.write(GROUP, "cpu.max", "50000 100000")
    kernel.update(GROUP, MEMORY_CURRENT, str(63 * MIB))
    kernel.update(GROUP, MEMORY_PEAK, str(64 * MIB))


def state(monitor: Monitor) -> MonitorState:
    return monitor.state  # a call, so that mypy does not keep an earlier assert's narrowing


@pytest.fixture
def kernel(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> FakeKernel:
    make_group(fake_kernel, cgroupfs, "cpu", "memory", "pids")
    return fake_kernel


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def monitor(kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime) -> Monitor:
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    return monitor


@pytest.fixture
def logs() -> Iterator[Logs]:
    with capture_logs() as captured:
        yield captured


def test_every_counter_event_is_registered() -> None:
    assert set(VIOLATION_EVENTS) <= set(EVENTS)


def test_reports_deltas_not_the_kernels_raw_counters(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime,
        logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=7)  # before the daemon started: not news
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    monitor.on_changed({MEMORY_EVENTS})
    assert logs == []

    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=2)
    monitor.on_changed({MEMORY_EVENTS})

    [record] = logs
    assert (record["event"], record["delta"], record["total"]) == ("oom_kill", 2, 2)
    assert record["log_level"] == "warning"
    assert record["cgroup"] == GROUP_PATH
    assert monitor.counters()["oom_kill"] == 2


def test_each_counter_maps_to_its_event(monitor: Monitor, kernel: FakeKernel,
                                        logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, oom=1, max=3, high=4)
    kernel.bump(GROUP, MEMORY_SWAP_EVENTS, max=5)

    monitor.on_changed({MEMORY_EVENTS, MEMORY_SWAP_EVENTS})

    assert {r["event"]: r["delta"] for r in logs} == {
        "oom": 1, "memory_max": 3, "memory_high": 4, "swap_max": 5}
    by_event = {r["event"]: r for r in logs}
    assert by_event["memory_max"]["limit_bytes"] == 64 * MIB
    assert by_event["memory_high"]["limit_bytes"] is None  # memory.high is "max"
    assert by_event["swap_max"]["limit_bytes"] is None


def test_events_in_build_containers_count_in_the_engine_group(
        monitor: Monitor, kernel: FakeKernel, logs: Logs) -> None:
    kernel.mkdir(f"{GROUP}/buildkit")
    kernel.enable(f"{GROUP}/buildkit", "memory")
    kernel.mkdir(f"{GROUP}/buildkit/abc")
    kernel.bump(f"{GROUP}/buildkit/abc", MEMORY_EVENTS, max=2)  # hierarchical, as on 6.1
    monitor.on_changed({MEMORY_EVENTS})
    assert [(r["event"], r["delta"]) for r in logs] == [("memory_max", 2)]


def test_first_event_is_reported_at_once_and_a_window_is_summed(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime,
        logs: Logs) -> None:
    for _ in range(200):  # 200 notifications within one window
        kernel.bump(GROUP, MEMORY_EVENTS, max=1)
        monitor.on_changed({MEMORY_EVENTS})
        clock.advance(0.005)

    assert [(r["delta"], r["total"]) for r in logs] == [(1, 1)]  # the first one, at once

    clock.advance(SETTINGS.report_interval_s)  # past the window's end
    monitor.tick()
    assert [(r["delta"], r["total"]) for r in logs] == [(1, 1), (199, 200)]
    assert monitor.counters()["memory_max"] == 200


def test_many_bumps_between_two_reads_make_one_record(
        monitor: Monitor, kernel: FakeKernel, logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, high=1000)
    monitor.on_changed({MEMORY_EVENTS})
    assert [(r["event"], r["delta"]) for r in logs] == [("memory_high", 1000)]


def test_at_most_one_record_per_window_and_immediate_again_after_quiet(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime,
        logs: Logs) -> None:
    def bump() -> None:
        kernel.bump(GROUP, MEMORY_EVENTS, high=1)
        monitor.on_changed({MEMORY_EVENTS})

    for _ in range(35):  # a storm for 35 s: one bump per second
        bump()
        clock.advance(1.0)
        monitor.tick()
    # At 0 s at once, then one flush at the end of each 10 s window; 5 still pending.
    assert [r["delta"] for r in logs] == [1, 9, 10, 10]

    clock.advance(SETTINGS.report_interval_s)
    monitor.tick()  # the last window's flush
    clock.advance(SETTINGS.report_interval_s)
    monitor.tick()  # nothing pending: the window closes
    assert [r["delta"] for r in logs] == [1, 9, 10, 10, 5]
    assert logs[-1]["total"] == 35
    bump()
    assert [r["delta"] for r in logs] == [1, 9, 10, 10, 5, 1]  # reported at once again


def test_event_types_are_rate_limited_separately(
        monitor: Monitor, kernel: FakeKernel, logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, high=1)
    monitor.on_changed({MEMORY_EVENTS})
    kernel.bump(GROUP, MEMORY_EVENTS, high=1, max=1)
    monitor.on_changed({MEMORY_EVENTS})
    assert [r["event"] for r in logs] == ["memory_high", "memory_max"]


def test_cpu_throttle_fractions_over_the_poll_interval(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime,
        logs: Logs) -> None:
    monitor.poll()  # baseline
    kernel.bump(GROUP, CPU_STAT, nr_periods=50, nr_throttled=25, throttled_usec=1_250_000)
    clock.advance(5.0)
    monitor.poll()

    [record] = logs
    assert record["event"] == "cpu_throttled"
    assert record["throttled_periods_fraction"] == 0.5
    assert record["throttled_time_fraction"] == 0.25
    assert record["throttled_usec"] == 1_250_000
    assert (record["delta"], record["periods"], record["interval_s"]) == (25, 50, 5.0)
    assert record["limit_cpus"] == 0.5
    assert monitor.counters()["cpu_throttled"] == 25
    assert EVENTS["cpu_throttled"].message(record) == (
        f"{GROUP_PATH} was CPU-throttled in 50% of scheduler periods (25 periods) and 25% "
        "of the time over 5.0 s; cpu.max allows 0.5 CPUs")


def test_cpu_throttling_at_or_below_the_threshold_is_counted_not_reported(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime,
        logs: Logs) -> None:
    monitor.poll()
    kernel.bump(GROUP, CPU_STAT, nr_periods=50, nr_throttled=5, throttled_usec=100_000)  # 10%
    clock.advance(5.0)
    monitor.poll()
    assert logs == []
    assert monitor.counters()["cpu_throttled"] == 5


def test_only_an_open_report_window_gives_run_a_deadline(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime, logs: Logs) -> None:
    # Idle, run() sleeps until inotify: the polls come from the daemon's one timer.
    monitor.poll()
    assert monitor.next_deadline() is None
    kernel.bump(GROUP, MEMORY_EVENTS, high=1)
    monitor.on_changed({MEMORY_EVENTS})
    assert monitor.next_deadline() == pytest.approx(clock.now + SETTINGS.report_interval_s)
    clock.advance(SETTINGS.report_interval_s)
    monitor.tick()  # the window ends with nothing pending: it closes
    assert monitor.next_deadline() is None
    assert [r["event"] for r in logs] == ["memory_high"]


def test_throttle_windows_sum_periods_and_time(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime,
        logs: Logs) -> None:
    settings = MonitorSection(cpu_poll_interval_s=2.0, throttle_threshold=0.1,
                              report_interval_s=10.0)
    monitor = Monitor(cgroupfs, procfs, GROUP, settings, clock=clock.clock)
    monitor.start()
    monitor.poll()  # baseline at 0 s
    for _ in range(6):  # throttled polls at 2 s (reported at once), 4..10 s, 12 s
        kernel.bump(GROUP, CPU_STAT, nr_periods=50, nr_throttled=50, throttled_usec=1_000_000)
        clock.advance(2.0)
        monitor.poll()
    # The flush at 12 s sums the polls at 4, 6, 8 and 10 s; the 12 s poll opens a new window.
    assert [(r["delta"], r["periods"], r["interval_s"]) for r in logs] == [
        (50, 50, 2.0), (200, 200, 8.0)]
    assert [r["throttled_time_fraction"] for r in logs] == [0.5, 0.5]
    assert monitor.counters()["cpu_throttled"] == 300


def test_cpu_controller_not_enabled_means_no_throttle_data(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime,
        logs: Logs) -> None:
    make_group(fake_kernel, cgroupfs, "memory", "pids")
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    fake_kernel.bump(GROUP, CPU_STAT, usage_usec=5)
    monitor.poll()
    clock.advance(5.0)
    monitor.poll()
    assert logs == []


def test_without_swap_accounting_the_swap_file_is_simply_absent(
        fs: FakeFilesystem, clock: FakeTime, logs: Logs) -> None:
    kernel = FakeKernel(fs, swap_accounting=False)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    procfs = Procfs(**kernel.procfs_args())
    make_group(kernel, cgroupfs, "memory", "pids")
    assert not cgroupfs.path(GROUP, MEMORY_SWAP_EVENTS).exists()
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    kernel.bump(GROUP, MEMORY_EVENTS, max=1)
    monitor.on_changed({MEMORY_EVENTS, MEMORY_SWAP_EVENTS})
    assert [r["event"] for r in logs] == ["memory_max"]
    assert state(monitor) is MonitorState.WATCHING


def test_a_vanished_group_is_a_state_and_monitoring_resumes_when_it_returns(
        monitor: Monitor, kernel: FakeKernel, cgroupfs: Cgroupfs, clock: FakeTime,
        logs: Logs) -> None:
    cgroupfs.remove(GROUP)
    monitor.on_changed({MEMORY_EVENTS})
    assert state(monitor) is MonitorState.VANISHED
    assert [r["event"] for r in logs] == ["cgroup_vanished"]
    monitor.poll()
    assert monitor.counters()["oom_kill"] == 0

    kernel.mkdir(GROUP)  # a new group counts from zero: everything it counted is new
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=1)
    clock.advance(SETTINGS.cpu_poll_interval_s)
    monitor.poll()

    assert state(monitor) is MonitorState.WATCHING
    assert [(r["event"], r.get("delta")) for r in logs] == [
        ("cgroup_vanished", None), ("oom_kill", 1)]


def test_a_file_gone_between_open_and_read_keeps_the_baseline(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, *, clock: FakeTime,
        monkeypatch: pytest.MonkeyPatch, logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=5)
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    with monkeypatch.context() as patch:
        def enodev(group: str, attribute: str) -> dict[str, int]:
            raise CgroupReadError(cgroupfs.path(group, attribute), errno=errno.ENODEV)

        patch.setattr(cgroupfs, "read_flat_keyed", enodev)
        monitor.on_changed({MEMORY_EVENTS})
    assert state(monitor) is MonitorState.WATCHING  # the group is still there

    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=1)
    monitor.on_changed({MEMORY_EVENTS})
    assert [(r["event"], r["delta"]) for r in logs] == [("oom_kill", 1)]


def test_other_read_errors_are_raised(
        monitor: Monitor, cgroupfs: Cgroupfs, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(directory: GroupDirectory, attribute: str) -> dict[str, int]:
        raise CgroupReadError(f"{directory.path}/{attribute}", errno=errno.EIO)

    monkeypatch.setattr(GroupDirectory, "read_flat_keyed", eio)
    with pytest.raises(CgroupReadError, match="Input/output error"):
        monitor.on_changed({MEMORY_EVENTS})


def test_vanishing_is_noticed_by_the_cpu_poll(
        monitor: Monitor, cgroupfs: Cgroupfs, clock: FakeTime,
        logs: Logs) -> None:
    monitor.poll()
    cgroupfs.remove(GROUP)
    clock.advance(SETTINGS.cpu_poll_interval_s)
    monitor.poll()
    assert state(monitor) is MonitorState.VANISHED
    assert [r["event"] for r in logs] == ["cgroup_vanished"]


def test_a_group_missing_at_start_is_watched_once_it_exists(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime) -> None:
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    assert state(monitor) is MonitorState.VANISHED
    make_group(fake_kernel, cgroupfs, "memory", "pids")
    monitor.poll()
    assert state(monitor) is MonitorState.WATCHING


def test_cgroup_events_track_populated(monitor: Monitor, kernel: FakeKernel) -> None:
    pid = kernel.spawn(f"{GROUP}/init", "dagger-engine")
    monitor.on_changed({CGROUP_EVENTS})
    assert monitor.populated is True
    kernel.exit(pid)
    monitor.on_changed({CGROUP_EVENTS})
    assert monitor.populated is False
    assert state(monitor) is MonitorState.WATCHING


def test_before_linux_6_11_refused_forks_are_found_in_the_subtree(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime,
        logs: Logs) -> None:
    # The fake kernel counts like 6.1: in the forking task's own group, not in GROUP.
    kernel.mkdir(f"{GROUP}/init")
    kernel.bump(f"{GROUP}/init", PIDS_EVENTS, max=2)
    kernel.mkdir(f"{GROUP}/buildkit")
    kernel.enable(f"{GROUP}/buildkit", "pids")
    kernel.mkdir(f"{GROUP}/buildkit/bomb")  # created since the last poll: all of it is new
    kernel.bump(f"{GROUP}/buildkit/bomb", PIDS_EVENTS, max=10)

    monitor.poll()

    [record] = logs
    assert (record["event"], record["delta"], record["total"], record["limit_pids"]) == (
        "pids_max", 12, 12, 20)
    assert EVENTS["pids_max"].message(record) == (
        f"{GROUP_PATH}: fork() refused at pids.max 20 12 times (12 since start)")


def test_before_linux_6_11_a_changed_pids_events_sums_the_subtree_at_once(
        monitor: Monitor, kernel: FakeKernel, logs: Logs) -> None:
    kernel.mkdir(f"{GROUP}/buildkit")
    kernel.enable(f"{GROUP}/buildkit", "pids")
    kernel.mkdir(f"{GROUP}/buildkit/bomb")
    kernel.bump(f"{GROUP}/buildkit/bomb", PIDS_EVENTS, max=7)

    monitor.on_changed({PIDS_EVENTS})  # inotify, on any watched group's pids.events

    assert [(r["event"], r["delta"]) for r in logs] == [("pids_max", 7)]
    monitor.poll()
    assert len(logs) == 1  # the poll finds nothing new


def test_refused_forks_from_before_the_start_are_not_news(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime,
        logs: Logs) -> None:
    kernel.mkdir(f"{GROUP}/init")
    kernel.bump(f"{GROUP}/init", PIDS_EVENTS, max=4)
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    monitor.poll()
    assert logs == []


def test_on_linux_6_11_and_later_the_groups_own_pids_events_count(
        fs: FakeFilesystem, kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs, *,
        clock: FakeTime, logs: Logs) -> None:
    # The fake kernel models 6.1; a newer kernel shows pids.events.local (and a
    # hierarchical pids.events), which the Monitor looks for when it starts.
    fs.create_file(cgroupfs.path(GROUP, PIDS_EVENTS_LOCAL), contents="max 0\n")
    monitor = Monitor(cgroupfs, procfs, GROUP, SETTINGS, clock=clock.clock)
    monitor.start()
    kernel.bump(GROUP, PIDS_EVENTS, max=3)
    monitor.on_changed({PIDS_EVENTS})
    assert [(r["event"], r["delta"]) for r in logs] == [("pids_max", 3)]


def test_oom_kill_record_carries_a_snapshot(
        monitor: Monitor, kernel: FakeKernel, cgroupfs: Cgroupfs,
        logs: Logs) -> None:
    # The Dagger layout: the engine in GROUP/init, a build container in GROUP/buildkit/abc.
    kernel.spawn(f"{GROUP}/init", "dagger-engine", 30 * MIB)
    kernel.mkdir(f"{GROUP}/buildkit")
    kernel.enable(f"{GROUP}/buildkit", "memory")
    kernel.spawn(f"{GROUP}/buildkit/abc", "stress-ng", 200 * MIB)
    kernel.spawn(f"{GROUP}/buildkit/abc", "sh", MIB)
    kernel.bump(GROUP, MEMORY_STAT, anon=50 * MIB, file=8 * MIB, kernel=3 * MIB,
                shmem=2 * MIB, sock=4096, pgfault=10**9)
    kernel.bump(f"{GROUP}/buildkit/abc", MEMORY_EVENTS, oom_kill=3)

    monitor.on_changed({MEMORY_EVENTS})

    [record] = [r for r in logs if r["event"] == "oom_kill"]
    assert (record["delta"], record["total"]) == (3, 3)
    assert record["limit_bytes"] == 64 * MIB
    assert record["usage_bytes"] == 63 * MIB
    assert record["peak_bytes"] == 64 * MIB
    # Byte counters only, largest first: pgfault (a count of faults) is left out.
    assert record["memory_stat_bytes"] == {"anon": 50 * MIB, "file": 8 * MIB,
                                           "kernel": 3 * MIB, "shmem": 2 * MIB, "sock": 4096}
    assert [(p["comm"], p["rss_bytes"]) for p in record["top_processes"]] == [
        ("stress-ng", 200 * MIB), ("dagger-engine", 30 * MIB), ("sh", MIB)]
    # The build container was created after the Monitor started: all its kills are new.
    assert record["oom_groups"] == {"buildkit/abc": 3}
    assert EVENTS["oom_kill"].message(record) == (
        f"OOM killer killed 3 processes in {GROUP_PATH} (3 since start); memory.max 64 MiB, "
        "usage 63 MiB, peak 64 MiB; killed in buildkit/abc: 3")


def test_top_processes_are_capped_at_five(
        monitor: Monitor, kernel: FakeKernel, logs: Logs) -> None:
    for n in range(8):
        kernel.spawn(f"{GROUP}/init", f"worker{n}", (n + 1) * MIB)
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=1)
    monitor.on_changed({MEMORY_EVENTS})
    [record] = logs
    assert [p["comm"] for p in record["top_processes"]] == [
        "worker7", "worker6", "worker5", "worker4", "worker3"]


def test_oom_snapshot_without_memory_peak(
        fs: FakeFilesystem, monitor: Monitor, kernel: FakeKernel, cgroupfs: Cgroupfs,
        logs: Logs) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=1)
    fs.remove_object(str(cgroupfs.path(GROUP, MEMORY_PEAK)))  # kernels before 5.19
    monitor.on_changed({MEMORY_EVENTS})
    [record] = logs
    assert "peak_bytes" not in record
    assert record["usage_bytes"] == 63 * MIB
    assert record["oom_groups"] == {".": 1}
    assert record["top_processes"] == []
    assert "peak" not in EVENTS["oom_kill"].message(record)


def test_recent_oom_kill_reads_memory_events_now(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime, logs: Logs) -> None:
    assert monitor.recent_oom_kill() is False
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=2)
    assert monitor.recent_oom_kill() is True  # no inotify needed: it reads the file itself
    assert [r["event"] for r in logs] == ["oom_kill"]  # before the engine_exited record
    assert monitor.counters()["oom_kill"] == 2


def test_an_old_oom_kill_of_a_build_is_not_recent(
        monitor: Monitor, kernel: FakeKernel, clock: FakeTime) -> None:
    kernel.bump(GROUP, MEMORY_EVENTS, oom_kill=1)  # a build container, OOM-killed
    monitor.on_changed({MEMORY_EVENTS})
    clock.advance(OOM_ATTRIBUTION_WINDOW_S + 1)  # the engine is SIGKILLed by hand much later
    assert monitor.recent_oom_kill() is False


def test_counters_and_last_violation(monitor: Monitor, kernel: FakeKernel) -> None:
    assert monitor.counters() == dict.fromkeys(VIOLATION_EVENTS, 0)
    assert monitor.last_violation() is None
    kernel.bump(GROUP, MEMORY_EVENTS, max=4)
    monitor.on_changed({MEMORY_EVENTS})
    assert monitor.counters()["memory_max"] == 4
    violation = monitor.last_violation()
    assert violation is not None
    assert violation.startswith("memory_max +4 at ")


def test_run_reports_an_oom_kill_from_real_inotify(tmp_path: Path) -> None:
    """run() on a real directory: inotify, add_reader and the event loop, end to end."""
    group = tmp_path / GROUP
    group.mkdir()
    counters = {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": 0}

    def write_memory_events() -> None:
        (group / MEMORY_EVENTS).write_text("".join(f"{k} {v}\n" for k, v in counters.items()))

    write_memory_events()
    (group / CGROUP_EVENTS).write_text("populated 1\nfrozen 0\n")
    (group / CPU_STAT).write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")
    settings = MonitorSection(cpu_poll_interval_s=0.05, throttle_threshold=0.1,
                              report_interval_s=0.2)
    monitor = Monitor(Cgroupfs(tmp_path, page_size=4096), Procfs(tmp_path / "proc", page_size=4096),
                      GROUP, settings)

    def kill() -> None:
        counters["oom_kill"] += 1
        write_memory_events()

    records = records_of_run(monitor, kill)
    assert [(r["event"], r["delta"]) for r in records] == [("oom_kill", 1)]
    assert monitor.counters()["oom_kill"] == 1


def test_run_reports_a_refused_fork_in_a_child_group_from_real_inotify(tmp_path: Path) -> None:
    """Before Linux 6.11: once a poll has found a child group, its pids.events is watched,
    and a refusal there is reported without waiting for the next poll."""
    group = tmp_path / GROUP
    child = group / "buildkit" / "bomb"
    child.mkdir(parents=True)
    for directory in (group, group / "buildkit", child):
        (directory / PIDS_EVENTS).write_text("max 0\n")
    (group / MEMORY_EVENTS).write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (group / CGROUP_EVENTS).write_text("populated 1\nfrozen 0\n")
    (group / CPU_STAT).write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")
    (group / "pids.max").write_text("20\n")
    settings = MonitorSection(cpu_poll_interval_s=60, throttle_threshold=0.1,
                              report_interval_s=0.2)
    monitor = Monitor(Cgroupfs(tmp_path, page_size=4096), Procfs(tmp_path / "proc", page_size=4096),
                      GROUP, settings)

    def refuse() -> None:
        monitor.poll()  # finds the child group and watches its file
        (child / PIDS_EVENTS).write_text("max 3\n")

    records = records_of_run(monitor, refuse)
    assert [(r["event"], r["delta"]) for r in records] == [("pids_max", 3)]


def records_of_run(monitor: Monitor, change: Callable[[], None]) -> Logs:
    """Start monitor.run(), make ``change`` once it watches, and return the first records."""

    async def scenario() -> Logs:
        with capture_logs() as captured:
            task = asyncio.create_task(monitor.run())
            await asyncio.sleep(0.1)
            change()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if captured:
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return captured

    return asyncio.run(scenario())


def test_the_subtree_walk_stops_at_the_engines_depth_limit(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    deep = "/".join([GROUP, *("d" for _ in range(ENGINE_MAX_DEPTH + 5))])
    kernel.mkdir(deep)
    groups = list(Subtree(cgroupfs, GROUP).groups())
    assert len(groups) == ENGINE_MAX_DEPTH + 1  # the group and 32 levels below it
