"""inotify on the engine group's subtree: the directories where builds may appear
(IN_CREATE and IN_DELETE of child groups), and each build's ``cgroup.events`` and
``pids.events``. kernfs sends no IN_IGNORED when a group is removed (before Linux 6.11)
and a watch pins the inode: every watch is dropped here when its group goes."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import GroupDirectory
from ccgroupd.kernel.files import CGROUP_EVENTS, PIDS_EVENTS
from ccgroupd.kernel.inotify import Inotify

DIRECTORY = "directory"  # the name of directory watches in the events
BUILD_FILES = (CGROUP_EVENTS, PIDS_EVENTS)


class TreeWatch:
    """Paths here are text, not pathlib: builds come and go by the thousand, and pathlib's
    parsing was most of the cost of each (profiled)."""

    def __init__(self, engine_path: Path) -> None:
        self.engine_path = str(engine_path)
        self.inotify: Inotify | None = None  # while open; without it nothing is watched
        self._watched_engine: tuple[int, int] | None = None

    def open(self) -> Inotify:
        self.inotify = Inotify()
        return self.inotify

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    def path(self, group: str) -> str:
        """The directory of a group relative to the engine group ("" is the engine group)."""
        return f"{self.engine_path}/{group}" if group else self.engine_path

    def directory(self, group: str) -> GroupDirectory:
        """A build's directory, below the engine group's checked path: the runtime makes
        groups, never symlinks (cgroupfs has none)."""
        return GroupDirectory(self.path(group))

    def relative(self, path: str) -> str:
        """The group of a watched directory, relative to the engine group."""
        return path[len(self.engine_path) + 1:]

    def group_of_file(self, path: str) -> str:
        return self.relative(path.rsplit("/", 1)[0])

    def engine_replaced(self) -> bool:
        """Whether the engine group was removed and made again since it was watched (its
        watch then sees nothing: the engine's restart can do that)."""
        if self.inotify is None:
            return False
        # A file system that sends IN_IGNORED dropped the watch; kernfs sends none, but its
        # inode numbers are not reused soon.
        return (self.engine_path not in self.inotify.paths(DIRECTORY)
                or GroupDirectory(self.engine_path).identity() != self._watched_engine)

    def watch_directory(self, group: str) -> None:
        if not group:
            self._watched_engine = GroupDirectory(self.engine_path).identity()
        if self.inotify is not None:
            with contextlib.suppress(CgroupError):  # removed meanwhile
                self.inotify.add_directory(self.path(group), DIRECTORY)

    def forget_directories(self, under: str | None = None) -> None:
        """Drop the directory watches of ``under`` and below it (None: all of them)."""
        if self.inotify is None:
            return
        top = None if under is None else self.path(under)
        self.inotify.remove([path for path in self.inotify.paths(DIRECTORY)
                             if top is None or path == top or path.startswith(top + "/")])

    def watch_build(self, group: str) -> None:
        if self.inotify is not None:
            directory = self.path(group)
            with contextlib.suppress(CgroupError):
                for attribute in BUILD_FILES:
                    self.inotify.add(f"{directory}/{attribute}", attribute)

    def forget_build(self, group: str) -> None:
        if self.inotify is not None:
            directory = self.path(group)
            self.inotify.remove([f"{directory}/{attribute}" for attribute in BUILD_FILES])
