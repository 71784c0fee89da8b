"""Engine supervision: explicit states, restart policy with backoff and a cap, graceful stop.

States and the only transitions allowed between them (anything else is a bug
and raises TransitionError):

    EXITED   -> STARTING                      (first start, operator restart)
    STARTING -> RUNNING                       (spawned, and ready if a probe is set)
             -> BACKOFF | EXITED | FAILED     (could not be started, exited or was not
                                               ready in time; policy decides)
             -> STOPPING                      (stop or restart requested before ready)
    RUNNING  -> STOPPING                      (stop or restart requested)
             -> BACKOFF | EXITED | FAILED     (exited by itself; policy decides)
    BACKOFF  -> STARTING | EXITED             (delay over | stop requested)
    STOPPING -> EXITED
    FAILED   (final: too many starts within the window; the daemon gives up)

The backoff delay doubles with every start inside the restart window
(restart_initial_delay_s, x2, ... capped at restart_max_delay_s), so an engine
that stays up long enough for its starts to age out of the window is back to
the initial delay. More than restart_burst starts within restart_window_s is
FAILED, like systemd's StartLimitBurst.

The stop sequence is SIGTERM to the engine's main pid, then up to
stop_grace_s (cut short by force_stop()) for it to exit, then cgroup.kill for
whatever is left in the group, then a wait until the group is empty. An engine
that exits by itself gets the same clean-up of leftovers, so a restarted engine
never shares the group with processes of its predecessor.

With a readiness probe (ccgroupd.engine.readiness) the engine is RUNNING only once the
probe succeeds (``engine_ready``). A probe still failing after its timeout is
logged as ``engine_not_ready``; the engine is stopped as above and the start
counts as a failure for the restart policy.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from ccgroupd.config import RestartMode
from ccgroupd.engine.process import CommandRunner, ProcessHandle, ProcessSpawner
from ccgroupd.engine.readiness import NotReadyError, ReadinessProbe
from ccgroupd.errors import CcgroupdError, CgroupReadError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import CGROUP_MAX_DEPTH, CGROUP_SUBTREE_CONTROL

log = structlog.get_logger("ccgroupd")

# How often to look at cgroup.events while waiting for a killed group to empty.
EMPTY_POLL_INTERVAL_S = 0.05


class EngineState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"


_S = EngineState
TRANSITIONS: Mapping[EngineState, frozenset[EngineState]] = {
    _S.EXITED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.RUNNING, _S.BACKOFF, _S.EXITED, _S.FAILED, _S.STOPPING}),
    _S.RUNNING: frozenset({_S.STOPPING, _S.BACKOFF, _S.EXITED, _S.FAILED}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.EXITED}),
    _S.STOPPING: frozenset({_S.EXITED}),
    _S.FAILED: frozenset(),
}


class TransitionError(Exception):
    """A state change the machine does not allow: a bug in ccgroupd, never an operator error."""


@dataclass(frozen=True)
class EngineSpec:
    """What to run: the full argv (shim included), its environment and working directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path


@dataclass(frozen=True)
class Launch:
    """What the supervisor runs, what must happen before each start, and when it is ready
    (ccgroupd.engine.launch makes one per ``[engine] mode``)."""

    spec: EngineSpec
    before_start: Callable[[], Awaitable[None]] | None = None
    # What before_start builds the engine from beyond the argv (runc: the bundle's
    # config.json), so that a reload that changes it restarts the engine too.
    prepared_from: tuple[object, ...] = ()
    readiness: ReadinessProbe | None = None


@dataclass(frozen=True)
class RestartPolicy:
    mode: RestartMode = "on-failure"
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    burst: int = 5
    window_s: float = 300.0
    stop_grace_s: float = 300.0

    def delay_s(self, starts_in_window: int) -> float:
        """Backoff before the next start, after ``starts_in_window`` starts (>= 1)."""
        return min(self.initial_delay_s * 2.0 ** (starts_in_window - 1), self.max_delay_s)


