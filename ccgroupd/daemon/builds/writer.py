"""Writes into build groups, which the runtime may remove at any moment."""

from __future__ import annotations

import structlog

from ccgroupd.daemon.builds.stats import BuildStats
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs

log = structlog.get_logger("ccgroupd")


class LimitWriter:
    def __init__(self, cgroupfs: Cgroupfs, stats: BuildStats) -> None:
        self._cgroupfs = cgroupfs
        self._stats = stats
        self._failure_logged = False

    def write(self, group: str, attribute: str, value: str) -> None:
        """One write; a group removed meanwhile is no failure, and a failure is logged once
        (the next build would fail alike) and counted."""
        try:
            self._cgroupfs.write(group, attribute, value)
        except CgroupError as exc:
            if not self._cgroupfs.exists(group):
                return
            self._stats.limit_failed()
            if not self._failure_logged:
                self._failure_logged = True
                log.warning("build_limits_failed", cgroup=str(exc.path), value=value,
                            errno=exc.errno, error=str(exc))
