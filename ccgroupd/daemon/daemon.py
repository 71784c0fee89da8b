"""`ccgroupd run`: the engine's cgroup, its limits, the engine, and systemd, in one event loop.

Start-up, in this order (READY=1 only at the end):
1. Where the engine group goes (:func:`plan_layout`). Under systemd with
   Delegate=yes the daemon moves itself into the leaf ``<unit>/supervisor``
   (the unit's group may hold no processes once controllers are enabled for
   its children), enables cpu, memory, pids (and io if offered) in the unit's
   ``cgroup.subtree_control`` and uses ``<unit>/<cgroup.name>``. Without
   systemd the group is ``<cgroup root>/<cgroup.name>``, with the controllers
   enabled top-down from the root. No file of a group systemd manages is
   written: only the delegated unit group's subtree_control and what is below.
2. A group left over from an earlier run (:func:`claim_engine_group`): its
   processes are killed (``cgroup.leftover = "kill"``, logged as
   ``cgroup_leftover_killed``) or the daemon refuses to start ("refuse").
3. The limits (config <- persisted changes <- runtime changes) are written,
   verified, and logged as ``limits_applied``.
4. The engine is started through the exec shim, inside the group, as
   ``[engine] mode`` says (ccgroupd.engine.launch: on the host, by Docker or by runc;
   what would make every start fail, such as docker's systemd cgroup driver, is
   refused before this). With a readiness probe, READY=1 waits for it.

Then the daemon serves: one housekeeping timer (:meth:`Daemon._housekeep`: watchdog
ping, STATUS=, the monitor's cpu.stat poll, drift checks), the violation monitor,
the control socket, the Prometheus endpoint if ``metrics.enabled``
(ccgroupd.daemon.metrics; its HTTP server runs in a thread of its own), and signals:
SIGTERM/SIGINT stop the engine gracefully (a second one skips the grace
period), SIGHUP reloads the config and re-applies the limits without restarting
the engine unless its command, environment or working directory changed.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from ccgroupd import __version__
from ccgroupd.config import Config, load_config
from ccgroupd.daemon.api import ApiServer, Peer
from ccgroupd.daemon.status import (
    CpuMeter,
    log_limits_changed,
    read_memory_bytes,
    read_usage,
    refuse_memory_below_usage,
    status_document,
)
from ccgroupd.engine.launch import Launch, check_launch, engine_launch
from ccgroupd.engine.process import AsyncioSpawner, Spawner
from ccgroupd.engine.supervisor import (
    CgroupEngineGroup,
    EngineState,
    RestartPolicy,
    Supervisor,
    empty_group,
)
from ccgroupd.errors import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    CcgroupdError,
    CgroupError,
    ConfigError,
    HostUnsupportedError,
)
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.enforce import apply_limits, find_drift
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits, format_bytes, host_cpu_count
from ccgroupd.limits.store import StateStore
from ccgroupd.notify import Notifier

log = structlog.get_logger("ccgroupd")

REQUIRED_CONTROLLERS = frozenset({"cpu", "memory", "pids"})
OPTIONAL_CONTROLLERS = frozenset({"io"})
SUPERVISOR_LEAF = "supervisor"
ChangeScope = Literal["persistent", "runtime", "reset", "reload"]
LEFTOVER_KILL_TIMEOUT_S = 30.0


class LeftoverProcessesError(CcgroupdError):
    """The engine group holds processes and ``cgroup.leftover = "refuse"``."""


# -- where the engine group goes -----------------------------------------------


@dataclass(frozen=True)
class Layout:
    engine: str  # the engine group, relative to the cgroup root
    delegated: bool  # True: inside our systemd unit's delegated subtree
    unit: str | None = None  # the unit's group (delegated only)


def plan_layout(cgroupfs: Cgroupfs, own: str, name: str) -> Layout:
    """Decide where the engine group lives, for a daemon in the group ``own``; see the
    module docstring. Changes nothing."""
    unit = own.removesuffix(f"/{SUPERVISOR_LEAF}")
    if not unit.endswith(".service"):
        return Layout(engine=name.strip("/"), delegated=False)
    if not cgroupfs.delegated(unit):
        raise HostUnsupportedError(
            f"ccgroupd runs in the systemd unit group /{unit} without delegation; "
            "add Delegate=yes to its unit (see systemd/ccgroupd.service)")
    if name.startswith("/"):
        raise ConfigError(
            f"cgroup.name = {name!r}: an absolute group is outside this unit's delegated "
            f"subtree /{unit}; under systemd use a relative name such as 'dagger-engine'")
    return Layout(engine=f"{unit}/{name}", delegated=True, unit=unit)


def set_up_layout(cgroupfs: Cgroupfs, layout: Layout) -> None:
    """Join the supervisor leaf (delegated) and enable the controllers the engine group needs."""
    parent = layout.engine.rpartition("/")[0]
    if layout.unit is not None:
        leaf = f"{layout.unit}/{SUPERVISOR_LEAF}"
        cgroupfs.create(leaf)
        cgroupfs.attach(leaf, 0)
        top = layout.unit
    else:
        top = ""
    wanted = REQUIRED_CONTROLLERS | (OPTIONAL_CONTROLLERS & cgroupfs.controllers(top))
    cgroupfs.enable_controllers(parent, wanted, top=top)


async def claim_engine_group(cgroupfs: Cgroupfs, group: str, leftover: str,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Create the engine group, or take over an existing one per the leftover policy."""
    if cgroupfs.create(group):
        return
    pids = cgroupfs.subtree_procs(group)
    if pids:
        path = cgroupfs.path(group)
        if leftover == "refuse":
            raise LeftoverProcessesError(
                f"{path} still holds {len(pids)} processes (pids {', '.join(map(str, pids[:10]))})"
                " from an earlier run or another tool, and cgroup.leftover = 'refuse'; stop them "
                "or set cgroup.leftover = 'kill'")
        try:
            await asyncio.wait_for(empty_group(CgroupEngineGroup(cgroupfs, group), sleep),
                                   LEFTOVER_KILL_TIMEOUT_S)
        except TimeoutError:
            raise LeftoverProcessesError(
                f"{path} still holds processes {LEFTOVER_KILL_TIMEOUT_S:g} s after cgroup.kill "
                "(stuck in the kernel?); not starting a new engine next to them") from None
        log.warning("cgroup_leftover_killed", cgroup=str(path), delta=len(pids))
    CgroupEngineGroup(cgroupfs, group).prepare()


