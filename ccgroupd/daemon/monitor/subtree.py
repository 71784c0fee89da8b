"""The engine group and its descendants (the engine's own groups and build containers,
which come and go while they are walked)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping

from ccgroupd.engine.supervisor import ENGINE_MAX_DEPTH
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs, GroupDirectory
from ccgroupd.kernel.files import PIDS_EVENTS
from ccgroupd.kernel.inotify import Inotify


class Subtree:
    def __init__(self, cgroupfs: Cgroupfs, group: str) -> None:
        self._cgroupfs = cgroupfs
        self.group = group.strip("/")

    def groups(self) -> list[tuple[str, GroupDirectory]]:
        """The group and its descendants down to ENGINE_MAX_DEPTH levels (the engine may
        not make deeper ones; should it lift that, a deep tree must not stall the loop),
        each with its checked directory; one that goes away meanwhile is skipped. Walk
        once and pass the result to procs() and counter() when both are wanted."""
        try:
            return self._cgroupfs.walk(self.group, max_depth=ENGINE_MAX_DEPTH)
        except CgroupError:  # the group itself is gone
            return [(self.group, GroupDirectory(self._cgroupfs.path(self.group)))]

    def procs(self, groups: list[tuple[str, GroupDirectory]] | None = None) -> list[int]:
        """Every process in the subtree, as far as the groups are still there."""
        pids = []
        for _name, directory in self.groups() if groups is None else groups:
            with contextlib.suppress(CgroupError):
                pids.extend(directory.procs())
        return pids

    def counter(self, attribute: str, key: str, *, watcher: Inotify | None = None,
                groups: list[tuple[str, GroupDirectory]] | None = None) -> dict[str, int]:
        """One counter of the group and each descendant, by name relative to the group
        ("." for the group itself); with a ``watcher``, each file is watched too
        (watching a watched file again changes nothing)."""
        found: dict[str, int] = {}
        watched: set[str] = set()
        for name, directory in self.groups() if groups is None else groups:
            with contextlib.suppress(CgroupError):
                found[name[len(self.group):].strip("/") or "."] = (
                    directory.read_flat_keyed(attribute).get(key, 0))
                if watcher is not None:
                    path = f"{directory.path}/{attribute}"
                    watcher.add(path, attribute)
                    watched.add(path)
        if watcher is not None:
            watcher.prune(attribute, watched)  # the groups that are gone
        return found


class LocalPidsRefusals:
    """Refused forks before Linux 6.11, where each group's pids.events counts only its own:
    summed over the subtree, and kept by group until a record names them."""

    def __init__(self, subtree: Subtree) -> None:
        self._subtree = subtree
        self._last: dict[str, int] = {}
        self.by_group: Counter[str] = Counter()  # since the last record

    def baseline(self) -> None:
        self._last = self._subtree.counter(PIDS_EVENTS, "max")

    def forget(self) -> None:
        self._last.clear()

    def walk(self, watcher: Inotify | None) -> int:
        """The refusals since the last walk. One small read per group: the cost follows the
        number of groups (build containers), never the number of processes. Each group's
        file is watched from the first walk that finds it, so later refusals there are
        reported at once."""
        current = self._subtree.counter(PIDS_EVENTS, "max", watcher=watcher)
        grew = increases(self._last, current)
        self.by_group.update(grew)
        self._last = current
        return sum(grew.values())


def increases(previous: Mapping[str, int], current: Mapping[str, int]) -> dict[str, int]:
    """Per-group counter increases; a group first seen now was created since: all of it is new."""
    return {group: count - previous.get(group, 0) for group, count in current.items()
            if count > previous.get(group, 0)}
