"""The daemon against the fake kernel: cgroup layout, leftovers, start-up order, reload, drift,
limit changes from the control socket, and the exit code when the engine fails."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyfakefs.fake_filesystem import FakeFilesystem
from structlog.testing import capture_logs

from ccgroupd.config import Config, load_config
from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.commands import Commands
from ccgroupd.daemon.controller import LimitController
from ccgroupd.daemon.daemon import Daemon
from ccgroupd.daemon.housekeeping import housekeeping_schedule
from ccgroupd.daemon.layout import (
    Layout,
    LeftoverProcessesError,
    claim_engine_group,
    plan_layout,
    set_up_layout,
)
from ccgroupd.engine.process import Completed, ProcessHandle
from ccgroupd.errors import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    CgroupReadError,
    CgroupWriteError,
    ConfigError,
    HostUnsupportedError,
    LimitsError,
)
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.store import StateError, StateStore
from ccgroupd.notify import Notifier
from doubles import run_async
from fakekernel import FakeKernel

UNIT = "system.slice/ccgroupd.service"
ENGINE = f"{UNIT}/dagger-engine"
CONFIG_PATH = Path("/etc/ccgroupd/config.toml")
PEER = Peer(pid=4242, uid=0, gid=0)
MIB = 1024**2


def systemd_host(fs: FakeFilesystem, *, delegated: bool = True,
                 swap_accounting: bool = True) -> FakeKernel:
    """A host where systemd runs ccgroupd.service and enabled the controllers down to it."""
    kernel = FakeKernel(fs, self_group=UNIT, swap_accounting=swap_accounting)
    kernel.enable("", "cpu", "io", "memory", "pids")
    kernel.enable("system.slice", "cpu", "io", "memory", "pids")
    if delegated:
        os.setxattr(kernel.root / UNIT, "trusted.delegate", b"1")
    return kernel


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None, watchdog_usec=None)
        self.sent: list[dict[str, str]] = []

    def send(self, **fields: str) -> None:
        self.sent.append(fields)

    def sent_key(self, key: str) -> list[dict[str, str]]:
        return [message for message in self.sent if key in message]


class KernelProcess:
    """An engine process in the fake kernel's process table; it dies by SIGTERM (exit 0)
    or by cgroup.kill, as the fake kernel decides."""

    def __init__(self, kernel: FakeKernel, pid: int, *, exits_on_sigterm: bool = True) -> None:
        self._kernel = kernel
        self._pid = pid
        self._exits_on_sigterm = exits_on_sigterm
        self._returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self) -> int:
        while self._kernel.alive(self._pid):
            await asyncio.sleep(0.001)
        if self._returncode is None:
            self._returncode = -signal.SIGKILL
        return self._returncode

    def send_signal(self, signum: int) -> None:
        if signum == signal.SIGTERM and self._exits_on_sigterm and self._kernel.alive(self._pid):
            self._returncode = 0
            self._kernel.exit(self._pid)

    def crash(self, returncode: int) -> None:
        self._returncode = returncode
        self._kernel.exit(self._pid)


class ShimSpawner:
    """Both process seams of the daemon at once, so that one history shows helper commands
    and spawns in order. A spawn does what the exec shim does: the new process starts
    inside the --group it is given (in its --leaf, if one is given). Helper commands
    (docker, probes) get the reply that ``answers`` holds for their argv."""

    def __init__(self, kernel: FakeKernel, *, crash_with: int | None = None) -> None:
        self._kernel = kernel
        self._crash_with = crash_with
        self.processes: list[KernelProcess] = []
        self.argvs: list[Sequence[str]] = []
        self.answers: dict[tuple[str, ...], Completed] = {}
        self.history: list[str] = []  # helper commands run and "spawn", in order

    async def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        self.history.append(" ".join(argv))
        return self.answers[tuple(argv)]

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str],
                    cwd: Path) -> ProcessHandle:
        self.argvs.append(argv)
        self.history.append("spawn")
        options = argv[:argv.index("--")]
        group = options[options.index("--group") + 1]
        if "--leaf" in options:
            group = f"{group}/{options[options.index('--leaf') + 1]}"
        process = KernelProcess(self._kernel, self._kernel.spawn(group, comm="engine"))
        self.processes.append(process)
        if self._crash_with is not None:
            process.crash(self._crash_with)
        return process


def own_group(kernel: FakeKernel) -> str:
    return Procfs(**kernel.procfs_args()).cgroup_of("self")


def write_config(fs: FakeFilesystem, memory: str = "256M", command: str = "/bin/engine",
                 extra: str = "") -> None:
    text = f"""
[limits]
cpus = 1
memory = "{memory}"
pids = 100

