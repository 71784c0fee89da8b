"""Build containers below the engine group, each tracked from its group's creation to its
removal.

A group the runtime makes (runc, for BuildKit: /buildkit/<id> in the engine's cgroup
namespace) is seen through inotify IN_CREATE on its parent, and gets the default build
limits (and memory.oom.group) at once, before its first process has run more than a few
milliseconds. When its ``cgroup.events`` first shows a process, its processes get
builds.oom_score_adj (they inherited the engine's lowered one); once the first process
is no longer the runtime's own init, its command is known and a matching rule's limits
are written. When ``cgroup.events`` says ``populated 0``, its accounting is read and
reported as one build_finished record; the runtime removes the group right after (runc
does, within milliseconds), so a build whose group went first is reported from its last
periodic sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from ccgroupd.daemon.builds.account import Usage, read_usage_in
from ccgroupd.daemon.builds.build import Build
from ccgroupd.daemon.builds.stats import BuildStats
from ccgroupd.daemon.builds.throttling import BuildThrottling
from ccgroupd.daemon.builds.treewatch import DIRECTORY, TreeWatch
from ccgroupd.daemon.builds.writer import LimitWriter
from ccgroupd.engine.supervisor import ENGINE_MAX_DEPTH
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import CGROUP_EVENTS, MEMORY_OOM_GROUP, PIDS_EVENTS
from ccgroupd.kernel.inotify import Inotify, InotifyEvent
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.builds import BuildGroups, matching_rule, rule_limits
from ccgroupd.limits.model import Limits

if TYPE_CHECKING:
    from ccgroupd.config import BuildsSection, MonitorSection

log = structlog.get_logger("ccgroupd")

# The runtime's own init runs in the group before it execs the build's command.
RUNTIME_NAMES = frozenset({"runc", "crun", "youki"})
# Until it execs, its first process is looked at again: soon, then less and less often
# (runc's init can take a while under load, and every look costs the daemon CPU), for
# about 3.5 s in all; a build still in its runtime's init after that keeps the defaults.
COMMAND_CHECK_FIRST_S = 0.002
COMMAND_CHECK_MAX_S = 0.1
COMMAND_CHECK_LIMIT = 40
# Finished builds remembered for the kernel log's records that name a removed group.
RECENT_BUILDS_KEPT = 512
_FRESH_GROUP = Limits().cgroup_values()  # what a new group holds: nothing to write


class BuildTracker:
    def __init__(self, cgroupfs: Cgroupfs, procfs: Procfs, engine_group: str,
                 settings: BuildsSection, monitor: MonitorSection, *,
                 on_pids_event: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cgroupfs = cgroupfs
        self._procfs = procfs
        self.engine_group = engine_group.strip("/")
        self._engine_path = cgroupfs.path(self.engine_group)
        self._settings = settings
        self._groups = BuildGroups(settings.groups)
        self.defaults = settings.limits
        self._clock = clock
        self.builds: dict[str, Build] = {}
        self._recent: OrderedDict[str, Build] = OrderedDict()  # finished, by group
        self.stats = BuildStats()
        self._watch = TreeWatch(self._engine_path)
        self._throttling = BuildThrottling(monitor)
        # Before Linux 6.11 a refused fork is counted in the build's own pids.events, which
        # the monitor sums over the subtree: tell it at once, while the group still exists.
        self._on_pids_event = on_pids_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: asyncio.Future[None] | None = None
        self._writer = LimitWriter(self.stats)

    # -- running ----------------------------------------------------------------

    async def run(self) -> None:
        """Track until cancelled; raises what broke the tracking."""
        self._loop = asyncio.get_running_loop()
        self._failure = self._loop.create_future()
        inotify = self._watch.open()
        self._loop.add_reader(inotify.fileno(), self._on_readable, inotify)
        try:
            self.rescan()
            await self._failure
        finally:
            self._loop.remove_reader(inotify.fileno())
            self._watch.close()
            self._loop = self._failure = None

    def _on_readable(self, inotify: Inotify) -> None:
        try:
            self.handle(inotify.read_events())
        except Exception as exc:  # a reader callback cannot raise into run(): hand it over
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(exc)

    def handle(self, events: list[InotifyEvent]) -> None:
        rescan = False
        for event in events:
            if event.name == DIRECTORY:
                parent = self._watch.relative(event.path)
                if event.created is not None:
                    self._appeared(_join(parent, event.created))
                elif event.deleted is not None:
                    self._disappeared(_join(parent, event.deleted))
                else:  # the queue overflowed: what was lost is unknown
                    rescan = True
            elif event.name == CGROUP_EVENTS:
                self._populated_changed(self._watch.group_of_file(event.path))
            elif event.name == PIDS_EVENTS:
                self._pids_changed(self._watch.group_of_file(event.path))
        if rescan:
            self.rescan()

    def rescan(self) -> None:
        """Walk the engine's subtree: watch where builds may appear, adopt the builds there,
        forget those gone. At the start, after an inotify overflow, after the engine group
        came back."""
        self._watch.forget_directories()
        self._watch.watch_directory("")
        try:
            found = self._cgroupfs.descendants(self.engine_group, max_depth=ENGINE_MAX_DEPTH)
        except CgroupError:
            found = []
        present = set()
        for path in found:
            group = path[len(self.engine_group):].strip("/")
            if self._groups.is_build(group):
                present.add(group)
                if group not in self.builds:
                    self._appeared(group)
            elif self._groups.may_hold_builds(group):
                self._watch.watch_directory(group)
        for group in [group for group in self.builds if group not in present]:
            self._disappeared(group)

    # -- a build's life ---------------------------------------------------------

    def _appeared(self, group: str) -> None:
        if self._groups.is_build(group):
            if group in self.builds:
                return
            build = Build(group, self._clock(), self.defaults)
            self.builds[group] = build
            self.stats.started()
            self._write_limits(build, self.defaults, previous=_FRESH_GROUP)
            if self._settings.oom_group:
                self._writer.write(self._watch.directory(build.group), MEMORY_OOM_GROUP, "1")
            self._watch.watch_build(group)
            self._populated_changed(group)  # it may hold processes already
        elif self._groups.may_hold_builds(group):
            # Watch first, then look: a child made in between is seen either way.
            self._watch.watch_directory(group)
            with contextlib.suppress(CgroupError):
                for child in self._cgroupfs.children(self._group_path(group)):
                    self._appeared(_join(group, child.rsplit("/", 1)[-1]))

    def _disappeared(self, group: str) -> None:
        if self._groups.is_build(group):  # the common case, by the thousand: no directory
            if group in self.builds:       # watched, and most already finished
                self._finish(self.builds[group], final=None)
            return
        gone = [g for g in self.builds if g.startswith(group + "/")] if group else [*self.builds]
        for build_group in gone:
            self._finish(self.builds[build_group], final=None)
        self._watch.forget_directories(under=group)

    def _populated_changed(self, group: str) -> None:
        build = self.builds.get(group)
        if build is None:
            return
        directory = self._watch.directory(group)
        # A running build's change is its end: read what it used first, then whether it
        # ended, before the runtime removes the group (runc does within milliseconds).
        usage = read_usage_in(directory) if build.populated_seen else None
        try:
            populated = directory.read_flat_keyed(CGROUP_EVENTS).get("populated", 0) == 1
        except CgroupError:
            if usage is not None:  # removed just after its figures were read: they are final
                self._finish(build, final=usage)
            return  # else the directory's IN_DELETE finishes it from its sample
        if populated and not build.populated_seen:
            build.populated_seen = True
            self._identify(build)
        elif not populated and build.populated_seen:
            self._finish(build, final=usage)

    def _pids_changed(self, group: str) -> None:
        # Only passed on: in a fork storm this comes every 10 ms, and the poll samples.
        if group in self.builds:
            self._on_pids_event()

    def _identify(self, build: Build) -> None:
        """Reset the build's oom_score_adj; once its first process runs the build's own
        command, apply the rule it matches."""
        if self.builds.get(build.group) is not build:
            return  # finished meanwhile
        try:
            pids = self._watch.directory(build.group).procs()
        except CgroupError:
            return
        if not pids:
            return
        for pid in pids:
            if pid not in build.reset_pids:
                build.reset_pids.add(pid)
                self._procfs.set_oom_score_adj(pid, self._settings.oom_score_adj)
        argv = self._procfs.cmdline(pids[0])
        if argv is None or in_runtime_init(argv):
            delay_s = min(COMMAND_CHECK_FIRST_S * 2 ** build.command_checks, COMMAND_CHECK_MAX_S)
            build.command_checks += 1
            if self._loop is not None and build.command_checks < COMMAND_CHECK_LIMIT:
                self._loop.call_later(delay_s, self._identify, build)
            return
        build.command = argv
        rule = matching_rule(self._settings.rules, argv)
        if rule is not None:
            limits = rule_limits(self.defaults, self._settings.rules[rule])
            self._write_limits(build, limits, previous=build.limits.cgroup_values())

    def _finish(self, build: Build, *, final: Usage | None) -> None:
        del self.builds[build.group]
        self._throttling.forget(build.group)
        self._watch.forget_build(build.group)
        fields = build.finished_record(final, self._clock(),
                                       str(self._engine_path / build.group))
        self.stats.finished(fields)
        log.info("build_finished", **fields)
        self._recent[build.group] = build
        while len(self._recent) > RECENT_BUILDS_KEPT:
            self._recent.popitem(last=False)

    # -- what others ask --------------------------------------------------------

    def poll(self) -> None:
        """Read every running build's usage (the housekeeping timer's poll): the fallback
        accounting, the peak seen where the kernel has no memory.peak, and throttling."""
        if self._watch.engine_replaced():
            self.rescan()
        for build in list(self.builds.values()):
            usage = read_usage_in(self._watch.directory(build.group))
            if usage is not None:
                build.sample = usage
                build.peak_seen_bytes = max(build.peak_seen_bytes,
                                            usage.memory_current_bytes or 0)
        self._throttling.sample(self.builds.values(), self._clock(),
                                lambda build: str(self._engine_path / build))

    def set_defaults(self, defaults: Limits, *, running: bool) -> None:
        """New default limits for builds that appear from now on, and with ``running`` for
        the running ones too (a build a rule matched keeps that rule's limits)."""
        self.defaults = defaults
        if not running:
            return
        for build in list(self.builds.values()):
            rule = None if build.command is None else matching_rule(self._settings.rules,
                                                                    build.command)
            limits = defaults if rule is None else rule_limits(defaults,
                                                               self._settings.rules[rule])
            self._write_limits(build, limits, previous=build.limits.cgroup_values())

    def reconfigure(self, settings: BuildsSection, defaults: Limits) -> None:
        """A reloaded [builds]: for the builds that appear from now on."""
        self._settings = settings
        self._groups = BuildGroups(settings.groups)
        self.defaults = defaults

    def build_of(self, kernel_path: str) -> tuple[str, str | None] | None:
        """The build (relative group, command line) that a path from the kernel's log is in,
        also after the build's group was removed; None outside every build."""
        prefix = "/" + self.engine_group
        if not (kernel_path == prefix or kernel_path.startswith(prefix + "/")):
            return None
        parts = kernel_path[len(prefix):].strip("/").split("/")
        for depth in range(len(parts), 0, -1):
            group = "/".join(parts[:depth])
            build = self.known(group)
            if build is not None or self._groups.is_build(group):
                return group, None if build is None else build.command_line()
        return None

    def known(self, group: str) -> Build | None:
        """A running build, or one that finished recently (records may come after its end)."""
        return self.builds.get(group) or self._recent.get(group)

    def note_oom_kill(self, group: str) -> None:
        if group in self.builds:
            self.builds[group].oom_kills_logged += 1
        self.stats.oom_killed()

    def note_pids_refused(self, group: str) -> None:
        if group in self.builds:
            self.builds[group].pids_refused_logged += 1

    def _write_limits(self, build: Build, limits: Limits, *, previous: dict[str, str]) -> None:
        build.limits = limits
        for attribute, value in limits.cgroup_values().items():
            if previous.get(attribute) != value:
                self._writer.write(self._watch.directory(build.group), attribute, value)

    def _group_path(self, group: str) -> str:
        return _join(self.engine_group, group)


def in_runtime_init(argv: list[str]) -> bool:
    """Whether a build's process is still the runtime's own init ("runc init": its
    stages, comm "runc:[0:PARENT]" to "runc:[2:INIT]", keep that command line), not yet
    the build's command."""
    return argv[0].rsplit("/", 1)[-1] in RUNTIME_NAMES and "init" in argv[1:3]


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child
