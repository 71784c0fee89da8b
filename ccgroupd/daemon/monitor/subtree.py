"""The engine group and its descendants (the engine's own groups and build containers,
which come and go while they are walked)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from ccgroupd.engine.supervisor import ENGINE_MAX_DEPTH
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.inotify import Inotify


class Subtree:
    def __init__(self, cgroupfs: Cgroupfs, group: str) -> None:
        self._cgroupfs = cgroupfs
        self.group = group.strip("/")

    def groups(self) -> list[str]:
        """The group and its descendants down to ENGINE_MAX_DEPTH levels (the engine may
        not make deeper ones; should it lift that, a deep tree must not stall the loop);
        one that goes away meanwhile is skipped."""
        try:
            return [self.group, *self._cgroupfs.descendants(self.group,
                                                            max_depth=ENGINE_MAX_DEPTH)]
        except CgroupError:  # the group itself is gone
            return [self.group]

    def procs(self) -> list[int]:
        """Every process in the subtree, as far as the groups are still there."""
        pids = []
        for group in self.groups():
            with contextlib.suppress(CgroupError):
                pids.extend(self._cgroupfs.procs(group))
        return pids

    def counter(self, attribute: str, key: str, *,
                watcher: Inotify | None = None) -> dict[str, int]:
        """One counter of the group and each descendant, by name relative to the group
        ("." for the group itself); with a ``watcher``, each file is watched too
        (watching a watched file again changes nothing)."""
        found: dict[str, int] = {}
        watched: set[Path] = set()
        for group in self.groups():
            with contextlib.suppress(CgroupError):
                file = self._cgroupfs.attribute_file(group, attribute)  # one path walk
                found[group[len(self.group):].strip("/") or "."] = (
                    file.read_flat_keyed().get(key, 0))
                if watcher is not None:
                    watcher.add(file.path, attribute)
                    watched.add(file.path)
        if watcher is not None:
            watcher.prune(attribute, watched)  # the groups that are gone
        return found


def increases(previous: Mapping[str, int], current: Mapping[str, int]) -> dict[str, int]:
    """Per-group counter increases; a group first seen now was created since: all of it is new."""
    return {group: count - previous.get(group, 0) for group, count in current.items()
            if count > previous.get(group, 0)}
