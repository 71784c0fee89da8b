"""How the engine is launched, per ``[engine] mode``: on the host, by Docker, or by runc.

Every mode ends in one process the supervisor starts through the exec shim
and signals: the engine itself (exec), the attached ``docker run`` client
(docker) or ``runc run`` (runc). The last two forward SIGTERM to the
container's entrypoint, and the container's processes live inside the engine
group, so the supervisor's stop (SIGTERM, grace period, cgroup.kill of the
group) covers the engine and every build container in all three modes.

Container modes put the launcher in the leaf ``<engine group>/launcher``: the
engine group must hold no process of its own so that the container runtime can
enable controllers in it for the container's group beside the leaf.

- docker: dockerd (cgroupfs driver) makes ``<engine group>/<container id>`` from
  ``--cgroup-parent``; ``--cgroupns=private`` roots the engine's view there. The
  systemd driver can only place containers in slices systemd owns, outside our
  delegated subtree: refused with what to change. (docker's runc enables every
  controller in each ancestor of the container's group, up to the root: that is
  docker's cgroupfs driver on any host, documented in README.md.)
- runc: the shim joins the engine group, enters a private cgroup and mount
  namespace rooted there, moves into ``/launcher`` and execs runc, whose
  container group ``/container`` is then ``<engine group>/container``. runc
  enables controllers in every ancestor of its group; in the namespace the top
  one is the engine group, so no group systemd owns is written.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import ccgroupd
from ccgroupd.config import Config, EngineSection
from ccgroupd.engine.oci import runtime_spec, write_bundle
from ccgroupd.engine.process import CommandRunner, Completed
from ccgroupd.engine.readiness import probe_from
from ccgroupd.engine.supervisor import EngineSpec, Launch, RestartPolicy
from ccgroupd.errors import ConfigError, EngineLaunchError, HostUnsupportedError
from ccgroupd.notify import child_environment

# The shim runs as root on every engine start, with the engine's environment: it runs the
# package the daemon runs, from where the daemon found it, and nothing a path could plant.
# -I ignores PYTHON* variables (PYTHONPATH in [engine] environment), the user's site and
# the working directory; -S skips site (/usr/local/lib/python3.*/dist-packages, .pth
# files). The standard library comes first, then the package's directory.
PACKAGE_PARENT = str(Path(ccgroupd.__file__).resolve().parent.parent)
SHIM_BOOTSTRAP = ("import sys; sys.path.append(sys.argv.pop(1)); "
                  "from ccgroupd.engine.shim import main; main(sys.argv[1:])")
LAUNCHER_LEAF = "launcher"
RUNC_CONTAINER_GROUP = "container"
# The runc container shares the host's network: give it the host's name service too.
HOST_NAME_SERVICE_FILES = (Path("/etc/resolv.conf"), Path("/etc/hosts"))
# docker info / docker rm against a busy dockerd: generous, but bounded.
HELPER_TIMEOUT_S = 60.0
DOCKER_CGROUPFS_FIX = (
    'add "exec-opts": ["native.cgroupdriver=cgroupfs"] to /etc/docker/daemon.json and run '
    "`systemctl restart docker` (this changes the driver for every container on this host), "
    "or set [engine] mode = \"runc\"")


def engine_launch(config: Config, engine_group: str, environ: Mapping[str, str],
                  runner: CommandRunner, python: str = sys.executable) -> Launch:
    engine = config.engine
    return replace(_mode_launch(config, engine_group, environ, runner, python),
                   readiness=probe_from(engine.ready_socket, engine.ready_command,
                                        engine.ready_timeout_s))


def restart_policy(engine: EngineSection) -> RestartPolicy:
    return RestartPolicy(mode=engine.restart, initial_delay_s=engine.restart_initial_delay_s,
                         max_delay_s=engine.restart_max_delay_s, burst=engine.restart_burst,
                         window_s=engine.restart_window_s, stop_grace_s=engine.stop_grace_s)


def engine_argv(python: str, cgroup_root: Path, group: str, command: Sequence[str],
                *, private_cgroupns: bool, leaf: str | None = None,
                oom_score_adj: int | None = None,
                package_parent: str = PACKAGE_PARENT) -> tuple[str, ...]:
    """The argv that runs ``command`` through the exec shim inside ``group`` (or its ``leaf``)."""
    shim = [python, "-I", "-S", "-c", SHIM_BOOTSTRAP, package_parent,
            "--cgroup-root", str(cgroup_root), "--group", group]
    if private_cgroupns:
        shim.append("--private-cgroupns")
    if leaf is not None:
        shim += ["--leaf", leaf]
    if oom_score_adj is not None:
        shim += ["--oom-score-adj", str(oom_score_adj)]
    return (*shim, "--", *command)


def _mode_launch(config: Config, engine_group: str, environ: Mapping[str, str],
                 runner: CommandRunner, python: str) -> Launch:
    engine = config.engine
    cgroup_root = config.daemon.cgroup_root
    if engine.mode == "exec":
        argv = engine_argv(python, cgroup_root, engine_group, engine.command,
                           private_cgroupns=engine.private_cgroup_namespace,
                           oom_score_adj=engine.oom_score_adj)
        return Launch(EngineSpec(argv, child_environment(environ, engine_environment(engine)),
                                 engine.working_directory),
                      (lambda: prepare_exec(engine)) if engine.own_directories() else None)
    runtime_dir = config.daemon.runtime_dir
    if engine.mode == "docker":
        argv = engine_argv(python, cgroup_root, engine_group, docker_run_argv(engine, engine_group),
                           private_cgroupns=False, leaf=LAUNCHER_LEAF)
        # `docker run -e NAME` takes the value from the client's environment: no
        # secrets on a command line that `ps` shows.
        env = child_environment(environ, engine_environment(engine))
        return Launch(EngineSpec(argv, env, Path("/")),
                      lambda: prepare_docker(engine, runner))
    # runc passes its own oom_score_adj on to the container's processes.
    argv = engine_argv(python, cgroup_root, engine_group, runc_run_argv(engine, runtime_dir),
                       private_cgroupns=True, leaf=LAUNCHER_LEAF,
                       oom_score_adj=engine.oom_score_adj)
    return Launch(EngineSpec(argv, child_environment(environ, {}), Path("/")),
                  lambda: prepare_runc(engine, runtime_dir),
                  (engine.rootfs, tuple(engine.container_command()),
                   tuple(sorted(engine_environment(engine).items())), engine.working_directory,
                   tuple(engine.bind_mounts)))


# -- docker ----------------------------------------------------------------------------


def docker_run_argv(engine: EngineSection, engine_group: str) -> list[str]:
    argv = [engine.docker_command, "run", "--rm", "--name", engine.container_name,
            "--cgroup-parent", f"/{engine_group.strip('/')}", "--cgroupns", "private",
            "--privileged", "--stop-timeout", str(math.ceil(engine.stop_grace_s)),
            "--oom-score-adj", str(engine.oom_score_adj)]
    for directory in engine.bind_mounts:
        argv += ["--volume", f"{directory}:{directory}"]
    for name in sorted(engine_environment(engine)):
        argv += ["--env", name]
    return [*argv, *engine.docker_run_args, engine.image, *engine.container_command()]


async def check_docker(engine: EngineSection, runner: CommandRunner) -> None:
    """Refuse docker's systemd cgroup driver (or cgroup v1) before anything starts."""
    completed = await _helper(runner, [engine.docker_command, "info", "--format",
                                        "{{.CgroupDriver}} {{.CgroupVersion}}"])
    if completed.returncode != 0:
        raise EngineLaunchError(f"`{engine.docker_command} info` failed (exit "
                                f"{completed.returncode}): {completed.tail()}; is docker running?")
    # The output holds stderr too: the answer is the last line, after any client warning.
    lines = completed.output.splitlines()
    driver, _, version = (lines[-1].strip() if lines else "").partition(" ")
    if driver != "cgroupfs":
        raise HostUnsupportedError(
            f"docker uses the {driver!r} cgroup driver: it places containers only in slices "
            "that systemd owns, outside ccgroupd's delegated group, so the engine's build "
            f"containers would escape the limits. To fix: {DOCKER_CGROUPFS_FIX}")
    if version != "2":
        raise HostUnsupportedError(f"docker reports cgroup version {version!r}; ccgroupd "
                                   "needs the unified (v2) hierarchy")


