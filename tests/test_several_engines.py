"""Several engines in one daemon against the fake kernel: a group each below the budget's,
limits and changes per engine, one engine failing while the others run, reloads that add
and remove engines without touching the rest, and records that name their engine."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from pyfakefs.fake_filesystem import FakeFilesystem
from structlog.testing import LogCapture
from test_daemon import (
    CONFIG_PATH,
    PEER,
    UNIT,
    RecordingNotifier,
    ShimSpawner,
    started,
    systemd_host,
    until,
)

from ccgroupd.config import load_config
from ccgroupd.daemon.daemon import Daemon
from ccgroupd.daemon.engines import EngineNameError
from ccgroupd.engine.process import ProcessHandle
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.errors import EXIT_ENGINE_FAILED, EXIT_OK, LimitsError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from fakekernel import FakeKernel

T = TypeVar("T")
ENGINES = f"{UNIT}/engines"
GIB = 1024**3

TWO_ENGINES = """
[budget]
cpus = 1.5
memory = "4G"

[engines.ci]
command = ["/bin/ci-engine"]
cpus = 1
memory = "2G"
memory_low = "1G"
cpu_weight = 500
restart_initial_delay_s = 0
restart_burst = 2
stop_grace_s = 5

[engines.web]
command = ["{web}"]
cpus = 1
memory = "1G"
restart_initial_delay_s = 0
restart_max_delay_s = 0
restart_burst = 2
stop_grace_s = 5
"""


class PickySpawner(ShimSpawner):
    """Engines whose command is /bin/crash exit 1 as soon as they start."""

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str],
                    cwd: Path) -> ProcessHandle:
        process = await super().spawn(argv, env, cwd)
        if argv[-1] == "/bin/crash":
            process.crash(1)  # type: ignore[attr-defined]
        return process


def write(fs: FakeFilesystem, text: str) -> None:
    if fs.exists(CONFIG_PATH):
        fs.remove_object(str(CONFIG_PATH))
    fs.create_file(CONFIG_PATH, contents=text)


def daemon_for(kernel: FakeKernel, spawner: ShimSpawner) -> tuple[Daemon, RecordingNotifier]:
    notifier = RecordingNotifier()
    daemon = Daemon(load_config(CONFIG_PATH), CONFIG_PATH,
                    cgroupfs=Cgroupfs(**kernel.cgroupfs_args()),
                    procfs=Procfs(**kernel.procfs_args()), spawner=spawner, runner=spawner,
                    notifier=notifier, monitor_factory=None, serve_api=False)
    return daemon, notifier


@pytest.fixture
def records() -> Iterator[LogCapture]:
    """Every record, with the context's fields merged in as the daemon's logging does."""
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture
    finally:
        structlog.reset_defaults()


def engine_pids(daemon: Daemon) -> dict[str, int | None]:
    return {name: unit.supervisor.pid if unit.supervisor else None
            for name, unit in daemon.engines.items()}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def stop(task: asyncio.Task[int]) -> int:
    if task.done():  # the handler is gone: a SIGTERM now would end the test run
        return task.result()
    os.kill(os.getpid(), signal.SIGTERM)
    return await asyncio.wait_for(task, 30)


def test_each_engine_runs_in_its_group_below_the_budget(fs: FakeFilesystem,
                                                        records: LogCapture) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/web-engine"))
    spawner = PickySpawner(kernel)

    async def scenario() -> tuple[dict[str, Any], int]:
        daemon, notifier = daemon_for(kernel, spawner)
        task = await started(daemon, notifier)
        await until(lambda: all(unit.state is EngineState.RUNNING
                                for unit in daemon.engines.values()))
        status = daemon.commands.status()
        budget = kernel.group(ENGINES)
        assert budget.values["cpu.max"] == "150000 100000"
        assert budget.values["memory.max"] == str(4 * GIB)
        assert {"cpu", "memory", "pids"} <= budget.subtree_control
        return status, await stop(task)

    status, code = run(scenario())
    assert code == EXIT_OK
    assert [doc["name"] for doc in status["engines"]] == ["ci", "web"]
    ci, web = status["engines"]
    assert (ci["limits"]["cpus"]["value"], web["limits"]["cpus"]["value"]) == (1.0, 1.0)
    assert ci["limits"]["memory_low"]["value"] == GIB
    assert ci["cgroup"]["path"].endswith(f"{ENGINES}/ci")
    assert status["budget"]["guarantees"]["memory_low_bytes"] == GIB
    assert status["budget"]["shares"]["ci"]["cpu_share"] == round(500 / 600, 3)
    assert "limits" not in status  # several engines: no single-engine fields at the top
    # Each engine's records name it; the groups are gone after the stop.
    applied = {record.get("engine"): record["cgroup"] for record in records.entries
               if record["event"] == "limits_applied" and "engine" in record}
    assert applied == {"ci": str(kernel.root / ENGINES / "ci"),
                       "web": str(kernel.root / ENGINES / "web")}
    assert not os.path.exists(kernel.root / ENGINES)


def test_a_failing_engine_is_given_up_while_the_other_runs(fs: FakeFilesystem,
                                                           records: LogCapture) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/crash"))
    spawner = PickySpawner(kernel)

    async def scenario() -> tuple[dict[str, EngineState | None], int, int]:
        daemon, notifier = daemon_for(kernel, spawner)
        task = await started(daemon, notifier)
        await until(lambda: daemon.engines["web"].state is EngineState.FAILED)
        await asyncio.sleep(0.05)
        states = {name: unit.state for name, unit in daemon.engines.items()}
        shares = daemon.commands.status()["budget"]["shares"]
        # An engine that ended has an empty group: it takes no share of contended CPU.
        assert (shares["ci"]["cpu_share"], shares["web"]["cpu_share"]) == (1.0, 0.0)
        spawned_before_restart = len(spawner.processes)
        # restart-engine starts a failed engine again (here it fails again).
        await daemon.commands.restart_engine(PEER, "web")
        await until(lambda: len(spawner.processes) > spawned_before_restart)
        await until(lambda: daemon.engines["web"].state is EngineState.FAILED)
        ready = len(notifier.sent_key("READY"))
        # A reload that changes what the failed engine runs starts it again.
        write(fs, TWO_ENGINES.format(web="/bin/web-engine"))
        await daemon.commands.reload(PEER)
        await until(lambda: daemon.engines["web"].state is EngineState.RUNNING)
        return states, ready, await stop(task)

    states, ready, code = run(scenario())
    assert states == {"ci": EngineState.RUNNING, "web": EngineState.FAILED}
    assert ready == 1  # READY=1 with one engine up
    assert code == EXIT_OK  # a requested stop, though web had failed
    failed = [record for record in records.entries if record["event"] == "engine_failed"]
    assert {record["engine"] for record in failed} == {"web"}


def test_when_every_engine_fails_the_daemon_fails(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/crash").replace("/bin/ci-engine", "/bin/crash"))

    async def scenario() -> int:
        daemon, _notifier = daemon_for(kernel, PickySpawner(kernel))
        return await asyncio.wait_for(daemon.serve(), 30)

    assert run(scenario()) == EXIT_ENGINE_FAILED


def test_set_changes_the_named_engine_only_and_keeps_to_the_budget(
        fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/web-engine"))

    async def scenario() -> list[str]:
        daemon, notifier = daemon_for(kernel, PickySpawner(kernel))
        task = await started(daemon, notifier)
        errors = []
        reply = await daemon.commands.set_limits({"memory": "512M"}, runtime=False,
                                                 force=False, peer=PEER, engine="web")
        assert reply["name"] == "web"
        memory_max = {name: kernel.group(f"{ENGINES}/{name}").values["memory.max"]
                      for name in ("ci", "web")}
        assert memory_max == {"ci": str(2 * GIB), "web": str(512 * 1024**2)}
        refused: list[tuple[str | None, dict[str, object]]] = [
            (None, {"cpus": 1}), ("nope", {"cpus": 1}), ("web", {"cpus": 2}),
            ("web", {"memory": "4G", "memory_low": "3.5G"})]
        for engine, changes in refused:
            try:
                await daemon.commands.set_limits(changes, runtime=True, force=False, peer=PEER,
                                                 engine=engine)
            except (EngineNameError, LimitsError) as exc:
                errors.append(str(exc))
        await stop(task)
        return errors

    errors = run(scenario())
    assert errors == [
        "several engines run here (ci, web): name one with --engine NAME",
        "no engine named 'nope' (engines: ci, web)",
        "engines.web.cpus = 2.0: above the budget's cpus (1.5)",
        "engines.web.memory_low = '3.5 GiB': the engines' memory_low add up to 4.5 GiB "
        "(ci 1 GiB, web 3.5 GiB), above the budget's memory (4 GiB)",
    ]
    # Persisted for web alone.
    saved = Path("/var/lib/ccgroupd/engines/web/limits.json").read_text()
    assert "512M" in saved
    assert not Path("/var/lib/ccgroupd/engines/ci/limits.json").exists()


def test_reload_adds_and_removes_engines_without_restarting_the_others(
        fs: FakeFilesystem, records: LogCapture) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/web-engine"))
    third = "\n[engines.extra]\ncommand = ['/bin/extra']\nmemory = '256M'\nstop_grace_s = 5\n"
    spawner = PickySpawner(kernel)

    async def scenario() -> tuple[dict[str, int | None], dict[str, int | None],
                                  dict[str, int | None], bool]:
        daemon, notifier = daemon_for(kernel, spawner)
        task = await started(daemon, notifier)
        before = engine_pids(daemon)
        write(fs, TWO_ENGINES.format(web="/bin/web-engine") + third)
        records.entries.clear()
        await daemon.commands.reload(PEER)
        # Only the new engine's limits are news: the others' did not change.
        assert [record.get("engine") for record in records.entries
                if record["event"] == "limits_applied"] == ["extra"]
        await until(lambda: daemon.engines["extra"].state is EngineState.RUNNING)
        added = engine_pids(daemon)
        extra_group = Path(kernel.root / ENGINES / "extra")
        assert kernel.group(f"{ENGINES}/extra").values["memory.max"] == str(256 * 1024**2)
        write(fs, TWO_ENGINES.format(web="/bin/web-engine"))
        await daemon.commands.reload(PEER)
        await until(lambda: not extra_group.exists())
        after = engine_pids(daemon)
        await stop(task)
        return before, added, after, extra_group.exists()

    before, added, after, extra_left = run(scenario())
    assert added == {**before, "extra": added["extra"]}
    assert after == before
    assert not extra_left
    assert [argv[-1] for argv in spawner.argvs] == ["/bin/ci-engine", "/bin/web-engine",
                                                    "/bin/extra"]


def test_reload_checks_every_engine_against_the_new_budget_at_once(fs: FakeFilesystem) -> None:
    kernel = systemd_host(fs)
    write(fs, TWO_ENGINES.format(web="/bin/web-engine"))

    async def scenario() -> tuple[str, dict[str, str], dict[str, str]]:
        daemon, notifier = daemon_for(kernel, PickySpawner(kernel))
        task = await started(daemon, notifier)
        await daemon.commands.set_limits({"memory": "4G", "memory_low": "2.5G"}, runtime=False,
                                         force=False, peer=PEER, engine="web")
        # ci's 2 GiB with web's saved 2.5 GiB would be 4.5 GiB of the budget's 4: refused.
        write(fs, TWO_ENGINES.format(web="/bin/web-engine").replace(
            'memory_low = "1G"', 'memory_low = "2G"'))
        try:
            await daemon.commands.reload(PEER)
        except LimitsError as exc:
            refused = str(exc)
        low_after_refusal = {name: kernel.group(f"{ENGINES}/{name}").values["memory.low"]
                             for name in ("ci", "web")}
        # The budget grows in the same reload: checked together, not one after the other.
        write(fs, TWO_ENGINES.format(web="/bin/web-engine").replace(
            'memory = "2G"\nmemory_low = "1G"', 'memory = "3G"\nmemory_low = "3G"').replace(
            'memory = "4G"', 'memory = "6G"'))
        await daemon.commands.reload(PEER)
        low_after_reload = {name: kernel.group(f"{ENGINES}/{name}").values["memory.low"]
                            for name in ("ci", "web")}
        await stop(task)
        return refused, low_after_refusal, low_after_reload

    refused, low_after_refusal, low_after_reload = run(scenario())
    assert refused == ("engines.web.memory_low = '2.5 GiB': the engines' memory_low add up to "
                       "4.5 GiB (ci 2 GiB, web 2.5 GiB), above the budget's memory (4 GiB)")
    assert low_after_refusal == {"ci": str(GIB), "web": str(5 * GIB // 2)}
    assert low_after_reload == {"ci": str(3 * GIB), "web": str(5 * GIB // 2)}
