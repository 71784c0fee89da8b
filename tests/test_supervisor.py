"""The supervisor's state machine, restart policies, backoff, cap and stop sequence.

Processes, the cgroup, the clock and sleep are all fakes: a test decides when an
engine exits, how it reacts to SIGTERM and how long a sleep "takes".
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ccgroupd.config import RestartMode
from ccgroupd.engine.process import Completed, ProcessHandle
from ccgroupd.engine.readiness import PROBE_INTERVAL_S, ReadinessProbe
from ccgroupd.engine.supervisor import (
    ENGINE_MAX_DEPTH,
    TRANSITIONS,
    CgroupEngineGroup,
    EngineSpec,
    EngineState,
    Launch,
    RestartPolicy,
    Supervisor,
    TransitionError,
)
from ccgroupd.errors import CgroupCreateError, EngineLaunchError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from doubles import FakeTime, ScriptedCommands, run_async
from fakekernel import FakeKernel

SPEC = EngineSpec(("engine", "--serve"), {"PATH": "/usr/bin"}, Path("/"))


class Journal:
    """One ordered list of everything that happened, across the fakes."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def add(self, entry: str) -> None:
        self.entries.append(entry)


class FakeProcess:
    def __init__(self, pid: int, journal: Journal, *, exit_code: int | None,
                 on_sigterm: int | None) -> None:
        self._pid = pid
        self._journal = journal
        self._on_sigterm = on_sigterm
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.signals: list[int] = []
        if exit_code is not None:
            self.finish(exit_code)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self._journal.add(f"signal {signal.Signals(signum).name} {self.pid}")
        if signum == signal.SIGTERM and self._on_sigterm is not None:
            self.finish(self._on_sigterm)

    def finish(self, returncode: int) -> None:
        if not self._exited.done():
            self._exited.set_result(returncode)


class FakeSpawner:
    """Each spawn takes the next behaviour: (exit code at once or None, reaction to SIGTERM)."""

    def __init__(self, journal: Journal, group: FakeGroup,
                 behaviours: Sequence[tuple[int | None, int | None]]) -> None:
        self._journal = journal
        self._group = group
        self._behaviours = itertools.chain(behaviours, itertools.repeat(behaviours[-1]))
        self._pids = itertools.count(100)
        self.processes: list[FakeProcess] = []
        self.argvs: list[tuple[str, ...]] = []
        self.fail_with: OSError | None = None

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str],
                    cwd: Path) -> ProcessHandle:
        if self.fail_with is not None:
            raise self.fail_with
        exit_code, on_sigterm = next(self._behaviours)
        self.argvs.append(tuple(argv))
        process = FakeProcess(next(self._pids), self._journal, exit_code=exit_code,
                              on_sigterm=on_sigterm)
        self.processes.append(process)
        self._journal.add(f"spawn {process.pid}")
        if exit_code is None:
            self._group.members.add(process)
        return process


class FakeGroup:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.members: set[FakeProcess] = set()
        self.prepared = 0

    @property
    def path(self) -> str:
        return "/sys/fs/cgroup/engine"

    def kill(self) -> None:
        self._journal.add("cgroup.kill")
        for process in self.members:
            process.finish(-signal.SIGKILL)

    def populated(self) -> bool:
        self.members = {p for p in self.members if p.returncode is None}
        return bool(self.members)

    def prepare(self) -> None:
        self.prepared += 1