[engine]
command = ["{command}"]
restart_initial_delay_s = 0
restart_max_delay_s = 0
restart_burst = 3
stop_grace_s = 5
{extra}
"""
    if fs.exists(CONFIG_PATH):
        fs.remove_object(str(CONFIG_PATH))
    fs.create_file(CONFIG_PATH, contents=text)


def make_daemon(kernel: FakeKernel, spawner: ShimSpawner, config: Config | None = None,
                state_store: StateStore | None = None) -> tuple[Daemon, RecordingNotifier]:
    notifier = RecordingNotifier()
    daemon = Daemon(config or load_config(CONFIG_PATH), CONFIG_PATH,
                    cgroupfs=Cgroupfs(**kernel.cgroupfs_args()),
                    procfs=Procfs(**kernel.procfs_args()), spawner=spawner, runner=spawner,
                    notifier=notifier, state_store=state_store, monitor_factory=None,
                    serve_api=False)
    return daemon, notifier


def commands(daemon: Daemon) -> Commands:
    assert daemon.commands is not None, "the daemon has not started"
    return daemon.commands


def schedule(daemon: Daemon) -> tuple[float, int]:
    return housekeeping_schedule(daemon.config.monitor, daemon.notifier.watchdog_interval_s)


def controller(daemon: Daemon) -> LimitController:
    return daemon.engine().controller


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


async def started(daemon: Daemon, notifier: RecordingNotifier) -> asyncio.Task[int]:
    task = asyncio.create_task(daemon.serve())
    await until(lambda: bool(notifier.sent_key("READY")) or task.done())
    return task


class Running(NamedTuple):
    kernel: FakeKernel
    spawner: ShimSpawner
    daemon: Daemon
    notifier: RecordingNotifier
    task: asyncio.Task[int]


async def running_daemon(fs: FakeFilesystem, state_store: StateStore | None = None) -> Running:
    """The common start: a delegated systemd host, the default test config, READY sent."""
    kernel = systemd_host(fs)
    write_config(fs)
    spawner = ShimSpawner(kernel)
    daemon, notifier = make_daemon(kernel, spawner, state_store=state_store)
    return Running(kernel, spawner, daemon, notifier, await started(daemon, notifier))


async def stop(daemon: Daemon, task: asyncio.Task[int]) -> int:
    os.kill(os.getpid(), signal.SIGTERM)  # through the daemon's real signal handler
    return await task


# -- layout ------------------------------------------------------------------------------


def test_without_systemd_the_group_is_under_the_cgroup_root(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, self_group="user.slice/user-0.slice/session-1.scope")
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    layout = plan_layout(cgroupfs, own_group(kernel), "dagger-engine")
    assert layout == Layout(engine="dagger-engine", delegated=False)
    set_up_layout(cgroupfs, layout)
    assert {"cpu", "memory", "pids", "io"} <= kernel.group("").subtree_control
    assert kernel.group_of(kernel.self_pid) == "user.slice/user-0.slice/session-1.scope"


def test_delegated_unit_moves_itself_to_a_leaf_and_enables_controllers(
        fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    layout = plan_layout(cgroupfs, own_group(kernel), "dagger-engine")
    assert layout == Layout(engine=ENGINE, delegated=True, unit=UNIT)

    set_up_layout(cgroupfs, layout)

    assert kernel.group_of(kernel.self_pid) == f"{UNIT}/supervisor"
    assert kernel.group(UNIT).subtree_control == {"cpu", "io", "memory", "pids"}
    # Nothing above the unit was written: systemd's own choices stay as they were.
    assert kernel.group("system.slice").subtree_control == {"cpu", "io", "memory", "pids"}


def test_a_service_without_delegation_is_refused(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs, delegated=False)
    with pytest.raises(HostUnsupportedError, match="Delegate=yes"):
        plan_layout(Cgroupfs(**kernel.cgroupfs_args()), own_group(kernel), "dagger-engine")


def test_an_absolute_group_outside_the_delegated_subtree_is_refused(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    with pytest.raises(ConfigError, match="outside this unit's delegated subtree"):
        plan_layout(Cgroupfs(**kernel.cgroupfs_args()), own_group(kernel), "/dagger-engine")


# -- leftovers ---------------------------------------------------------------------------


@run_async
async def test_leftover_processes_are_killed_and_logged(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs)
    kernel.enable("", "cpu", "memory", "pids")
    old = [kernel.spawn("dagger-engine", "engine"), kernel.spawn("dagger-engine/buildkit/a")]
    with capture_logs() as logs:
        await claim_engine_group(Cgroupfs(**kernel.cgroupfs_args()), "dagger-engine", "kill")
    assert not any(kernel.alive(pid) for pid in old)
    assert kernel.children("dagger-engine") == []  # the old engine's groups are gone too
    assert logs == [{"event": "cgroup_leftover_killed", "log_level": "warning",
                     "cgroup": "/sys/fs/cgroup/dagger-engine", "delta": 2}]


@run_async
async def test_leftover_processes_with_refuse_policy_stop_the_start(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs)
    pid = kernel.spawn("dagger-engine", "engine")
    with pytest.raises(LeftoverProcessesError, match="1 processes"):
        await claim_engine_group(Cgroupfs(**kernel.cgroupfs_args()), "dagger-engine", "refuse")
    assert kernel.alive(pid)


@run_async
async def test_an_empty_leftover_group_is_reset_for_a_new_engine(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs)
    kernel.enable("", "cpu", "memory", "pids")
    # What a namespaced engine leaves behind: controllers enabled, a child group.
    kernel.mkdir("dagger-engine")
    kernel.enable("dagger-engine", "memory", "pids")
    kernel.mkdir("dagger-engine/init")
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    await claim_engine_group(cgroupfs, "dagger-engine", "refuse")
    assert kernel.children("dagger-engine") == []
    assert kernel.group("dagger-engine").subtree_control == set()
    cgroupfs.attach("dagger-engine", 0)  # a new engine can join (no EBUSY)


# -- the whole daemon ----------------------------------------------------------------------


@run_async
async def test_start_ready_and_graceful_stop(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs)
    spawner = ShimSpawner(kernel)
    daemon, notifier = make_daemon(kernel, spawner)

    with capture_logs() as logs:
        task = await started(daemon, notifier)
        engine = kernel.group(ENGINE)
        assert engine.values["memory.max"] == str(256 * MIB)
        assert engine.values["cpu.max"] == "100000 100000"
        assert engine.values["pids.max"] == "100"
        assert kernel.procs(ENGINE) == {spawner.processes[0].pid}
        ready = notifier.sent_key("READY")[0]
        assert "memory=256 MiB" in ready["STATUS"]
        assert f"engine running (pid {spawner.processes[0].pid})" in ready["STATUS"]
        status = commands(daemon).status()
        assert status["cgroup"]["path"] == f"/sys/fs/cgroup/{ENGINE}"
        assert status["engine"]["state"] == "running"
        assert status["limits"]["memory"] == {"value": 256 * MIB, "source": "config",
                                              "set_by": "default"}

        assert await stop(daemon, task) == EXIT_OK

    events = [entry["event"] for entry in logs]
    # READY only after the limits were written and the engine started.
    assert events.index("limits_applied") < events.index("engine_started")
    assert events.index("engine_started") < events.index("daemon_started")
    assert events[-3:] == ["daemon_stopping", "engine_stopping", "engine_exited"]
    assert notifier.sent_key("STOPPING")
    assert not kernel.exists(ENGINE)  # removed once empty
    argv = spawner.argvs[0]
    assert tuple(argv[argv.index("--") + 1:]) == ("/bin/engine",)


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@run_async
async def test_metrics_are_served_while_the_daemon_runs_and_not_after(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    port = free_loopback_port()
    write_config(fs, extra=f"[metrics]\nenabled = true\nport = {port}\n")
    daemon, notifier = make_daemon(kernel, ShimSpawner(kernel))
    url = f"http://127.0.0.1:{port}/metrics"

    task = await started(daemon, notifier)
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert await stop(daemon, task) == EXIT_OK

    samples = {(sample.name, sample.labels.get("state")): sample.value
               for family in text_string_to_metric_families(text.decode())
               for sample in family.samples}
    assert samples[("ccgroupd_memory_max_bytes", None)] == 256 * MIB
    assert samples[("ccgroupd_engine_state", "running")] == 1
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
        pass


@run_async
async def test_reload_changes_limits_without_restarting_the_engine(fs: FakeFilesystem) -> None:
    kernel, spawner, daemon, notifier, task = await running_daemon(fs)

    write_config(fs, memory="128M")
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: kernel.group(ENGINE).values["memory.max"] == str(128 * MIB))
        await until(lambda: len(notifier.sent_key("READY")) == 2)

    assert len(spawner.processes) == 1
    assert notifier.sent_key("RELOADING")
    changed = next(entry for entry in logs if entry["event"] == "limits_changed")
    assert changed["old"] == "memory=256 MiB"
    assert changed["new"] == "memory=128 MiB"
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_reload_keeps_a_memory_limit_below_usage_and_applies_the_rest(
        fs: FakeFilesystem) -> None:
    kernel, spawner, daemon, _notifier, task = await running_daemon(fs)
    kernel.update(ENGINE, "memory.current", str(200 * MIB))

    write_config(fs, memory="128M")
    CONFIG_PATH.write_text(CONFIG_PATH.read_text().replace("pids = 100", "pids = 50"))
    with capture_logs() as logs:
        await commands(daemon).reload(PEER)

    values = kernel.group(ENGINE).values
    assert values["memory.max"] == str(256 * MIB)  # kept: 128M is below the 200M in use
    assert values["pids.max"] == "50"  # the rest of the reload applied
    [kept] = [entry for entry in logs if entry["event"] == "limits_kept"]
    assert (kept["limit_bytes"], kept["config_bytes"], kept["usage_bytes"]) == (
        256 * MIB, 128 * MIB, 200 * MIB)
    status = commands(daemon).status()
    assert status["limits"]["memory"] == {"value": 256 * MIB, "source": "runtime",
                                          "set_by": "ccgroupctl set --runtime"}
    assert len(spawner.processes) == 1
    assert await stop(daemon, task) == EXIT_OK


@pytest.mark.parametrize(("swap_accounting", "persisted", "set_aside"), [
    (True, {"cpus": 100_000, "pids": 70}, "cpus"),  # the host shrank under a persisted set
    (False, {"memory_swap": "64M", "pids": 70}, "memory_swap"),  # swap accounting went away
])
@run_async
async def test_a_persisted_value_this_host_cannot_give_does_not_keep_the_daemon_down(
        fs: FakeFilesystem, swap_accounting: bool, persisted: dict[str, object],
        set_aside: str) -> None:
    kernel = systemd_host(fs, swap_accounting=swap_accounting)
    write_config(fs)
    StateStore(Path("/var/lib/ccgroupd")).save(persisted)
    spawner = ShimSpawner(kernel)
    daemon, notifier = make_daemon(kernel, spawner)
    with capture_logs() as logs:
        task = await started(daemon, notifier)
    assert not task.done()  # READY=1: it started
    [aside] = [entry for entry in logs if entry["event"] == "state_value_set_aside"]
    assert (aside["limit"], aside["file"]) == (set_aside, "/var/lib/ccgroupd/limits.json")
    status = commands(daemon).status()["limits"]
    assert status[set_aside]["source"] == "config"
    assert status["pids"] == {"value": 70, "source": "persisted",
                              "set_by": "/var/lib/ccgroupd/limits.json"}
    assert kernel.group(ENGINE).values["pids.max"] == "70"
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_reset_to_a_memory_limit_below_usage_needs_force(fs: FakeFilesystem) -> None:
    kernel, _, daemon, _notifier, task = await running_daemon(fs)
    await commands(daemon).set_limits({"memory": "1G"}, runtime=False, force=False, peer=PEER)
    kernel.update(ENGINE, "memory.current", str(600 * MIB))  # the config's 256M is below

    with pytest.raises(LimitsError, match="at or below current usage 600 MiB"):
        await commands(daemon).reset(PEER)
    assert kernel.group(ENGINE).values["memory.max"] == str(1024 * MIB)  # nothing changed
    assert commands(daemon).status()["limits"]["memory"]["source"] == "persisted"

    await commands(daemon).reset(PEER, force=True)
    assert kernel.group(ENGINE).values["memory.max"] == str(256 * MIB)
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_reload_with_a_broken_config_keeps_the_running_one(fs: FakeFilesystem) -> None:
    kernel, spawner, daemon, notifier, task = await running_daemon(fs)

    write_config(fs, memory="banana")
    with capture_logs() as logs, pytest.raises(ConfigError, match="memory"):
        await commands(daemon).reload(PEER)

    assert kernel.group(ENGINE).values["memory.max"] == str(256 * MIB)
    assert controller(daemon).limits.memory_max_bytes == 256 * MIB
    failed = [entry for entry in logs if entry["event"] == "config_reload_failed"]
    assert len(failed) == 1
    assert failed[0]["file"] == str(CONFIG_PATH)
    assert len(notifier.sent_key("READY")) == 2  # back to ready after RELOADING=1
    assert len(spawner.processes) == 1
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_reload_with_a_new_engine_command_restarts_the_engine(fs: FakeFilesystem) -> None:
    kernel, spawner, daemon, _notifier, task = await running_daemon(fs)

    write_config(fs, command="/bin/other-engine")
    await commands(daemon).reload(PEER)
    await until(lambda: len(spawner.processes) == 2 and commands(daemon).status()["engine"]["pid"]
                == spawner.processes[1].pid)

    assert not kernel.alive(spawner.processes[0].pid)
    assert spawner.argvs[1][-1] == "/bin/other-engine"
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_drift_is_noticed_logged_and_undone(fs: FakeFilesystem) -> None:
    kernel, _, daemon, _notifier, task = await running_daemon(fs)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    cgroupfs.write(ENGINE, "memory.max", "max")

    with capture_logs() as logs:
        drift = await controller(daemon).check_drift()

    assert drift == {"memory.max": ("max", str(256 * MIB))}
    assert kernel.group(ENGINE).values["memory.max"] == str(256 * MIB)
    drifted = [entry for entry in logs if entry["event"] == "limits_drifted"]
    assert drifted == [{"event": "limits_drifted", "log_level": "warning",
                        "cgroup": f"/sys/fs/cgroup/{ENGINE}", "file": "memory.max",
                        "old": "max", "new": str(256 * MIB)}]
    assert await controller(daemon).check_drift() == {}
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_an_engine_that_keeps_failing_makes_the_daemon_exit_non_zero(
        fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs)
    spawner = ShimSpawner(kernel, crash_with=1)
    daemon, notifier = make_daemon(kernel, spawner)
    with capture_logs() as logs:
        code = await daemon.serve()
    assert code == EXIT_ENGINE_FAILED
    assert len(spawner.processes) == 3  # restart_burst
    assert [entry["event"] for entry in logs].count("engine_failed") == 1
    assert "engine failed" in notifier.sent[-1]["STATUS"]


@run_async
async def test_set_limits_persists_refuses_oom_and_resets(fs: FakeFilesystem) -> None:
    kernel, _, daemon, _notifier, task = await running_daemon(fs)

    status = await commands(daemon).set_limits({"memory": "512M"}, runtime=False, force=False,
                                               peer=PEER)
    assert status["limits"]["memory"]["source"] == "persisted"
    assert status["limits"]["memory"]["value"] == 512 * MIB
    assert kernel.group(ENGINE).values["memory.max"] == str(512 * MIB)
    assert '"memory": "512M"' in Path("/var/lib/ccgroupd/limits.json").read_text()

    kernel.update(ENGINE, "memory.current", str(300 * MIB))
    with pytest.raises(LimitsError, match="OOM-kill"):
        await commands(daemon).set_limits({"memory": "256M"}, runtime=True, force=False, peer=PEER)
    assert kernel.group(ENGINE).values["memory.max"] == str(512 * MIB)
    await commands(daemon).set_limits({"memory": "256M"}, runtime=True, force=True, peer=PEER)
    assert kernel.group(ENGINE).values["memory.max"] == str(256 * MIB)

    status = await commands(daemon).reset(PEER)
    assert status["limits"]["memory"]["source"] == "config"
    assert '"limits": {}' in Path("/var/lib/ccgroupd/limits.json").read_text()
    assert await stop(daemon, task) == EXIT_OK


class FullDiskStateStore(StateStore):
    """Loads as the real one does; every save fails as on a full disk."""

    def save(self, changes: Mapping[str, object]) -> None:
        raise StateError(f"cannot write {self.path}: No space left on device")


@run_async
async def test_a_change_that_cannot_be_saved_is_undone_in_the_kernel(fs: FakeFilesystem) -> None:
    kernel, _, daemon, _notifier, task = await running_daemon(
        fs, state_store=FullDiskStateStore(Path("/var/lib/ccgroupd")))
    before = kernel.group(ENGINE).values["memory.max"]
    with pytest.raises(StateError, match="No space left"):
        await commands(daemon).set_limits({"memory": "512M"}, runtime=False, force=False, peer=PEER)
    assert kernel.group(ENGINE).values["memory.max"] == before
    assert commands(daemon).status()["limits"]["memory"]["source"] == "config"
    assert await stop(daemon, task) == EXIT_OK


@pytest.mark.parametrize("failure", [CgroupWriteError, RuntimeError])  # refused, or a bug
@run_async
async def test_a_change_the_kernel_refuses_is_not_saved(
        fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]) -> None:
    kernel, _, daemon, _notifier, task = await running_daemon(fs)
    await commands(daemon).set_limits({"pids": 50}, runtime=False, force=False, peer=PEER)
    state = Path("/var/lib/ccgroupd/limits.json")
    saved = state.read_text()
    before = kernel.group(ENGINE).values["memory.max"]
    write_verified = daemon.cgroupfs.write_verified

    def busy_memory(group: str, attribute: str, value: str) -> str:
        if attribute != "memory.max":
            return write_verified(group, attribute, value)
        if failure is CgroupWriteError:
            raise CgroupWriteError(daemon.cgroupfs.path(group, attribute), value, errno.EBUSY)
        raise failure("memory.max")

    monkeypatch.setattr(daemon.cgroupfs, "write_verified", busy_memory)
    with pytest.raises(failure):
        await commands(daemon).set_limits({"memory": "512M"}, runtime=False, force=False, peer=PEER)
    assert state.read_text() == saved
    assert kernel.group(ENGINE).values["memory.max"] == before
    assert commands(daemon).status()["limits"]["memory"]["source"] == "config"
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_persisted_changes_apply_at_start(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs)
    fs.create_file("/var/lib/ccgroupd/limits.json",
                   contents='{"version": 1, "limits": {"pids": 42}}')
    daemon, notifier = make_daemon(kernel, ShimSpawner(kernel))
    task = await started(daemon, notifier)
    assert kernel.group(ENGINE).values["pids.max"] == "42"
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_restart_engine_from_the_control_socket(fs: FakeFilesystem) -> None:
    _kernel, spawner, daemon, _notifier, task = await running_daemon(fs)
    await commands(daemon).restart_engine(PEER)
    await until(lambda: len(spawner.processes) == 2 and commands(daemon).status()["engine"]["state"]
                == "running")
    assert commands(daemon).status()["engine"]["restarts"] == 1
    assert await stop(daemon, task) == EXIT_OK


class CountingMonitor:
    """Stands in for the Monitor: counts the polls the daemon's tick makes."""

    def __init__(self) -> None:
        self.polls = 0

    async def run(self) -> None:
        await asyncio.Event().wait()  # events only: no timer of its own

    def poll(self) -> None:
        self.polls += 1

    def counters(self) -> dict[str, int]:
        return {}

    def last_violation(self) -> str | None:
        return None

    def recent_oom_kill(self) -> bool:
        return False


