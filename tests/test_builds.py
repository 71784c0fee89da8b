"""Build tracking on the fake kernel: the tracker's handlers are driven with the events
inotify would deliver (real inotify cannot watch pyfakefs files; tests/test_inotify.py
shows the directory events on real directories, the guest scenario the whole on a real
kernel with runc)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ccgroupd.config import BuildsSection, Config, MonitorSection
from ccgroupd.daemon.builds.attribution import KernelLogAttribution
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.inotify import InotifyEvent
from ccgroupd.kernel.kmsg import KmsgFact, parse_message
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.builds import BuildGroups, matching_rule
from tests.doubles import FakeTime
from tests.fakekernel import FakeKernel

ENGINE = "system.slice/ccgroupd.service/dagger-engine"
BUILDKIT = "container/buildkit"


def builds_section(**values: Any) -> BuildsSection:
    return Config(limits={"memory": "1G", "pids": 500},
                  builds={"memory": "256M", "pids": 100, **values}).builds


@pytest.fixture
def kernel(fake_kernel: FakeKernel) -> FakeKernel:
    fake_kernel.mkdir(ENGINE)
    fake_kernel.enable("", "cpu", "memory", "pids")
    fake_kernel.enable("system.slice", "cpu", "memory", "pids")
    fake_kernel.enable("system.slice/ccgroupd.service", "cpu", "memory", "pids")
    fake_kernel.enable(ENGINE, "cpu", "memory", "pids")
    fake_kernel.mkdir(f"{ENGINE}/container")
    fake_kernel.enable(f"{ENGINE}/container", "cpu", "memory", "pids")
    fake_kernel.mkdir(f"{ENGINE}/{BUILDKIT}")
    fake_kernel.enable(f"{ENGINE}/{BUILDKIT}", "cpu", "memory", "pids")
    return fake_kernel


def tracker_for(cgroupfs: Cgroupfs, procfs: Procfs, clock: FakeTime,
                **values: Any) -> BuildTracker:
    return BuildTracker(cgroupfs, procfs, ENGINE, builds_section(**values), MonitorSection(),
                        clock=clock.clock)


def created(cgroupfs: Cgroupfs, parent: str, child: str) -> InotifyEvent:
    return InotifyEvent("directory", str(cgroupfs.path(f"{ENGINE}/{parent}")), created=child)


def deleted(cgroupfs: Cgroupfs, parent: str, child: str) -> InotifyEvent:
    return InotifyEvent("directory", str(cgroupfs.path(f"{ENGINE}/{parent}")), deleted=child)


def changed(cgroupfs: Cgroupfs, group: str) -> InotifyEvent:
    return InotifyEvent("cgroup.events",
                        str(cgroupfs.path(f"{ENGINE}/{group}", "cgroup.events")))


def start_build(kernel: FakeKernel, cgroupfs: Cgroupfs, tracker: BuildTracker, name: str,
                argv: list[str]) -> tuple[str, int]:
    """A runtime making a build's group, then its first process; returns (group, pid)."""
    group = f"{BUILDKIT}/{name}"
    kernel.mkdir(f"{ENGINE}/{group}")
    tracker.handle([created(cgroupfs, BUILDKIT, name)])
    pid = kernel.spawn(f"{ENGINE}/{group}", argv[0], argv=argv)
    tracker.handle([changed(cgroupfs, group)])
    return group, pid


def value(kernel: FakeKernel, group: str, attribute: str) -> str:
    return kernel.group(f"{ENGINE}/{group}").values[attribute]


def test_build_group_patterns() -> None:
    groups = BuildGroups(["**/buildkit/*"])
    assert groups.is_build("buildkit/abc") and groups.is_build("container/buildkit/abc")
    assert not groups.is_build("container/init") and not groups.is_build("buildkit")
    assert not groups.is_build("container/buildkit/abc/nested")
    assert groups.may_hold_builds("") and groups.may_hold_builds("container/buildkit")
    narrow = BuildGroups(["container/buildkit/*"])
    assert narrow.may_hold_builds("container") and not narrow.may_hold_builds("init")


def test_rules_match_the_first_by_argv0_glob_or_command_line_regex() -> None:
    rules = builds_section(rules=[{"command": "postgres*", "memory": "512M"},
                                  {"command_regex": r"^go test ", "cpus": 1}]).rules
    assert matching_rule(rules, ["/usr/lib/postgresql/bin/postgres-15", "-D", "/d"]) == 0
    assert matching_rule(rules, ["go", "test", "./..."]) == 1
    assert matching_rule(rules, ["go", "build"]) is None
    assert matching_rule(rules, []) is None


