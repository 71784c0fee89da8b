"""The kernel's log, read from ``/dev/kmsg``: the one record of an OOM kill or a refused
fork that outlives the cgroup it happened in (runc removes a build's group the moment
the build exits, usually before anyone has read its files).

A reader of ``/dev/kmsg`` gets one record per read(2), EAGAIN when there is none, and
EPIPE once when records it had not read yet were overwritten. :class:`Kmsg` starts at
the end of the buffer: what the kernel logged before the daemon started is not news.
The parsers take the text of one record and know nothing of files.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ccgroupd.errors import CgroupReadError

KMSG_PATH = Path("/dev/kmsg")
# A record is at most this long (the kernel's own limit for one read, CONSOLE_EXT_LOG_MAX).
_RECORD_MAX_BYTES = 8192

# mm/oom_kill.c dump_oom_summary() + mm/memcontrol.c mem_cgroup_print_oom_context():
# "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
#  oom_memcg=/a/b,task_memcg=/a/b/buildkit/x,task=python3,pid=1736,uid=0"
_OOM_KILL = re.compile(r"oom-kill:constraint=(?P<constraint>[^,]*),.*?"
                       r"(?:,oom_memcg=(?P<oom_memcg>[^,]*))?"
                       r",task_memcg=(?P<task_memcg>[^,]*),task=(?P<task>.*),"
                       r"pid=(?P<pid>\d+),uid=\d+$")
# __oom_kill_process(): "Memory cgroup out of memory: Killed process 1736 (python3)
# total-vm:186640kB, anon-rss:176464kB, file-rss:1536kB, shmem-rss:0kB, UID:0 ..."
_KILLED_PROCESS = re.compile(r"Killed process (?P<pid>\d+) \((?P<comm>.*)\) "
                             r"total-vm:\d+kB, anon-rss:(?P<anon>\d+)kB, "
                             r"file-rss:(?P<file>\d+)kB, shmem-rss:(?P<shmem>\d+)kB")
# kernel/cgroup/pids.c, logged once per group: the forking task's group.
_FORK_REJECTED = re.compile(r"cgroup: fork rejected by pids controller in (?P<cgroup>/\S*)$")


@dataclass(frozen=True)
class OomKillLine:
    """The kernel's summary of one OOM kill. Paths are from the cgroup root ("/a/b")."""

    task_memcg: str
    oom_memcg: str | None  # None for a kill under the host's memory, not a group's limit
    task: str
    pid: int


@dataclass(frozen=True)
class KilledProcess:
    pid: int
    comm: str
    rss_bytes: int  # anon + file + shmem, as the kernel counted it at the kill


@dataclass(frozen=True)
class ForkRejected:
    cgroup: str  # from the cgroup root


KmsgFact = OomKillLine | KilledProcess | ForkRejected


def open_kmsg(path: Path = KMSG_PATH) -> Kmsg:
    """The kernel log from its current end. Raises CgroupReadError (no /dev/kmsg in a
    container, or a kernel without it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupReadError(path, errno=exc.errno, detail="cannot open") from None
    try:
        os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:
        os.close(fd)
        raise CgroupReadError(path, errno=exc.errno, detail="cannot seek to the end") from None
    return Kmsg(fd, path)


def record_message(record: str) -> str:
    """The message of one /dev/kmsg record ("6,1234,5678,-;text\\n KEY=VALUE\\n")."""
    _prefix, separator, rest = record.partition(";")
    if not separator:
        return ""
    return rest.split("\n", 1)[0]


def parse_message(message: str) -> KmsgFact | None:
    """The fact an OOM or pids message states, None for any other message.

    An OOM kill logs dozens of lines (the task list, memory statistics) just before the
    two that matter, on the daemon's only thread: the others are passed over with a
    substring test before any regular expression runs."""
    if message.startswith("oom-kill:"):
        match = _OOM_KILL.match(message)
        if match:
            return OomKillLine(task_memcg=match["task_memcg"], oom_memcg=match["oom_memcg"],
                               task=match["task"], pid=int(match["pid"]))
        return None
    if "Killed process" in message:
        match = _KILLED_PROCESS.search(message)
        if match:
            rss_kib = int(match["anon"]) + int(match["file"]) + int(match["shmem"])
            return KilledProcess(pid=int(match["pid"]), comm=match["comm"],
                                 rss_bytes=rss_kib * 1024)
    elif "fork rejected" in message:
        match = _FORK_REJECTED.search(message)
        if match:
            return ForkRejected(cgroup=match["cgroup"])
    return None


class Kmsg:
    """A non-blocking reader of the kernel log; hand ``fileno()`` to an event loop. Make
    one with :func:`open_kmsg`."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path
        self.lost = 0  # times records were overwritten before they were read

    def fileno(self) -> int:
        return self._fd

    def read_facts(self) -> list[KmsgFact]:
        """The OOM and pids facts in the records logged since the last call."""
        facts: list[KmsgFact] = []
        while True:
            try:
                data = os.read(self._fd, _RECORD_MAX_BYTES)
            except BlockingIOError:
                return facts
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten: go on with the oldest left
                    self.lost += 1
                    continue
                raise CgroupReadError(self.path, errno=exc.errno, detail="read failed") from None
            if not data:
                return facts
            fact = parse_message(record_message(data.decode("utf-8", "replace")))
            if fact is not None:
                facts.append(fact)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
