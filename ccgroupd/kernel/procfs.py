"""The kernel boundary for /proc: the only module that opens files under it.

The root is a constructor parameter, so tests point it at a fake tree.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ccgroupd.errors import CgroupReadError, CgroupWriteError
from ccgroupd.kernel.files import (
    PROC_CGROUP,
    PROC_CMDLINE,
    PROC_COMM,
    PROC_MOUNTS,
    PROC_OOM_SCORE_ADJ,
    PROC_STATM,
    PROC_STATUS,
)
from ccgroupd.kernel.parsers import (
    Mount,
    ProcessIds,
    parse_file,
    parse_mounts,
    parse_proc_cgroup_v2,
    parse_proc_status_ids,
)

PROC_ROOT = Path("/proc")


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    comm: str
    rss_bytes: int


class Procfs:
    def __init__(self, root: Path | str = PROC_ROOT, page_size: int | None = None) -> None:
        self.root = Path(root)
        self._root_text = str(self.root).rstrip("/")  # paths of the per-build reads, as text
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")

    def _read(self, pid: int | str, name: str, encoding: str = "utf-8") -> str:
        path = f"{self._root_text}/{pid}/{name}"
        try:
            with open(path, encoding=encoding, errors="replace") as file:
                return file.read()
        except OSError as exc:
            raise CgroupReadError.from_oserror(exc, path) from exc

    def cgroup_of(self, pid: int | str = "self") -> str:
        """The cgroup of ``pid`` relative to the root, e.g. "system.slice/ccgroupd.service"."""
        text = self._read(pid, PROC_CGROUP, "ascii")
        return parse_file(self.root / str(pid) / PROC_CGROUP, parse_proc_cgroup_v2, text).strip("/")

    def mounts(self) -> list[Mount]:
        """The mount table of this process, in mount order."""
        return parse_file(self.root / "self" / PROC_MOUNTS, parse_mounts,
                          self._read("self", PROC_MOUNTS))

    def mount_type(self, target: Path) -> str | None:
        """The file system type mounted at ``target`` ("cgroup2", "tmpfs", ...), or None."""
        fstype = None
        for mount in self.mounts():
            if Path(mount.target) == target:
                fstype = mount.fstype  # the last mount on a point is the visible one
        return fstype

    def comm(self, pid: int | str) -> str | None:
        """The command name of ``pid`` (/proc/PID/comm), or None if there is no such process."""
        try:
            return self._read(pid, PROC_COMM).strip()
        except CgroupReadError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def cmdline(self, pid: int) -> list[str] | None:
        """The argv of ``pid``; None if it is gone (or a kernel thread, with none)."""
        try:
            with open(f"{self._root_text}/{pid}/{PROC_CMDLINE}", "rb") as file:
                raw = file.read()
        except OSError:
            return None
        return [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]] or None

    def set_oom_score_adj(self, pid: int, value: int) -> bool:
        """Write /proc/PID/oom_score_adj; False if the process is gone meanwhile."""
        path = f"{self._root_text}/{pid}/{PROC_OOM_SCORE_ADJ}"
        try:
            with open(path, "w", encoding="ascii") as file:
                file.write(f"{value}\n")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                return False
            raise CgroupWriteError.from_oserror(exc, path, str(value)) from exc
        return True

    def process_memory(self, pids: Iterable[int]) -> list[ProcessMemory]:
        """RSS and name of each pid still alive; read from statm/comm, the cheapest files."""
        found = []
        for pid in pids:
            try:
                with open(f"{self._root_text}/{pid}/{PROC_STATM}", encoding="ascii") as file:
                    resident_pages = int(file.read().split()[1])
                comm = self._read(pid, PROC_COMM).strip()
            except (OSError, CgroupReadError, IndexError, ValueError):
                continue  # exited while we looked
            found.append(ProcessMemory(pid, comm, resident_pages * self.page_size))
        return found

    def process_ids(self, pid: int) -> ProcessIds:
        """Effective uid and gid and the supplementary groups of ``pid``, from /proc/PID/status."""
        return parse_file(self.root / str(pid) / PROC_STATUS, parse_proc_status_ids,
                          self._read(pid, PROC_STATUS))