def test_a_new_build_group_gets_its_default_limits_and_oom_group_at_once(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    kernel.mkdir(f"{ENGINE}/{BUILDKIT}/b1")
    tracker.handle([created(cgroupfs, BUILDKIT, "b1")])
    assert value(kernel, f"{BUILDKIT}/b1", "memory.max") == str(256 * 1024 * 1024)
    assert value(kernel, f"{BUILDKIT}/b1", "pids.max") == "100"
    assert value(kernel, f"{BUILDKIT}/b1", "memory.oom.group") == "1"
    assert list(tracker.builds) == [f"{BUILDKIT}/b1"]
    # The engine's own groups are not builds.
    kernel.mkdir(f"{ENGINE}/container/init")
    tracker.handle([created(cgroupfs, "container", "init")])
    assert list(tracker.builds) == [f"{BUILDKIT}/b1"]
    assert value(kernel, "container/init", "memory.max") == "max"


def test_builds_that_exist_at_the_start_are_adopted(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    kernel.mkdir(f"{ENGINE}/{BUILDKIT}/early")
    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    assert list(tracker.builds) == [f"{BUILDKIT}/early"]
    assert value(kernel, f"{BUILDKIT}/early", "memory.max") == str(256 * 1024 * 1024)


def test_a_rule_applies_once_the_runtime_init_has_execd_the_command(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    tracker = tracker_for(cgroupfs, procfs, FakeTime(),
                          rules=[{"command": "postgres*", "memory": "512M"}])
    tracker.rescan()
    group = f"{BUILDKIT}/db"
    kernel.mkdir(f"{ENGINE}/{group}")
    tracker.handle([created(cgroupfs, BUILDKIT, "db")])
    pid = kernel.spawn(f"{ENGINE}/{group}", "runc:[2:INIT]", argv=["runc", "init"])
    with open(f"/proc/{pid}/oom_score_adj", "w") as inherited:
        inherited.write("-900\n")  # from the engine
    tracker.handle([changed(cgroupfs, group)])
    assert kernel.oom_score_adj(pid) == 0  # reset while still in the runtime's init
    assert tracker.builds[group].command is None
    assert value(kernel, group, "memory.max") == str(256 * 1024 * 1024)
    kernel.execve(pid, ["/usr/lib/postgresql/15/bin/postgres-15", "-D", "/data"])
    tracker._identify(tracker.builds[group])  # the loop's next check
    assert tracker.builds[group].command == ["/usr/lib/postgresql/15/bin/postgres-15", "-D",
                                             "/data"]
    assert value(kernel, group, "memory.max") == str(512 * 1024 * 1024)
    assert value(kernel, group, "pids.max") == "100"  # the rule leaves it to the defaults


def test_a_build_that_ends_is_accounted_once_from_its_files(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    clock = FakeTime()
    tracker = tracker_for(cgroupfs, procfs, clock)
    tracker.rescan()
    group, pid = start_build(kernel, cgroupfs, tracker, "b2", ["make", "-j4"])
    clock.now += 12.5
    kernel.update(f"{ENGINE}/{group}", "memory.peak", str(300 * 1024 * 1024))
    kernel.bump(f"{ENGINE}/{group}", "cpu.stat", usage_usec=4_000_000, throttled_usec=5000)
    kernel.bump(f"{ENGINE}/{group}", "memory.events", oom_kill=1)
    kernel.exit(pid)
    with capture_logs() as logs:
        tracker.handle([changed(cgroupfs, group)])
        os.rmdir(cgroupfs.path(f"{ENGINE}/{group}"))  # runc removes it
        tracker.handle([deleted(cgroupfs, BUILDKIT, "b2")])
    finished = [entry for entry in logs if entry["event"] == "build_finished"]
    assert len(finished) == 1
    record = finished[0]
    assert record["build"] == group and record["command"] == "make -j4"
    assert record["duration_s"] == 12.5 and record["cpu_usage_s"] == 4.0
    assert record["memory_peak_bytes"] == 300 * 1024 * 1024
    assert record["oom_kills"] == 1 and record["throttled_usec"] == 5000
    assert record["accounting"] == "final"
    assert tracker.builds == {}
    assert tracker.stats.finished_total == 1 and tracker.stats.unaccounted_total == 0
    assert tracker.stats.memory_peak_bytes.count == 1


def test_a_build_removed_before_its_end_was_read_is_reported_from_its_sample(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    group, _pid = start_build(kernel, cgroupfs, tracker, "quick", ["sh", "-c", "true"])
    kernel.update(f"{ENGINE}/{group}", "memory.current", str(50 * 1024 * 1024))
    tracker.poll()
    with capture_logs() as logs:
        # Gone before populated 0 could be read, as runc does it.
        tracker.handle([deleted(cgroupfs, BUILDKIT, "quick")])
    (record,) = [entry for entry in logs if entry["event"] == "build_finished"]
    assert record["accounting"] == "sampled"
    assert record["memory_peak_bytes"] == 50 * 1024 * 1024
    assert tracker.stats.unaccounted_total == 1


def test_new_defaults_reach_running_builds_only_when_asked(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    kernel.mkdir(f"{ENGINE}/{BUILDKIT}/old")
    tracker.handle([created(cgroupfs, BUILDKIT, "old")])
    tracker.set_defaults(tracker.defaults.with_changes({"memory": "128M"}), running=False)
    assert value(kernel, f"{BUILDKIT}/old", "memory.max") == str(256 * 1024 * 1024)
    tracker.set_defaults(tracker.defaults.with_changes({"memory": "192M"}), running=True)
    assert value(kernel, f"{BUILDKIT}/old", "memory.max") == str(192 * 1024 * 1024)


def test_the_kernel_log_names_the_build_after_its_group_is_gone(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    group, pid = start_build(kernel, cgroupfs, tracker, "hog", ["python3", "hog.py", "400"])
    kernel.exit(pid)
    os.rmdir(cgroupfs.path(f"{ENGINE}/{group}"))
    with capture_logs():
        tracker.handle([deleted(cgroupfs, BUILDKIT, "hog")])
    lines = [f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
             f"oom_memcg=/{ENGINE},task_memcg=/{ENGINE}/{group},task=python3,pid={pid},uid=0",
             f"Memory cgroup out of memory: Killed process {pid} (python3) total-vm:1kB, "
             "anon-rss:409600kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB "
             "oom_score_adj:0"]
    lines.append(lines[-1])  # memory.oom.group: the kernel kills the victim again
    attribution = KernelLogAttribution(_Log([parse_message(line) for line in lines]), tracker)
    assert attribution.take_oom() == {
        "build": group, "build_command": "python3 hog.py 400", "victim_pid": pid,
        "victim_comm": "python3", "victim_rss_bytes": 409600 * 1024, "victims": 1}
    assert attribution.take_oom() == {}  # each kill is told once
    assert tracker.stats.oom_kills_total == 1
    outside = KernelLogAttribution(_Log([parse_message(
        f"cgroup: fork rejected by pids controller in /{ENGINE}/container/init")]), tracker)
    assert outside.take_pids({}) == {}
    # Refusals the monitor counted by group, while the groups existed, name their build.
    forks, _pid = start_build(kernel, cgroupfs, tracker, "forks", ["make", "-j64"])
    assert outside.take_pids({forks: 7, "container/init": 2}) == {
        "build": forks, "build_command": "make -j64", "build_limit_pids": 100}


class _Log:
    """Kmsg's reading side with the facts already parsed."""

    def __init__(self, facts: list[KmsgFact | None]) -> None:
        self._facts = [fact for fact in facts if fact is not None]

    def read_facts(self) -> list[KmsgFact]:
        facts, self._facts = self._facts, []
        return facts

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def test_metrics_count_builds_without_a_label_per_build(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from ccgroupd.daemon.metrics_engines import BuildsCollector, EngineSource

    tracker = tracker_for(cgroupfs, procfs, FakeTime())
    tracker.rescan()
    for name in ("m1", "m2", "m3"):
        group = f"{BUILDKIT}/{name}"
        kernel.mkdir(f"{ENGINE}/{group}")
        tracker.handle([created(cgroupfs, BUILDKIT, name)])
        pid = kernel.spawn(f"{ENGINE}/{group}", "cc", argv=["cc", name])
        tracker.handle([changed(cgroupfs, group)])
        kernel.update(f"{ENGINE}/{group}", "memory.peak", str(100 * 1024 * 1024))
        if name != "m3":  # m3 runs on
            kernel.exit(pid)
            with capture_logs():
                tracker.handle([changed(cgroupfs, group)])
    registry = CollectorRegistry(auto_describe=False)
    engines = [EngineSource("ci", ENGINE, lambda: None, lambda: tracker)]
    registry.register(BuildsCollector(lambda: engines))
    text = generate_latest(registry).decode()
    assert 'ccgroupd_builds_running{engine="ci"} 1.0' in text
    assert 'ccgroupd_builds_started_total{engine="ci"} 3.0' in text
    assert 'ccgroupd_builds_finished_total{engine="ci"} 2.0' in text
    assert 'ccgroupd_build_memory_peak_bytes_bucket{engine="ci",le="268435456.0"} 2.0' in text
    assert 'ccgroupd_build_memory_peak_bytes_bucket{engine="ci",le="67108864.0"} 0.0' in text
    assert "m1" not in text and "m2" not in text  # no label per build


def test_watches_stay_flat_over_many_builds_on_real_inotify(tmp_path: Path) -> None:
    """Real directories and real inotify: every build's watches go with its group."""
    import asyncio
    import shutil

    from ccgroupd.kernel.inotify import Inotify

    engine = tmp_path / ENGINE
    buildkit = engine / BUILDKIT
    buildkit.mkdir(parents=True)
    files = ("cgroup.events", "pids.events", "memory.max", "pids.max", "memory.oom.group",
             "cpu.stat")
    tracker = BuildTracker(Cgroupfs(tmp_path), Procfs(tmp_path / "proc"), ENGINE,
                           builds_section(), MonitorSection(), clock=FakeTime().clock)

    async def scenario() -> list[int]:
        task = asyncio.create_task(tracker.run())
        await asyncio.sleep(0.05)
        inotify = tracker._watch.inotify
        assert isinstance(inotify, Inotify)
        counts = [len(inotify)]
        for round_ in range(3):
            for number in range(50):
                build = buildkit / f"r{round_}b{number}"
                build.mkdir()
                for name in files:
                    (build / name).write_text("populated 0\n" if name == "cgroup.events"
                                              else "max\n")
            await asyncio.sleep(0.1)
            counts.append(len(tracker.builds))
            for build in list(buildkit.iterdir()):
                shutil.rmtree(build)
            await asyncio.sleep(0.1)
            counts.append(len(inotify))
        task.cancel()
        return counts

    with capture_logs():
        counts = asyncio.run(scenario())
    # directories watched: the engine group, container, buildkit
    assert counts == [3, 50, 3, 50, 3, 50, 3]
    assert tracker.stats.started_total == 150 and tracker.stats.finished_total == 150


def test_a_build_throttled_by_its_own_cpu_max_is_named_once_per_report_interval(
        kernel: FakeKernel, cgroupfs: Cgroupfs, procfs: Procfs) -> None:
    clock = FakeTime()
    tracker = tracker_for(cgroupfs, procfs, clock, cpus=0.5)
    tracker.rescan()
    for name in ("busy", "calm"):
        kernel.mkdir(f"{ENGINE}/{BUILDKIT}/{name}")
        tracker.handle([created(cgroupfs, BUILDKIT, name)])
        kernel.spawn(f"{ENGINE}/{BUILDKIT}/{name}", "cc", argv=["cc", name])
        tracker.handle([changed(cgroupfs, f"{BUILDKIT}/{name}")])
    assert value(kernel, f"{BUILDKIT}/busy", "cpu.max") == "50000 100000"
    with capture_logs() as logs:
        for _ in range(3):  # three polls 5 s apart: a baseline, then two throttled spells
            tracker.poll()
            clock.now += 5
            kernel.bump(f"{ENGINE}/{BUILDKIT}/busy", "cpu.stat", nr_periods=50,
                        nr_throttled=40, throttled_usec=2_000_000)
            kernel.bump(f"{ENGINE}/{BUILDKIT}/calm", "cpu.stat", nr_periods=50)
    records = [entry for entry in logs if entry["event"] == "cpu_throttled"]
    assert len(records) == 1  # the second spell falls in the same 10 s report interval
    (record,) = records
    assert record["build"] == f"{BUILDKIT}/busy" and record["build_command"] == "cc busy"
    assert record["throttled_periods_fraction"] == 0.8 and record["limit_cpus"] == 0.5
    assert record["builds_throttled"] == 1


def test_an_engine_group_made_again_is_watched_again(tmp_path: Path) -> None:
    import asyncio
    import shutil

    engine = tmp_path / ENGINE
    (engine / BUILDKIT).mkdir(parents=True)
    tracker = BuildTracker(Cgroupfs(tmp_path), Procfs(tmp_path / "proc"), ENGINE,
                           builds_section(), MonitorSection(), clock=FakeTime().clock)

    async def scenario() -> list[str]:
        task = asyncio.create_task(tracker.run())
        await asyncio.sleep(0.05)
        shutil.rmtree(engine)  # the engine's restart removed its group and made it again
        (engine / BUILDKIT).mkdir(parents=True)
        await asyncio.sleep(0.05)
        tracker.poll()
        (engine / BUILDKIT / "after").mkdir()
        await asyncio.sleep(0.05)
        task.cancel()
        return list(tracker.builds)

    with capture_logs():
        assert asyncio.run(scenario()) == [f"{BUILDKIT}/after"]
