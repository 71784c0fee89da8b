"""The kernel log reader: records as the 6.1 guest's kernel wrote them (kernel-and-systemd.md)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from ccgroupd.errors import CgroupReadError
from ccgroupd.kernel import kmsg
from ccgroupd.kernel.kmsg import (
    ForkRejected,
    KilledProcess,
    Kmsg,
    OomKillLine,
    open_kmsg,
    parse_message,
    record_message,
)

ENGINE = "/system.slice/ccgroupd.service/dagger-engine"
OOM_KILL = ("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            f"oom_memcg={ENGINE},task_memcg={ENGINE}/container/buildkit/hog,"
            "task=python3,pid=1736,uid=0")
KILLED = ("Memory cgroup out of memory: Killed process 1736 (python3) total-vm:186640kB, "
          "anon-rss:176464kB, file-rss:1536kB, shmem-rss:4kB, UID:0 pgtables:400kB "
          "oom_score_adj:0")
FORK = f"cgroup: fork rejected by pids controller in {ENGINE}/container/buildkit/forks"


def test_a_memcg_oom_kill_names_the_victims_group_task_and_pid() -> None:
    assert parse_message(OOM_KILL) == OomKillLine(
        task_memcg=f"{ENGINE}/container/buildkit/hog", oom_memcg=ENGINE, task="python3",
        pid=1736)


def test_a_host_oom_kill_has_no_oom_memcg() -> None:
    line = ("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
            "global_oom,task_memcg=/user.slice,task=a, b (c),pid=7,uid=1000")
    assert parse_message(line) == OomKillLine(task_memcg="/user.slice", oom_memcg=None,
                                              task="a, b (c)", pid=7)


def test_the_killed_process_line_gives_the_rss_the_kernel_counted() -> None:
    assert parse_message(KILLED) == KilledProcess(
        pid=1736, comm="python3", rss_bytes=(176464 + 1536 + 4) * 1024)


def test_a_comm_with_parentheses_and_spaces() -> None:
    line = KILLED.replace("(python3)", "(a (b) c)")
    fact = parse_message(line)
    assert isinstance(fact, KilledProcess) and fact.comm == "a (b) c"


def test_a_refused_fork_names_the_forking_tasks_group() -> None:
    assert parse_message(FORK) == ForkRejected(cgroup=f"{ENGINE}/container/buildkit/forks")


@pytest.mark.parametrize("message", [
    "", "oom-kill:garbled", "oom_reaper: reaped process 1736 (python3), now anon-rss:0kB",
    "Tasks in /a are going to be killed due to memory.oom.group set",
])
def test_other_messages_are_no_fact(message: str) -> None:
    assert parse_message(message) is None


def test_the_message_is_the_text_after_the_prefix_without_dictionary_lines() -> None:
    record = f"6,1234,5678901,-,caller=T1;{FORK}\n SUBSYSTEM=cgroup\n DEVICE=x\n"
    assert record_message(record) == FORK
    assert record_message("no separator") == ""


def _records(*messages: str) -> tuple[Kmsg, socket.socket]:
    # SOCK_SEQPACKET keeps each write a record of its own, as /dev/kmsg gives one per read.
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    for sequence, message in enumerate(messages):
        kernel.send(f"3,{sequence},100,-;{message}\n".encode())
    return Kmsg(ours.detach(), Path("/dev/kmsg")), kernel


def test_every_record_logged_since_the_last_call_is_read_once() -> None:
    reader, kernel = _records(OOM_KILL, "something else", KILLED)
    try:
        assert reader.read_facts() == [parse_message(OOM_KILL), parse_message(KILLED)]
        assert reader.read_facts() == []
        kernel.send(f"6,9,100,-;{FORK}\n".encode())
        assert reader.read_facts() == [parse_message(FORK)]
    finally:
        reader.close()
        kernel.close()


def test_overwritten_records_are_counted_and_reading_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reader, kernel = _records(KILLED)
    real_read = os.read
    calls = []

    def read(fd: int, size: int) -> bytes:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EPIPE, "Broken pipe")
        return real_read(fd, size)

    monkeypatch.setattr(kmsg.os, "read", read)
    try:
        assert reader.read_facts() == [parse_message(KILLED)]
        assert reader.lost == 1
    finally:
        reader.close()
        kernel.close()


def test_open_starts_at_the_end_and_names_the_file_it_cannot_open(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text(f"3,1,1,-;{KILLED}\n")
    reader = open_kmsg(log)
    try:
        assert reader.read_facts() == []  # what was logged before the start is not news
    finally:
        reader.close()
    with pytest.raises(CgroupReadError) as caught:
        open_kmsg(tmp_path / "absent")
    assert caught.value.errno == errno.ENOENT and "absent" in str(caught.value)
