"""Engine launch modes: the [engine] keys that choose them, the argv each mode runs through the
exec shim, the host checks at start-up (docker's cgroup driver, runc's rootfs) and the steps
before each start (docker rm of a leftover, runc's bundle). Helper commands go to a scripted
spawner; nothing here runs docker or runc."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ccgroupd.config import Config, DaemonSection, EngineSection, load_config
from ccgroupd.engine.launch import (
    HELPER_TIMEOUT_S,
    PACKAGE_PARENT,
    SHIM_BOOTSTRAP,
    check_docker,
    check_launch,
    check_runc,
    docker_run_argv,
    engine_argv,
    engine_launch,
    prepare_docker,
    prepare_runc,
)
from ccgroupd.engine.process import Completed
from ccgroupd.errors import ConfigError, EngineLaunchError, HostUnsupportedError
from doubles import ScriptedCommands

GROUP = "system.slice/ccgroupd.service/dagger-engine"
PYTHON = "/usr/bin/python3"
SHIM = (PYTHON, "-I", "-S", "-c", SHIM_BOOTSTRAP, PACKAGE_PARENT,
        "--cgroup-root", "/sys/fs/cgroup", "--group", GROUP)
IMAGE = "registry.dagger.io/engine:v0.19.4"
INFO = ("docker", "info", "--format", "{{.CgroupDriver}} {{.CgroupVersion}}")
RM = ("docker", "rm", "--force", "ccgroupd-engine")
ENTRYPOINT = "/usr/local/bin/dagger-entrypoint.sh"


def load_engine(tmp_path: Path, **keys: Any) -> EngineSection:
    """[engine] with ``keys`` (JSON values are TOML values), through load_config."""
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    path = tmp_path / "config.toml"
    path.write_text(f"[engine]\n{lines}\n")
    return load_config(path).engine


def config(engine: EngineSection, runtime_dir: Path = Path("/run/ccgroupd")) -> Config:
    return Config(engine=engine, daemon=DaemonSection(runtime_dir=runtime_dir))


def launch_argv(engine: EngineSection, runtime_dir: Path = Path("/run/ccgroupd"),
                ) -> tuple[str, ...]:
    return engine_launch(config(engine, runtime_dir), GROUP, {}, ScriptedCommands(),
                         python=PYTHON).spec.argv


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """An unpacked engine image with its entrypoint."""
    entrypoint = tmp_path / "rootfs" / ENTRYPOINT.lstrip("/")
    entrypoint.parent.mkdir(parents=True)
    entrypoint.write_text("#!/bin/sh\n")
    return tmp_path / "rootfs"


def runc_engine(unpacked: Path, **keys: Any) -> EngineSection:
    values: dict[str, Any] = {"mode": "runc", "rootfs": unpacked, "command": [ENTRYPOINT],
                              "runc_command": sys.executable, **keys}
    return EngineSection(**values)


# -- config ------------------------------------------------------------------------------


def test_mode_defaults_to_exec(tmp_path: Path) -> None:
    engine = load_engine(tmp_path)
    assert engine.mode == "exec"
    assert engine.container_command() == ["/usr/local/bin/dagger-engine", "--config",
                                          "/etc/dagger/engine.toml"]


@pytest.mark.parametrize(("keys", "refusal"), [
    ({"mode": "runc"}, "engine.command is required with mode = 'runc'"),
    ({"container_name": "dagger-engine-x"}, "must not start with 'dagger-engine-'"),
    ({"container_name": "-x"}, "must be 1-128 of"),
    ({"mode": "docker", "private_cgroup_namespace": True}, "applies to mode = 'exec' only"),
    ({"mode": "runc", "command": [ENTRYPOINT], "private_cgroup_namespace": True},
     "applies to mode = 'exec' only"),
    ({"ready_socket": "/run/dagger/engine.sock", "ready_command": ["dagger", "core"]},
     "set ready_socket or ready_command, not both"),
    ({"mode": "podman"}, "mode"),
])
def test_engine_settings_that_cannot_work_are_refused(tmp_path: Path, keys: dict[str, Any],
                                                      refusal: str) -> None:
    with pytest.raises(ConfigError, match="engine") as raised:
        load_engine(tmp_path, **keys)
    assert refusal in str(raised.value)


def test_private_cgroup_namespace_is_accepted_with_exec(tmp_path: Path) -> None:
    assert load_engine(tmp_path, mode="exec", private_cgroup_namespace=True).mode == "exec"


@pytest.mark.parametrize(("keys", "command"), [
    ({"mode": "docker"}, []),  # the image's own entrypoint
    ({"mode": "docker", "command": ["--debug"]}, ["--debug"]),
    ({"mode": "runc", "command": [ENTRYPOINT, "--debug"]}, [ENTRYPOINT, "--debug"]),
    ({"command": ["/bin/engine"]}, ["/bin/engine"]),
])
def test_container_command(tmp_path: Path, keys: dict[str, Any], command: list[str]) -> None:
    assert load_engine(tmp_path, **keys).container_command() == command


# -- docker ------------------------------------------------------------------------------


def test_docker_run_argv_without_a_command_runs_the_image_default() -> None:
    engine = EngineSection(mode="docker", stop_grace_s=310,
                           environment={"OTEL_TOKEN": "s3cret", "HTTP_PROXY": "http://p:3128"},
                           docker_run_args=["--network", "host"])
    assert docker_run_argv(engine, GROUP) == [
        "docker", "run", "--rm", "--name", "ccgroupd-engine",
        "--cgroup-parent", f"/{GROUP}", "--cgroupns", "private", "--privileged",
        "--stop-timeout", "310", "--oom-score-adj", "-900",
        "--volume", "/var/lib/dagger:/var/lib/dagger", "--volume", "/run/dagger:/run/dagger",
        "--env", "HTTP_PROXY", "--env", "OTEL_TOKEN",  # names only: values stay off `ps`
        "--network", "host", IMAGE]


def test_docker_run_argv_with_a_command_puts_it_after_the_image() -> None:
    engine = EngineSection(mode="docker", command=["--debug", "--addr", "unix:///run/x.sock"],
                           image="engine:dev", container_name="ci-engine", bind_mounts=[],
                           docker_command="/usr/bin/docker")
    argv = docker_run_argv(engine, f"/{GROUP}/")
    assert argv[:5] == ["/usr/bin/docker", "run", "--rm", "--name", "ci-engine"]
    assert argv[argv.index("--cgroup-parent") + 1] == f"/{GROUP}"
    assert "--volume" not in argv
    assert argv[-4:] == ["engine:dev", "--debug", "--addr", "unix:///run/x.sock"]


@pytest.mark.parametrize(("answer", "error", "words"), [
    (Completed(0, "systemd 2"), HostUnsupportedError,
     ["'systemd' cgroup driver", "/etc/docker/daemon.json", "native.cgroupdriver=cgroupfs",
      'mode = "runc"']),
    (Completed(0, "cgroupfs 1"), HostUnsupportedError, ["cgroup version '1'"]),
    (Completed(1, "a\nb\nCannot connect to the Docker daemon at unix:///var/run/docker.sock"),
     EngineLaunchError,
     ["`docker info` failed (exit 1)", "b / Cannot connect to the Docker daemon"]),
    (TimeoutError(), EngineLaunchError, [f"did not finish within {HELPER_TIMEOUT_S:g} s"]),
    (FileNotFoundError(2, "No such file or directory"), EngineLaunchError,
     ["cannot run docker: No such file or directory"]),
])
def test_check_docker_refuses_what_would_let_containers_escape_or_fail(
        answer: Completed | Exception, error: type[Exception], words: list[str]) -> None:
    helpers = ScriptedCommands({INFO: answer})
    with pytest.raises(error) as raised:
        asyncio.run(check_docker(EngineSection(mode="docker"), helpers))
    for word in words:
        assert word in str(raised.value)
    assert helpers.calls == [(INFO, HELPER_TIMEOUT_S)]


def test_check_docker_accepts_the_cgroupfs_driver_on_cgroup_v2() -> None:
    helpers = ScriptedCommands({INFO: Completed(0, "cgroupfs 2")})
    asyncio.run(check_launch(EngineSection(mode="docker"), helpers))
    assert helpers.ran == [INFO]


def test_check_docker_reads_the_answer_past_a_warning_of_the_client() -> None:
    # Completed.output is stdout and stderr together: the client warns on stderr, e.g.
    # about a broken ~/.docker/config.json, and the answer is still on the last line.
    helpers = ScriptedCommands({INFO: Completed(
        0, "WARNING: Error loading config file: /root/.docker/config.json: EOF\ncgroupfs 2")})
    asyncio.run(check_docker(EngineSection(mode="docker"), helpers))


@pytest.mark.parametrize("answer", [Completed(0, "ccgroupd-engine"),
                                    Completed(1, "Error: No such container: ccgroupd-engine")])
def test_prepare_docker_removes_a_leftover_and_makes_the_bind_mounts(
        tmp_path: Path, answer: Completed) -> None:
    mounts = [tmp_path / "var/lib/dagger", tmp_path / "run/dagger"]
    helpers = ScriptedCommands({RM: answer})
    asyncio.run(prepare_docker(EngineSection(mode="docker", bind_mounts=mounts), helpers))
    assert helpers.ran == [RM]
    assert all(mount.is_dir() for mount in mounts)


def test_prepare_docker_fails_when_the_leftover_cannot_be_removed(tmp_path: Path) -> None:
    helpers = ScriptedCommands({RM: Completed(
        1, "Error response from daemon: removal of container ccgroupd-engine is already in "
           "progress")})
    engine = EngineSection(mode="docker", bind_mounts=[tmp_path / "dagger"])
    with pytest.raises(EngineLaunchError, match=r"leftover container 'ccgroupd-engine' "
                                                r"\(exit 1\): .*already in progress"):
        asyncio.run(prepare_docker(engine, helpers))


def test_prepare_docker_fails_when_a_bind_mount_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    engine = EngineSection(mode="docker", bind_mounts=[tmp_path / "file" / "dagger"])
    helpers = ScriptedCommands()
    with pytest.raises(EngineLaunchError, match=f"cannot create {tmp_path}/file/dagger"):
        asyncio.run(prepare_docker(engine, helpers))
    assert helpers.ran == []


# -- runc --------------------------------------------------------------------------------


def test_prepare_runc_writes_the_bundle_and_forgets_a_dead_container(
        tmp_path: Path, rootfs: Path) -> None:
    runtime_dir = tmp_path / "run"
    stale = runtime_dir / "runc" / "ccgroupd-engine"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    other = runtime_dir / "runc" / "other-container"
    other.mkdir()
    engine = runc_engine(rootfs, command=[ENTRYPOINT, "--debug"], environment={"X": "1"},
                         bind_mounts=[tmp_path / "dagger"])

    asyncio.run(prepare_runc(engine, runtime_dir))

    spec = json.loads((runtime_dir / "engine-bundle" / "config.json").read_text())
    assert spec["linux"]["cgroupsPath"] == "/container"
    assert spec["root"] == {"path": str(rootfs), "readonly": False}
    assert spec["process"]["args"] == [ENTRYPOINT, "--debug"]
    assert "X=1" in spec["process"]["env"]
    assert spec["hostname"] == "ccgroupd-engine"
    assert str(tmp_path / "dagger") in [mount["destination"] for mount in spec["mounts"]]
    assert not stale.exists()
    assert other.is_dir()
    assert (tmp_path / "dagger").is_dir()


def test_check_runc_accepts_a_rootfs_with_its_entrypoint(rootfs: Path) -> None:
    asyncio.run(check_launch(runc_engine(rootfs), ScriptedCommands()))


@pytest.mark.parametrize(("change", "error", "key"), [
    ({"rootfs": Path("/nonexistent/rootfs")}, ConfigError, "engine.rootfs"),
    ({"command": ["/usr/bin/dagger-engine"]}, ConfigError, "engine.command"),
    ({"runc_command": "no-such-runc"}, HostUnsupportedError, "engine.runc_command"),
])
def test_check_runc_names_what_is_missing(rootfs: Path, change: dict[str, Any],
                                          error: type[Exception], key: str) -> None:
    with pytest.raises(error, match=key):
        check_runc(runc_engine(rootfs, **change))


def test_an_exec_engine_needs_no_host_check() -> None:
    asyncio.run(check_launch(EngineSection(), ScriptedCommands()))  # runs nothing


# -- engine_launch -----------------------------------------------------------------------


def test_exec_mode_runs_the_command_through_the_shim_as_before() -> None:
    engine = EngineSection(command=["/bin/engine", "--debug"], environment={"A": "1"},
                           working_directory=Path("/srv"))
    launch = engine_launch(config(engine), GROUP, {"PATH": "/usr/bin", "NOTIFY_SOCKET": "@x"},
                           ScriptedCommands(), python=PYTHON)
    # The engine's lowered oom_score_adj: a group-level OOM kills a build, not the engine.
    assert launch.spec.argv == (*SHIM, "--oom-score-adj", "-900", "--", "/bin/engine", "--debug")
    assert launch.spec.env == {"PATH": "/usr/bin", "A": "1"}
    assert launch.spec.cwd == Path("/srv")
    assert launch.before_start is None
    namespaced = EngineSection(command=["/bin/engine"], private_cgroup_namespace=True)
    assert launch_argv(namespaced) == (*SHIM, "--private-cgroupns", "--oom-score-adj", "-900",
                                       "--", "/bin/engine")


def test_docker_mode_runs_docker_run_in_the_launcher_leaf(tmp_path: Path) -> None:
    engine = EngineSection(mode="docker", environment={"OTEL_TOKEN": "s3cret"},
                           bind_mounts=[tmp_path / "dagger"])
    helpers = ScriptedCommands({RM: Completed(0, "")})
    launch = engine_launch(config(engine), GROUP, {"PATH": "/usr/bin"}, helpers,
                           python=PYTHON)
    assert launch.spec.argv == (*SHIM, "--leaf", "launcher", "--",
                                *docker_run_argv(engine, GROUP))
    # The docker client passes --env NAME on from its own environment.
    assert launch.spec.env == {"PATH": "/usr/bin", "OTEL_TOKEN": "s3cret"}
    assert launch.spec.cwd == Path("/")
    assert launch.before_start is not None
    asyncio.run(launch.before_start())
    assert helpers.ran == [RM]
    assert (tmp_path / "dagger").is_dir()


def test_runc_mode_runs_runc_in_a_private_namespace_and_the_launcher_leaf(
        tmp_path: Path, rootfs: Path) -> None:
    runtime_dir = tmp_path / "run"
    engine = runc_engine(rootfs, runc_command="runc", bind_mounts=[])
    launch = engine_launch(config(engine, runtime_dir), GROUP, {"PATH": "/usr/bin"},
                           ScriptedCommands(), python=PYTHON)
    assert launch.spec.argv == (
        *SHIM, "--private-cgroupns", "--leaf", "launcher", "--oom-score-adj", "-900", "--",
        "runc", "--root", f"{runtime_dir}/runc", "run",
        "--bundle", f"{runtime_dir}/engine-bundle", "ccgroupd-engine")
    assert launch.spec.cwd == Path("/")
    assert launch.before_start is not None
    asyncio.run(launch.before_start())
    assert (runtime_dir / "engine-bundle" / "config.json").is_file()


def test_engine_argv_runs_the_command_through_the_shim() -> None:
    argv = engine_argv("/venv/bin/python3", Path("/sys/fs/cgroup"), "a.service/engine",
                       ["dagger-engine", "--debug"], private_cgroupns=True)
    assert argv == ("/venv/bin/python3", "-I", "-S", "-c", SHIM_BOOTSTRAP, PACKAGE_PARENT,
                    "--cgroup-root", "/sys/fs/cgroup", "--group", "a.service/engine",
                    "--private-cgroupns", "--", "dagger-engine", "--debug")