@dataclass(frozen=True)
class EngineExit:
    returncode: int | None  # None: could not be spawned; negative: killed by that signal
    oom_killed: bool = False
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and self.error is None

    def log_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"exit_code": None, "signal": None,
                                     "oom_killed": self.oom_killed}
        if self.returncode is not None and self.returncode < 0:
            fields["signal"] = signal.Signals(-self.returncode).name
        else:
            fields["exit_code"] = self.returncode
        if self.error is not None:
            fields["error"] = self.error
        return fields


class EngineGroup(Protocol):
    """The cgroup the engine runs in, as the supervisor needs it."""

    @property
    def path(self) -> str:
        """Absolute path, for logs."""

    def kill(self) -> None: ...

    def populated(self) -> bool: ...

    def prepare(self) -> None:
        """Make the (empty) group ready for a new engine to join."""


# How many levels of groups the engine may make below its own (cgroup.max.depth). Builds
# sit 2 to 4 levels down (<container>/buildkit/<id>), nested runtimes a few more; a
# deeper tree would only make every walk of the subtree slower.
ENGINE_MAX_DEPTH = 32


class CgroupEngineGroup:
    def __init__(self, cgroupfs: Cgroupfs, group: str, *,
                 on_recreated: Callable[[], None] | None = None) -> None:
        self._cgroupfs = cgroupfs
        self._group = group
        # The group came back empty: its limits must be written again.
        self._on_recreated = on_recreated

    @property
    def path(self) -> str:
        return str(self._cgroupfs.path(self._group))

    def kill(self) -> None:
        self._cgroupfs.kill(self._group)

    def populated(self) -> bool:
        try:
            return self._cgroupfs.populated(self._group)
        except CgroupReadError as exc:
            if exc.errno == errno.ENOENT and not self._cgroupfs.exists(self._group):
                return False  # removed by someone else: nothing left in it
            raise

    def prepare(self) -> None:
        """Recreate the group if someone removed it; else remove the child groups an
        earlier engine made and the controllers it enabled.

        An engine in a private cgroup namespace moves itself into a child group
        and enables controllers for its children (as the Dagger engine does). The
        group it leaves behind refuses new members (no internal processes when
        subtree_control is set: EBUSY), so the next engine could not join it.
        """
        if self._cgroupfs.create(self._group):
            log.warning("cgroup_recreated", cgroup=self.path)
            if self._on_recreated is not None:
                self._on_recreated()
            return
        for child in self._cgroupfs.children(self._group):
            self._cgroupfs.remove(child)
        self._cgroupfs.write(self._group, CGROUP_MAX_DEPTH, str(ENGINE_MAX_DEPTH))
        enabled = self._cgroupfs.subtree_controllers(self._group)
        if enabled:
            self._cgroupfs.write(self._group, CGROUP_SUBTREE_CONTROL,
                                 " ".join(f"-{name}" for name in sorted(enabled)))


class _Request(enum.Enum):
    STOP = "stop"
    RESTART = "restart"