class Harness:
    def __init__(self, behaviours: Sequence[tuple[int | None, int | None]], *,
                 mode: RestartMode = "on-failure", burst: int = 5, window_s: float = 300,
                 initial_delay_s: float = 1, max_delay_s: float = 4, grace_s: float = 30,
                 block_from_s: float = float("inf"),
                 readiness: ReadinessProbe | None = None,
                 before_start: Callable[[], Awaitable[None]] | None = None) -> None:
        self.journal = Journal()
        self.group = FakeGroup(self.journal)
        self.spawner = FakeSpawner(self.journal, self.group, behaviours)
        self.time = FakeTime(block_from_s=block_from_s,
                             on_sleep=lambda delay_s: self.journal.add(f"slept {delay_s:g}"))
        # What a readiness probe command gets: exit 1 until a test makes it exit 0.
        self.probe = ScriptedCommands(otherwise=[NOT_READY])
        self.states: list[EngineState] = []
        # What the monitor would say when asked about an OOM kill just now.
        self.oom_kill_just_now = False
        self.supervisor = Supervisor(
            Launch(SPEC, before_start, readiness=readiness),
            RestartPolicy(mode=mode, initial_delay_s=initial_delay_s, max_delay_s=max_delay_s,
                          burst=burst, window_s=window_s, stop_grace_s=grace_s),
            self.spawner, self.group, probe_runner=self.probe, clock=self.time.clock,
            sleep=self.time.sleep,
            on_change=self.states.append, oom_witness=lambda: self.oom_kill_just_now)

    def start(self) -> asyncio.Task[EngineState]:
        return asyncio.create_task(self.supervisor.run())

    async def until(self, state: EngineState, spawns: int = 1) -> None:
        for _ in range(1000):
            if (self.supervisor.state is state
                    and len(self.spawner.processes) >= spawns):
                return
            await asyncio.sleep(0)
        raise AssertionError(f"never reached {state} after {spawns} spawns: {self.states}")

    async def until_probed(self, probes: int) -> None:
        for _ in range(1000):
            if len(self.probe.calls) >= probes:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"probed {len(self.probe.calls)} times, not {probes}: "
                             f"{self.states}")


NOT_READY = Completed(1, "connection refused")
READY = Completed(0, "")
RUNS = (None, None)  # runs until signalled, ignores SIGTERM
GRACEFUL = (None, 0)  # runs until SIGTERM, then exits 0
CRASHES = (1, None)  # exits 1 at once
SUCCEEDS = (0, None)  # exits 0 at once


# -- the state machine ---------------------------------------------------------------


def test_every_state_has_a_transition_entry_and_failed_is_final() -> None:
    assert set(TRANSITIONS) == set(EngineState)
    assert TRANSITIONS[EngineState.FAILED] == frozenset()


@pytest.mark.parametrize(("current", "new"), [
    (current, new) for current in EngineState for new in EngineState
    if new not in TRANSITIONS[current]
])
@run_async
async def test_transitions_outside_the_table_raise(current: EngineState, new: EngineState) -> None:
    supervisor = Harness([GRACEFUL]).supervisor
    supervisor._state = current
    with pytest.raises(TransitionError, match=f"{current.value} -> {new.value}"):
        supervisor._transition(new)
    assert supervisor.state is current


@run_async
async def test_start_runs_the_engine_and_reports_it() -> None:
    harness = Harness([GRACEFUL])
    with capture_logs() as logs:
        task = harness.start()
        await harness.until(EngineState.RUNNING)
    assert harness.states == [EngineState.STARTING, EngineState.RUNNING]
    assert harness.supervisor.pid == 100
    assert harness.group.prepared == 1
    assert logs[0] == {"event": "engine_started", "log_level": "info", "pid": 100,
                       "cgroup": "/sys/fs/cgroup/engine", "restarts": 0}
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


# -- stop --------------------------------------------------------------------------------


