"""The exec shim that starts the engine inside its cgroup with no start-then-move window.

    python3 -I -S -c SHIM_BOOTSTRAP PACKAGE_PARENT --cgroup-root /sys/fs/cgroup --group GROUP
        [--private-cgroupns] [--leaf NAME] -- COMMAND [ARG...]

(engine_argv in ccgroupd.engine.launch writes it: no path the engine's environment or a
local install can set decides which code runs here, as root).

The shim moves itself into GROUP (writes 0 to its cgroup.procs), optionally
enters a private cgroup namespace rooted at GROUP, and then execs COMMAND, so
the engine's first instruction already runs inside the group and everything it
forks is limited. Python has no clone3(CLONE_INTO_CGROUP), and preexec_fn is
unsafe in a process with threads, hence a separate short-lived program.

With --private-cgroupns the engine sees GROUP as the root of its cgroup tree
(``0::/`` in /proc/self/cgroup) and a fresh cgroup2 mount on the cgroup root, so
the groups it creates for build containers (``/buildkit/<id>``) land under
GROUP and stay inside its limits. The mount namespace is private as well: the
new cgroup2 mount must not propagate back to the host.

Each failure prints one line to stderr and exits with its own code (below), so
the supervisor's ``engine_exited`` record tells which step failed. This runs on
every engine start: keep the imports few.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import NoReturn

from ccgroupd.errors import CcgroupdError
from ccgroupd.kernel.cgroupfs import CGROUP_ROOT, Cgroupfs
from ccgroupd.kernel.procfs import Procfs

# Exit codes above what engines commonly use, below the shell's 126/127/128+N.
EXIT_SHIM_USAGE = 120
EXIT_SHIM_ATTACH = 121
EXIT_SHIM_NAMESPACE = 122
EXIT_SHIM_NOT_EXECUTABLE = 126  # as the shell: found but cannot be executed
EXIT_SHIM_NOT_FOUND = 127  # as the shell: command not found

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

USAGE = ("usage: python3 -m ccgroupd.engine.shim [--cgroup-root PATH] --group GROUP "
         "[--private-cgroupns] [--leaf NAME] [--oom-score-adj N] -- COMMAND [ARG...]")


def _fail(code: int, message: str) -> NoReturn:
    print(f"ccgroupd-shim: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_private_cgroup_namespace(cgroup_root: str) -> None:
    """unshare(CLONE_NEWCGROUP|CLONE_NEWNS), keep our mounts private, remount cgroup2.

    Call after joining the group: the new namespace is rooted at the caller's
    cgroup at the moment of the unshare. Raises OSError naming the failed step.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    _check(libc.unshare(CLONE_NEWCGROUP | CLONE_NEWNS),
           "unshare(CLONE_NEWCGROUP|CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None),
           "mount --make-rprivate /")
    # The kernel refuses (EBUSY) to mount a file system on top of a mount of the same
    # superblock at the same place, and cgroup2 has one superblock: take the host's
    # view away first (only in our new mount namespace).
    _check(libc.umount2(os.fsencode(cgroup_root), MNT_DETACH), f"umount {cgroup_root}")
    _check(libc.mount(b"cgroup2", os.fsencode(cgroup_root), b"cgroup2",
                            MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
           f"mount -t cgroup2 cgroup2 {cgroup_root}")


def _parse(argv: list[str]) -> tuple[str, str, bool, str | None, int | None, list[str]]:
    if "--" not in argv:
        _fail(EXIT_SHIM_USAGE, USAGE)
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    values: dict[str, str] = {"--cgroup-root": str(CGROUP_ROOT)}
    private = False
    index = 0
    while index < len(options):
        option = options[index]
        if option == "--private-cgroupns":
            private = True
        elif (option in ("--cgroup-root", "--group", "--leaf", "--oom-score-adj")
              and index + 1 < len(options)):
            index += 1
            values[option] = options[index]
        else:
            _fail(EXIT_SHIM_USAGE, f"unknown option {option!r}; {USAGE}")
        index += 1
    group, leaf = values.get("--group"), values.get("--leaf")
    if group is None or not command or (leaf is not None and "/" in leaf.strip("/")):
        _fail(EXIT_SHIM_USAGE, USAGE)
    oom_score_adj = values.get("--oom-score-adj")
    if oom_score_adj is not None and not oom_score_adj.lstrip("-").isdigit():
        _fail(EXIT_SHIM_USAGE, f"--oom-score-adj {oom_score_adj!r}: not a number; {USAGE}")
    return (values["--cgroup-root"], group, private, leaf,
            None if oom_score_adj is None else int(oom_score_adj), command)


def join(cgroup_root: str, group: str, leaf: str | None, *, private: bool) -> None:
    """Move this process into GROUP or GROUP/LEAF, entering the namespace on the way."""
    target = group if private or leaf is None else f"{group.rstrip('/')}/{leaf}"
    try:
        cgroupfs = Cgroupfs(cgroup_root)
        if target != group:
            cgroupfs.create(target)
        cgroupfs.attach(target, 0)
    except CcgroupdError as error:
        _fail(EXIT_SHIM_ATTACH, f"cannot join cgroup {target!r}: {error}")
    if not private:
        return
    try:
        enter_private_cgroup_namespace(cgroup_root)
    except OSError as error:
        _fail(EXIT_SHIM_NAMESPACE, f"cannot enter a private cgroup namespace: {error}")
    if leaf is not None:
        try:
            # A fresh view: the mount now shows GROUP as the root.
            cgroupfs = Cgroupfs(cgroup_root)
            cgroupfs.create(leaf)
            cgroupfs.attach(leaf, 0)
        except CcgroupdError as error:
            _fail(EXIT_SHIM_ATTACH, f"cannot join cgroup {leaf!r} in the namespace: {error}")


def main(argv: list[str]) -> NoReturn:
    cgroup_root, group, private, leaf, oom_score_adj, command = _parse(argv)
    join(cgroup_root, group, leaf, private=private)
    if oom_score_adj is not None:
        # Inherited by the engine and everything it starts; ccgroupd resets it for builds,
        # so that under a group-level OOM the kernel picks a build, not the engine.
        try:
            Procfs().set_oom_score_adj(os.getpid(), oom_score_adj)
        except CcgroupdError as error:
            _fail(EXIT_SHIM_ATTACH, f"cannot set oom_score_adj {oom_score_adj}: {error}")
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        _fail(EXIT_SHIM_NOT_FOUND, f"{command[0]}: command not found")
    except OSError as error:
        _fail(EXIT_SHIM_NOT_EXECUTABLE, f"cannot execute {command[0]}: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