@run_async
async def test_one_housekeeping_timer_pings_polls_and_checks_drift(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs, extra="[monitor]\ncpu_poll_interval_s = 5\ndrift_check_interval_s = 15\n")
    monitor = CountingMonitor()
    sleeps: list[float] = []
    ticked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if seconds == 5:  # the housekeeping tick: let the test count ticks
            ticked.set()
        await asyncio.sleep(0)

    notifier = RecordingNotifier()
    notifier.watchdog_interval_s = 30.0  # WatchdogSec=60s
    spawner = ShimSpawner(kernel)
    daemon = Daemon(load_config(CONFIG_PATH), CONFIG_PATH,
                    cgroupfs=Cgroupfs(**kernel.cgroupfs_args()),
                    procfs=Procfs(**kernel.procfs_args()), spawner=spawner, runner=spawner,
                    notifier=notifier, monitor_factory=lambda *_: monitor, serve_api=False,
                    sleep=sleep)
    assert schedule(daemon) == (5, 3)
    task = await started(daemon, notifier)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    cgroupfs.write(ENGINE, "memory.max", "max")
    with capture_logs() as logs:
        await until(lambda: kernel.group(ENGINE).values["memory.max"] == str(256 * MIB))

    # Every sleep of the running daemon is the one tick; each tick pings and polls once.
    assert set(sleeps) == {5}
    assert len(notifier.sent_key("WATCHDOG")) == monitor.polls >= 3
    # The drift check came with the ticks (every third), not with a timer of its own.
    assert [entry["file"] for entry in logs if entry["event"] == "limits_drifted"] == [
        "memory.max"]
    assert await stop(daemon, task) == EXIT_OK


