"""Violation monitoring: turns the kernel's event counters into rate-limited journald records.

The kernel raises inotify IN_MODIFY on ``memory.events``, ``memory.swap.events``,
``pids.events`` and ``cgroup.events`` when their values change; on a change the
Monitor re-reads only the files that changed, so its cost does not depend on how
many processes the group holds. Before Linux 6.11 ``pids.events`` counts a refused
fork only in the forking task's own group: the subtree's files are then summed, and
each is watched from the first poll that finds it. ``cpu.stat`` has no notification
and is polled: :meth:`Monitor.poll` is the time-driven part, and the daemon calls it
from its one housekeeping timer (once per ``cpu_poll_interval_s``), so that an idle
daemon wakes once per interval in all. :meth:`Monitor.run` itself wakes only for
inotify and for the end of a report window.

Counters are compared with their last value (as systemd keeps ``oom_kill_last``)
and only deltas are reported. Per event type at most one record goes out per
``report_interval_s``: the first occurrence after a quiet period at once (an OOM
kill is reported within milliseconds), later ones in the same window summed into
one record at the window's end.

Only the OOM path reads anything per process: an ``oom_kill`` record carries a
snapshot (usage, peak, limit, largest ``memory.stat`` entries, largest processes
by RSS, the child groups where the kills happened), taken at most twice per
report interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from ccgroupd.daemon.monitor.oom import OomSnapshot, read_limit
from ccgroupd.daemon.monitor.reports import ReportWindows
from ccgroupd.daemon.monitor.subtree import LocalPidsRefusals, Subtree
from ccgroupd.daemon.monitor.throttle import ThrottleMeter, throttle_fields
from ccgroupd.daemon.monitor.watch import Watch
from ccgroupd.errors import CgroupError, CgroupReadError
from ccgroupd.eventnames import VIOLATION_EVENTS
from ccgroupd.events import EVENTS
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import (
    CGROUP_EVENTS,
    CPU_MAX,
    CPU_STAT,
    MEMORY_EVENTS,
    MEMORY_HIGH,
    MEMORY_MAX,
    MEMORY_SWAP_EVENTS,
    MEMORY_SWAP_MAX,
    PIDS_EVENTS,
    PIDS_EVENTS_LOCAL,
    PIDS_MAX,
)
from ccgroupd.kernel.parsers import ParseError, parse_cpu_max, parse_cpu_stat
from ccgroupd.kernel.procfs import Procfs

if TYPE_CHECKING:
    from ccgroupd.config import MonitorSection

# Before Linux 6.11, a pids.events change in some group walks the subtree at most this often.
SUBTREE_WALK_INTERVAL_S = 0.25
# An engine that dies of SIGKILL this soon after an OOM kill in its group was OOM-killed.
OOM_ATTRIBUTION_WINDOW_S = 5.0
WATCHED_FILES = (MEMORY_EVENTS, MEMORY_SWAP_EVENTS, PIDS_EVENTS, CGROUP_EVENTS)

# Which counter of which file is which event, in the order they are reported
# (oom_kill first: it is the one whose latency matters).
COUNTER_KEYS: Mapping[str, tuple[tuple[str, str], ...]] = {
    MEMORY_EVENTS: (("oom_kill", "oom_kill"), ("oom", "oom"), ("max", "memory_max"),
                    ("high", "memory_high")),
    MEMORY_SWAP_EVENTS: (("max", "swap_max"),),
    PIDS_EVENTS: (("max", "pids_max"),),
}
# Looked up once so that a name missing from the registry fails at import, not in production.
EVENT_TYPES = {name: EVENTS[name] for name in VIOLATION_EVENTS}

# The limit file a memory event is about.
_LIMIT_FILES = {"oom": MEMORY_MAX, "memory_max": MEMORY_MAX, "memory_high": MEMORY_HIGH,
                "swap_max": MEMORY_SWAP_MAX}

# A file of a removed group: ENOENT by path, ENODEV if it went between open and read.
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV})


class MonitorState(enum.Enum):
    STOPPED = "stopped"  # run() not started
    WATCHING = "watching"
    VANISHED = "vanished"  # the group does not exist; waiting for it to come back




class Attribution(Protocol):
    """Which build an OOM kill or a refused fork was in (ccgroupd.daemon.builds)."""

    def take_oom(self) -> dict[str, object]: ...

    def take_pids(self, groups: Mapping[str, int]) -> dict[str, object]: ...


class Monitor:
    def __init__(self, cgroupfs: Cgroupfs, procfs: Procfs, group: str,
                 settings: MonitorSection, *, attribution: Attribution | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cgroupfs = cgroupfs
        self._group = group.strip("/")
        self._cgroup_path = str(cgroupfs.path(self._group))
        # The counter files, read on every inotify event, by a path checked once.
        self._directory = cgroupfs.directory(self._group)
        self._settings = settings
        self._attribution = attribution
        self._clock = clock
        self._log = structlog.get_logger("ccgroupd")
        self.state = MonitorState.STOPPED
        self.populated: bool | None = None
        self._reports = ReportWindows(EVENT_TYPES, settings.report_interval_s, self._report)
        self._subtree = Subtree(cgroupfs, self._group)
        self._oom = OomSnapshot(cgroupfs, procfs, self._subtree)
        self._last_counters: dict[tuple[str, str], int] = {}
        self._pids_hierarchical = True
        self._last_change_walk_s = float("-inf")
        self._local_pids = LocalPidsRefusals(self._subtree)
        self._throttle = ThrottleMeter(settings.throttle_threshold)
        self._last_violation: str | None = None
        self._last_oom_kill_s: float | None = None
        self._watch = Watch(cgroupfs, self._group, WATCHED_FILES, on_changed=self.on_changed,
                            on_failure=self._fail)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._failure: BaseException | None = None

    # -- the contract ---------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled. Raises only for errors other than the group vanishing."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        try:
            self.start()
            while True:
                self.tick()
                if self._failure is not None:
                    raise self._failure
                self._wakeup.clear()
                deadline = self.next_deadline()
                if deadline is None:  # nothing pending: sleep until inotify or poll() says
                    await self._wakeup.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(),
                                           max(0.0, deadline - self._clock()))
        finally:
            self._watch.disarm()
            self._loop = self._wakeup = None

    def counters(self) -> dict[str, int]:
        """Event totals since the Monitor started (cpu_throttled: throttled periods)."""
        return self._reports.totals()

    def last_violation(self) -> str | None:
        """One line for systemd's STATUS=, e.g. "oom_kill +1 at 02:13:05 UTC"."""
        return self._last_violation

    def recent_oom_kill(self) -> bool:
        """Whether the group OOM-killed within the last OOM_ATTRIBUTION_WINDOW_S, after
        reading memory.events now.

        The supervisor asks when the engine dies of SIGKILL. memory.events counts kills
        anywhere in the subtree, build containers included: only a kill just before the
        engine's death makes it an OOM kill, not one of a build hours earlier. Reading here
        (and reporting what is new) puts the oom_kill record before the engine_exited one.
        """
        if self.state is MonitorState.WATCHING:
            self.on_changed({MEMORY_EVENTS})
        return (self._last_oom_kill_s is not None
                and self._clock() - self._last_oom_kill_s <= OOM_ATTRIBUTION_WINDOW_S)

    def pids_event(self) -> None:
        """A build's pids.events changed (the build tracker watches each from its start)."""
        if self.state is MonitorState.WATCHING:
            self.on_changed({PIDS_EVENTS})

    # -- driving (run() calls these; tests call them with a fake clock) --------

    def start(self) -> None:
        """Take the current counters as the baseline: what happened before is not news."""
        if not self._cgroupfs.exists(self._group):
            self._vanish()
            return
        current = self._read_current_counters()
        if current is not None:
            self._oom.baseline()
            self._local_pids.baseline()
            self._prime(current)

    def on_changed(self, files: Iterable[str]) -> None:
        """Handle inotify's report that ``files`` changed: read just those, report deltas."""
        now = self._clock()
        for name in sorted(set(files) & set(COUNTER_KEYS)):
            if name == PIDS_EVENTS and not self._pids_hierarchical:
                # Some group's own count changed: sum the subtree now, not at the next poll,
                # but walk for changes at most once per SUBTREE_WALK_INTERVAL_S: in a fork
                # storm across many groups each change would walk them all again on the
                # event loop. What is held back, the next change or poll counts.
                if now - self._last_change_walk_s >= SUBTREE_WALK_INTERVAL_S:
                    self._last_change_walk_s = now
                    self._poll_pids_subtree(now)
                continue
            values = self._read_counters(name)
            if values is None:
                if self.state is MonitorState.VANISHED:
                    return
                continue  # this group has no such file; its baselines stay as they are
            for key, event in COUNTER_KEYS[name]:
                delta = self._delta((name, key), values.get(key, 0))
                if delta:
                    self._reports.count(event, delta)
                    self._occurred(event, now, {"delta": delta})
                    if event == "oom_kill":
                        self._last_oom_kill_s = now
        if CGROUP_EVENTS in files:
            values = self._read_counters(CGROUP_EVENTS)
            if values is not None:
                self.populated = values.get("populated", 0) == 1

    def poll(self) -> None:
        """The periodic work, once per monitoring interval (the caller's timer): flush
        report windows that ended, then read cpu.stat, and the subtree's pids.events
        before Linux 6.11, or look for a vanished group's return."""
        now = self._clock()
        self._reports.flush_due(now)
        if self.state is MonitorState.VANISHED:
            if self._cgroupfs.exists(self._group):
                self._resume()
        elif self.state is MonitorState.WATCHING:
            self._poll_cpu(now)
            if not self._pids_hierarchical and self.state is MonitorState.WATCHING:
                self._poll_pids_subtree(now)

    def tick(self) -> None:
        """Flush the report windows that ended (run() calls this at their ends)."""
        self._reports.flush_due(self._clock())

    def next_deadline(self) -> float | None:
        """When the next report window ends; None while no window is open."""
        return self._reports.next_deadline()

    # -- counters ---------------------------------------------------------------

    def _read_current_counters(self) -> dict[str, dict[str, int]] | None:
        """Every counter file the group has; None if the group vanished meanwhile."""
        current = {}
        for name in COUNTER_KEYS:
            values = self._read_counters(name)
            if self.state is MonitorState.VANISHED:
                return None
            if values is not None:
                current[name] = values
        return current

    def _prime(self, current: Mapping[str, Mapping[str, int]]) -> None:
        for name, values in current.items():
            for key, _event in COUNTER_KEYS[name]:
                self._last_counters[(name, key)] = values.get(key, 0)
        # Before Linux 6.11 (which added pids.events.local) a refused fork is counted in
        # the forking task's own group, not in the group whose pids.max refused it: the
        # engine's children and build containers never show up in this group's file.
        self._pids_hierarchical = self._cgroupfs.path(self._group, PIDS_EVENTS_LOCAL).exists()
        self._throttle.reset()
        self.state = MonitorState.WATCHING
        if self._loop is not None:  # only inside run(), which owns the event loop
            self._watch.arm(self._loop)

    def _resume(self) -> None:
        # A recreated group starts from zero: everything it counted so far is new.
        self._prime({})
        self.on_changed(set(COUNTER_KEYS) | {CGROUP_EVENTS})

    def _delta(self, counter: tuple[str, str], value: int) -> int:
        last = self._last_counters.get(counter, 0)
        self._last_counters[counter] = value
        # Lower than before: the group was recreated and counts from zero again.
        return value if value < last else value - last

    def _read_counters(self, name: str) -> dict[str, int] | None:
        """A flat-keyed file, or None if it is not there (then the state says whether the
        group vanished or only lacks the file, like memory.swap.events without swap)."""
        try:
            return self._directory.read_flat_keyed(name)
        except CgroupReadError as exc:
            if exc.errno not in _GONE_ERRNOS:
                raise
            if not self._cgroupfs.exists(self._group):
                self._vanish()
            return None

    def _vanish(self) -> None:
        if self.state is not MonitorState.VANISHED:
            self._log.info("cgroup_vanished", cgroup=self._cgroup_path)
        self.state = MonitorState.VANISHED
        self.populated = False
        self._last_counters.clear()
        self._oom.forget()
        self._local_pids.forget()
        self._throttle.reset()
        self._watch.disarm()

    # -- cpu.stat -------------------------------------------------------------

    def _poll_cpu(self, now: float) -> None:
        try:
            stat = parse_cpu_stat(self._cgroupfs.read(self._group, CPU_STAT))
        except CgroupReadError as exc:
            if exc.errno not in _GONE_ERRNOS or self._cgroupfs.exists(self._group):
                raise
            self._vanish()
            return
        except ParseError as exc:
            raise CgroupReadError(self._cgroupfs.path(self._group, CPU_STAT),
                                  detail=str(exc)) from exc
        throttled, amounts = self._throttle.sample(stat, now)
        self._reports.count("cpu_throttled", throttled)
        if amounts is not None:
            self._occurred("cpu_throttled", now, amounts)

    def _poll_pids_subtree(self, now: float) -> None:
        delta = self._local_pids.walk(self._watch.inotify)
        if delta:
            self._reports.count("pids_max", delta)
            self._occurred("pids_max", now, {"delta": delta})

    # -- reports --------------------------------------------------------------------

    def _occurred(self, event: str, now: float, amounts: Mapping[str, int]) -> None:
        if self._reports.occurred(event, now, amounts) and self._wakeup is not None:
            self._wakeup.set()  # a new window end: run() may have to wake earlier

    def _report(self, event: str, amounts: Mapping[str, int], total: int) -> None:
        delta = amounts["delta"]
        fields: dict[str, object] = {"cgroup": self._cgroup_path, "delta": delta,
                                     "total": total}
        fields.update(self._oom.take() if event == "oom_kill"
                      else limit_fields(self._cgroupfs, self._group, event, amounts))
        if self._attribution is not None and event in ("oom_kill", "pids_max"):
            fields.update(self._attribution.take_oom() if event == "oom_kill"
                          else self._attribution.take_pids(self._local_pids.by_group))
        if event == "pids_max":
            self._local_pids.by_group.clear()
        self._log.warning(event, **fields)
        self._last_violation = f"{event} +{delta} at {time.strftime('%H:%M:%S %Z')}"

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        if self._wakeup is not None:
            self._wakeup.set()


def limit_fields(cgroupfs: Cgroupfs, group: str, event: str,
                 amounts: Mapping[str, int]) -> dict[str, object]:
    """What a record says of the limit an event is about; best effort, as the record goes
    out regardless."""
    if event in _LIMIT_FILES:
        return {"limit_bytes": read_limit(cgroupfs, group, _LIMIT_FILES[event])}
    if event == "pids_max":
        return {"limit_pids": read_limit(cgroupfs, group, PIDS_MAX)}
    if event == "cpu_throttled":
        cpu_max = None
        with contextlib.suppress(CgroupError, ParseError):
            cpu_max = parse_cpu_max(cgroupfs.read(group, CPU_MAX))
        return throttle_fields(amounts, cpu_max)
    return {}
