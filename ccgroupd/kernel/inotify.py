"""inotify through ctypes (the standard library has none): the kernel raises IN_MODIFY on
a cgroup interface file when its value changes, and IN_CREATE/IN_DELETE on a group's
directory when a child group is made or removed (mkdir and rmdir go through the VFS)."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ccgroupd.errors import CgroupReadError

PathLike = str | Path

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_ONLYDIR = 0x01000000
_IN_ISDIR = 0x40000000
_CHILD_EVENTS = _IN_CREATE | _IN_DELETE  # of files too: only directories are groups
_IN_Q_OVERFLOW = 0x00004000  # with wd -1: the kernel's queue was full, events were lost
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True)
class InotifyEvent:
    name: str  # what the watch was added as
    path: str  # the watched file or directory
    created: str | None = None  # a directory watch: the child directory made ...
    deleted: str | None = None  # ... or removed


class Inotify:
    """A non-blocking inotify fd; hand ``fileno()`` to an event loop."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise CgroupReadError("inotify", errno=err, detail="inotify_init1 failed")
        self._fd: int = fd
        self._names: dict[int, str] = {}
        # Paths as text, both ways: builds come and go by the thousand, and pathlib's
        # parsing was most of the cost of each (profiled).
        self._paths: dict[int, str] = {}
        self._wds: dict[str, int] = {}
        self.overflows = 0

    def fileno(self) -> int:
        return self._fd

    def add(self, path: PathLike, name: str) -> None:
        """Watch a file for changes of its value."""
        self._add(os.fspath(path), name, _IN_MODIFY)

    def add_directory(self, path: PathLike, name: str) -> None:
        """Watch a directory for child directories made and removed."""
        self._add(os.fspath(path), name, _IN_CREATE | _IN_DELETE | _IN_ONLYDIR)

    def _add(self, path: str, name: str, mask: int) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise CgroupReadError(path, errno=ctypes.get_errno(), detail="inotify_add_watch failed")
        self._forget(self._paths.get(wd))  # the same inode under another path
        self._names[wd] = name
        self._paths[wd] = path
        self._wds[path] = wd

    def remove(self, paths: Iterable[PathLike]) -> None:
        """Drop the watches of these paths (see prune for why kernfs needs this)."""
        for path in paths:
            wd = self._wds.get(os.fspath(path))
            if wd is not None:
                self._libc.inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel dropped it
                self._forget(self._paths[wd])

    def _forget(self, path: str | None) -> None:
        wd = self._wds.pop(path, None) if path is not None else None
        if wd is not None:
            del self._names[wd], self._paths[wd]

    def prune(self, name: str, keep: Iterable[PathLike]) -> None:
        """Drop the watches of ``name`` files that are not in ``keep``.

        A removed cgroup sends no IN_IGNORED (kernfs), and its watch would pin the
        inode and count against fs.inotify.max_user_watches, which root's systemd,
        dockerd and udev share: a walk that no longer finds a group lets it go.
        """
        kept = {os.fspath(path) for path in keep}
        self.remove([self._paths[wd] for wd, watched in self._names.items()
                     if watched == name and self._paths[wd] not in kept])

    def paths(self, name: str) -> list[str]:
        """The paths watched as ``name``."""
        return [self._paths[wd] for wd, watched in self._names.items() if watched == name]

    def __len__(self) -> int:
        """Watches held."""
        return len(self._names)

    def read_changed(self) -> set[str]:
        """Names of the watched files that changed since the last call (empty if none).

        After a queue overflow every watched name counts as changed: what was lost is
        unknown, and re-reading a counter file that did not change costs one read.
        """
        changed: set[str] = set()
        for event in self.read_events():
            changed.add(event.name)
        return changed

    def read_events(self) -> list[InotifyEvent]:
        """What happened since the last call. After a queue overflow (counted in
        ``overflows``) every watch reports an event with neither created nor deleted:
        the caller looks at each again."""
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                child = data[offset + _EVENT_HEADER.size:offset + _EVENT_HEADER.size + length]
                offset += _EVENT_HEADER.size + length
                if mask & _IN_Q_OVERFLOW:
                    self.overflows += 1
                    events.extend(InotifyEvent(self._names[w], self._paths[w])
                                  for w in self._names)
                elif mask & _IN_IGNORED:
                    self._forget(self._paths.get(wd))
                elif wd in self._names and (mask & _IN_ISDIR or not mask & _CHILD_EVENTS):
                    events.append(self._event(wd, mask, os.fsdecode(child.rstrip(b"\0"))))

    def _event(self, wd: int, mask: int, child: str) -> InotifyEvent:
        name, path = self._names[wd], self._paths[wd]
        if mask & _IN_CREATE:
            return InotifyEvent(name, path, created=child)
        if mask & _IN_DELETE:
            return InotifyEvent(name, path, deleted=child)
        return InotifyEvent(name, path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
