"""CPU throttling of builds by their own cpu.max: the engine group's cpu.stat does not
count it (a group is throttled where its quota ran out), so each build's cpu.stat is
sampled on the daemon's poll. At most one cpu_throttled record per report interval
names the most throttled build and says how many were throttled."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from ccgroupd.daemon.builds.build import Build
from ccgroupd.daemon.monitor.throttle import ThrottleMeter, throttle_fields
from ccgroupd.kernel.parsers import CpuMax

if TYPE_CHECKING:
    from ccgroupd.config import MonitorSection

log = structlog.get_logger("ccgroupd")


class BuildThrottling:
    def __init__(self, settings: MonitorSection) -> None:
        self._settings = settings
        self._meters: dict[str, ThrottleMeter] = {}
        self._last_report_s = float("-inf")
        self._throttled_since_report: set[str] = set()

    def forget(self, build: str) -> None:
        self._meters.pop(build, None)

    def sample(self, builds: Iterable[Build], now: float,
               cgroup_of: Callable[[str], str]) -> None:
        """The running builds, each with its sample read just now."""
        worst: tuple[float, str, str | None, dict[str, int], CpuMax | None] | None = None
        for each in builds:
            if each.sample is None or each.sample.cpu_stat is None or each.limits.cpus is None:
                continue  # no cpu.max of its own: nothing of its own throttles it
            build, command, cpu_max = each.group, each.command_line(), each.limits.cpu_max()
            meter = self._meters.setdefault(build, ThrottleMeter(
                self._settings.throttle_threshold))
            _throttled, amounts = meter.sample(each.sample.cpu_stat, now)
            if amounts is None:
                continue
            self._throttled_since_report.add(build)
            share = amounts["delta"] / amounts["periods"]
            if worst is None or share > worst[0]:
                worst = (share, build, command, amounts, cpu_max)
        if worst is None or now - self._last_report_s < self._settings.report_interval_s:
            return
        _share, build, command, amounts, cpu_max = worst
        log.warning("cpu_throttled", cgroup=cgroup_of(build), delta=amounts["delta"], build=build,
                    build_command=command,
                    builds_throttled=len(self._throttled_since_report),
                    **throttle_fields(amounts, cpu_max))
        self._last_report_s = now
        self._throttled_since_report.clear()