def test_a_short_watchdog_shortens_the_tick(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs, extra="[monitor]\ncpu_poll_interval_s = 10\ndrift_check_interval_s = 7\n")
    daemon, notifier = make_daemon(kernel, ShimSpawner(kernel))
    assert schedule(daemon) == (10, 1)  # drift at least once per tick
    notifier.watchdog_interval_s = 4.0  # WatchdogSec=8s
    assert schedule(daemon) == (4, 2)


class BrokenMonitor(CountingMonitor):
    async def run(self) -> None:
        raise CgroupReadError("/sys/fs/cgroup/x/memory.events", errno=5)


@run_async
async def test_a_dead_background_task_stops_the_engine_and_the_daemon(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs)
    spawner = ShimSpawner(kernel)
    notifier = RecordingNotifier()
    daemon = Daemon(load_config(CONFIG_PATH), CONFIG_PATH,
                    cgroupfs=Cgroupfs(**kernel.cgroupfs_args()),
                    procfs=Procfs(**kernel.procfs_args()), spawner=spawner, runner=spawner,
                    notifier=notifier, monitor_factory=lambda *_: BrokenMonitor(),
                    serve_api=False)
    with pytest.raises(CgroupReadError, match=r"memory\.events"):
        await daemon.serve()
    assert not kernel.alive(spawner.processes[0].pid)
    assert not kernel.exists(ENGINE)


