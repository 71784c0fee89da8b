"""Totals over every build since the daemon started: the counters of ``ccgroupctl status``
and the metrics endpoint's counters and histograms."""

from __future__ import annotations

from collections.abc import Mapping

from ccgroupd.daemon.builds.account import (
    CPU_SECONDS_BUCKETS,
    DURATION_SECONDS_BUCKETS,
    MEMORY_PEAK_BUCKETS_BYTES,
    Histogram,
)


class BuildStats:
    def __init__(self) -> None:
        self.started_total = 0
        self.finished_total = 0
        # Finished with figures from a sample (or none): the group was gone at the end.
        self.unaccounted_total = 0
        self.oom_kills_total = 0
        self.limit_failures_total = 0
        self.memory_peak_bytes = Histogram(MEMORY_PEAK_BUCKETS_BYTES)
        self.cpu_seconds = Histogram(CPU_SECONDS_BUCKETS)
        self.duration_seconds = Histogram(DURATION_SECONDS_BUCKETS)

    def started(self) -> None:
        self.started_total += 1

    def finished(self, record: Mapping[str, object]) -> None:
        """Count a build_finished record's figures."""
        self.finished_total += 1
        if record["accounting"] != "final":
            self.unaccounted_total += 1
        for histogram, key in ((self.memory_peak_bytes, "memory_peak_bytes"),
                               (self.cpu_seconds, "cpu_usage_s"),
                               (self.duration_seconds, "duration_s")):
            value = record[key]
            if isinstance(value, int | float):
                histogram.observe(value)

    def oom_killed(self) -> None:
        self.oom_kills_total += 1

    def limit_failed(self) -> None:
        self.limit_failures_total += 1

    def to_json(self) -> dict[str, int]:
        return {"started_total": self.started_total, "finished_total": self.finished_total,
                "unaccounted_total": self.unaccounted_total,
                "oom_kills_total": self.oom_kills_total,
                "limit_failures_total": self.limit_failures_total}