class Supervisor:
    def __init__(self, launch: Launch, policy: RestartPolicy, spawner: ProcessSpawner,
                 group: EngineGroup, *, probe_runner: CommandRunner,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_change: Callable[[EngineState], None] | None = None,
                 oom_witness: Callable[[], bool] | None = None) -> None:
        self._launch = launch
        self._policy = policy
        # Whether the group OOM-killed just now: asked when the engine dies of SIGKILL.
        self._oom_witness = oom_witness
        self._spawner = spawner
        self._probe_runner = probe_runner
        self._group = group
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self._state = EngineState.EXITED
        self._process: ProcessHandle | None = None
        self._started_at: float | None = None
        self._starts: deque[float] = deque()
        self._start_count = 0
        self._request: _Request | None = None
        self._wake = asyncio.Event()
        self._force = asyncio.Event()
        self.last_exit: EngineExit | None = None

    # -- what others may look at ---------------------------------------------

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def pid(self) -> int | None:
        if self._process is not None and self._state in (
                EngineState.STARTING, EngineState.RUNNING, EngineState.STOPPING):
            return self._process.pid
        return None

    @property
    def restarts(self) -> int:
        return max(self._start_count - 1, 0)

    @property
    def request_pending(self) -> bool:
        """A stop or restart was asked for and run() has not acted on it yet."""
        return self._request is not None

    def uptime_s(self) -> float | None:
        if self.pid is None or self._started_at is None:
            return None
        return self._clock() - self._started_at

    # -- what others may ask -------------------------------------------------

    def reconfigure(self, launch: Launch, policy: RestartPolicy) -> bool:
        """Take a reloaded configuration's launch and policy; restart the engine (and return
        True) only if what it runs changed. The probe and the policy apply from now on."""
        changed = ((launch.spec, launch.prepared_from)
                   != (self._launch.spec, self._launch.prepared_from))
        self._launch = launch
        self._policy = policy
        if changed:
            self.request_restart()
        return changed

    def request_stop(self) -> None:
        """Stop the engine (gracefully) and make run() return."""
        self._request = _Request.STOP
        self._wake.set()

    def force_stop(self) -> None:
        """Stop now: skip what is left of the grace period and kill the group."""
        self.request_stop()
        self._force.set()

    def request_restart(self) -> None:
        """Stop the engine gracefully and start it again; not counted against the cap."""
        if self._request is not _Request.STOP:
            self._request = _Request.RESTART
            self._wake.set()

    # -- the loop ------------------------------------------------------------

    async def run(self) -> EngineState:
        """Start the engine and keep it going per policy; returns EXITED (stopped) or FAILED."""
        while True:
            if self._request is _Request.STOP:
                return self._state
            if self._request is _Request.RESTART:
                self._request = None
                self._wake.clear()
                self._starts.clear()  # an operator restart starts a fresh count
            self._transition(EngineState.STARTING)
            outcome = await self._run_once()
            if outcome is None:  # stopped on request; loop to see which one
                continue
            self.last_exit = outcome
            following = self._after_exit(outcome)
            self._transition(following)
            if following is EngineState.FAILED:
                return following
            if following is EngineState.BACKOFF:
                await self._backoff()
            else:
                await self._wake.wait()

    def _after_exit(self, outcome: EngineExit) -> EngineState:
        if self._request is not None:
            return EngineState.EXITED  # a request came in while we cleaned up: let run() see it
        mode = self._policy.mode
        if mode == "never" or (mode == "on-failure" and outcome.succeeded):
            return EngineState.EXITED
        self._forget_old_starts()
        if len(self._starts) >= self._policy.burst:
            log.error("engine_failed", cgroup=self._group.path, starts=len(self._starts),
                      window_s=self._policy.window_s,
                      reason=(f"{len(self._starts)} starts within {self._policy.window_s:g} s "
                              f"(restart_burst = {self._policy.burst})"),
                      **outcome.log_fields())
            return EngineState.FAILED
        return EngineState.BACKOFF

    async def _backoff(self) -> None:
        delay_s = self._policy.delay_s(len(self._starts))
        log.warning("engine_restarting", cgroup=self._group.path, delay_s=delay_s,
                    restarts=len(self._starts))
        await self._race(self._sleep(delay_s), self._wake.wait())
        if self._request is _Request.STOP:
            self._transition(EngineState.EXITED)

    def _forget_old_starts(self) -> None:
        horizon = self._clock() - self._policy.window_s
        while self._starts and self._starts[0] < horizon:
            self._starts.popleft()

    async def _run_once(self) -> EngineExit | None:
        """One life of the engine; None if it ended because of a request (stop, restart)."""
        self._process = None
        self._starts.append(self._clock())
        self._start_count += 1
        try:
            if self._launch.before_start is not None:
                await self._launch.before_start()
            self._group.prepare()
            process = await self._spawner.spawn(self._launch.spec.argv, self._launch.spec.env,
                                               self._launch.spec.cwd)
        except (OSError, CcgroupdError) as exc:
            outcome = EngineExit(None, error=str(exc))
            # The error text is the record's field; a traceback would add nothing.
            log.error("engine_exited",  # noqa: TRY400
                      cgroup=self._group.path, pid=None, **outcome.log_fields())
            return outcome
        self._process = process
        self._started_at = self._clock()
        log.info("engine_started", pid=process.pid, cgroup=self._group.path,
                 restarts=self.restarts)
        exited = asyncio.ensure_future(process.wait())
        if self._launch.readiness is not None and not await self._became_ready(process, exited):
            if self._request is not None and not exited.done():
                await self._stop(process, exited)
                return None
            if not exited.done():  # not ready in time
                await self._terminate(process, exited)
                return self._exited(process, EngineExit(await exited, error=(
                    f"not ready within {self._launch.readiness.timeout_s:g} s "
                    f"({self._launch.readiness.description})")))
        else:
            self._transition(EngineState.RUNNING)
            await self._race(exited, self._wake.wait())
            if not exited.done():
                await self._stop(process, exited)
                return None
        await empty_group(self._group, self._sleep)
        returncode = exited.result()
        oom_killed = (returncode == -signal.SIGKILL and self._oom_witness is not None
                      and self._oom_witness())
        return self._exited(process, EngineExit(returncode, oom_killed=oom_killed))

    def _exited(self, process: ProcessHandle, outcome: EngineExit) -> EngineExit:
        """Log an engine that ended without being asked to (or was never ready)."""
        assert self._started_at is not None
        log.warning("engine_exited", pid=process.pid, cgroup=self._group.path,
                    uptime_s=round(self._clock() - self._started_at, 3), **outcome.log_fields())
        return outcome

    async def _became_ready(self, process: ProcessHandle, exited: asyncio.Future[int]) -> bool:
        """Probe until ready (True), or until the engine exits, a request comes in or the
        probe times out (False; the caller tells which)."""
        readiness = self._launch.readiness
        assert readiness is not None
        probe = asyncio.ensure_future(
            readiness.wait(self._probe_runner, clock=self._clock, sleep=self._sleep))
        try:
            await self._race(probe, exited, self._wake.wait())
        finally:
            probe.cancel()
        if exited.done() or self._request is not None:
            return False
        try:
            ready_after_s = probe.result()
        except NotReadyError as error:
            # The probe's last error is the record's field; a traceback would add nothing.
            log.error("engine_not_ready",  # noqa: TRY400
                      pid=process.pid, cgroup=self._group.path,
                      timeout_s=readiness.timeout_s, probe=readiness.description,
                      last_error=str(error))
            return False
        log.info("engine_ready", pid=process.pid, cgroup=self._group.path,
                 ready_after_s=round(ready_after_s, 3), probe=readiness.description)
        return True

    async def _terminate(self, process: ProcessHandle, exited: asyncio.Future[int]) -> None:
        """SIGTERM, the grace period (cut short by force_stop()), then cgroup.kill."""
        process.send_signal(signal.SIGTERM)
        await self._race(exited, self._sleep(self._policy.stop_grace_s), self._force.wait())
        await empty_group(self._group, self._sleep)

    async def _stop(self, process: ProcessHandle, exited: asyncio.Future[int]) -> None:
        self._transition(EngineState.STOPPING)
        log.info("engine_stopping", pid=process.pid, cgroup=self._group.path,
                 grace_s=self._policy.stop_grace_s)
        await self._terminate(process, exited)
        outcome = EngineExit(await exited)
        log.info("engine_exited", pid=process.pid, cgroup=self._group.path, stopped=True,
                 **outcome.log_fields())
        self.last_exit = outcome
        self._transition(EngineState.EXITED)

    @staticmethod
    async def _race(*waitables: Awaitable[object]) -> None:
        """Wait until the first of ``waitables`` finishes; cancel the others (not futures)."""
        tasks = [asyncio.ensure_future(w) for w in waitables]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task, waitable in zip(tasks, waitables, strict=True):
                if task is not waitable:
                    task.cancel()

    def _transition(self, new: EngineState) -> None:
        if new not in TRANSITIONS[self._state]:
            raise TransitionError(f"engine state {self._state.value} -> {new.value} is not allowed")
        self._state = new
        if self._on_change is not None:
            self._on_change(new)


async def empty_group(group: EngineGroup, sleep: Callable[[float], Awaitable[None]]) -> None:
    """cgroup.kill whatever is left, then wait until the kernel says the group is empty."""
    if not group.populated():
        return
    group.kill()
    while group.populated():
        await sleep(EMPTY_POLL_INTERVAL_S)
