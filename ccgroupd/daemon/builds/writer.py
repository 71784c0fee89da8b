"""Writes into build groups, which the runtime may remove at any moment."""

from __future__ import annotations

import structlog

from ccgroupd.daemon.builds.stats import BuildStats
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import GroupDirectory

log = structlog.get_logger("ccgroupd")


class LimitWriter:
    def __init__(self, stats: BuildStats) -> None:
        self._stats = stats
        self._failure_logged = False

    def write(self, directory: GroupDirectory, attribute: str, value: str) -> None:
        """One write; a group removed meanwhile is no failure, and a failure is logged once
        (the next build would fail alike) and counted."""
        try:
            directory.write(attribute, value)
        except CgroupError as exc:
            if not directory.exists():
                return
            self._stats.limit_failed()
            if not self._failure_logged:
                self._failure_logged = True
                log.warning("build_limits_failed", cgroup=str(exc.path), value=value,
                            errno=exc.errno, error=str(exc))
