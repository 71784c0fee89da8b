"""Which build an OOM kill or a refused fork happened in, from the kernel's own log: its
records name the group, task and pid, and outlive the group that runc removes the moment
the build exits.

The kernel logs the ``oom-kill:`` summary before it counts the kill in memory.events, so
when the monitor reads a new oom_kill count the summary is already in /dev/kmsg; draining
it then (and whenever the kernel log is readable) is enough. The summary is rate-limited
by the kernel in an OOM storm (``Killed process`` lines are not): a kill without one is
still counted by the monitor, unattributed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.kmsg import ForkRejected, KilledProcess, Kmsg, OomKillLine

log = structlog.get_logger("ccgroupd")

# Kills and refusals logged but not yet in a record; older ones are dropped first.
PENDING_KEPT = 64


@dataclass
class _Kill:
    build: str
    command: str | None
    pid: int
    task: str
    rss_bytes: int | None = None


class KernelLogAttribution:
    def __init__(self, kmsg: Kmsg | None, tracker: BuildTracker) -> None:
        self._kmsg = kmsg
        self._tracker = tracker
        self._kills: deque[_Kill] = deque(maxlen=PENDING_KEPT)
        self._refusals: deque[tuple[str, str | None]] = deque(maxlen=PENDING_KEPT)
        # Distinct pids the kernel said it killed in the engine's builds since the last
        # record: with memory.oom.group it kills the victim twice and memory.events
        # counts both.
        self._victims: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._kmsg is not None:
            self._loop = loop
            loop.add_reader(self._kmsg.fileno(), self.drain)

    def close(self) -> None:
        if self._kmsg is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._kmsg.fileno())
            self._kmsg.close()
            self._kmsg = None

    def drain(self) -> None:
        """Take in what the kernel logged since the last look."""
        if self._kmsg is None:
            return
        try:
            facts = self._kmsg.read_facts()
        except CgroupError as exc:
            log.warning("kernel_log_unavailable", file=str(exc.path), errno=exc.errno,
                        error=str(exc))
            self.close()
            return
        for fact in facts:
            if isinstance(fact, OomKillLine):
                found = self._tracker.build_of(fact.task_memcg)
                if found is not None:
                    self._tracker.note_oom_kill(found[0])
                    self._kills.append(_Kill(found[0], found[1], fact.pid, fact.task))
            elif isinstance(fact, KilledProcess):
                for kill in self._kills:
                    if kill.pid == fact.pid:
                        self._victims.add(fact.pid)
                        if kill.rss_bytes is None:
                            kill.rss_bytes, kill.task = fact.rss_bytes, fact.comm
            elif isinstance(fact, ForkRejected):
                found = self._tracker.build_of(fact.cgroup)
                if found is not None:
                    self._tracker.note_pids_refused(found[0])
                    self._refusals.append(found)

    def take_oom(self) -> dict[str, object]:
        """An oom_kill record's build fields: the last kill's build, command and victim, and
        with several builds in one record, the kills per build."""
        self.drain()
        kills, self._kills = list(self._kills), deque(maxlen=PENDING_KEPT)
        if not kills:
            return {}
        last = kills[-1]
        fields: dict[str, object] = {"build": last.build, "build_command": last.command,
                                     "victim_pid": last.pid, "victim_comm": last.task,
                                     "victim_rss_bytes": last.rss_bytes,
                                     "victims": len(self._victims) or None}
        self._victims = set()
        per_build: dict[str, int] = {}
        for kill in kills:
            per_build[kill.build] = per_build.get(kill.build, 0) + 1
        if len(per_build) > 1:
            fields["oom_builds"] = per_build
        return fields

    def take_pids(self, groups: Mapping[str, int]) -> dict[str, object]:
        """A pids_max record's build fields: from ``groups``, the refusals the monitor
        counted by group (relative to the engine group) while the groups existed, and the
        kernel log's line for each group's first refusal, which outlives the group."""
        self.drain()
        refusals, self._refusals = list(self._refusals), deque(maxlen=PENDING_KEPT)
        per_build: dict[str, int] = {}
        commands: dict[str, str | None] = {}
        for group, count in groups.items():
            found = self._tracker.build_of(f"/{self._tracker.engine_group}/{group}")
            if found is not None:
                per_build[found[0]] = per_build.get(found[0], 0) + count
                commands[found[0]] = found[1]
        for build, command in refusals:
            per_build.setdefault(build, 1)
            commands[build] = command
        if not per_build:
            return {}
        build = max(per_build, key=lambda name: per_build[name])
        fields: dict[str, object] = {"build": build, "build_command": commands[build]}
        known = self._tracker.known(build)
        if known is not None and known.limits.pids_max is not None:
            fields["build_limit_pids"] = known.limits.pids_max
        if len(per_build) > 1:
            fields["pids_builds"] = per_build
        return fields
