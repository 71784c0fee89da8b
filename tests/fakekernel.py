"""A fake cgroup v2 kernel over pyfakefs, for tests of the kernel boundary and everything above it.

pyfakefs files are passive, so the kernel's rules live here and are wired into the
fake file system at the points a kernel would enforce them:

* ``mkdir``/``rmdir`` (the fake file system's own methods, so ``os.mkdir`` and
  ``pathlib`` both reach them): a new directory under the root is a group whose
  interface files appear at once; ``rmdir`` refuses (EBUSY) a populated group or
  one with children and takes the interface files with it.
* ``write(2)`` (the fake ``os.write``): every write to an interface file is one
  whole value, parsed and validated as the kernel does, or refused with the
  kernel's errno. Buffered writes (``open(..., "w")``) reach the same code through
  pyfakefs' ``side_effect`` hook.
* ``open(2)`` (the fake ``os.open``): no file can be created in a group (EACCES).
* ``kill(2)`` (the fake ``os.kill``): fake processes die. Other pids go to the real
  kill(2) (tests may signal real children); fake pids lie above PID_MAX_LIMIT, so a
  stale fake pid can never reach a real process.

Everything else is plain data: which files each controller adds and their
defaults, the process table, the counters. Files are re-rendered from that data
after every change, so readers need no hook. Facts checked against a real 6.1
kernel in the guest VM are listed in tests/vm/scenarios/10-boundary.py.

Everything is seen as root would see it. Known simplifications: one write(2) per
open file (what Cgroupfs does); threads and freezing are not modelled (io.weight and
io.max are, as blk-iocost and blk-throttle show them), nor are cgroup.{type,freeze,
threads,stat,max.*,pressure}, pids.peak, memory.{reclaim,numa_stat,zswap.*}, the
hugetlb/rdma/misc files or the cpuset files besides cpuset.cpus, cpuset.mems and a
read-only cpuset.cpus.effective (no partitions; the host has ``cpus`` CPUs and
``memory_nodes`` nodes); PSI files are read-only text (no triggers); reading
cgroup.kill gives "" (the kernel: EINVAL); inotify cannot watch a pyfakefs file.

Block devices: :meth:`FakeKernel.add_disk` puts a disk and its partitions into sysfs as
the kernel links them (``/sys/dev/block/MAJ:MIN``); io.max takes limits for those disks
only. A fake file has no real device, so :meth:`FakeKernel.stat` is os.stat with the
device :meth:`FakeKernel.put_on` gave the path (or pyfakefs' own, which has major 0).
io.max values must be digits or max: 6.1 would read "1M" as 1, which Cgroupfs never writes.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pyfakefs.fake_file import FakeFile
from pyfakefs.fake_filesystem import FakeFilesystem
from pyfakefs.fake_filesystem_unittest import Patcher

PAGE_SIZE = 4096
# The order in which the kernel lists controllers in cgroup.controllers.
KNOWN_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
DEFAULT_CONTROLLERS = KNOWN_CONTROLLERS  # what Debian 12's kernel offers
# Fake pids start above the kernel's PID_MAX_LIMIT (4194304), so even a stray real
# kill(2) of a fake pid can only fail with ESRCH.
FIRST_FAKE_PID = 10_000_000

_PIDS_MAX_LIMIT = 4_194_304 + 1  # pids.max must be below PID_MAX_LIMIT + 1
_PAGE_COUNTER_MAX = (2**63 - 1) // PAGE_SIZE
_CPU_MIN_USEC = 1_000  # quota and period: at least 1 ms
_CPU_MAX_PERIOD_USEC = 1_000_000  # period: at most 1 s
_CPU_MAX_QUOTA_USEC = (1 << 44) - 1
_WEIGHT_RANGE = range(1, 10_001)  # cpu.weight and io.weight
_MEMPARSE_SHIFTS = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# io.max: "max" is U64_MAX for a byte rate and UINT_MAX for an I/O rate (blk-throttle.c).
_IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")
_U64_MAX = 2**64 - 1
_UINT_MAX = 2**32 - 1
_CPU_STAT_CORE_KEYS = ("usage_usec", "user_usec", "system_usec")
_CPU_STAT_CPU_KEYS = ("nr_periods", "nr_throttled", "throttled_usec", "nr_bursts", "burst_usec")
_PSI_IDLE = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


def _einval(reason: str) -> OSError:
    return OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)} ({reason})")


@dataclass
class _Group:
    subtree_control: set[str] = field(default_factory=set)
    procs: set[int] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class _Process:
    comm: str
    rss_bytes: int
    group: str
    uid: int
    gid: int
    argv: list[str]


# A write handler validates the text written and stores the result in the group.
Writer = Callable[["FakeKernel", str, str], None]  # (kernel, group, text)


@dataclass(frozen=True)
class _File:
    controller: str | None  # None: a core file, present whatever is enabled
    default: str = ""
    counters: tuple[str, ...] = ()  # flat-keyed counter files: their keys, all starting at 0
    write: Writer | None = None  # None: read-only (a write is EINVAL)
    on_root: bool = False
    hierarchical: bool = False  # counters that also count the events of descendants
    swap: bool = False  # exists only with swap accounting


def _write_max_depth(kernel: FakeKernel, group: str, text: str) -> None:
    value = text.strip()
    if value != "max" and not value.isdigit():
        raise _einval("cgroup.max.depth takes a number or max")
    kernel.group(group).values["cgroup.max.depth"] = value


def _write_memory(attribute: str) -> Writer:
    def write(kernel: FakeKernel, group: str, text: str) -> None:
        kernel.group(group).values[attribute] = kernel.memparse_pages(text)

    return write


def _write_cpu_max(kernel: FakeKernel, group: str, text: str) -> None:
    # Like the kernel: "QUOTA [PERIOD]"; one number changes only the quota.
    values = kernel.group(group).values
    old_period = values["cpu.max"].split()[1]
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise _einval("cpu.max takes 'QUOTA [PERIOD]'")
    quota, period = fields[0], fields[1] if len(fields) == 2 else old_period
    if not period.isdigit() or not _CPU_MIN_USEC <= int(period) <= _CPU_MAX_PERIOD_USEC:
        raise _einval("period must be 1000..1000000 us")
    if quota != "max":
        if not quota.isdigit() or not _CPU_MIN_USEC <= int(quota) <= _CPU_MAX_QUOTA_USEC:
            raise _einval("quota must be 'max' or at least 1000 us")
        if int(values["cpu.max.burst"]) > int(quota):
            raise _einval("cpu.max.burst is above the new quota")
    values["cpu.max"] = f"{quota if quota == 'max' else int(quota)} {int(period)}"


def _write_cpu_max_burst(kernel: FakeKernel, group: str, text: str) -> None:
    values = kernel.group(group).values
    burst = text.strip()
    quota = values["cpu.max"].split()[0]
    if not burst.isdigit() or (quota != "max" and int(burst) > int(quota)):
        raise _einval("burst must be a number no larger than the quota")
    values["cpu.max.burst"] = str(int(burst))


def _write_cpu_weight(kernel: FakeKernel, group: str, text: str) -> None:
    weight = text.strip()
    if not weight.isdigit():
        raise _einval("cpu.weight takes a number")
    if int(weight) not in _WEIGHT_RANGE:
        raise OSError(errno.ERANGE, "cpu.weight must be 1..10000")
    kernel.group(group).values["cpu.weight"] = str(int(weight))


def _write_io_weight(kernel: FakeKernel, group: str, text: str) -> None:
    # As blk-iocost: "default N" or "N" set the group's weight, "MAJ:MIN N" one device's
    # and "MAJ:MIN default" drops it; the file shows "default N", then the devices.
    values = kernel.group(group).values
    default, *device_lines = values["io.weight"].split("\n")
    devices = dict(line.split() for line in device_lines)
    fields = text.split()
    if len(fields) == 1:
        fields = ["default", *fields]
    if len(fields) != 2 or not (fields[0] == "default" or _is_device(fields[0])):
        raise _einval("io.weight takes 'default N', 'N' or 'MAJ:MIN N|default'")
    key, weight = fields
    if key != "default" and weight == "default":
        devices.pop(key, None)
    elif not weight.isdigit() or int(weight) not in _WEIGHT_RANGE:
        raise _einval("io.weight must be 1..10000")
    elif key == "default":
        default = f"default {int(weight)}"
    else:
        devices[key] = str(int(weight))
    values["io.weight"] = "\n".join([default, *(f"{d} {w}" for d, w in sorted(devices.items()))])


def _is_device(text: str) -> bool:
    major, colon, minor = text.partition(":")
    return bool(colon) and major.isdigit() and minor.isdigit()


def _write_cpuset(attribute: str) -> Writer:
    # As the kernel: a list like "0-3,6" of CPUs (memory nodes) the host has, or "" for
    # the parent's; shown as the kernel prints bitmaps, "0-3,6" however it was written.
    def write(kernel: FakeKernel, group: str, text: str) -> None:
        ids: set[int] = set()
        listed = text.strip()
        for part in listed.split(",") if listed else []:
            first, dash, last = part.partition("-")
            last = last if dash else first
            if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
                raise _einval(f"{attribute} takes a list like 0-3,6")
            ids.update(range(int(first), int(last) + 1))
        online = kernel.cpus if attribute == "cpuset.cpus" else kernel.memory_nodes
        if any(i >= online for i in ids):
            raise _einval(f"{attribute}: not a subset of the host's {online}")
        runs: list[list[int]] = []
        for i in sorted(ids):
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        kernel.group(group).values[attribute] = ",".join(
            str(a) if a == b else f"{a}-{b}" for a, b in runs)

    return write


def _write_pids_max(kernel: FakeKernel, group: str, text: str) -> None:
    value = text.strip()
    if value != "max" and (not value.isdigit() or int(value) >= _PIDS_MAX_LIMIT):
        raise _einval("pids.max takes 'max' or 0..4194304")
    kernel.group(group).values["pids.max"] = value if value == "max" else str(int(value))


def _write_oom_group(kernel: FakeKernel, group: str, text: str) -> None:
    if text.strip() not in ("0", "1"):
        raise _einval("memory.oom.group takes 0 or 1")
    kernel.group(group).values["memory.oom.group"] = text.strip()


def _io_max_unlimited(key: str) -> int:
    return _UINT_MAX if key.endswith("iops") else _U64_MAX


def _read_io_max(text: str) -> dict[str, dict[str, int]]:
    """The limits an io.max text shows, every key present (max as the kernel stores it)."""
    limits = {}
    for line in text.splitlines():
        device, *pairs = line.split()
        values = dict(pair.split("=") for pair in pairs)
        limits[device] = {key: _io_max_unlimited(key) if values[key] == "max" else int(values[key])
                          for key in _IO_MAX_KEYS}
    return limits


def _write_io_max(kernel: FakeKernel, group: str, text: str) -> None:
    # As blk-throttle's tg_set_limit on 6.1: one device per write, "MAJ:MIN key=value...";
    # the keys not named keep their value; 0 is ERANGE, 1 and unknown keys are EINVAL.
    first = text.split(maxsplit=1)[0] if text.split() else ""
    rest = text.lstrip()[len(first):]
    major, sep, minor = first.partition(":")
    if not (sep and major.isdigit() and minor.isdigit() and rest[:1].isspace()):
        raise _einval("io.max takes 'MAJ:MIN key=value ...'")
    device = f"{int(major)}:{int(minor)}"
    if device not in kernel.disks:  # partitions too: io.max takes whole disks only
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), device)
    state = kernel.group(group).values
    limits = _read_io_max(state["io.max"])
    new = limits.get(device, {key: _io_max_unlimited(key) for key in _IO_MAX_KEYS})
    for token in rest.split():
        key, sep, raw = token.partition("=")
        if not sep or (raw != "max" and not raw.isdigit()):
            raise _einval(f"bad io.max token {token!r}")
        value = _U64_MAX if raw == "max" else int(raw)
        if value == 0:
            raise OSError(errno.ERANGE, "io.max: 0 is out of range")
        if key not in _IO_MAX_KEYS or value <= 1:
            raise _einval(f"bad io.max token {token!r}")
        new[key] = min(value, _io_max_unlimited(key))
    limits[device] = new
    state["io.max"] = "\n".join(
        f"{dev} " + " ".join(f"{key}={'max' if value == _io_max_unlimited(key) else value}"
                             for key, value in values.items())
        for dev, values in limits.items()
        if any(value != _io_max_unlimited(key) for key, value in values.items()))


def _write_procs(kernel: FakeKernel, group: str, text: str) -> None:
    kernel.migrate(group, text)


def _write_subtree_control(kernel: FakeKernel, group: str, text: str) -> None:
    kernel.change_subtree_control(group, text)


def _write_kill(kernel: FakeKernel, group: str, text: str) -> None:
    value = text.strip()
    if not value.lstrip("-").isdigit():
        raise _einval("cgroup.kill takes 1")
    if int(value) != 1:
        raise OSError(errno.ERANGE, "cgroup.kill takes 1")
    kernel.kill_subtree(group)


# Every interface file the fake kernel knows, as the kernel names it. Files rendered
# from the kernel's own state (procs, controllers, populated, ...) have no default.
FILES: dict[str, _File] = {
    "cgroup.procs": _File(None, write=_write_procs, on_root=True),
    "cgroup.controllers": _File(None, on_root=True),
    "cgroup.subtree_control": _File(None, write=_write_subtree_control, on_root=True),
    "cgroup.events": _File(None),
    "cgroup.kill": _File(None, write=_write_kill),
    "cgroup.max.depth": _File(None, "max", write=_write_max_depth),
    "cpu.stat": _File(None, counters=_CPU_STAT_CORE_KEYS + _CPU_STAT_CPU_KEYS, on_root=True),
    "cpu.pressure": _File(None, _PSI_IDLE, on_root=True),
    "memory.pressure": _File(None, _PSI_IDLE, on_root=True),
    "io.pressure": _File(None, _PSI_IDLE, on_root=True),
    "cpu.max": _File("cpu", "max 100000", write=_write_cpu_max),
    "cpu.max.burst": _File("cpu", "0", write=_write_cpu_max_burst),
    "cpu.weight": _File("cpu", "100", write=_write_cpu_weight),
    "memory.current": _File("memory", "0"),
    "memory.peak": _File("memory", "0"),
    "memory.min": _File("memory", "0", write=_write_memory("memory.min")),
    "memory.low": _File("memory", "0", write=_write_memory("memory.low")),
    "memory.high": _File("memory", "max", write=_write_memory("memory.high")),
    "memory.max": _File("memory", "max", write=_write_memory("memory.max")),
    "memory.oom.group": _File("memory", "0", write=_write_oom_group),
    "memory.events": _File("memory", counters=(
        "low", "high", "max", "oom", "oom_kill", "oom_group_kill"), hierarchical=True),
    "memory.events.local": _File("memory", counters=(
        "low", "high", "max", "oom", "oom_kill", "oom_group_kill")),
    "memory.stat": _File("memory", counters=(
        "anon", "file", "kernel", "shmem", "sock", "active_file", "inactive_file", "pgfault",
        "pgmajfault"), on_root=True),
    "memory.swap.current": _File("memory", "0", swap=True),
    "memory.swap.high": _File("memory", "max", write=_write_memory("memory.swap.high"), swap=True),
    "memory.swap.max": _File("memory", "max", write=_write_memory("memory.swap.max"), swap=True),
    "memory.swap.events": _File("memory", counters=("high", "max", "fail"), hierarchical=True,
                                swap=True),
    "io.weight": _File("io", "default 100", write=_write_io_weight),
    "cpuset.cpus": _File("cpuset", "", write=_write_cpuset("cpuset.cpus")),
    "cpuset.mems": _File("cpuset", "", write=_write_cpuset("cpuset.mems")),
    "pids.max": _File("pids", "max", write=_write_pids_max),
    "pids.current": _File("pids"),
    "pids.events": _File("pids", counters=("max",)),
    "io.stat": _File("io", on_root=True),  # set with FakeKernel.update
    "io.max": _File("io", write=_write_io_max),
    "cpuset.cpus.effective": _File("cpuset", "0-3"),  # read-only: a four-CPU host
}
_PSI_FILES = frozenset({"cpu.pressure", "memory.pressure", "io.pressure"})


@dataclass(frozen=True)
class FakeMount:
    source: str
    target: str
    fstype: str
    options: str

    def line(self) -> str:
        return f"{self.source} {self.target} {self.fstype} {self.options} 0 0"


class FakeKernel:
    """A cgroup v2 hierarchy and a process table inside a pyfakefs file system.

    ``layout="unified"`` mounts cgroup2 at ``mount_point``; ``"hybrid"`` mounts a
    tmpfs there holding cgroup v1 hierarchies for every controller not in
    ``controllers``, with the cgroup2 tree at ``mount_point/unified`` (the layout
    of systemd's hybrid mode). ``root`` is where the cgroup2 tree is either way.
    The calling process (``self_pid``, ``/proc/self``) starts in ``self_group``.
    """

    def __init__(self, fs: FakeFilesystem, *,
                 controllers: Iterable[str] = DEFAULT_CONTROLLERS,
                 layout: Literal["unified", "hybrid"] = "unified",
                 mount_point: str = "/sys/fs/cgroup", proc_root: str = "/proc",
                 swap_accounting: bool = True, psi: bool = True,
                 cgroup_kill: bool = True, init_comm: str = "systemd", self_group: str = "",
                 exit_on_kill: bool = True, sys_root: str = "/sys", cpus: int = 4,
                 memory_nodes: int = 1) -> None:
        self.fs = fs
        # The daemon writes limits from a worker thread (asyncio.to_thread) while the
        # loop may be killing processes: one kernel-side change at a time, as the real
        # kernel's locks make it look.
        self._lock = threading.RLock()
        wanted = set(controllers)
        self.available = [c for c in KNOWN_CONTROLLERS if c in wanted]
        unknown = wanted - set(KNOWN_CONTROLLERS)
        if unknown:
            raise ValueError(f"unknown controllers {sorted(unknown)}")
        self.mount_point = PurePosixPath(mount_point)
        self.root = self.mount_point / "unified" if layout == "hybrid" else self.mount_point
        self.proc_root = PurePosixPath(proc_root)
        self.page_size = PAGE_SIZE
        self.swap_accounting = swap_accounting
        self.cpus, self.memory_nodes = cpus, memory_nodes  # what cpuset.* may name
        self.psi = psi
        self.cgroup_kill = cgroup_kill  # False: a kernel before 5.14
        # When False, cgroup.kill leaves the processes listed (still exiting, as they
        # are for a moment on a real kernel) until reap() is called.
        self.exit_on_kill = exit_on_kill
        self.killed: list[int] = []  # every pid the kernel killed, in order
        self.signals: list[tuple[int, int]] = []  # (pid, signal) sent with kill(2)
        self._groups: dict[str, _Group] = {}
        self._processes: dict[int, _Process] = {}
        self._dying: set[int] = set()
        self.self_pid = FIRST_FAKE_PID
        self._next_pid = FIRST_FAKE_PID + 1
        self.mounts = self._mounts(layout)
        self.sys_root = PurePosixPath(sys_root)
        self.disks: dict[str, str] = {}  # MAJ:MIN -> name, of whole disks (io.max takes them)
        self._devices_of_paths: dict[PurePosixPath, str] = {}  # see put_on

        fs.create_dir(self.root)
        for mount in self.mounts:
            if mount.fstype == "cgroup":
                fs.create_dir(mount.target)
        self._install_hooks()
        self._groups[""] = _Group()
        self.spawn("init.scope" if init_comm == "systemd" else "", init_comm, pid=1)
        self.spawn(self_group, "ccgroupd", pid=self.self_pid)
        fs.create_symlink(self.proc_root / "self", str(self.self_pid))

    # -- setting the scene (tests call these) --------------------------------

    def cgroupfs_args(self) -> dict[str, Any]:
        """Arguments for ccgroupd.kernel.cgroupfs.Cgroupfs bound to this kernel."""
        return {"root": Path(self.root), "page_size": self.page_size}

    def procfs_args(self) -> dict[str, Any]:
        """Arguments for ccgroupd.kernel.procfs.Procfs bound to this kernel."""
        return {"root": Path(self.proc_root), "page_size": self.page_size}

    def mkdir(self, group: str) -> None:
        """mkdir -p, through the same path as a daemon's os.mkdir."""
        parts = [p for p in group.split("/") if p]
        for depth in range(1, len(parts) + 1):
            path = self.root.joinpath(*parts[:depth])
            if not self.fs.exists(path):
                self.fs.makedir(path)

    def enable(self, group: str, *controllers: str) -> None:
        """Write ``+controller ...`` to ``group``'s cgroup.subtree_control (kernel rules apply)."""
        self._kernel_write(group.strip("/"), "cgroup.subtree_control",
                           " ".join(f"+{c}" for c in controllers).encode())

    def spawn(self, group: str = "", comm: str = "sleep", rss_bytes: int = 0, *,
              pid: int | None = None, uid: int = 0, gid: int = 0,
              argv: list[str] | None = None) -> int:
        """A new process in ``group`` (created with mkdir -p); returns its pid."""
        self.mkdir(group)
        with self._lock:
            if pid is None:
                pid, self._next_pid = self._next_pid, self._next_pid + 1
            self._processes[pid] = _Process(comm, rss_bytes, group.strip("/"), uid, gid,
                                            argv or [comm])
            self.group(group).procs.add(pid)
            self._render()
        return pid

    def execve(self, pid: int, argv: list[str]) -> None:
        """The process runs another program (comm becomes its basename, as the kernel sets it)."""
        with self._lock:
            process = self._processes[pid]
            process.argv = argv
            process.comm = argv[0].rsplit("/", 1)[-1][:15]
            self._render()

    def oom_score_adj(self, pid: int) -> int:
        return int(self.fs.get_object(str(self.proc_root / str(pid) / "oom_score_adj")).contents)

    def exit(self, pid: int) -> None:
        with self._lock:
            process = self._processes.pop(pid)
            self.group(process.group).procs.discard(pid)
            self._dying.discard(pid)
            self.fs.remove_object(str(self.proc_root / str(pid)))
            self._render()

    def reap(self) -> None:
        """Let processes killed by cgroup.kill finish exiting (see ``exit_on_kill``)."""
        for pid in sorted(self._dying):
            self.exit(pid)

    def bump(self, group: str, attribute: str, **deltas: int) -> None:
        """Count events, e.g. ``bump("g", "memory.events", oom_kill=1)``.

        Hierarchical files (memory.events) count them in every ancestor below the
        root as well, and memory.events also bumps the group's memory.events.local.
        """
        spec = FILES[attribute]
        targets = [group.strip("/")]
        if spec.hierarchical:
            parts = targets[0].split("/")
            targets += ["/".join(parts[:depth]) for depth in range(len(parts) - 1, 0, -1)]
        if attribute == "memory.events":
            self._add(group, "memory.events.local", deltas)
        for target in targets:
            self._add(target, attribute, deltas)
        self._render()

    def update(self, group: str, attribute: str, text: str) -> None:
        """Set what a kernel-maintained file shows (memory.current, a PSI file, ...)."""
        if attribute not in self.group(group).values:
            raise FileNotFoundError(errno.ENOENT, "no such interface file", attribute)
        self.group(group).values[attribute] = text.strip()
        self._render()

    def add_disk(self, name: str, device: str, partitions: Mapping[str, str] | None = None, *,
                 bus: str = "devices/pci0000:00/0000:00:04.0/virtio1") -> None:
        """A disk and its partitions (name -> MAJ:MIN) in sysfs, as the kernel shows them:
        ``dev/block/254:1 -> ../../devices/.../block/vda/vda1``, whose directory has a
        ``partition`` file. ``bus="devices/virtual"`` for a dm device."""
        disk_dir = self.sys_root / bus / "block" / name
        entries = {device: disk_dir}
        self.fs.create_file(str(disk_dir / "dev"), contents=f"{device}\n")
        for number, (part_name, part_device) in enumerate((partitions or {}).items(), 1):
            entries[part_device] = disk_dir / part_name
            self.fs.create_file(str(disk_dir / part_name / "dev"), contents=f"{part_device}\n")
            self.fs.create_file(str(disk_dir / part_name / "partition"), contents=f"{number}\n")
        links = self.sys_root / "dev" / "block"
        for numbers, target in entries.items():
            self.fs.create_symlink(str(links / numbers), os.path.relpath(target, links))
        self.disks[device] = name

    def put_on(self, path: str, device: str) -> None:
        """Files at and below ``path`` are on ``device`` (MAJ:MIN), as :meth:`stat` says."""
        self._devices_of_paths[PurePosixPath(path)] = device

    def stat(self, path: str) -> os.stat_result:
        """os.stat, with the device put_on gave the path (its nearest such ancestor)."""
        found = os.stat(path)
        absolute = PurePosixPath(self.fs.absnormpath(path))
        device = next((self._devices_of_paths[p] for p in [absolute, *absolute.parents]
                       if p in self._devices_of_paths), None)
        if device is None:
            return found
        major, minor = (int(number) for number in device.split(":"))
        return os.stat_result((found.st_mode, found.st_ino, os.makedev(major, minor),
                               found.st_nlink, found.st_uid, found.st_gid, found.st_size,
                               int(found.st_atime), int(found.st_mtime), int(found.st_ctime)))

    def blockdevices_args(self) -> dict[str, Any]:
        """Arguments for ccgroupd.kernel.blockdev.BlockDevices bound to this kernel."""
        return {"sys_root": Path(self.sys_root), "stat": self.stat}

    def set_mounts(self, mounts: Iterable[FakeMount]) -> None:
        self.mounts = list(mounts)
        self._render()

    # -- looking at the state ------------------------------------------------

    def exists(self, group: str) -> bool:
        return group.strip("/") in self._groups

    def group(self, group: str) -> _Group:
        return self._groups[group.strip("/")]

    def procs(self, group: str) -> set[int]:
        return set(self.group(group).procs)

    def group_of(self, pid: int) -> str:
        return self._processes[pid].group

    def alive(self, pid: int) -> bool:
        return pid in self._processes

    def children(self, group: str) -> list[str]:
        name = group.strip("/")
        return sorted(g for g in self._groups if g and self._parent(g) == name)

    def populated(self, group: str) -> bool:
        name = group.strip("/")
        return any(self._groups[g].procs for g in self._groups if self._within(g, name))

    def controllers(self, group: str) -> list[str]:
        """cgroup.controllers: the root's are the available ones, a child's its parent's enabled."""
        name = group.strip("/")
        if not name:
            return list(self.available)
        enabled = self._groups[self._parent(name)].subtree_control
        return [c for c in KNOWN_CONTROLLERS if c in enabled]

    def memparse_pages(self, text: str) -> str:
        """The value a memory file shows after ``text`` is written (page-rounded, or max)."""
        value = text.strip()
        if value == "max":
            return "max"
        number, shift = value, 0
        if value[-1:].lower() in _MEMPARSE_SHIFTS:
            number, shift = value[:-1], _MEMPARSE_SHIFTS[value[-1].lower()]
        if not number.isdigit():
            raise _einval(f"not a size: {value!r}")
        pages = min((int(number) << shift) // PAGE_SIZE, _PAGE_COUNTER_MAX)
        return "max" if pages == _PAGE_COUNTER_MAX else str(pages * PAGE_SIZE)

    # -- kernel operations, reached through the hooked file system -----------

    def migrate(self, group: str, text: str) -> None:
        """A write to ``group``/cgroup.procs: move one process (0 = the writer)."""
        token = text.strip()
        if not token.isdigit():
            raise _einval("cgroup.procs takes one pid")
        pid = int(token) or self.self_pid
        if pid not in self._processes:
            raise ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
        name = group.strip("/")
        if name and self._groups[name].subtree_control:
            # No internal processes: a group that enables controllers for its
            # children cannot hold processes itself (the root is exempt).
            raise OSError(errno.EBUSY, "group has controllers enabled for its children")
        process = self._processes[pid]
        self._groups[process.group].procs.discard(pid)
        process.group = name
        self._groups[name].procs.add(pid)

    def change_subtree_control(self, group: str, text: str) -> None:
        name = group.strip("/")
        wanted: dict[str, bool] = {}
        for token in text.split():
            if token[:1] not in ("+", "-") or token[1:] not in KNOWN_CONTROLLERS:
                raise _einval(f"bad token {token!r}")
            wanted[token[1:]] = token[0] == "+"  # the last mention of a controller wins
        current = self._groups[name].subtree_control
        enable = {c for c, on in wanted.items() if on and c not in current}
        disable = {c for c, on in wanted.items() if not on and c in current}
        if enable - set(self.controllers(name)):
            raise FileNotFoundError(errno.ENOENT, "controller not available here")
        if any(self._groups[child].subtree_control & disable for child in self.children(name)):
            raise OSError(errno.EBUSY, "a child still enables this controller")
        if enable and name and self._groups[name].procs:
            raise OSError(errno.EBUSY, "no internal processes: the group holds processes")
        current |= enable
        current -= disable

    def kill_subtree(self, group: str) -> None:
        name = group.strip("/")
        with self._lock:
            for pid, process in sorted(self._processes.items()):
                if self._within(process.group, name) and pid not in self._dying:
                    self._kill(pid)

    # -- internals -------------------------------------------------------------

    def _kill(self, pid: int) -> None:
        self.killed.append(pid)
        if self.exit_on_kill:
            self.exit(pid)
        else:
            self._dying.add(pid)

    @staticmethod
    def _parent(group: str) -> str:
        return group.rpartition("/")[0]

    @staticmethod
    def _within(group: str, ancestor: str) -> bool:
        return not ancestor or group == ancestor or group.startswith(ancestor + "/")

    def _add(self, group: str, attribute: str, deltas: dict[str, int]) -> None:
        counters = self.group(group).counters.get(attribute)
        if counters is None:
            raise FileNotFoundError(errno.ENOENT, "no such counter file here", attribute)
        unknown = set(deltas) - set(counters)
        if unknown:
            raise KeyError(f"{attribute} has no keys {sorted(unknown)}")
        for key, delta in deltas.items():
            counters[key] += delta

    def _mounts(self, layout: str) -> list[FakeMount]:
        flags = "rw,nosuid,nodev,noexec,relatime"
        mounts = [FakeMount("proc", str(self.proc_root), "proc", flags),
                  FakeMount("sysfs", "/sys", "sysfs", flags)]
        cgroup2 = FakeMount("cgroup2", str(self.root), "cgroup2", f"{flags},nsdelegate")
        if layout == "unified":
            return [*mounts, cgroup2]
        v1 = [FakeMount("cgroup", str(self.mount_point / c), "cgroup", f"{flags},{c}")
              for c in KNOWN_CONTROLLERS if c not in self.available]
        tmpfs = FakeMount("tmpfs", str(self.mount_point), "tmpfs", "ro,nosuid,nodev,mode=755")
        return [*mounts, tmpfs, cgroup2, *v1]

    def _present(self, group: str) -> dict[str, _File]:
        """The interface files ``group`` has now, given what its parent enables."""
        enabled = set(self.controllers(group))
        return {
            name: spec for name, spec in FILES.items()
            if (spec.on_root or group)
            and (spec.controller is None or spec.controller in enabled)
            and (self.swap_accounting or not spec.swap)
            and (self.psi or name not in _PSI_FILES)
            and (self.cgroup_kill or name != "cgroup.kill")
        }

    def _text(self, group: str, attribute: str) -> str:
        state = self._groups[group]
        if attribute in state.counters:
            counters = state.counters[attribute]
            if attribute == "cpu.stat" and "cpu" not in self.controllers(group):
                counters = {k: v for k, v in counters.items() if k in _CPU_STAT_CORE_KEYS}
            return "".join(f"{key} {value}\n" for key, value in counters.items())
        dynamic: dict[str, Callable[[], str]] = {
            "cgroup.procs": lambda: "".join(f"{pid}\n" for pid in sorted(state.procs)),
            "cgroup.controllers": lambda: " ".join(self.controllers(group)),
            "cgroup.subtree_control": lambda: " ".join(
                c for c in KNOWN_CONTROLLERS if c in state.subtree_control),
            "cgroup.events": lambda: f"populated {int(self.populated(group))}\nfrozen 0",
            "cgroup.kill": lambda: "",
            "pids.current": lambda: str(sum(
                len(self._groups[g].procs) for g in self._groups if self._within(g, group))),
        }
        if attribute in dynamic:
            text = dynamic[attribute]()
            return f"{text}\n" if text and not text.endswith("\n") else text
        return f"{state.values[attribute]}\n" if state.values[attribute] else ""

    def _render(self) -> None:
        """Bring every interface file and /proc entry in line with the kernel's state."""
        for group in sorted(self._groups):
            self._render_group(group)
        for pid, process in self._processes.items():
            base = self.proc_root / str(pid)
            rss_pages = process.rss_bytes // PAGE_SIZE
            self._put(base / "cgroup", self._proc_cgroup(process.group))
            self._put(base / "comm", f"{process.comm}\n")
            self._put(base / "cmdline", "".join(f"{arg}\0" for arg in process.argv))
            if not self.fs.exists(base / "oom_score_adj"):  # the daemon writes it
                self._put(base / "oom_score_adj", "0\n", mode=0o644)
            self._put(base / "statm", f"{rss_pages * 2} {rss_pages} 0 1 0 {rss_pages} 0\n")
            self._put(base / "status", f"Name:\t{process.comm}\nPid:\t{pid}\n"
                      f"Uid:\t{process.uid}\t{process.uid}\t{process.uid}\t{process.uid}\n"
                      f"Gid:\t{process.gid}\t{process.gid}\t{process.gid}\t{process.gid}\n"
                      "Groups:\t\n")
            if pid == self.self_pid:
                self._put(base / "mounts", "".join(f"{m.line()}\n" for m in self.mounts))

    def _proc_cgroup(self, group: str) -> str:
        v1 = [m.options.rpartition(",")[2] for m in self.mounts if m.fstype == "cgroup"]
        lines = [f"{number}:{name}:/" for number, name in reversed(list(enumerate(v1, 1)))]
        return "".join(f"{line}\n" for line in [*lines, f"0::/{group}"])

    def _render_group(self, group: str) -> None:
        directory = self.root / group if group else self.root
        state = self._groups[group]
        present = self._present(group)
        for name in [n for n in state.values if n not in present]:
            del state.values[name]  # a disabled controller takes its settings with it
        for name in [n for n in state.counters if n not in present]:
            del state.counters[name]
        for name in [entry for entry in self.fs.listdir(str(directory))
                     if entry not in present and not self.fs.isdir(directory / entry)]:
            self.fs.remove_object(str(directory / name))
        for name, spec in present.items():
            if spec.counters:
                state.counters.setdefault(name, dict.fromkeys(spec.counters, 0))
            elif name not in ("cgroup.procs", "cgroup.controllers", "cgroup.subtree_control",
                              "cgroup.events", "cgroup.kill", "pids.current"):
                state.values.setdefault(name, spec.default.strip())
            mode = 0o200 if name == "cgroup.kill" else (0o644 if spec.write else 0o444)
            self._put(directory / name, self._text(group, name), mode,
                      functools.partial(self._buffered_write, group, name))

    def _put(self, path: PurePosixPath, text: str, mode: int = 0o444,
             side_effect: Callable[[FakeFile], None] | None = None) -> None:
        if self.fs.exists(path):
            self.fs.get_object(str(path)).set_initial_contents(text)
        else:
            self.fs.create_file(str(path), st_mode=stat.S_IFREG | mode, contents=text,
                                side_effect=side_effect)

    def _interface_file(self, path: str) -> tuple[str, str] | None:
        """(group, attribute) if ``path`` is an interface file of a live group."""
        directory, _, name = path.rpartition("/")
        group = self._group_at(directory)
        if group not in self._groups or name not in self._present(group):
            return None
        return group, name

    def _kernel_write(self, group: str, attribute: str, data: bytes) -> None:
        writer = FILES[attribute].write
        if writer is None:
            # As root, a read-only interface file opens for writing; the write is refused.
            raise _einval(f"{attribute} is read-only")
        with self._lock:
            try:
                writer(self, group, data.decode("ascii", errors="replace"))
            finally:
                self._render()

    def _buffered_write(self, group: str, attribute: str, fake: FakeFile) -> None:
        # open(..., "w") first truncates (an empty write the kernel never sees), then
        # flushes the whole value.
        if fake.byte_contents:
            self._kernel_write(group, attribute, fake.byte_contents)

    # -- hooks into pyfakefs ----------------------------------------------------

    def _install_hooks(self) -> None:
        fake_os = Patcher.PATCHER.fake_modules["os"] if Patcher.PATCHER else None
        if fake_os is None or fake_os.filesystem is not self.fs:
            raise RuntimeError("FakeKernel needs the pyfakefs `fs` fixture (an active Patcher)")
        self._fs_makedir, self._fs_rmdir = self.fs.makedir, self.fs.rmdir
        self._os_open, self._os_write, self._os_kill = fake_os.open, fake_os.write, fake_os.kill
        # Instance attributes: they go away with this file system, nothing to undo.
        self.fs.makedir = self._makedir
        self.fs.makedirs = self._makedirs
        self.fs.rmdir = self._rmdir
        fake_os.open = self._open
        fake_os.write = self._write
        fake_os.kill = self._signal

    def _makedir(self, path: Any, mode: int = 0o755) -> None:
        group = self._group_at(path)
        if group is not None and group not in self._groups and self._too_deep(group):
            # As the kernel: an ancestor's cgroup.max.depth counts the levels below it.
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fspath(path))
        self._fs_makedir(path, mode)
        if group is not None and group not in self._groups:
            self._groups[group] = _Group()
            self._render()

    def _too_deep(self, group: str) -> bool:
        parts = group.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            limit = self._groups[ancestor].values.get("cgroup.max.depth", "max") \
                if ancestor in self._groups else "max"
            if limit != "max" and len(parts) - depth > int(limit):
                return True
        return False

    def _makedirs(self, path: Any, mode: int = 0o755, exist_ok: bool = False) -> None:
        target = PurePosixPath(self.fs.absnormpath(os.fspath(path)))
        for directory in [*reversed(target.parents), target]:
            if not self.fs.exists(directory):
                self._makedir(directory, mode)
            elif directory == target and not exist_ok:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))

    def _rmdir(self, path: Any, allow_symlink: bool = False) -> None:
        group = self._group_at(path)
        if group is None or group not in self._groups:
            self._fs_rmdir(path, allow_symlink)
            return
        if not group or self.populated(group) or self.children(group):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), os.fspath(path))
        directory = self.root / group
        for name in self.fs.listdir(str(directory)):
            self.fs.remove_object(str(directory / name))  # the kernel takes its files along
        del self._groups[group]
        self._fs_rmdir(path, allow_symlink)

    def _open(self, path: Any, flags: int, mode: int | None = None, *,
              dir_fd: int | None = None) -> int:
        target = str(self.fs.absnormpath(os.fspath(path)))
        in_group = self._group_at(os.path.dirname(target)) in self._groups
        if in_group and flags & os.O_CREAT and not self.fs.exists(target):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)
        return int(self._os_open(path, flags, mode, dir_fd=dir_fd))

    def _write(self, fd: int, data: bytes) -> int:
        handle = self.fs.get_open_file(fd)
        fake = getattr(handle, "file_object", None)
        known = self._interface_file(str(fake.path)) if isinstance(fake, FakeFile) else None
        if known is None:
            return int(self._os_write(fd, data))
        if not getattr(handle, "open_modes").can_write:  # noqa: B009 - typed as a union
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        # Even an empty write reaches the kernel's handler: "" clears a cpuset.
        self._kernel_write(*known, bytes(data))
        return len(data)

    def _signal(self, pid: int, sig: int) -> None:
        if pid not in self._processes and pid < FIRST_FAKE_PID:
            self._os_kill(pid, sig)
            return
        if pid not in self._processes or pid in self._dying:
            raise ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
        self.signals.append((pid, sig))
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self._kill(pid)

    def _group_at(self, path: Any) -> str | None:
        """The group a directory path names, or None outside the cgroup2 tree."""
        absolute = PurePosixPath(self.fs.absnormpath(os.fspath(path)))
        if absolute == self.root:
            return ""
        if self.root not in absolute.parents:
            return None
        return str(absolute.relative_to(self.root))