@run_async
async def test_stop_of_a_graceful_engine_needs_no_kill() -> None:
    harness = Harness([GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED
    assert harness.journal.entries == ["spawn 100", "signal SIGTERM 100"]
    assert harness.states[-2:] == [EngineState.STOPPING, EngineState.EXITED]
    assert harness.supervisor.last_exit is not None
    assert harness.supervisor.last_exit.returncode == 0


@run_async
async def test_stop_sequence_is_sigterm_then_grace_then_cgroup_kill_then_empty() -> None:
    harness = Harness([RUNS], grace_s=30)
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    with capture_logs() as logs:
        harness.supervisor.request_stop()
        assert await task is EngineState.EXITED
    assert harness.journal.entries == ["spawn 100", "signal SIGTERM 100", "slept 30",
                                       "cgroup.kill"]
    assert not harness.group.populated()
    assert [entry["event"] for entry in logs] == ["engine_stopping", "engine_exited"]
    assert logs[0]["grace_s"] == 30
    assert logs[1]["signal"] == "SIGKILL"


@run_async
async def test_children_left_after_a_graceful_exit_are_killed() -> None:
    harness = Harness([GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    orphan = FakeProcess(999, harness.journal, exit_code=None, on_sigterm=None)
    harness.group.members.add(orphan)
    harness.supervisor.request_stop()
    await task
    assert harness.journal.entries[-1] == "cgroup.kill"
    assert orphan.returncode == -signal.SIGKILL


@run_async
async def test_force_stop_cuts_the_grace_period_short() -> None:
    harness = Harness([RUNS], grace_s=300, block_from_s=300)
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    harness.supervisor.request_stop()
    await harness.until(EngineState.STOPPING)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()  # waiting out the grace period
    harness.supervisor.force_stop()
    assert await task is EngineState.EXITED
    assert harness.journal.entries == ["spawn 100", "signal SIGTERM 100", "cgroup.kill"]


@run_async
async def test_stop_during_backoff_starts_nothing_more() -> None:
    harness = Harness([CRASHES], initial_delay_s=60, block_from_s=60)
    task = harness.start()
    await harness.until(EngineState.BACKOFF)
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED
    assert len(harness.spawner.processes) == 1


# -- restart policy, backoff, cap ----------------------------------------------------


@run_async
async def test_crash_loop_backs_off_exponentially_then_fails() -> None:
    harness = Harness([CRASHES], burst=5, initial_delay_s=1, max_delay_s=4)
    with capture_logs() as logs:
        assert await harness.start() is EngineState.FAILED
    assert len(harness.spawner.processes) == 5  # restart_burst starts, not one more
    assert harness.time.sleeps == [1, 2, 4, 4]
    assert harness.states[-1] is EngineState.FAILED
    events = [entry["event"] for entry in logs]
    assert events.count("engine_restarting") == 4
    assert events.count("engine_exited") == 5
    failed = [entry for entry in logs if entry["event"] == "engine_failed"]
    assert len(failed) == 1
    assert failed[0]["starts"] == 5
    assert failed[0]["exit_code"] == 1
    assert "restart_burst = 5" in failed[0]["reason"]


@run_async
async def test_starts_that_age_out_of_the_window_do_not_count() -> None:
    # Each backoff sleep moves the clock past the window: the engine is never capped
    # and the delay stays at the initial one.
    harness = Harness([CRASHES], burst=2, window_s=10, initial_delay_s=11, max_delay_s=60)
    task = harness.start()
    await harness.until(EngineState.BACKOFF, spawns=6)
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED
    assert set(harness.time.sleeps) == {11}


@pytest.mark.parametrize(("mode", "behaviour", "restarts"), [
    ("never", CRASHES, False),
    ("never", SUCCEEDS, False),
    ("on-failure", SUCCEEDS, False),
    ("on-failure", CRASHES, True),
    ("always", SUCCEEDS, True),
    ("always", CRASHES, True),
])
@run_async
async def test_restart_policy(mode: RestartMode, behaviour: tuple[int | None, int | None],
                              restarts: bool) -> None:
    harness = Harness([behaviour, GRACEFUL], mode=mode)
    task = harness.start()
    if restarts:
        await harness.until(EngineState.RUNNING, spawns=2)
    else:
        await harness.until(EngineState.EXITED)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(harness.spawner.processes) == 1
        assert not task.done()  # the daemon keeps the group; an operator may restart
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


@run_async
async def test_a_signal_death_counts_as_failure() -> None:
    harness = Harness([(-signal.SIGSEGV, None), GRACEFUL], mode="on-failure")
    with capture_logs() as logs:
        task = harness.start()
        await harness.until(EngineState.RUNNING, spawns=2)
    exited = next(entry for entry in logs if entry["event"] == "engine_exited")
    assert exited["signal"] == "SIGSEGV"
    assert exited["exit_code"] is None
    harness.supervisor.request_stop()
    await task


@run_async
async def test_spawn_failure_is_an_exit_that_backs_off() -> None:
    harness = Harness([GRACEFUL], burst=2)
    harness.spawner.fail_with = FileNotFoundError(2, "No such file", "python3")
    with capture_logs() as logs:
        assert await harness.start() is EngineState.FAILED
    exited = [entry for entry in logs if entry["event"] == "engine_exited"]
    assert len(exited) == 2
    assert "No such file" in exited[0]["error"]
    assert harness.states[:2] == [EngineState.STARTING, EngineState.BACKOFF]


@run_async
async def test_oom_killed_engine_is_reported_as_such() -> None:
    harness = Harness([RUNS, GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    with capture_logs() as logs:
        harness.oom_kill_just_now = True  # the kernel's OOM killer took the engine
        harness.spawner.processes[0].finish(-signal.SIGKILL)
        await harness.until(EngineState.RUNNING, spawns=2)
    exited = next(entry for entry in logs if entry["event"] == "engine_exited")
    assert exited["oom_killed"] is True
    assert exited["signal"] == "SIGKILL"
    harness.supervisor.request_stop()
    await task


@run_async
async def test_a_sigkill_without_an_oom_kill_just_now_is_not_an_oom_kill() -> None:
    # The monitor says whether the group OOM-killed just now (an old kill of a build
    # does not count: tests/test_monitor.py).
    harness = Harness([RUNS, GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    with capture_logs() as logs:
        harness.spawner.processes[0].finish(-signal.SIGKILL)  # killed by hand
        await harness.until(EngineState.RUNNING, spawns=2)
    exited = next(entry for entry in logs if entry["event"] == "engine_exited")
    assert exited["oom_killed"] is False
    harness.supervisor.request_stop()
    await task


@run_async
async def test_reconfigure_restarts_only_when_what_runs_changed() -> None:
    harness = Harness([GRACEFUL, GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    policy = RestartPolicy(mode="always", burst=9)
    assert harness.supervisor.reconfigure(Launch(SPEC, readiness=NEVER_TIMES_OUT), policy) is False
    await asyncio.sleep(0)
    assert harness.journal.entries == ["spawn 100"]
    other = EngineSpec(("engine", "--serve", "--debug"), SPEC.env, SPEC.cwd)
    assert harness.supervisor.reconfigure(Launch(other), policy) is True
    await harness.until(EngineState.RUNNING, spawns=2)
    assert harness.journal.entries == ["spawn 100", "signal SIGTERM 100", "spawn 101"]
    assert harness.spawner.argvs[-1] == other.argv
    harness.supervisor.request_stop()
    await task


@run_async
async def test_a_plain_crash_is_not_called_an_oom_kill() -> None:
    harness = Harness([CRASHES, GRACEFUL])
    with capture_logs() as logs:
        task = harness.start()
        await harness.until(EngineState.RUNNING, spawns=2)
    exited = next(entry for entry in logs if entry["event"] == "engine_exited")
    assert exited["oom_killed"] is False
    harness.supervisor.request_stop()
    await task


# -- operator restart ------------------------------------------------------------------


@run_async
async def test_requested_restart_stops_gracefully_and_starts_again() -> None:
    harness = Harness([GRACEFUL])
    task = harness.start()
    await harness.until(EngineState.RUNNING)
    harness.supervisor.request_restart()
    await harness.until(EngineState.RUNNING, spawns=2)
    assert harness.journal.entries == ["spawn 100", "signal SIGTERM 100", "spawn 101"]
    assert harness.supervisor.restarts == 1
    assert harness.time.sleeps == []  # no backoff for an operator's restart
    harness.supervisor.request_stop()
    await task


@run_async
async def test_restart_brings_an_exited_engine_back() -> None:
    harness = Harness([SUCCEEDS, GRACEFUL], mode="on-failure")
    task = harness.start()
    await harness.until(EngineState.EXITED)
    harness.supervisor.request_restart()
    await harness.until(EngineState.RUNNING, spawns=2)
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


def test_backoff_delay_doubles_up_to_the_maximum() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=3)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


# -- readiness ---------------------------------------------------------------------------


def command_probe(timeout_s: float) -> ReadinessProbe:
    return ReadinessProbe(None, ("probe-engine",), timeout_s)


NEVER_TIMES_OUT = command_probe(10_000)


def records(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


@run_async
async def test_with_a_probe_the_engine_is_running_only_once_it_is_ready() -> None:
    harness = Harness([GRACEFUL], readiness=NEVER_TIMES_OUT)
    with capture_logs() as logs:
        task = harness.start()
        await harness.until_probed(3)
        assert harness.states == [EngineState.STARTING]  # spawned, not ready yet
        assert harness.supervisor.pid == 100
        assert records(logs, "engine_ready") == []
        harness.probe.otherwise = [READY]
        await harness.until(EngineState.RUNNING)
    assert harness.states == [EngineState.STARTING, EngineState.RUNNING]
    ready = records(logs, "engine_ready")
    assert ready == [{"event": "engine_ready", "log_level": "info", "pid": 100,
                      "cgroup": "/sys/fs/cgroup/engine",
                      "ready_after_s": (len(harness.probe.calls) - 1) * PROBE_INTERVAL_S,
                      "probe": "command probe-engine"}]
    events = [entry["event"] for entry in logs]
    assert events.index("engine_started") < events.index("engine_ready")
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


@pytest.mark.parametrize("behaviour", [RUNS, GRACEFUL], ids=["ignores-sigterm", "exits-0"])
@run_async
async def test_an_engine_never_ready_is_stopped_and_counts_as_a_failed_start(
        behaviour: tuple[int | None, int | None]) -> None:
    harness = Harness([behaviour], readiness=command_probe(1), burst=2, grace_s=30)
    with capture_logs() as logs:
        assert await harness.start() is EngineState.FAILED
    # Even an engine that exits 0 on SIGTERM failed to start: backoff, then the cap.
    assert harness.states == [EngineState.STARTING, EngineState.BACKOFF,
                              EngineState.STARTING, EngineState.FAILED]
    assert len(harness.spawner.processes) == 2
    first_life = harness.journal.entries[:harness.journal.entries.index("spawn 101")]
    stop = ["signal SIGTERM 100"]
    if behaviour is RUNS:
        stop += ["slept 30", "cgroup.kill"]  # the grace period, then the group is killed
    assert first_life == ["spawn 100", *["slept 0.25"] * 4, *stop, "slept 1"]
    assert len(records(logs, "engine_not_ready")) == 2
    exited = records(logs, "engine_exited")[0]
    assert exited["error"] == "not ready within 1 s (command probe-engine)"
    if behaviour is GRACEFUL:
        assert exited["exit_code"] == 0
    else:
        assert exited["signal"] == "SIGKILL"
    assert records(logs, "engine_ready") == []
    assert harness.supervisor.last_exit is not None
    assert not harness.supervisor.last_exit.succeeded


@run_async
async def test_engine_not_ready_names_the_engine_the_probe_and_what_it_saw() -> None:
    harness = Harness([GRACEFUL], readiness=command_probe(0.5), mode="never")
    with capture_logs() as logs:
        task = harness.start()
        await harness.until(EngineState.EXITED)
    assert records(logs, "engine_not_ready") == [
        {"event": "engine_not_ready", "log_level": "error", "pid": 100,
         "cgroup": "/sys/fs/cgroup/engine", "timeout_s": 0.5, "probe": "command probe-engine",
         "last_error": "probe-engine exited 1: connection refused"}]
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


@run_async
async def test_stop_while_waiting_for_readiness_is_a_graceful_stop() -> None:
    harness = Harness([GRACEFUL], readiness=NEVER_TIMES_OUT)
    task = harness.start()
    await harness.until_probed(2)
    with capture_logs() as logs:
        harness.supervisor.request_stop()
        assert await task is EngineState.EXITED
    assert harness.states == [EngineState.STARTING, EngineState.STOPPING, EngineState.EXITED]
    assert harness.journal.entries[-1] == "signal SIGTERM 100"
    assert [entry["event"] for entry in logs] == ["engine_stopping", "engine_exited"]
    assert logs[1]["stopped"] is True
    assert logs[1]["exit_code"] == 0
    probes = len(harness.probe.calls)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(harness.probe.calls) == probes  # the probe was cancelled with the engine


@run_async
async def test_restart_while_waiting_for_readiness_starts_a_new_engine() -> None:
    harness = Harness([GRACEFUL], readiness=NEVER_TIMES_OUT)
    task = harness.start()
    await harness.until_probed(2)
    harness.supervisor.request_restart()
    await harness.until(EngineState.STARTING, spawns=2)
    assert harness.states == [EngineState.STARTING, EngineState.STOPPING, EngineState.EXITED,
                              EngineState.STARTING]
    assert set(harness.time.sleeps) == {PROBE_INTERVAL_S}  # no backoff
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


@run_async
async def test_an_engine_that_exits_before_it_is_ready_is_an_ordinary_exit() -> None:
    harness = Harness([CRASHES], readiness=NEVER_TIMES_OUT, burst=2)
    with capture_logs() as logs:
        assert await harness.start() is EngineState.FAILED
    assert harness.states == [EngineState.STARTING, EngineState.BACKOFF,
                              EngineState.STARTING, EngineState.FAILED]
    exited = records(logs, "engine_exited")
    assert [(entry["exit_code"], "error" in entry) for entry in exited] == [(1, False)] * 2
    assert records(logs, "engine_not_ready") == []
    assert not any(entry.startswith("signal") for entry in harness.journal.entries)


# -- before_start ------------------------------------------------------------------------


@run_async
async def test_before_start_runs_before_each_start_ahead_of_the_group_reset() -> None:
    harness: Harness

    async def before_start() -> None:
        harness.journal.add(f"before_start (group prepared {harness.group.prepared} times)")

    harness = Harness([CRASHES, GRACEFUL], before_start=before_start)
    task = harness.start()
    await harness.until(EngineState.RUNNING, spawns=2)
    assert harness.journal.entries == [
        "before_start (group prepared 0 times)", "spawn 100", "slept 1",
        "before_start (group prepared 1 times)", "spawn 101"]
    harness.supervisor.request_stop()
    assert await task is EngineState.EXITED


@run_async
async def test_a_failing_before_start_is_a_failed_start_without_a_spawn() -> None:
    async def before_start() -> None:
        raise EngineLaunchError("cannot remove the leftover container 'ccgroupd-engine'")

    harness = Harness([GRACEFUL], burst=2, before_start=before_start)
    with capture_logs() as logs:
        assert await harness.start() is EngineState.FAILED
    assert harness.spawner.processes == []
    assert harness.group.prepared == 0
    assert harness.states == [EngineState.STARTING, EngineState.BACKOFF,
                              EngineState.STARTING, EngineState.FAILED]
    exited = records(logs, "engine_exited")
    assert len(exited) == 2
    assert exited[0]["log_level"] == "error"
    assert exited[0]["error"] == "cannot remove the leftover container 'ccgroupd-engine'"
    assert exited[0]["exit_code"] is None


# -- the engine's group on the fake kernel ------------------------------------------------


def test_a_group_removed_between_starts_is_recreated_and_its_limits_rewritten(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    fake_kernel.enable("", "memory", "pids")
    rewritten: list[str] = []
    group = CgroupEngineGroup(cgroupfs, "engine",
                              on_recreated=lambda: rewritten.append("limits"))
    cgroupfs.create("engine")
    group.prepare()
    assert rewritten == []  # there all along
    cgroupfs.remove("engine")  # someone else, during the restart back-off
    assert group.populated() is False  # gone is empty, not an error
    with capture_logs() as logs:
        group.prepare()
    assert cgroupfs.exists("engine")
    assert rewritten == ["limits"]
    assert [entry["event"] for entry in logs] == ["cgroup_recreated"]


def test_prepare_limits_how_deep_the_engine_may_nest_groups(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("engine")
    CgroupEngineGroup(cgroupfs, "engine").prepare()
    assert cgroupfs.read("engine", "cgroup.max.depth").strip() == str(ENGINE_MAX_DEPTH)
    levels = "/".join(["engine", *("d" for _ in range(ENGINE_MAX_DEPTH))])
    cgroupfs.create(levels)  # as deep as allowed
    with pytest.raises(CgroupCreateError) as refused:
        cgroupfs.create(f"{levels}/one-more")
    assert refused.value.errno == errno.EAGAIN
