"""`ccgroupd run`: the engine's cgroup, its limits, the engine, and systemd, in one event loop.

Start-up, in this order (READY=1 only at the end):
1. Where the engine group goes, and taking it over (ccgroupd.daemon.layout).
2. The limits (config <- persisted changes <- runtime changes) are written, verified,
   and logged as ``limits_applied`` (ccgroupd.daemon.controller).
3. The violation monitor, the control socket and, if ``metrics.enabled``, the
   Prometheus endpoint start serving: an OOM kill or a ``ccgroupctl`` call in the
   moment before READY=1 is not lost.
4. The engine is started through the exec shim, inside the group, as ``[engine] mode``
   says (ccgroupd.engine.launch; what would make every start fail, such as docker's
   systemd cgroup driver, is refused before anything is created). With a readiness
   probe, READY=1 waits for it.

Then the daemon serves: one housekeeping timer (ccgroupd.daemon.housekeeping: watchdog
ping, STATUS=, the monitor's cpu.stat poll, drift checks) and signals: SIGTERM/SIGINT
stop the engine gracefully (a second one skips the grace period), SIGHUP reloads the
config and re-applies the limits without restarting the engine unless what it runs
changed.

The daemon exits 0 after a requested stop, EXIT_ENGINE_FAILED when the engine
failed (too many restarts) so that systemd marks the unit failed without
restarting the daemon into the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from ccgroupd import __version__
from ccgroupd.config import Config, LoadedConfig, read_config
from ccgroupd.daemon.api import ApiServer, Peer
from ccgroupd.daemon.builds.attribution import KernelLogAttribution
from ccgroupd.daemon.builds.service import BuildServices
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.commands import Commands
from ccgroupd.daemon.controller import LimitController
from ccgroupd.daemon.housekeeping import housekeep
from ccgroupd.daemon.layout import Layout, take_engine_group
from ccgroupd.daemon.status import (
    CpuMeter,
    SystemdStatus,
    status_line,
)
from ccgroupd.engine.launch import check_launch, engine_launch, restart_policy
from ccgroupd.engine.process import AsyncioSpawner, CommandRunner, ProcessSpawner
from ccgroupd.engine.supervisor import CgroupEngineGroup, EngineState, Launch, Supervisor
from ccgroupd.errors import EXIT_ENGINE_FAILED, EXIT_OK, CcgroupdError, CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.model import host_cpu_count
from ccgroupd.limits.store import StateStore
from ccgroupd.notify import Notifier

log = structlog.get_logger("ccgroupd")


class ViolationMonitor(Protocol):
    """What the daemon needs of ccgroupd.daemon.monitor.core.Monitor."""

    async def run(self) -> None: ...

    def poll(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def last_violation(self) -> str | None: ...

    def recent_oom_kill(self) -> bool: ...

    def pids_event(self) -> None: ...


MonitorFactory = Callable[[Cgroupfs, Procfs, str, Config, KernelLogAttribution],
                          ViolationMonitor]


def _default_monitor(cgroupfs: Cgroupfs, procfs: Procfs, group: str,
                     config: Config, attribution: KernelLogAttribution) -> ViolationMonitor:
    from ccgroupd.daemon.monitor.core import Monitor

    return Monitor(cgroupfs, procfs, group, config.monitor, attribution=attribution)


class Daemon:
    """Start-up, signals and background tasks. Limits belong to the LimitController, the
    engine to the Supervisor, and the control socket's requests to Commands."""

    def __init__(self, config: Config, config_path: Path | None, *,
                 cgroupfs: Cgroupfs | None = None,
                 procfs: Procfs | None = None,
                 spawner: ProcessSpawner | None = None,
                 runner: CommandRunner | None = None,
                 notifier: Notifier | None = None,
                 state_store: StateStore | None = None,
                 monitor_factory: MonitorFactory | None = _default_monitor,
                 serve_api: bool = True,
                 origins: Mapping[str, str] | None = None,
                 load: Callable[[Path | None], LoadedConfig] = read_config,
                 environ: Mapping[str, str] = os.environ,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._config_path = config_path
        self.cgroupfs = cgroupfs or Cgroupfs(config.daemon.cgroup_root)
        self.procfs = procfs or Procfs(config.daemon.proc_root)
        self._spawner = spawner or AsyncioSpawner()
        self._runner = runner or AsyncioSpawner()
        self.notifier = notifier or Notifier.from_environ(environ)
        self._state_store = state_store or StateStore(config.daemon.state_dir)
        self._monitor_factory = monitor_factory
        self._serve_api = serve_api
        self._load = load
        self.origins = origins or {}  # "limits.memory" -> the file or variable that set it
        self._environ = environ
        self._sleep = sleep
        self._clock = clock
        self.layout: Layout | None = None
        self.controller: LimitController | None = None
        self.supervisor: Supervisor | None = None
        self.monitor: ViolationMonitor | None = None
        self.builds: BuildServices | None = None
        self._cpu_meter = CpuMeter(clock)
        self.commands: Commands | None = None
        self._stop_signals = 0
        self._engine_up = asyncio.Event()
        # The engine ended before it was ever up and the policy does not restart it.
        self._engine_gave_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._services = contextlib.AsyncExitStack()
        self._background_error: BaseException | None = None
        self._status = SystemdStatus(self.notifier, self.status_line)

    @property
    def engine_group(self) -> str:
        assert self.layout is not None, "engine group asked for before start-up"
        return self.layout.engine

    @property
    def engine_path(self) -> str:
        return str(self.cgroupfs.path(self.engine_group))

    # -- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        run: asyncio.Task[EngineState] | None = None
        try:
            supervisor = await self._start_up()
            if self._stop_signals:
                return EXIT_OK
            await self._start_services()
            run = asyncio.create_task(supervisor.run())
            up = asyncio.create_task(self._engine_up.wait())
            gave_up = asyncio.create_task(self._engine_gave_up.wait())
            await asyncio.wait({run, up, gave_up}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            gave_up.cancel()
            if self._engine_gave_up.is_set() and not run.done():
                # No READY=1 will ever come: fail the start instead of waiting for
                # systemd's TimeoutStartSec.
                log.error("engine_failed", cgroup=self.engine_path,
                          reason=(f"it ended before it was ready, and restart = "
                                  f"{self.config.engine.restart!r} does not start it again"))
                supervisor.request_stop()
                await run
                return EXIT_ENGINE_FAILED
            if not run.done():
                self.notifier.ready(self.status_line())
                log.info("daemon_started", version=__version__, cgroup=self.engine_path,
                         delegated=self.layout is not None and self.layout.delegated)
                assert self.controller is not None
                self._spawn_task(housekeep(
                    self.config.monitor, notifier=self.notifier, controller=self.controller,
                    polled=lambda: [part for part in (self.monitor, self.builds and
                                                      self.builds.tracker) if part],
                    update_status=self._status.update,
                    spawn=self._spawn_task, sleep=self._sleep))
            final = await run
            if self._background_error is not None:
                raise self._background_error
            if final is EngineState.FAILED:
                self.notifier.status(self.status_line())
                return EXIT_ENGINE_FAILED
            return EXIT_OK
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self._shut_down(run)

    async def _start_up(self) -> Supervisor:
        # The config file's own limits: a host that cannot give them keeps no group. A
        # persisted change that no longer fits (an edited config, a smaller host) is set
        # aside by the controller instead of stopping the daemon.
        self.config.limits.check_host(host_cpu_count())
        # Before anything is created: a refused host keeps no group with limits.
        await check_launch(self.config.engine, self._runner)
        self.layout = await take_engine_group(
            self.cgroupfs, self.procfs.cgroup_of("self"), self.config.cgroup.name,
            self.config.cgroup.leftover, self._sleep)
        self.controller = LimitController(self.cgroupfs, self.engine_group,
                                          self._state_store, self.config.limits)
        self.controller.start()
        self.supervisor = Supervisor(
            self._launch(self.config), restart_policy(self.config.engine), self._spawner,
            CgroupEngineGroup(self.cgroupfs, self.engine_group,
                              on_recreated=self.controller.reapply),
            probe_runner=self._runner, clock=self._clock, sleep=self._sleep,
            on_change=self._on_engine_state,
            oom_witness=lambda: self.monitor is not None and self.monitor.recent_oom_kill())
        return self.supervisor

    def _launch(self, config: Config) -> Launch:
        return engine_launch(config, self.engine_group, self._environ, self._runner)

    async def _start_services(self) -> None:
        """The monitor, the control socket and the metrics endpoint, serving once this
        returns; closed again by _shut_down."""
        assert self.controller is not None and self.supervisor is not None
        controller = self.controller
        self.builds = builds = BuildServices(self.config, lambda: controller.limits)
        self._services.callback(builds.close)
        if self._monitor_factory is not None:
            # Builds are tracked wherever violations are monitored: a record names the build.
            attribution = builds.track(
                self.cgroupfs, self.procfs, self.engine_group, self.config,
                monitor=lambda: self.monitor, clock=self._clock, spawn=self._spawn_task)
            self.monitor = self._monitor_factory(self.cgroupfs, self.procfs, self.engine_group,
                                                 self.config, attribution)
            self._spawn_task(self.monitor.run())
        self.commands = Commands(self.cgroupfs, self.engine_group, self.controller,
                                 self.supervisor, monitor=lambda: self.monitor,
                                 reload=self._reload, limits_changed=self._status.update,
                                 cpu_meter=self._cpu_meter, builds=lambda: builds.tracker,
                                 build_defaults=builds.defaults, clock=self._clock,
                                 origins=lambda: self.origins)
        if self._serve_api:
            server = ApiServer.from_config(self.commands, self.config.api, self.procfs)
            await server.start()
            self._services.push_async_callback(server.close)
        if self.config.metrics.enabled:
            close = _serve_metrics(self.cgroupfs, self.engine_group, lambda: self.supervisor,
                                   lambda: builds.tracker, self.config)
            self._services.push_async_callback(asyncio.to_thread, close)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A dead monitor or drift check would leave the daemon up but blind: stop the
        # engine and fail loudly, so systemd restarts us.
        if self._background_error is None:
            self._background_error = task.exception()
        if self.supervisor is not None:
            self.supervisor.request_stop()

    async def _shut_down(self, run: asyncio.Task[EngineState] | None) -> None:
        if run is not None and not run.done():
            # Only an error in the daemon itself gets here with the engine still up.
            assert self.supervisor is not None
            self.supervisor.request_stop()
            await run
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._services.aclose()
        if self.layout is not None and run is not None:
            # A group that cannot be removed (a process stuck in D state) is
            # left for the next start, whose leftover policy deals with it.
            with contextlib.suppress(CgroupError):
                self.cgroupfs.remove(self.engine_group)

    # -- signals and engine states ------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signals += 1
        if self.supervisor is None:
            return  # still starting up: serve() checks _stop_signals before the engine starts
        if self._stop_signals == 1:
            name = signal.Signals(signum).name
            log.info("daemon_stopping", reason=name, cgroup=self.engine_path)
            self.notifier.stopping(f"stopping ({name}): engine {self.supervisor.state.value}")
            self.supervisor.request_stop()
        else:
            self.supervisor.force_stop()

    def _on_reload_signal(self) -> None:
        if self.supervisor is not None and not self._stop_signals:
            self._spawn_task(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(CcgroupdError):  # logged as config_reload_failed
            await self._reload(peer=None)

    def _on_engine_state(self, state: EngineState) -> None:
        if state is EngineState.RUNNING:
            self._engine_up.set()
        elif (state is EngineState.EXITED and not self._engine_up.is_set()
              and self.supervisor is not None and not self.supervisor.request_pending):
            self._engine_gave_up.set()
        self._status.update()

    # -- reload and systemd's status line ------------------------------------------------

    async def _reload(self, peer: Peer | None) -> None:
        assert self.supervisor is not None and self.controller is not None
        self.notifier.reloading()
        try:
            loaded = self._load(self._config_path)
            config = loaded.config
            assert self.builds is not None
            build_layers = self.builds.checked_reload(
                config, self.controller.layers.with_config(config.limits).effective())
            await self.controller.reload(config.limits, peer)
        except CcgroupdError as error:
            log.error("config_reload_failed", error=str(error),  # noqa: TRY400
                      file=str(self._config_path) if self._config_path else None)
            self.notifier.ready(self.status_line())
            raise
        self.supervisor.reconfigure(self._launch(config), restart_policy(config.engine))
        self.builds.reloaded(config, build_layers)
        # cgroup, api and daemon settings take effect at the next start.
        self.config, self.origins = config, loaded.origins
        self.notifier.ready(self.status_line())

    # -- systemd status and watchdog -----------------------------------------------------

    def status_line(self) -> str:
        return status_line(self.controller.limits if self.controller is not None else None,
                           self.supervisor,
                           self.monitor.last_violation() if self.monitor is not None else None)


def run_daemon(config_path: Path | None) -> int:
    loaded = read_config(config_path)
    from ccgroupd.daemon.logsetup import configure_logging

    configure_logging(loaded.config.daemon.log_format)
    return asyncio.run(Daemon(loaded.config, config_path, origins=loaded.origins).serve())


def _serve_metrics(cgroupfs: Cgroupfs, group: str, supervisor: Callable[[], Supervisor | None],
                   tracker: Callable[[], BuildTracker | None],
                   config: Config) -> Callable[[], None]:
    """Start the metrics endpoint; returns what stops it."""
    # Imported here: prometheus_client is only worth loading when metrics are on.
    from ccgroupd.daemon.metrics import MetricsServer
    from ccgroupd.daemon.metrics_engines import BuildsCollector, EnginesCollector, EngineSource

    # The one engine, named after its group's last component ("dagger-engine").
    engines = [EngineSource(group.strip("/").rpartition("/")[2], group, supervisor, tracker)]
    metrics = MetricsServer.from_config(EnginesCollector(cgroupfs, lambda: engines),
                                        config.metrics, more=[BuildsCollector(lambda: engines)])
    metrics.start()
    return metrics.close
