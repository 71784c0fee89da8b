"""inotify on the engine group's event files, read from the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.inotify import Inotify

log = structlog.get_logger("ccgroupd")


class Watch:
    def __init__(self, cgroupfs: Cgroupfs, group: str, files: Iterable[str], *,
                 on_changed: Callable[[set[str]], None],
                 on_failure: Callable[[BaseException], None]) -> None:
        self._cgroupfs = cgroupfs
        self._group = group
        self._files = tuple(files)
        self._on_changed = on_changed
        self._on_failure = on_failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inotify: Inotify | None = None  # while armed; more files may be added to it
        self._overflowed = False

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching, unless already watching."""
        if self.inotify is not None:
            return
        self.inotify = self._cgroupfs.watch(self._group, self._files)
        self._loop = loop
        loop.add_reader(self.inotify.fileno(), self._on_readable)

    def disarm(self) -> None:
        if self.inotify is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.inotify.fileno())
        self.inotify.close()
        self.inotify = None

    def _on_readable(self) -> None:
        assert self.inotify is not None
        try:
            overflows = self.inotify.overflows
            changed = self.inotify.read_changed()
            if self.inotify.overflows > overflows and not self._overflowed:
                # Once: a queue that overflows in a storm overflows again and again.
                self._overflowed = True
                log.warning("inotify_overflow", cgroup=str(self._cgroupfs.path(self._group)))
            self._on_changed(changed)
        except Exception as exc:  # a reader callback cannot raise into run(): hand it over
            self._on_failure(exc)
