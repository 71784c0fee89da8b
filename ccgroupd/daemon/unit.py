"""One engine and everything ccgroupd runs for it: its group and limits, the supervisor,
the violation monitor, the build services and the control socket's commands.

The daemon runs one unit per engine; each is started, reloaded and stopped on its own,
so that one engine that fails (too many restarts) leaves the others running. Everything
a unit logs carries its name (``engine``, journal field CCGROUPD_ENGINE): its tasks and
callbacks run in a context with the name bound, and the daemon binds it around every
call into the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from ccgroupd.config import Config
from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.builds.attribution import KernelLogAttribution
from ccgroupd.daemon.builds.service import BuildServices
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.commands import Commands
from ccgroupd.daemon.controller import LimitController
from ccgroupd.daemon.iolimits import IoLimits
from ccgroupd.daemon.layout import claim_engine_group
from ccgroupd.daemon.status import CpuMeter
from ccgroupd.engine.launch import engine_launch, restart_policy
from ccgroupd.engine.process import CommandRunner, ProcessSpawner
from ccgroupd.engine.supervisor import CgroupEngineGroup, EngineState, Launch, Supervisor
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits
from ccgroupd.limits.store import StateStore

log = structlog.get_logger("ccgroupd")


class ViolationMonitor(Protocol):
    """What a unit needs of ccgroupd.daemon.monitor.core.Monitor."""

    async def run(self) -> None: ...

    def poll(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def last_violation(self) -> str | None: ...

    def recent_oom_kill(self) -> bool: ...

    def pids_event(self) -> None: ...


MonitorFactory = Callable[[Cgroupfs, Procfs, str, Config, KernelLogAttribution],
                          ViolationMonitor]


@dataclass(frozen=True)
class Host:
    """What every unit shares: the kernel, process spawning, the clock, and the daemon's
    task spawner (a failed background task stops the daemon)."""

    cgroupfs: Cgroupfs
    procfs: Procfs
    spawner: ProcessSpawner
    runner: CommandRunner
    environ: Mapping[str, str]
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    monitor_factory: MonitorFactory | None
    devices: BlockDevices


@dataclass(frozen=True)
class Reload:
    """What check_reload found, for reload to apply."""

    limits: Limits  # the engine's limits after the reload
    build_layers: LimitLayers
    io_lines: Mapping[str, str]


class EngineUnit:
    """One engine's group, limits, supervisor, monitor, builds and commands."""

    def __init__(self, name: str, config: Config, host: Host, *, group: str,
                 state_store: StateStore, origins: Mapping[str, str],
                 reload: Callable[[Peer], Awaitable[None]],
                 limits_check: Callable[[str, Limits], None],
                 on_change: Callable[[], None],
                 on_ended: Callable[[asyncio.Task[EngineState]], None]) -> None:
        self.name = name
        self.config = config
        self.group = group
        self.origins = origins
        self._host = host
        self._state_store = state_store
        self._reload = reload
        self._limits_check = limits_check
        self._on_change = on_change
        self._on_ended = on_ended  # each run of the supervisor, when it returns
        self._context = contextvars.copy_context()
        self._context.run(structlog.contextvars.bind_contextvars, engine=name)
        self.controller = LimitController(host.cgroupfs, group, state_store, config.limits,
                                          check=lambda limits: limits_check(name, limits))
        self.io = IoLimits(host.cgroupfs, group, host.devices)
        self.supervisor: Supervisor | None = None
        self.monitor: ViolationMonitor | None = None
        self.builds: BuildServices | None = None
        self.commands: Commands | None = None
        self.run_task: asyncio.Task[EngineState] | None = None
        self.up = asyncio.Event()
        # The engine ended before it was ever up and the policy does not restart it.
        self.gave_up = asyncio.Event()
        self._cpu_meter = CpuMeter(host.clock)
        self._services = contextlib.AsyncExitStack()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> str:
        return str(self._host.cgroupfs.path(self.group))

    @contextlib.contextmanager
    def logging_as(self) -> Iterator[None]:
        """Log as this engine for the duration (the caller's own task or callback)."""
        with structlog.contextvars.bound_contextvars(engine=self.name):
            yield

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """A task of this engine: its records name the engine; close() cancels it."""
        task = self._context.copy().run(self._host.spawn, coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, leftover: str) -> None:
        """Claim the group, apply the limits, start the services and the engine."""
        with self.logging_as():
            host = self._host
            await claim_engine_group(host.cgroupfs, self.group, leftover, host.sleep)
            self.controller.start()
            io_max = self.config.engine.io_max
            self.io.apply(io_max, self.io.plan(io_max))
            self.supervisor = self._supervisor()
            self._start_services()
            self._start_engine()

    def _supervisor(self) -> Supervisor:
        host = self._host
        return Supervisor(
            self._launch(self.config), restart_policy(self.config.engine), host.spawner,
            CgroupEngineGroup(host.cgroupfs, self.group, on_recreated=self._reapply),
            probe_runner=host.runner, clock=host.clock, sleep=host.sleep,
            on_change=self._on_engine_state,
            oom_witness=lambda: self.monitor is not None and self.monitor.recent_oom_kill())

    def _reapply(self) -> None:
        self.controller.reapply()
        self.io.reapply()

    def _start_engine(self) -> None:
        assert self.supervisor is not None
        self.up.clear()
        self.gave_up.clear()
        self.run_task = self._context.copy().run(asyncio.create_task, self.supervisor.run())
        self.run_task.add_done_callback(self._on_ended)

    def _launch(self, config: Config) -> Launch:
        return engine_launch(config, self.group, self._host.environ, self._host.runner)

    def _start_services(self) -> None:
        host = self._host
        controller = self.controller
        self.builds = builds = BuildServices(self.config, lambda: controller.limits)
        self._services.callback(builds.close)
        if host.monitor_factory is not None:
            # Builds are tracked wherever violations are monitored: a record names the build.
            attribution = builds.track(
                host.cgroupfs, host.procfs, self.group, self.config,
                monitor=lambda: self.monitor, clock=host.clock, spawn=self.spawn)
            self.monitor = host.monitor_factory(host.cgroupfs, host.procfs, self.group,
                                                self.config, attribution)
            self.spawn(self.monitor.run())
        assert self.supervisor is not None
        self.commands = Commands(host.cgroupfs, self.group, controller, self.supervisor,
                                 monitor=lambda: self.monitor, reload=self._reload,
                                 limits_changed=self._on_change, cpu_meter=self._cpu_meter,
                                 builds=lambda: builds.tracker, build_defaults=builds.defaults,
                                 clock=host.clock, origins=lambda: self.origins,
                                 restart=self.restart)

    def restart(self) -> None:
        """restart-engine: a running engine is restarted, a failed one started again."""
        assert self.supervisor is not None
        if self.run_task is not None and self.run_task.done():
            self.supervisor = self._supervisor()
            assert self.commands is not None
            self.commands.supervisor = self.supervisor
            self._start_engine()
        else:
            self.supervisor.request_restart()

    def _on_engine_state(self, state: EngineState) -> None:
        if state is EngineState.RUNNING:
            self.up.set()
        elif (state is EngineState.EXITED and not self.up.is_set()
              and self.supervisor is not None and not self.supervisor.request_pending):
            self.gave_up.set()
        self._on_change()

    async def until_ready(self) -> None:
        """Wait until the engine is up or has ended; one that gave up is stopped, and
        logged: no READY=1 would ever come, so the start fails instead of waiting for
        systemd's TimeoutStartSec."""
        assert self.run_task is not None
        up = asyncio.ensure_future(self.up.wait())
        gave_up = asyncio.ensure_future(self.gave_up.wait())
        await asyncio.wait({self.run_task, up, gave_up}, return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        gave_up.cancel()
        if self.gave_up.is_set() and not self.run_task.done():
            with self.logging_as():
                log.error("engine_failed", cgroup=self.path,
                          reason=(f"it ended before it was ready, and restart = "
                                  f"{self.config.engine.restart!r} does not start it again"))
            self.request_stop()
            await self.run_task

    def request_stop(self, *, force: bool = False) -> None:
        if self.supervisor is not None:
            if force:
                self.supervisor.force_stop()
            else:
                self.supervisor.request_stop()

    async def close(self, *, remove_group: bool) -> None:
        """Once the engine has ended: cancel this engine's tasks, close its services and
        remove its group."""
        with self.logging_as():
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._services.aclose()
            if remove_group:
                # A group that cannot be removed (a process stuck in D state) is left for
                # the next start, whose leftover policy deals with it.
                with contextlib.suppress(CgroupError):
                    self._host.cgroupfs.remove(self.group)

    # -- reload ------------------------------------------------------------------------

    def check_reload(self, config: Config) -> Reload:
        """What a reload to ``config`` would need checked before anything changes: raises
        LimitsError if the engine's new limits do not fit this host or its [builds] do not
        fit them, IoDeviceError if an io_max path is on no disk. Whether they fit the
        budget and the other engines is the caller's to check, with everything reloaded."""
        assert self.builds is not None
        layers = self.controller.layers.with_config(config.limits)
        limits = self.controller.checked(layers, alone=True)  # the budget: by the caller
        return Reload(limits, self.builds.checked_reload(config, limits),
                      self.io.plan(config.engine.io_max))

    async def reload(self, config: Config, checked: Reload, peer: Peer | None,
                     origins: Mapping[str, str]) -> None:
        """Apply a reloaded config, checked with check_reload: the engine restarts only if
        what it runs changed."""
        with self.logging_as():
            await self.controller.reload(config.limits, peer)
            self.io.apply(config.engine.io_max, checked.io_lines)
            assert self.supervisor is not None and self.builds is not None
            changed = self.supervisor.reconfigure(self._launch(config),
                                                  restart_policy(config.engine))
            self.builds.reloaded(config, checked.build_layers)
            self.config, self.origins = config, origins
            if changed and self.run_task is not None and self.run_task.done():
                self.restart()  # a failed engine whose launch changed: try it again

    # -- what others read --------------------------------------------------------------

    def polled(self) -> list[Any]:
        """What the housekeeping tick polls: the monitor and the build tracker, once up."""
        tracker = self.builds.tracker if self.builds is not None else None
        return [part for part in (self.monitor, tracker) if part is not None]

    def current_supervisor(self) -> Supervisor | None:
        return self.supervisor

    def tracker(self) -> BuildTracker | None:
        return self.builds.tracker if self.builds is not None else None

    @property
    def state(self) -> EngineState | None:
        return self.supervisor.state if self.supervisor is not None else None