async def prepare_docker(engine: EngineSection, runner: CommandRunner) -> None:
    """Make the bind-mount sources and remove a container of the same name (a crash's
    leftover would make `docker run --name` fail)."""
    _make_directories([*engine.bind_mounts, *engine.own_directories().values()])
    completed = await _helper(runner, [engine.docker_command, "rm", "--force",
                                        engine.container_name])
    if completed.returncode != 0 and "no such container" not in completed.output.lower():
        raise EngineLaunchError(f"cannot remove the leftover container {engine.container_name!r}"
                                f" (exit {completed.returncode}): {completed.tail()}")


# -- runc ------------------------------------------------------------------------------


def runc_root(runtime_dir: Path) -> Path:
    return runtime_dir / "runc"


def bundle_dir(runtime_dir: Path) -> Path:
    return runtime_dir / "engine-bundle"


def runc_run_argv(engine: EngineSection, runtime_dir: Path) -> list[str]:
    return [engine.runc_command, "--root", str(runc_root(runtime_dir)), "run",
            "--bundle", str(bundle_dir(runtime_dir)), engine.container_name]


def check_runc(engine: EngineSection) -> None:
    """The rootfs and the command in it exist: found out now rather than at every restart."""
    if not engine.rootfs.is_dir():
        raise ConfigError(f"engine.rootfs = {str(engine.rootfs)!r}: no such directory (unpack "
                          "the engine image there; see packaging/README.md)")
    entrypoint = engine.rootfs / engine.command[0].lstrip("/")
    if not os.path.lexists(entrypoint):
        raise ConfigError(f"engine.command = {engine.command!r}: {entrypoint} does not exist "
                          f"in engine.rootfs")
    if shutil.which(engine.runc_command) is None:
        raise HostUnsupportedError(f"engine.runc_command = {engine.runc_command!r}: not found "
                                   "(apt install runc)")


