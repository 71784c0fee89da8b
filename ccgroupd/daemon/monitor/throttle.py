"""CPU throttling from ``cpu.stat``, which the kernel does not notify about: the throttled
share of the periods between two polls, and the fields of a ``cpu_throttled`` record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccgroupd.kernel.parsers import CpuMax, CpuStat


@dataclass(frozen=True)
class _Sample:
    at: float
    nr_periods: int
    nr_throttled: int
    throttled_usec: int


class ThrottleMeter:
    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._last: _Sample | None = None

    def reset(self) -> None:
        """The next sample is a new baseline (the group was recreated or is gone)."""
        self._last = None

    def sample(self, stat: CpuStat, now: float) -> tuple[int, dict[str, int] | None]:
        """Periods throttled since the last sample, and the amounts of a cpu_throttled
        report when their share is above the threshold."""
        if stat.nr_periods is None or stat.nr_throttled is None or stat.throttled_usec is None:
            return 0, None  # the cpu controller is not enabled for the group: no throttling
        sample = _Sample(now, stat.nr_periods, stat.nr_throttled, stat.throttled_usec)
        last, self._last = self._last, sample
        if last is None or sample.nr_periods < last.nr_periods:
            return 0, None  # first sample, or the group was recreated: a new baseline
        periods = sample.nr_periods - last.nr_periods
        throttled = sample.nr_throttled - last.nr_throttled
        if not periods or throttled / periods <= self._threshold:
            return throttled, None
        return throttled, {"delta": throttled, "periods": periods,
                           "throttled_usec": sample.throttled_usec - last.throttled_usec,
                           "interval_usec": round((now - last.at) * 1_000_000)}


def throttle_fields(amounts: Mapping[str, int], cpu_max: CpuMax | None) -> dict[str, object]:
    """A cpu_throttled record's fields from the amounts (summed over a report window)."""
    interval_usec = amounts["interval_usec"]
    fields: dict[str, object] = {
        "periods": amounts["periods"],
        "throttled_usec": amounts["throttled_usec"],
        "interval_s": round(interval_usec / 1_000_000, 3),
        "throttled_periods_fraction": round(amounts["delta"] / amounts["periods"], 3),
        "throttled_time_fraction": round(amounts["throttled_usec"] / interval_usec, 3),
    }
    if cpu_max is not None and cpu_max.quota_usec is not None:
        fields["limit_cpus"] = round(cpu_max.quota_usec / cpu_max.period_usec, 3)
    return fields
