"""What ``ccgroupctl`` may ask of a running daemon: ccgroupd.daemon.api.Controller, answered
by the parts that own each answer (the limit controller, the supervisor, the monitor)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.builds.defaults import BuildDefaults
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.builds.views import builds_reply, builds_summary
from ccgroupd.daemon.controller import LimitController
from ccgroupd.daemon.status import CpuMeter, engine_status, read_usage, status_document
from ccgroupd.engine.supervisor import Supervisor
from ccgroupd.kernel.cgroupfs import Cgroupfs

log = structlog.get_logger("ccgroupd")


class Counted(Protocol):
    def counters(self) -> dict[str, int]: ...


class Commands:
    """Implements ccgroupd.daemon.api.Controller for the control socket."""

    def __init__(self, cgroupfs: Cgroupfs, group: str, controller: LimitController,
                 supervisor: Supervisor, *, monitor: Callable[[], Counted | None],
                 reload: Callable[[Peer], Awaitable[None]],
                 limits_changed: Callable[[], None], cpu_meter: CpuMeter,
                 builds: Callable[[], BuildTracker | None], build_defaults: BuildDefaults,
                 clock: Callable[[], float], origins: Callable[[], Mapping[str, str]],
                 restart: Callable[[], None]) -> None:
        self._cgroupfs = cgroupfs
        self._group = group
        self._controller = controller
        self.supervisor = supervisor  # replaced when a failed engine is started again
        self._restart = restart
        self._monitor = monitor
        self._reload = reload
        self._limits_changed = limits_changed
        self._cpu_meter = cpu_meter
        self._builds = builds
        self._build_defaults = build_defaults
        self._clock = clock
        self._origins = origins

    def status(self) -> dict[str, Any]:
        monitor = self._monitor()
        return {**status_document(
            cgroup_path=self._controller.cgroup_path, layers=self._controller.layers,
            usage=read_usage(self._cgroupfs, self._group, self._controller.limits,
                             self._cpu_meter),
            events=monitor.counters() if monitor is not None else {},
            engine=engine_status(self.supervisor), origins=self._origins(),
            state_file=str(self._controller.state_file)),
            "builds": builds_summary(self._builds(), self._cgroupfs, self._group,
                                     self._build_defaults.effective())}

    def builds(self) -> dict[str, Any]:
        return builds_reply(self._builds(), self._cgroupfs, self._group,
                            self._controller.limits, self._clock())

    async def set_limits(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                         peer: Peer, builds: Mapping[str, object] | None = None,
                         running: bool = False) -> dict[str, Any]:
        if changes:
            await self._controller.set(changes, runtime=runtime, force=force, peer=peer)
        if builds:
            self._build_defaults.set(builds, runtime=runtime, running=running,
                                     tracker=self._builds(), peer=peer)
        return self._reply_in_force()

    async def reset(self, peer: Peer, *, force: bool = False) -> dict[str, Any]:
        await self._controller.reset(peer, force=force)
        return self._reply_in_force()

    def _reply_in_force(self) -> dict[str, Any]:
        self._limits_changed()
        # What the kernel holds now, as read back after the writes, not what was asked.
        return {**self.status(), "in_force": dict(self._controller.in_force)}

    async def reload(self, peer: Peer) -> dict[str, Any]:
        await self._reload(peer)
        return self.status()

    async def restart_engine(self, peer: Peer) -> dict[str, Any]:
        log.info("engine_restarting", cgroup=self._controller.cgroup_path, delay_s=0,
                 uid=peer.uid, pid=peer.pid, restarts=self.supervisor.restarts + 1)
        self._restart()
        return self.status()
