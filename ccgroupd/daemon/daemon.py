"""`ccgroupd run`: the engines' cgroups, their limits, the engines, and systemd, in one
event loop.

Start-up, in this order (READY=1 only at the end):
1. What every engine needs (its CPUs on this host, its launch mode), then where the
   groups go and taking the layout over (ccgroupd.daemon.layout); with several engines
   the budget's limits go on their parent group (ccgroupd.daemon.budget).
2. The control socket and, if ``metrics.enabled``, the Prometheus endpoint start
   serving: a ``ccgroupctl`` call in the moment before READY=1 is answered.
3. Each engine, one after the other (ccgroupd.daemon.unit): its group is claimed, its
   limits written, verified and logged, its monitor starts, then the engine itself
   through the exec shim, as its ``mode`` says. READY=1 comes once every engine is up
   (its readiness probe passed) or has given up, provided one is up.

Then the daemon serves: one housekeeping timer (ccgroupd.daemon.housekeeping: watchdog
ping, STATUS=, the monitors' cpu.stat polls, drift checks) and signals: SIGTERM/SIGINT
stop every engine gracefully (a second one skips the grace period), SIGHUP reloads the
config: engines are added, removed and changed, and only those whose launch changed
restart.

An engine that fails (too many restarts) is given up alone. The daemon exits 0 after a
requested stop, EXIT_ENGINE_FAILED when every engine has failed, so that systemd marks
the unit failed without restarting the daemon into the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from ccgroupd import __version__
from ccgroupd.config import Config, LoadedConfig, read_config
from ccgroupd.daemon.api import ApiServer, Peer
from ccgroupd.daemon.budget import BudgetGroup
from ccgroupd.daemon.engines import EngineCommands
from ccgroupd.daemon.housekeeping import housekeep
from ccgroupd.daemon.layout import Layout, plan_layout, set_up_layout
from ccgroupd.daemon.status import SystemdStatus, status_line
from ccgroupd.daemon.unit import EngineUnit, Host, MonitorFactory, ViolationMonitor
from ccgroupd.engine.launch import check_launch
from ccgroupd.engine.process import AsyncioSpawner, CommandRunner, ProcessSpawner
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.errors import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    CcgroupdError,
    ConfigError,
)
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.model import Limits, host_cpu_count
from ccgroupd.limits.store import StateStore
from ccgroupd.notify import Notifier

log = structlog.get_logger("ccgroupd")


def _default_monitor(cgroupfs: Cgroupfs, procfs: Procfs, group: str,
                     config: Config, attribution: Any) -> ViolationMonitor:
    from ccgroupd.daemon.monitor.core import Monitor

    return Monitor(cgroupfs, procfs, group, config.monitor, attribution=attribution)


class Daemon:
    """Start-up, signals, reload and background tasks, for every engine. Each engine's
    parts belong to its EngineUnit, the budget to the BudgetGroup, and the control
    socket's requests to EngineCommands."""

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
                 clock: Callable[[], float] = time.monotonic,
                 devices: BlockDevices | None = None) -> None:
        self.config = config
        self._config_path = config_path
        self.cgroupfs = cgroupfs or Cgroupfs(config.daemon.cgroup_root)
        self.procfs = procfs or Procfs(config.daemon.proc_root)
        self.notifier = notifier or Notifier.from_environ(environ)
        # Tests replace the single engine's store; named engines keep theirs per engine.
        self._state_store = state_store
        self._serve_api = serve_api
        self._load = load
        self.origins = origins or {}  # "limits.memory" -> the file or variable that set it
        self._host = Host(self.cgroupfs, self.procfs, spawner or AsyncioSpawner(),
                          runner or AsyncioSpawner(), environ, sleep, clock, self._spawn_task,
                          monitor_factory, devices or BlockDevices(config.daemon.sys_root))
        self.layout: Layout | None = None
        self._layouts: dict[str, str] = {}  # engine name -> its group
        self._removing: set[EngineUnit] = set()  # removed by a reload, still stopping
        self.engines: dict[str, EngineUnit] = {}
        self.budget: BudgetGroup | None = None
        self.commands = EngineCommands(self.engines, lambda: self.budget,
                                       reload=self._reload, clock=clock)
        self._stop_signals = 0
        self._engines_ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._services = contextlib.AsyncExitStack()
        self._background_error: BaseException | None = None
        self._status = SystemdStatus(self.notifier, self.status_line)

    def engine(self, name: str | None = None) -> EngineUnit:
        """The engine called ``name``; the only one when None. Raises EngineNameError."""
        return self.commands.unit(name)

    # -- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        started = False
        try:
            engine_configs = await self._start_up()
            await self._start_services()
            started = True
            for name, config in engine_configs.items():
                if self._stop_signals:
                    return EXIT_OK
                await self._add_engine(name, config, self._layouts[name])
            if not await self._until_ready():
                return EXIT_OK if self._stop_signals else EXIT_ENGINE_FAILED
            self.notifier.ready(self.status_line())
            log.info("daemon_started", version=__version__,
                     cgroup=main_path(self.engines, self.budget),
                     delegated=self.layout is not None and self.layout.delegated)
            self._spawn_task(housekeep(
                self.config.monitor, notifier=self.notifier,
                parts=lambda: [*self.engines.values(), *([self.budget] if self.budget else [])],
                update_status=self._status.update, sleep=self._host.sleep))
            await self._engines_ended.wait()
            if self._background_error is not None:
                raise self._background_error
            states = [unit.state for unit in self.engines.values()]
            if EngineState.FAILED in states and not self._stop_signals:
                self.notifier.status(self.status_line())
                return EXIT_ENGINE_FAILED
            return EXIT_OK
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self._shut_down(started)

    async def _start_up(self) -> dict[str, Config]:
        """Check what every engine needs, set up the layout and the budget; returns each
        engine's configuration, to start."""
        # The config file's own limits: a host that cannot give them keeps no group. A
        # persisted change that no longer fits (an edited config, a smaller host) is set
        # aside by the controller instead of stopping the daemon.
        engine_configs = self.config.engine_configs()
        for config in engine_configs.values():
            config.limits.check_host(host_cpu_count())
            # Before anything is created: a refused host keeps no group with limits.
            await check_launch(config.engine, self._host.runner)
        self.config.budget.check_host(host_cpu_count())
        own = self.procfs.cgroup_of("self")
        layouts = {name: plan_layout(self.cgroupfs, own, config.cgroup.name)
                   for name, config in engine_configs.items()}
        self._layouts = {name: layout.engine for name, layout in layouts.items()}
        self.layout = next(iter(layouts.values()))
        set_up_layout(self.cgroupfs, self.layout)
        if self.config.engines:
            self.budget = BudgetGroup(self.cgroupfs, self.layout.engine.rpartition("/")[0],
                                      self.config.daemon.state_dir, self.config.budget,
                                      spawn=self._spawn_task)
            self.budget.controller.start()
        return engine_configs

    async def _add_engine(self, name: str, config: Config, group: str) -> None:
        unit = EngineUnit(
            name, config, self._host, group=group,
            state_store=(self._state_store if self._state_store is not None
                         and not self.config.engines else StateStore(config.daemon.state_dir)),
            origins=self._origins_of(name), reload=self._reload,
            limits_check=self.commands.check_limits, on_change=self._status.update,
            on_ended=self._on_engine_ended)
        self.engines[name] = unit
        await unit.start(config.cgroup.leftover)

    def _origins_of(self, name: str) -> Mapping[str, str]:
        return engine_origins(self.config, self.origins, name)

    def _on_engine_ended(self, _task: asyncio.Task[EngineState]) -> None:
        if all(unit.run_task is not None and unit.run_task.done()
               for unit in self.engines.values()):
            self._engines_ended.set()

    async def _until_ready(self) -> bool:
        """Wait until each engine is up or has ended; False if none is up."""
        for unit in self.engines.values():
            await unit.until_ready()
        return any(unit.up.is_set() for unit in self.engines.values())

    async def _start_services(self) -> None:
        """The control socket and the metrics endpoint, serving once this returns; closed
        again by _shut_down."""
        if self._serve_api:
            server = ApiServer.from_config(self.commands, self.config.api, self.procfs)
            await server.start()
            self._services.push_async_callback(server.close)
        if self.config.metrics.enabled:
            close = _serve_metrics(self.cgroupfs, self.engines, lambda: self.budget,
                                   self.config)
            self._services.push_async_callback(asyncio.to_thread, close)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A dead monitor or drift check would leave the daemon up but blind: stop the
        # engines and fail loudly, so systemd restarts us.
        if self._background_error is None:
            self._background_error = task.exception()
        for unit in self.engines.values():
            unit.request_stop()
        self._engines_ended.set()

    async def _shut_down(self, started: bool) -> None:
        units = [*self.engines.values(), *self._removing]
        for unit in units:
            # Only an error in the daemon itself gets here with an engine still up.
            unit.request_stop()
        await asyncio.gather(*(unit.run_task for unit in units if unit.run_task is not None),
                             return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._services.aclose()
        for unit in units:
            await unit.close(remove_group=started)
        if self.budget is not None and started:
            self.budget.remove()

    # -- signals -------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signals += 1
        if not self.engines:
            return  # still starting up: serve() checks _stop_signals before the engines start
        if self._stop_signals == 1:
            name = signal.Signals(signum).name
            log.info("daemon_stopping", reason=name, cgroup=main_path(self.engines, self.budget))
            self.notifier.stopping(f"stopping ({name}): {engine_states(self.engines)}")
        for unit in self.engines.values():
            unit.request_stop(force=self._stop_signals > 1)

    def _on_reload_signal(self) -> None:
        if self.engines and not self._stop_signals:
            self._spawn_task(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(CcgroupdError):  # logged as config_reload_failed
            await self._reload(peer=None)

    # -- reload --------------------------------------------------------------------------

    async def _reload(self, peer: Peer | None) -> None:
        """Re-read the config: engines are added, removed and changed, and only those whose
        launch changed restart. Everything is checked before anything changes."""
        self.notifier.reloading()
        try:
            loaded = self._load(self._config_path)
            config = loaded.config
            engine_configs = reloaded_engines(self.config, config, list(self.engines))
            checked = {name: unit.check_reload(engine_configs[name])
                       for name, unit in self.engines.items() if name in engine_configs}
            plan = contextlib.ExitStack()
            if self.budget is not None:
                after = {name: (checked[name].limits if name in checked else new.limits)
                         for name, new in engine_configs.items()}
                plan.enter_context(self.commands.planned(
                    after, self.budget.check_reload(config.budget)))
        except CcgroupdError as error:
            log.error("config_reload_failed", error=str(error),  # noqa: TRY400
                      file=str(self._config_path) if self._config_path else None)
            self.notifier.ready(self.status_line())
            raise
        # cgroup, api, metrics and daemon settings take effect at the next start.
        self.config, self.origins = config, loaded.origins
        with plan:
            if self.budget is not None:
                await self.budget.reload(config.budget, peer)
            for name in [name for name in self.engines if name not in engine_configs]:
                unit = self.engines.pop(name)
                self._removing.add(unit)
                self._spawn_task(_remove_engine(unit, self._removing))
            for name, unit in self.engines.items():
                await unit.reload(engine_configs[name], checked[name], peer,
                                  self._origins_of(name))
            for name, new in engine_configs.items():
                if name not in self.engines:
                    # Beside the others, whatever cgroup.parent says now (read at start only).
                    assert self.budget is not None
                    await self._add_engine(name, new, f"{self.budget.group}/{name}")
        self.notifier.ready(self.status_line())

    # -- systemd status ------------------------------------------------------------------

    def status_line(self) -> str:
        return daemon_status_line(self.engines, self.budget)


async def _remove_engine(unit: EngineUnit, removing: set[EngineUnit]) -> None:
    """An engine a reload removed: stopped gracefully, its group removed. It stays in
    ``removing`` until then, so that a stop of the daemon meanwhile waits for it too."""
    unit.request_stop()
    if unit.run_task is not None:
        await asyncio.gather(unit.run_task, return_exceptions=True)
    await unit.close(remove_group=True)
    removing.discard(unit)


def reloaded_engines(running: Config, reloaded: Config, names: list[str]) -> dict[str, Config]:
    """Each engine's configuration after a reload from ``running`` to ``reloaded`` (whose
    engines run as ``names``); raises CcgroupdError for what a reload cannot do."""
    if bool(reloaded.engines) != bool(running.engines):
        raise ConfigError("switching between the single [engine] and [engines.NAME] "
                          "tables moves every engine's group: restart ccgroupd")
    engine_configs = reloaded.engine_configs()
    if not reloaded.engines:
        # The single engine keeps its name (its group's, read at start only).
        engine_configs = dict(zip(names, engine_configs.values(), strict=True))
    for new in engine_configs.values():
        new.limits.check_host(host_cpu_count())
    return engine_configs


def daemon_status_line(engines: Mapping[str, EngineUnit], budget: BudgetGroup | None) -> str:
    """systemd's STATUS=: the one engine's limits and state; with several, each one's."""
    if budget is None and len(engines) == 1:
        unit = next(iter(engines.values()))
        return status_line(unit.controller.limits, unit.supervisor,
                           unit.monitor.last_violation() if unit.monitor else None)
    return status_line(budget.controller.limits if budget is not None else Limits(), None, None,
                       engines=[(name, unit.supervisor) for name, unit in engines.items()])


def main_path(engines: Mapping[str, EngineUnit], budget: BudgetGroup | None) -> str:
    """The group the daemon's own records name: the budget's, or the one engine's."""
    if budget is not None:
        return budget.controller.cgroup_path
    return next(iter(engines.values())).path if engines else ""


def engine_states(engines: Mapping[str, EngineUnit]) -> str:
    return ", ".join(f"engine {name} {unit.state.value if unit.state else 'not started'}"
                     for name, unit in engines.items())


def engine_origins(config: Config, origins: Mapping[str, str], name: str) -> Mapping[str, str]:
    """Which file set each of the engine's keys: a named engine's are its table's."""
    if not config.engines:
        return origins
    table = origins.get(f"engines.{name}")
    return {f"limits.{key}": table for key in config.engines[name].limits.given()
            if table is not None}


def run_daemon(config_path: Path | None) -> int:
    loaded = read_config(config_path)
    from ccgroupd.daemon.logsetup import configure_logging

    configure_logging(loaded.config.daemon.log_format)
    return asyncio.run(Daemon(loaded.config, config_path, origins=loaded.origins).serve())


def _serve_metrics(cgroupfs: Cgroupfs, engines: Mapping[str, EngineUnit],
                   budget: Callable[[], BudgetGroup | None], config: Config) -> Callable[[], None]:
    """Start the metrics endpoint; returns what stops it."""
    # Imported here: prometheus_client is only worth loading when metrics are on.
    from ccgroupd.daemon.metrics import MetricsServer
    from ccgroupd.daemon.metrics_engines import BuildsCollector, EnginesCollector, EngineSource

    def sources() -> list[EngineSource]:
        # Read on each scrape (a thread): a reload adds and removes engines.
        return [EngineSource(unit.name, unit.group, unit.current_supervisor, unit.tracker)
                for unit in list(engines.values())]

    def budget_group() -> str | None:
        group = budget()
        return group.group if group is not None else None

    metrics = MetricsServer.from_config(
        EnginesCollector(cgroupfs, sources, budget_group=budget_group), config.metrics,
        more=[BuildsCollector(sources)])
    metrics.start()
    return metrics.close