async def prepare_runc(engine: EngineSection, runtime_dir: Path) -> None:
    """Write the bundle's config.json and forget the state of a container that died with
    an earlier daemon (its processes were killed with the engine group)."""
    _make_directories([*engine.bind_mounts, *engine.own_directories().values()])
    spec = runtime_spec(rootfs=engine.rootfs, args=engine.container_command(),
                        env=engine_environment(engine), cwd=str(engine.working_directory),
                        cgroups_path=f"/{RUNC_CONTAINER_GROUP}", hostname=engine.container_name,
                        bind_mounts=engine.bind_mounts,
                        host_files=[path for path in HOST_NAME_SERVICE_FILES if path.exists()])
    write_bundle(bundle_dir(runtime_dir), spec)
    state = runc_root(runtime_dir) / engine.container_name
    if state.exists():
        shutil.rmtree(state)


# -- shared ----------------------------------------------------------------------------


async def check_launch(engine: EngineSection, runner: CommandRunner) -> None:
    """Once at start-up: what would make every start of this mode fail."""
    if engine.mode == "docker":
        await check_docker(engine, runner)
    elif engine.mode == "runc":
        check_runc(engine)


def engine_environment(engine: EngineSection) -> dict[str, str]:
    """[engine] environment, with $STATE_DIRECTORY and $RUNTIME_DIRECTORY unless it sets them."""
    own = {variable: str(directory) for variable, directory in engine.own_directories().items()}
    return {**own, **engine.environment}


async def prepare_exec(engine: EngineSection) -> None:
    _make_directories(list(engine.own_directories().values()))


def _make_directories(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EngineLaunchError(f"cannot create {directory} for the engine: "
                                    f"{error.strerror} (errno {error.errno})") from error


async def _helper(runner: CommandRunner, argv: list[str]) -> Completed:
    try:
        return await runner.run(argv, HELPER_TIMEOUT_S)
    except TimeoutError:
        raise EngineLaunchError(f"`{' '.join(argv)}` did not finish within "
                                f"{HELPER_TIMEOUT_S:g} s") from None
    except OSError as error:
        raise EngineLaunchError(f"cannot run {argv[0]}: {error.strerror or error}") from error
