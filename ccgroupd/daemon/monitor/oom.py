"""What the engine group looks like right after an OOM kill: usage, peak, limit, the
largest ``memory.stat`` entries and processes, and the groups whose own processes were
killed. The one part of monitoring that reads anything per process; every part is best
effort, since the report goes out regardless."""

from __future__ import annotations

import contextlib

from ccgroupd.daemon.monitor.subtree import Subtree, increases
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs, GroupDirectory
from ccgroupd.kernel.files import (
    MEMORY_CURRENT,
    MEMORY_EVENTS_LOCAL,
    MEMORY_MAX,
    MEMORY_PEAK,
    MEMORY_STAT,
)
from ccgroupd.kernel.parsers import ParseError, parse_uint_or_max
from ccgroupd.kernel.procfs import Procfs

# memory.stat entries that are byte counts (the rest count events or pages scanned),
# without the active_/inactive_ and slab_ splits that only repeat anon, file and slab.
MEMORY_STAT_BYTE_KEYS = frozenset({
    "anon", "file", "kernel", "kernel_stack", "pagetables", "sec_pagetables", "percpu",
    "sock", "vmalloc", "shmem", "zswap", "file_mapped", "file_dirty", "file_writeback",
    "swapcached", "anon_thp", "file_thp", "shmem_thp", "unevictable", "slab",
})
SNAPSHOT_TOP_N = 5


def read_limit(cgroupfs: Cgroupfs, group: str, attribute: str) -> int | None:
    """The limit in force (None: "max" or unreadable); a report goes out regardless."""
    with contextlib.suppress(CgroupError, ParseError):
        return parse_uint_or_max(cgroupfs.read(group, attribute))
    return None


class OomSnapshot:
    def __init__(self, cgroupfs: Cgroupfs, procfs: Procfs, subtree: Subtree) -> None:
        self._cgroupfs = cgroupfs
        self._procfs = procfs
        self._subtree = subtree
        self._last_local_oom_kills: dict[str, int] = {}

    def baseline(self) -> None:
        """Kills counted so far in each group are not news."""
        self._last_local_oom_kills = self._subtree.counter(MEMORY_EVENTS_LOCAL, "oom_kill")

    def forget(self) -> None:
        self._last_local_oom_kills.clear()

    def take(self) -> dict[str, object]:
        group = self._subtree.group
        snapshot: dict[str, object] = {"limit_bytes": read_limit(self._cgroupfs, group,
                                                                  MEMORY_MAX)}
        with contextlib.suppress(CgroupError, ParseError):
            snapshot["usage_bytes"] = parse_uint_or_max(self._cgroupfs.read(group, MEMORY_CURRENT))
        if self._cgroupfs.path(group, MEMORY_PEAK).exists():  # Linux 5.19 and later
            with contextlib.suppress(CgroupError, ParseError):
                snapshot["peak_bytes"] = parse_uint_or_max(self._cgroupfs.read(group, MEMORY_PEAK))
        with contextlib.suppress(CgroupError):
            stat = self._cgroupfs.read_flat_keyed(group, MEMORY_STAT)
            largest = sorted(((value, key) for key, value in stat.items()
                              if key in MEMORY_STAT_BYTE_KEYS), reverse=True)[:SNAPSHOT_TOP_N]
            snapshot["memory_stat_bytes"] = {key: value for value, key in largest}
        groups = self._subtree.groups()  # one walk for both
        processes = sorted(self._procfs.process_memory(self._subtree.procs(groups)),
                           key=lambda process: process.rss_bytes, reverse=True)
        snapshot["top_processes"] = [{"pid": p.pid, "comm": p.comm, "rss_bytes": p.rss_bytes}
                                     for p in processes[:SNAPSHOT_TOP_N]]
        oom_groups = self._oom_groups(groups)
        if oom_groups:
            snapshot["oom_groups"] = oom_groups
        return snapshot

    def _oom_groups(self, groups: list[tuple[str, GroupDirectory]]) -> dict[str, int]:
        """Groups in the subtree whose own processes were OOM-killed since the last look."""
        current = self._subtree.counter(MEMORY_EVENTS_LOCAL, "oom_kill", groups=groups)
        found = increases(self._last_local_oom_kills, current)
        self._last_local_oom_kills = current
        return found