# -- the monitor seam ------------------------------------------------------------


class ViolationMonitor(Protocol):
    """What the daemon needs of ccgroupd.daemon.monitor.core.Monitor (H-MONITOR)."""

    async def run(self) -> None: ...

    def poll(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def last_violation(self) -> str | None: ...


MonitorFactory = Callable[[Cgroupfs, Procfs, str, Config], ViolationMonitor]


def _default_monitor(cgroupfs: Cgroupfs, procfs: Procfs, group: str,
                     config: Config) -> ViolationMonitor:
    from ccgroupd.daemon.monitor.core import Monitor

    return Monitor(cgroupfs, procfs, group, config.monitor)


# -- the daemon --------------------------------------------------------------------


def restart_policy(config: Config) -> RestartPolicy:
    engine = config.engine
    return RestartPolicy(mode=engine.restart, initial_delay_s=engine.restart_initial_delay_s,
                         max_delay_s=engine.restart_max_delay_s, burst=engine.restart_burst,
                         window_s=engine.restart_window_s, stop_grace_s=engine.stop_grace_s)


class Daemon:
    """Implements ccgroupd.daemon.api.Controller for the control socket."""

    def __init__(self, config: Config, config_path: Path | None, *,
                 cgroupfs: Cgroupfs | None = None,
                 procfs: Procfs | None = None,
                 spawner: Spawner | None = None,
                 notifier: Notifier | None = None,
                 state_store: StateStore | None = None,
                 monitor_factory: MonitorFactory | None = _default_monitor,
                 serve_api: bool = True,
                 load: Callable[[Path | None], Config] = load_config,
                 environ: Mapping[str, str] = os.environ,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._config_path = config_path
        self.cgroupfs = cgroupfs or Cgroupfs(config.daemon.cgroup_root)
        self.procfs = procfs or Procfs(config.daemon.proc_root)
        self._spawner = spawner or AsyncioSpawner()
        self.notifier = notifier or Notifier.from_environ(environ)
        self._state_store = state_store or StateStore(config.daemon.state_dir)
        self._monitor_factory = monitor_factory
        self._serve_api = serve_api
        self._load = load
        self._environ = environ
        self._sleep = sleep
        self._clock = clock
        self.layers = LimitLayers(config.limits)
        self.limits: Limits = config.limits  # what is in force
        self._in_force: dict[str, str] = {}  # attribute -> value the kernel read back
        self.layout: Layout | None = None
        self.supervisor: Supervisor | None = None
        self.monitor: ViolationMonitor | None = None
        self._cpu_meter = CpuMeter(clock)
        self._lock = asyncio.Lock()  # one limits change (set, reset, reload, drift) at a time
        self._stop_signals = 0
        self._engine_up = asyncio.Event()
        # The engine ended before it was ever up and the policy does not restart it.
        self._engine_gave_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._background_error: BaseException | None = None
        self._last_status = ""

    # -- properties for status and logs -------------------------------------------

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
            await self._start_up()
            if self._stop_signals:
                return EXIT_OK
            assert self.supervisor is not None
            run = asyncio.create_task(self.supervisor.run())
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
                self.supervisor.request_stop()
                await run
                return EXIT_ENGINE_FAILED
            if not run.done():
                self.notifier.ready(self.status_line())
                log.info("daemon_started", version=__version__, cgroup=self.engine_path,
                         delegated=self.layout is not None and self.layout.delegated)
                self._start_background()
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

    async def _start_up(self) -> None:
        # With the config's limits as the base, a persisted change that no longer
        # combines with an edited config is set aside instead of stopping the daemon.
        self.layers = LimitLayers(self.config.limits, self._state_store.load(self.config.limits))
        limits = self.layers.effective()
        limits.check_host(host_cpu_count())
        # Before anything is created: a refused host keeps no group with limits.
        await check_launch(self.config.engine, self._spawner)
        self.layout = plan_layout(self.cgroupfs, self.procfs.cgroup_of("self"),
                                  self.config.cgroup.name)
        set_up_layout(self.cgroupfs, self.layout)
        await claim_engine_group(self.cgroupfs, self.engine_group, self.config.cgroup.leftover,
                                 self._sleep)
        self._apply(limits, previous=None)
        if self.layers.persisted:
            log_limits_changed(self.config.limits, limits, cgroup=self.engine_path, peer=None,
                               scope="persistent")
        launch = self._launch(self.config)
        self.supervisor = Supervisor(
            launch.spec, restart_policy(self.config), self._spawner,
            CgroupEngineGroup(self.cgroupfs, self.engine_group),
            clock=self._clock, sleep=self._sleep, on_change=self._on_engine_state,
            before_start=launch.before_start, readiness=launch.readiness)

    def _launch(self, config: Config) -> Launch:
        return engine_launch(config, self.engine_group, self._environ, self._spawner)

    def _start_background(self) -> None:
        if self._monitor_factory is not None:
            self.monitor = self._monitor_factory(self.cgroupfs, self.procfs, self.engine_group,
                                                 self.config)
            self._spawn_task(self.monitor.run())
        self._spawn_task(self._housekeep())
        if self._serve_api:
            self._spawn_task(self._run_api())
        if self.config.metrics.enabled:
            self._spawn_task(self._run_metrics())

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A dead monitor, API server or drift check would leave the daemon up but
        # blind or deaf: stop the engine and fail loudly, so systemd restarts us.
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
        if self.layout is not None and run is not None:
            # A group that cannot be removed (a process stuck in D state) is
            # left for the next start, whose leftover policy deals with it.
            with contextlib.suppress(CgroupError):
                self.cgroupfs.remove(self.engine_group)

    async def _run_api(self) -> None:
        server = ApiServer.from_config(self, self.config.api, self.procfs)
        await server.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await server.close()

    async def _run_metrics(self) -> None:
        # Imported here: prometheus_client is only worth loading when metrics are on.
        from ccgroupd.daemon.metrics import EngineGroupCollector, MetricsServer

        collector = EngineGroupCollector(self.cgroupfs, self.engine_group,
                                         lambda: self.supervisor)
        server = MetricsServer.from_config(collector, self.config.metrics)
        server.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await asyncio.to_thread(server.close)

    # -- signals -------------------------------------------------------------------

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
        self._update_status()

    # -- limits --------------------------------------------------------------------

    def _apply(self, new: Limits, previous: Limits | None) -> None:
        in_force = apply_limits(self.cgroupfs, self.engine_group, new, previous)
        self.limits = new
        self._in_force = in_force
        log.info("limits_applied", cgroup=self.engine_path,
                 values=", ".join(f"{attribute}={value}" for attribute, value in in_force.items()))

    async def _apply_in_thread(self, new: Limits) -> None:
        # Lowering memory.max blocks the writer in reclaim: keep the loop (and the
        # watchdog) running meanwhile.
        await asyncio.to_thread(self._apply, new, self.limits)

    async def _apply_and_save(self, new: Limits, persisted: Mapping[str, object],
                              persisted_before: Mapping[str, object]) -> None:
        """Apply ``new`` and save ``persisted`` side by side; whichever fails, both are undone.

        Both wait on the kernel, the writes in reclaim and the save in fsync: a persistent
        change takes as long as the slower of the two, not both. The file is replaced
        atomically, so a crash in between leaves the old or the new changes, whole.
        """
        previous = self.limits
        saving = asyncio.ensure_future(asyncio.to_thread(self._state_store.save, persisted))
        try:
            await self._apply_in_thread(new)
        except Exception as exc:
            await asyncio.wait([saving])
            if saving.exception() is None:
                try:
                    await asyncio.to_thread(self._state_store.save, persisted_before)
                except CcgroupdError as undo:
                    exc.add_note(f"restoring the saved changes failed: {undo}")
            raise
        try:
            await saving
        except Exception:
            await self._apply_in_thread(previous)
            raise

    async def _check_drift_in_background(self) -> None:
        await self.check_drift()

    async def check_drift(self) -> dict[str, tuple[str, str]]:
        """Compare the kernel with the limits in force; re-apply and log what drifted."""
        async with self._lock:
            try:
                drift = find_drift(self.cgroupfs, self.engine_group, self.limits)
                for attribute, (found, expected) in drift.items():
                    log.warning("limits_drifted", cgroup=self.engine_path, file=attribute,
                                old=found, new=expected)
                if drift:
                    await self._apply_in_thread(self.limits)
            except CcgroupdError as error:
                # The error is the record's field; a traceback would add nothing.
                log.error("limits_drifted",  # noqa: TRY400
                          cgroup=self.engine_path, error=str(error))
                return {}
            return drift

    # -- Controller (the control socket's view of the daemon) ------------------------

    def status(self) -> dict[str, Any]:
        supervisor = self.supervisor
        engine: dict[str, Any] = {"state": None, "pid": None, "uptime_s": None, "restarts": 0}
        if supervisor is not None:
            uptime_s = supervisor.uptime_s()
            engine = {"state": supervisor.state.value, "pid": supervisor.pid,
                      "uptime_s": None if uptime_s is None else round(uptime_s, 1),
                      "restarts": supervisor.restarts}
            if supervisor.last_exit is not None:
                engine["last_exit"] = supervisor.last_exit.log_fields()
        return status_document(
            cgroup_path=self.engine_path, layers=self.layers,
            usage=read_usage(self.cgroupfs, self.engine_group, self.limits, self._cpu_meter),
            events=self.monitor.counters() if self.monitor is not None else {},
            engine=engine)

    async def set_limits(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                         peer: Peer) -> dict[str, Any]:
        async with self._lock:
            layers = self.layers.with_set(changes, runtime=runtime)
            new = layers.effective()
            new.check_host(host_cpu_count())
            refuse_memory_below_usage(
                self.limits, new, cgroup=self.engine_path, force=force,
                read_usage_bytes=lambda: read_memory_bytes(self.cgroupfs, self.engine_group))
            await self._change_limits(layers, peer, "runtime" if runtime else "persistent",
                                      persist=not runtime)
        return self._reply_in_force()

    async def reset(self, peer: Peer) -> dict[str, Any]:
        async with self._lock:
            await self._change_limits(self.layers.reset(), peer, "reset", persist=True)
        return self._reply_in_force()

    def _reply_in_force(self) -> dict[str, Any]:
        # What the kernel holds now, as read back after the writes, not what was asked.
        return {**self.status(), "in_force": dict(self._in_force)}

    async def reload(self, peer: Peer) -> dict[str, Any]:
        await self._reload(peer)
        return self.status()

    async def restart_engine(self, peer: Peer) -> dict[str, Any]:
        assert self.supervisor is not None
        log.info("engine_restarting", cgroup=self.engine_path, delay_s=0, uid=peer.uid,
                 pid=peer.pid, restarts=self.supervisor.restarts + 1)
        self.supervisor.request_restart()
        return self.status()

    async def _change_limits(self, layers: LimitLayers, peer: Peer | None, scope: ChangeScope,
                             *, persist: bool) -> None:
        old = self.limits
        new = layers.effective()
        if persist and layers.persisted != self.layers.persisted:
            await self._apply_and_save(new, layers.persisted, self.layers.persisted)
        else:
            await self._apply_in_thread(new)
        self.layers = layers
        log_limits_changed(old, new, cgroup=self.engine_path, peer=peer, scope=scope)
        self._update_status()

    async def _reload(self, peer: Peer | None) -> None:
        assert self.supervisor is not None
        async with self._lock:
            self.notifier.reloading()
            old = self.limits
            try:
                config = self._load(self._config_path)
                layers = self.layers.with_config(config.limits)
                new = layers.effective()
                new.check_host(host_cpu_count())
                await self._apply_in_thread(new)
            except CcgroupdError as error:
                log.error("config_reload_failed", error=str(error),  # noqa: TRY400
                          file=str(self._config_path) if self._config_path else None)
                self.notifier.ready(self.status_line())
                raise
            self.layers = layers
            log_limits_changed(old, new, cgroup=self.engine_path, peer=peer, scope="reload")
            launch = self._launch(config)
            running = self._launch(self.config)
            self.supervisor.policy = restart_policy(config)
            self.supervisor.readiness = launch.readiness
            if (launch.spec, launch.prepared_from) != (self.supervisor.spec,
                                                       running.prepared_from):
                self.supervisor.spec = launch.spec
                self.supervisor.before_start = launch.before_start
                self.supervisor.request_restart()
            # cgroup, api and daemon settings take effect at the next start.
            self.config = config
            self.notifier.ready(self.status_line())

    # -- systemd status and watchdog -----------------------------------------------------

    def status_line(self) -> str:
        limits = self.limits
        parts = [f"cpus={'max' if limits.cpus is None else f'{limits.cpus:g}'}",
                 f"memory={format_bytes(limits.memory_max_bytes)}",
                 f"pids={'max' if limits.pids_max is None else limits.pids_max}"]
        line = f"{' '.join(parts)}; engine "
        supervisor = self.supervisor
        if supervisor is None:
            line += "not started"
        else:
            line += supervisor.state.value
            if supervisor.pid is not None:
                line += f" (pid {supervisor.pid})"
            if supervisor.restarts:
                line += f", {supervisor.restarts} restart{'s' if supervisor.restarts > 1 else ''}"
        violation = self.monitor.last_violation() if self.monitor is not None else None
        if violation:
            line += f"; last violation: {violation}"
        return line

    def _update_status(self) -> None:
        line = self.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    def housekeeping_schedule(self) -> tuple[float, int]:
        """Seconds between housekeeping ticks, and every how many ticks drift is checked.

        The tick is the monitoring interval (monitor.cpu_poll_interval_s), or systemd's
        watchdog interval (WatchdogSec/2) if that is shorter. Drift is checked every
        drift_check_interval_s rounded to whole ticks, at least once per tick.
        """
        monitor = self.config.monitor
        interval_s = min(monitor.cpu_poll_interval_s,
                         self.notifier.watchdog_interval_s or monitor.cpu_poll_interval_s)
        return interval_s, max(1, round(monitor.drift_check_interval_s / interval_s))

    async def _housekeep(self) -> None:
        """The daemon's only timer, so that an idle daemon wakes once per tick.

        Each tick pings the watchdog, polls the monitor (cpu.stat), refreshes STATUS=
        and the supervisor's OOM-kill baseline, all on the loop without a thread hop.
        Every Nth tick the drift check starts as a task of its own: re-applying drifted
        limits can block in reclaim (in a thread), and the pings must go on meanwhile.
        A change of limits under way (the lock is held) verifies them anyway.
        """
        interval_s, drift_every = self.housekeeping_schedule()
        ticks = 0
        while True:
            self.notifier.watchdog()
            if self.monitor is not None:
                self.monitor.poll()
            self._update_status()
            if self.supervisor is not None:
                self.supervisor.note_oom_kills()
            if ticks and ticks % drift_every == 0 and not self._lock.locked():
                self._spawn_task(self._check_drift_in_background())
            ticks += 1
            await self._sleep(interval_s)


def run_daemon(config_path: Path | None) -> int:
    config = load_config(config_path)
    from ccgroupd.daemon.logsetup import configure_logging

    configure_logging(config.daemon.log_format)
    return asyncio.run(Daemon(config, config_path).serve())