def test_notifier_reads_systemd_environment(tmp_path: Path) -> None:
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(os.fspath(address))
        systemd.settimeout(5)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": os.fspath(address),
                                          "WATCHDOG_USEC": "60000000",
                                          "WATCHDOG_PID": str(os.getpid())})
        notifier.ready("up")
        assert systemd.recv(4096) == b"READY=1\nSTATUS=up"
    assert notifier.watchdog_interval_s == 30
    other = Notifier.from_environ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None  # someone else's watchdog
    other.ready("up")  # no NOTIFY_SOCKET: nothing to send to, and no error


# -- engine modes and readiness ------------------------------------------------------------


DOCKER_INFO = ("docker", "info", "--format", "{{.CgroupDriver}} {{.CgroupVersion}}")
DOCKER_RM = ("docker", "rm", "--force", "ccgroupd-engine")
PROBE = ("probe-engine",)


def docker_host(fs: FakeFilesystem, driver: str) -> tuple[FakeKernel, ShimSpawner]:
    """A delegated host whose docker answers `docker info` with ``driver``; the engine in
    docker mode, ready when ``probe-engine`` exits 0 (it does not yet)."""
    kernel = systemd_host(fs)
    write_config(fs, extra='mode = "docker"\nready_command = ["probe-engine"]')
    spawner = ShimSpawner(kernel)
    spawner.answers.update({
        DOCKER_INFO: Completed(0, driver),
        DOCKER_RM: Completed(1, "Error: No such container: ccgroupd-engine"),
        PROBE: Completed(1, "connection refused"),
    })
    return kernel, spawner


