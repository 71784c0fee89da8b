"""inotify through ctypes (the standard library has none): the kernel raises IN_MODIFY on
a cgroup interface file when its value changes."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

from ccgroupd.errors import CgroupReadError

_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000  # with wd -1: the kernel's queue was full, events were lost
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


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
        self._paths: dict[int, Path] = {}
        self.overflows = 0

    def fileno(self) -> int:
        return self._fd

    def add(self, path: Path, name: str) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY)
        if wd < 0:
            raise CgroupReadError(path, errno=ctypes.get_errno(), detail="inotify_add_watch failed")
        self._names[wd] = name
        self._paths[wd] = path

    def prune(self, name: str, keep: set[Path]) -> None:
        """Drop the watches of ``name`` files that are not in ``keep``.

        A removed cgroup sends no IN_IGNORED (kernfs), and its watch would pin the
        inode and count against fs.inotify.max_user_watches, which root's systemd,
        dockerd and udev share: a walk that no longer finds a group lets it go.
        """
        for wd in [wd for wd, watched in self._names.items()
                   if watched == name and self._paths[wd] not in keep]:
            self._libc.inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel dropped it
            del self._names[wd], self._paths[wd]

    def __len__(self) -> int:
        """Watches held."""
        return len(self._names)

    def read_changed(self) -> set[str]:
        """Names of the watched files that changed since the last call (empty if none).

        After a queue overflow every watched name counts as changed: what was lost is
        unknown, and re-reading a counter file that did not change costs one read.
        """
        changed: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return changed
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                offset += _EVENT_HEADER.size + length
                if mask & _IN_Q_OVERFLOW:
                    self.overflows += 1
                    changed.update(self._names.values())
                elif mask & _IN_IGNORED:
                    self._names.pop(wd, None)
                    self._paths.pop(wd, None)
                elif wd in self._names:
                    changed.add(self._names[wd])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
