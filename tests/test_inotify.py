"""Inotify on real files (pyfakefs files cannot be watched); the Monitor's tests run it on
cgroup-like directories, tests/vm/scenarios/30-monitor.py on a real kernel."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ccgroupd.errors import CgroupReadError
from ccgroupd.kernel.inotify import Inotify, InotifyEvent


def test_a_modified_file_is_reported_once_by_name(tmp_path: Path) -> None:
    events, other = tmp_path / "memory.events", tmp_path / "pids.events"
    events.write_text("oom_kill 0\n")
    other.write_text("max 0\n")
    watcher = Inotify()
    try:
        watcher.add(events, "memory.events")
        watcher.add(other, "pids.events")
        assert watcher.read_changed() == set()
        events.write_text("oom_kill 1\n")
        events.write_text("oom_kill 2\n")
        assert watcher.read_changed() == {"memory.events"}
        assert watcher.read_changed() == set()
    finally:
        watcher.close()


def test_watching_a_missing_file_names_it(tmp_path: Path) -> None:
    watcher = Inotify()
    try:
        with pytest.raises(CgroupReadError, match="inotify_add_watch failed") as caught:
            watcher.add(tmp_path / "gone", "gone")
        assert caught.value.errno == errno.ENOENT
        assert caught.value.path == str(tmp_path / "gone")
    finally:
        watcher.close()


def test_close_twice_is_harmless() -> None:
    watcher = Inotify()
    watcher.close()
    watcher.close()
    assert watcher.fileno() == -1


def test_a_queue_overflow_reports_every_watched_file(tmp_path: Path) -> None:
    """On the real kernel: more events than fs.inotify.max_queued_events, unread."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    events, other, quiet = (tmp_path / name for name in ("memory.events", "pids.events",
                                                         "cgroup.events"))
    for path in (events, other, quiet):
        path.write_text("0\n")
    watcher = Inotify()
    try:
        watcher.add(events, "memory.events")
        watcher.add(other, "pids.events")
        watcher.add(quiet, "cgroup.events")
        fds = [os.open(path, os.O_WRONLY) for path in (events, other)]
        try:
            # Alternating files: the kernel merges only identical consecutive events.
            for _ in range(limit // 2 + 10):
                for fd in fds:
                    os.write(fd, b"1")
        finally:
            for fd in fds:
                os.close(fd)
        changed = watcher.read_changed()
        assert watcher.overflows == 1
        # What was lost is unknown: every watched file counts as changed, the quiet one too.
        assert changed == {"memory.events", "pids.events", "cgroup.events"}
    finally:
        watcher.close()


def test_watches_of_groups_that_are_gone_are_dropped(tmp_path: Path) -> None:
    """kernfs sends no IN_IGNORED for a removed cgroup: the walk itself lets go, so the
    watch count stays flat over builds coming and going (plain directories stand in)."""
    from ccgroupd.daemon.monitor.subtree import Subtree
    from ccgroupd.kernel.cgroupfs import Cgroupfs

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "pids.events").write_text("max 0\n")
    subtree = Subtree(Cgroupfs(tmp_path, page_size=4096), "engine")
    watcher = Inotify()
    try:
        for _round in range(3):
            builds = [engine / "buildkit" / f"b{n}" for n in range(300)]
            for build in builds:
                build.mkdir(parents=True)
                (build / "pids.events").write_text("max 0\n")
            assert len(subtree.counter("pids.events", "max", watcher=watcher)) == 301
            assert len(watcher) == 301  # the engine's and each build's file
            for build in builds:
                (build / "pids.events").unlink()
                build.rmdir()
            # (A real file system queues IN_IGNORED now; kernfs does not: not read here.)
            subtree.counter("pids.events", "max", watcher=watcher)
            assert len(watcher) == 1
    finally:
        watcher.close()


def test_a_directory_watch_reports_child_directories_made_and_removed(tmp_path: Path) -> None:
    watcher = Inotify()
    try:
        watcher.add_directory(tmp_path, "dir")
        (tmp_path / "a-file").write_text("not a group")
        (tmp_path / "build1").mkdir()
        (tmp_path / "build1").rmdir()
        assert watcher.read_events() == [InotifyEvent("dir", str(tmp_path), created="build1"),
                                         InotifyEvent("dir", str(tmp_path), deleted="build1")]
        watcher.remove({tmp_path})
        assert len(watcher) == 0
        (tmp_path / "build2").mkdir()
        assert watcher.read_events() == []
    finally:
        watcher.close()
