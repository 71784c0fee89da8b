#!/opt/ccgroupd/venv/bin/python3
"""Real kernel: `ccgroupd check` passes, and every Cgroupfs verb does what the fake kernel
(tests/fakekernel.py) says it does.

Runs as root in the guest. A scratch group S under the cgroup root gets cpu, memory and pids
for its child G; G gets limits written and verified, a real `sleep` is attached, killed
through cgroup.kill, and the groups are removed. The second half checks the kernel rules the
fake kernel models (root files, what a new child sees, errnos), so a difference between the
fake and the real kernel fails here rather than hiding in unit tests.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# The scenario's own directory comes first on sys.path: the table shared with the unit tests.
from kernel_refusals import REFUSALS

from ccgroupd.errors import CgroupError, CgroupWriteError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import (
    CGROUP_CONTROLLERS,
    CGROUP_KILL,
    CGROUP_PROCS,
    CGROUP_SUBTREE_CONTROL,
    CPU_MAX,
    CPU_STAT,
    MEMORY_MAX,
    MEMORY_SWAP_MAX,
    PIDS_MAX,
)
from ccgroupd.kernel.procfs import Procfs

S = "ccgroupd-boundary-test"
G = f"{S}/g"
CONTROLLERS = ("cpu", "memory", "pids")

fs = Cgroupfs()
failures: list[str] = []


def fact(ok: bool, text: str) -> None:
    print(f"{'ok' if ok else 'FAILED'}: {text}", flush=True)
    if not ok:
        failures.append(text)


def refused(action: Callable[[], object]) -> int | None:
    """The errno a Cgroupfs call (or a raw os call) failed with, None if it worked."""
    try:
        action()
    except CgroupError as error:
        return error.errno
    except OSError as error:
        return error.errno
    return None


def errname(number: int | None) -> str:
    return "no error" if number is None else errno.errorcode.get(number, str(number))


def expect_errno(action: Callable[[], object], expected: int, text: str) -> None:
    got = refused(action)
    fact(got == expected, f"{text}: {errname(got)} (want {errname(expected)})")


def raw_write(group: str, attribute: str, value: str) -> None:
    """Write like a shell would, bypassing Cgroupfs (for files Cgroupfs refuses to name)."""
    fd = os.open(fs.path(group, attribute), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def ccgroupd_check(*options: str) -> tuple[int, str]:
    done = subprocess.run(["ccgroupd", *options, "check"], capture_output=True, text=True,
                          check=False)
    print(done.stdout + done.stderr, end="")
    return done.returncode, done.stdout + done.stderr


def preflight() -> None:
    # The shipped example runs the engine with docker, which this guest starts only in
    # 70-engine-docker: check reports that as an engine failure (exit 6), and nothing else
    # may fail on the host. A config sized to the guest (exec mode) passes.
    code, output = ccgroupd_check()
    host_fails = [line for line in output.splitlines()
                  if line.startswith("FAIL") and not line.startswith(("FAIL  config",
                                                                       "FAIL  engine"))]
    fact(code in (0, 3, 6) and not host_fails and "Traceback" not in output,
         f"`ccgroupd check` with the installed config: exit {code}, no host FAIL line")
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(f"[limits]\ncpus = {len(os.sched_getaffinity(0))}\nmemory = \"1G\"\n")
        config.flush()
        code, output = ccgroupd_check("--config", config.name)
    fact(code == 0 and "This host can run ccgroupd." in output,
         f"`ccgroupd --config <guest-sized> check` exits {code}")


def verbs() -> None:

    fact(fs.create(G) is True, f"create({G!r}) made the group (mkdir -p)")
    fact(fs.create(G) is False, "create again: already there, False")
    fact(fs.controllers(G) == fs.subtree_controllers(S) == frozenset(),
         f"a new child sees its parent's subtree_control: {sorted(fs.controllers(G))}")
    fs.enable_controllers(S, CONTROLLERS)
    fact(fs.controllers(G) >= set(CONTROLLERS),
         f"after enable_controllers(S, cpu memory pids), G has: {sorted(fs.controllers(G))}")

    for attribute, value, in_force in (
        (CPU_MAX, "200000 100000", "200000 100000"),
        (MEMORY_MAX, "536870913", "536870912"),  # one byte over 512 MiB: rounded to a page
        (MEMORY_SWAP_MAX, "268435457", "268435456"),
        (PIDS_MAX, "100", "100"),
    ):
        try:
            shown = fs.write_verified(G, attribute, value)
        except CgroupError as error:
            fact(False, f"write_verified {attribute} {value!r}: {error}")
            continue
        read_back = fs.read(G, attribute).strip()
        fact(shown == read_back == in_force,
             f"{attribute}: wrote {value!r}, verified {shown!r}, reads {read_back!r}")

    sleeper = subprocess.Popen(["sleep", "300"])
    fs.attach(G, sleeper.pid)
    fact(fs.procs(G) == [sleeper.pid], f"attached sleep {sleeper.pid}: procs(G) = {fs.procs(G)}")
    where = Procfs().cgroup_of(sleeper.pid)
    fact(where == G, f"cgroup_of({sleeper.pid}) = {where!r}")
    fact(fs.populated(S), "S is populated (cgroup.events)")

    try:
        fs.write(G, CPU_MAX, "10 100000")
        fact(False, "cpu.max '10 100000' was accepted")
    except CgroupWriteError as error:
        fact(error.errno == errno.EINVAL and error.value == "10 100000"
             and error.path.endswith(f"{G}/{CPU_MAX}"), f"invalid cpu.max: {error}")
    fact(fs.read(G, CPU_MAX).strip() == "200000 100000", "cpu.max unchanged after the refusal")

    expect_errno(lambda: fs.write(G, "memory.maxx", "1G"), errno.ENOENT,
                 "misspelled attribute memory.maxx")
    fact(not fs.path(G, "memory.maxx").exists(), "the misspelled attribute was not created")

    expect_errno(lambda: fs.enable_controllers(G, ["memory"], top=G), errno.EBUSY,
                 "enabling controllers in G while it holds a process (no internal processes)")
    expect_errno(lambda: fs.attach(S, sleeper.pid), errno.EBUSY,
                 "attaching to S, which enables controllers for its children")

    # remove() while the sleep still runs: rmdir is EBUSY, the first back-off kills the
    # subtree through cgroup.kill, and remove() retries until the kernel lets the group go.
    sleeps: list[float] = []

    def back_off(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            fs.kill(S)
        time.sleep(seconds)

    fs.remove(S, sleep=back_off)
    fact(not fs.exists(S) and len(sleeps) >= 1,
         f"remove(S) with a live process: EBUSY, kill(S), gone after {len(sleeps)} "
         f"back-off(s) {sleeps}")
    try:
        status = sleeper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        status = None
    fact(status == -9, f"the sleep died with status {status} (SIGKILL is -9)")


def kernel_rules() -> None:
    """The rules tests/fakekernel.py models, checked on this kernel."""
    root_files = set(os.listdir(fs.root))
    for name in (CGROUP_PROCS, CGROUP_CONTROLLERS, CGROUP_SUBTREE_CONTROL, CPU_STAT,
                 "cpu.pressure", "memory.pressure", "io.pressure", "memory.stat", "io.stat"):
        fact(name in root_files, f"the root has {name}")
    for name in (CGROUP_KILL, "cgroup.events", CPU_MAX, MEMORY_MAX, PIDS_MAX, "pids.current"):
        fact(name not in root_files, f"the root has no {name}")
    fact("nr_throttled" in fs.read_flat_keyed("", CPU_STAT),
         f"the root's cpu.stat has every key: {sorted(fs.read_flat_keyed('', CPU_STAT))}")

    fs.create(f"{S}/bare")
    bare_stat = set(fs.read_flat_keyed(f"{S}/bare", CPU_STAT))
    fact(bare_stat == {"usage_usec", "user_usec", "system_usec"},
         f"cpu.stat without the cpu controller: {sorted(bare_stat)}")
    fact(not fs.path(f"{S}/bare", MEMORY_MAX).exists(), "no memory.max without memory enabled")
    fs.enable_controllers(S, CONTROLLERS)
    fact("nr_throttled" in fs.read_flat_keyed(f"{S}/bare", CPU_STAT),
         "cpu.stat gains nr_throttled once cpu is enabled")
    fact(fs.read(f"{S}/bare", MEMORY_MAX) == "max\n" and fs.read(f"{S}/bare", CPU_MAX)
         == "max 100000\n", "defaults: memory.max 'max', cpu.max 'max 100000'")

    b = f"{S}/bare"
    for attribute, value, expected in REFUSALS:
        expect_errno(functools.partial(fs.write, b, attribute, value), expected,
                     f"{attribute} {value!r}")
    for value, shown in (("8G", "8589934592"), ("8g", "8589934592"), ("512M", "536870912"),
                         ("1k", "0"), (str(2**63), "max")):
        fs.write(b, MEMORY_MAX, value)
        got = fs.read(b, MEMORY_MAX).strip()
        fact(got == shown, f"memory.max {value!r} reads back {got!r}")
    fs.write(b, PIDS_MAX, "007")
    fact(fs.read(b, PIDS_MAX) == "7\n", f"pids.max '007' reads back {fs.read(b, PIDS_MAX)!r}")
    fs.write(b, CPU_MAX, "30000 100000")
    fs.write(b, "cpu.max.burst", "20000")
    expect_errno(lambda: fs.write(b, CPU_MAX, "10000 100000"), errno.EINVAL,
                 "cpu.max below cpu.max.burst")
    fs.write(b, "cpu.max.burst", "0")
    fs.write(b, CPU_MAX, "50000")
    fact(fs.read(b, CPU_MAX) == "50000 100000\n", "one number changes only the quota")

    expect_errno(lambda: os.open(fs.path(b, "made.up"), os.O_WRONLY | os.O_CREAT, 0o644),
                 errno.EACCES, "creating a file in a group")
    fs.write(b, CGROUP_SUBTREE_CONTROL, "+memory")
    expect_errno(lambda: raw_write(S, CGROUP_SUBTREE_CONTROL, "-memory"), errno.EBUSY,
                 "disabling memory in S while its child still enables it")
    fs.write(b, CGROUP_SUBTREE_CONTROL, "-memory")
    fs.write(S, CGROUP_SUBTREE_CONTROL, "-memory")
    fact(not fs.path(b, MEMORY_MAX).exists(), "disabling memory removes memory.max")
    fs.write(S, CGROUP_SUBTREE_CONTROL, "+memory")
    fact(fs.read(b, MEMORY_MAX) == "max\n", "re-enabling memory starts from the default again")

    sleeper = subprocess.Popen(["sleep", "300"])
    fs.create(f"{b}/leaf")
    fs.attach(f"{b}/leaf", sleeper.pid)
    fact(fs.read(b, "pids.current").strip() == "1", "pids.current counts the subtree")
    expect_errno(lambda: os.rmdir(fs.path(f"{b}/leaf")), errno.EBUSY, "rmdir of a populated group")
    expect_errno(lambda: os.rmdir(fs.path(b)), errno.EBUSY, "rmdir of a group with a child")
    expect_errno(lambda: os.rmdir(fs.root), errno.EBUSY, "rmdir of the root")
    fs.kill(S)
    sleeper.wait(timeout=10)
    fs.remove(S)


def main() -> int:
    try:
        preflight()
        verbs()
        kernel_rules()
    except (CgroupError, OSError, subprocess.SubprocessError) as error:
        fact(False, f"unexpected error: {error!r}")
    finally:
        if fs.exists(S):
            fs.kill(S)
            fs.remove(S)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