@run_async
async def test_docker_with_the_systemd_cgroup_driver_is_refused_before_any_start(
        fs: FakeFilesystem) -> None:
    kernel, spawner = docker_host(fs, "systemd 2")
    daemon, notifier = make_daemon(kernel, spawner)
    with pytest.raises(HostUnsupportedError, match=r"/etc/docker/daemon\.json"):
        await daemon.serve()
    assert spawner.history == [" ".join(DOCKER_INFO)]
    assert spawner.processes == []
    assert notifier.sent_key("READY") == []


@run_async
async def test_docker_engine_starts_in_the_launcher_leaf_and_ready_waits_for_the_probe(
        fs: FakeFilesystem) -> None:
    kernel, spawner = docker_host(fs, "cgroupfs 2")
    daemon, notifier = make_daemon(kernel, spawner)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.serve())
        await until(lambda: spawner.history.count("probe-engine") >= 2)

        # Spawned, but the probe fails: still starting, and systemd has no READY=1.
        assert notifier.sent_key("READY") == []
        assert commands(daemon).status()["engine"]["state"] == "starting"
        assert spawner.history[:4] == [" ".join(DOCKER_INFO), " ".join(DOCKER_RM), "spawn",
                                       "probe-engine"]
        launcher = spawner.processes[0]
        assert kernel.procs(f"{ENGINE}/launcher") == {launcher.pid}
        assert kernel.procs(ENGINE) == set()
        argv = spawner.argvs[0]
        options, command = argv[:argv.index("--")], argv[argv.index("--") + 1:]
        assert options[-2:] == ("--leaf", "launcher")
        assert "--private-cgroupns" not in options
        assert command[:2] == ("docker", "run")
        assert command[command.index("--cgroup-parent") + 1] == f"/{ENGINE}"

        spawner.answers[PROBE] = Completed(0, "")
        await until(lambda: bool(notifier.sent_key("READY")))
        assert f"engine running (pid {launcher.pid})" in notifier.sent_key("READY")[0]["STATUS"]
        assert await stop(daemon, task) == EXIT_OK

    events = [entry["event"] for entry in logs]
    assert events.index("engine_started") < events.index("engine_ready")
    assert events.index("engine_ready") < events.index("daemon_started")
    assert not kernel.exists(ENGINE)


