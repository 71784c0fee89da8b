"""What the daemon runs for builds, put together: the build defaults (always, for the
control socket), and where violations are monitored the tracker and the kernel log's
attribution."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ccgroupd.daemon.builds.attribution import KernelLogAttribution
from ccgroupd.daemon.builds.defaults import BuildDefaults
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.kmsg import Kmsg, open_kmsg
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits
from ccgroupd.limits.store import BUILD_STATE_FILE_NAME, StateStore

if TYPE_CHECKING:
    from ccgroupd.config import Config

log = structlog.get_logger("ccgroupd")


class PidsWatcher(Protocol):
    def pids_event(self) -> None: ...


class BuildServices:
    def __init__(self, config: Config, engine_limits: Callable[[], Limits]) -> None:
        self.defaults = BuildDefaults(
            StateStore(config.daemon.state_dir, name=BUILD_STATE_FILE_NAME),
            config.builds.limits, config.builds.rules, engine_limits)
        self.tracker: BuildTracker | None = None
        self.attribution: KernelLogAttribution | None = None

    def track(self, cgroupfs: Cgroupfs, procfs: Procfs, engine_group: str, config: Config,
              *, monitor: Callable[[], PidsWatcher | None], clock: Callable[[], float],
              spawn: Callable[[Coroutine[Any, Any, None]], None]) -> KernelLogAttribution:
        """Start tracking builds (on the running loop); close() ends the kernel log's part.
        A build's pids.events change is passed on to the ``monitor``, which counts refusals."""

        def pids_event() -> None:
            watcher = monitor()
            if watcher is not None:
                watcher.pids_event()

        self.tracker = BuildTracker(cgroupfs, procfs, engine_group, config.builds,
                                    config.monitor, on_pids_event=pids_event, clock=clock)
        self.tracker.set_defaults(self.defaults.effective(), running=False)
        self.attribution = KernelLogAttribution(_open_kernel_log(), self.tracker)
        self.attribution.arm(asyncio.get_running_loop())
        spawn(self.tracker.run())
        return self.attribution

    def close(self) -> None:
        if self.attribution is not None:
            self.attribution.close()

    def checked_reload(self, config: Config, engine_limits: Limits) -> LimitLayers:
        """Raises LimitsError if the reloaded [builds] does not fit the engine's limits."""
        return self.defaults.checked_reload(config.builds.limits, config.builds.rules,
                                            engine_limits)

    def reloaded(self, config: Config, layers: LimitLayers) -> None:
        self.defaults.reloaded(layers, config.builds.rules)
        if self.tracker is not None:
            self.tracker.reconfigure(config.builds, self.defaults.effective())


def _open_kernel_log() -> Kmsg | None:
    try:
        return open_kmsg()
    except CgroupError as exc:
        log.warning("kernel_log_unavailable", file=str(exc.path), errno=exc.errno,
                    error=str(exc))
        return None