ENTRYPOINT = "/usr/local/bin/dagger-entrypoint.sh"
ROOTFS = Path("/var/lib/ccgroupd/engine/rootfs")
BUNDLE_CONFIG = Path("/run/ccgroupd/engine-bundle/config.json")


@run_async
async def test_reload_with_a_new_command_in_runc_mode_restarts_with_the_new_bundle(
        fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    fs.create_file(ROOTFS / ENTRYPOINT.lstrip("/"), st_mode=0o100755)
    fs.create_file("/usr/sbin/runc", st_mode=0o100755)
    runc = 'mode = "runc"\nrunc_command = "/usr/sbin/runc"'
    write_config(fs, command=ENTRYPOINT, extra=runc)
    spawner = ShimSpawner(kernel)
    daemon, notifier = make_daemon(kernel, spawner)
    task = await started(daemon, notifier)
    assert json.loads(BUNDLE_CONFIG.read_text())["process"]["args"] == [ENTRYPOINT]
    assert kernel.procs(f"{ENGINE}/launcher") == {spawner.processes[0].pid}

    # The runc argv names the bundle, not what is in it: the reload must see the change.
    write_config(fs, command="/usr/local/bin/other-entrypoint.sh", extra=runc)
    await commands(daemon).reload(PEER)
    await until(lambda: len(spawner.processes) == 2)
    assert json.loads(BUNDLE_CONFIG.read_text())["process"]["args"] == [
        "/usr/local/bin/other-entrypoint.sh"]
    assert await stop(daemon, task) == EXIT_OK


@run_async
async def test_an_engine_never_ready_and_not_restarted_fails_the_start(
        fs: FakeFilesystem) -> None:
    kernel, spawner = docker_host(fs, "cgroupfs 2")
    write_config(fs, extra='mode = "docker"\nready_command = ["probe-engine"]\n'
                           'ready_timeout_s = 1\nrestart = "never"')
    daemon, notifier = make_daemon(kernel, spawner)
    with capture_logs() as logs:
        # Without the fix this waits forever for a READY=1 that cannot come.
        assert await asyncio.wait_for(daemon.serve(), 30) == EXIT_ENGINE_FAILED
    assert notifier.sent_key("READY") == []
    events = [entry["event"] for entry in logs]
    assert events[-3:] == ["engine_not_ready", "engine_exited", "engine_failed"]
    assert logs[-1]["reason"] == ("it ended before it was ready, and restart = 'never' "
                                  "does not start it again")
    assert not kernel.exists(ENGINE)


# -- builds ------------------------------------------------------------------------------


@run_async
async def test_builds_get_their_defaults_and_set_changes_them_for_good(
        fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write_config(fs, extra="[builds]\nmemory = \"128M\"\npids = 50\n")
    spawner = ShimSpawner(kernel)

    def start() -> tuple[Daemon, RecordingNotifier]:
        notifier = RecordingNotifier()
        return Daemon(load_config(CONFIG_PATH), CONFIG_PATH,
                      cgroupfs=Cgroupfs(**kernel.cgroupfs_args()),
                      procfs=Procfs(**kernel.procfs_args()), spawner=spawner, runner=spawner,
                      notifier=notifier, monitor_factory=lambda *_: CountingMonitor(),
                      serve_api=False), notifier

    daemon, notifier = start()
    task = await started(daemon, notifier)
    build = f"{ENGINE}/buildkit/b1"
    # As the Dagger entrypoint does: itself into /init, then runc on the way to a build.
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    cgroupfs.create(f"{ENGINE}/init")
    for pid in kernel.procs(ENGINE):
        cgroupfs.attach(f"{ENGINE}/init", pid)
    for group in (ENGINE, f"{ENGINE}/buildkit"):
        kernel.mkdir(group)
        kernel.enable(group, "memory", "pids")
    kernel.mkdir(build)
    builds = daemon.engine().builds
    assert builds is not None and builds.tracker is not None
    builds.tracker.rescan()  # what inotify's IN_CREATE does on a real kernel
    assert kernel.group(build).values["memory.max"] == str(128 * MIB)
    assert kernel.group(build).values["memory.oom.group"] == "1"
    reply = commands(daemon).builds()
    assert [entry["cgroup"] for entry in reply["builds"]] == ["buildkit/b1"]
    assert reply["builds"][0]["limits"]["memory"] == 128 * MIB
    assert commands(daemon).status()["builds"]["running"] == 1

    with capture_logs() as logs:
        await commands(daemon).set_limits({}, runtime=False, force=False, peer=PEER,
                                          builds={"memory": "96M"}, running=True)
    assert kernel.group(build).values["memory.max"] == str(96 * MIB)
    assert [entry["new"]["memory"] for entry in logs
            if entry["event"] == "build_defaults_changed"] == [96 * MIB]
    with pytest.raises(LimitsError, match="above the engine's memory"):
        await commands(daemon).set_limits({}, runtime=False, force=False, peer=PEER,
                                          builds={"memory": "1G"})
    assert await stop(daemon, task) == EXIT_OK

    # Kept across a restart, like the engine's limits.
    daemon, notifier = start()
    task = await started(daemon, notifier)
    assert commands(daemon).status()["builds"]["defaults"]["memory"] == 96 * MIB
    assert await stop(daemon, task) == EXIT_OK
