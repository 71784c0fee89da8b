"""What a build used, read from its group: at the end for its build_finished record, and
while it runs for ``ccgroupctl top`` and as the fallback when the runtime removed the
group before the end could be read."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs, GroupDirectory
from ccgroupd.kernel.files import (
    CPU_STAT,
    MEMORY_CURRENT,
    MEMORY_EVENTS_LOCAL,
    MEMORY_PEAK,
    PIDS_CURRENT,
    PIDS_EVENTS,
)
from ccgroupd.kernel.parsers import CpuStat, ParseError, parse_cpu_stat, parse_uint_or_max


@dataclass(frozen=True)
class Usage:
    """One reading of a group; None where a file was missing or unreadable."""

    cpu_usage_usec: int | None = None
    throttled_usec: int | None = None
    memory_current_bytes: int | None = None
    memory_peak_bytes: int | None = None  # Linux 5.19 and later
    pids_current: int | None = None
    oom_kills: int | None = None  # this group's own (memory.events.local)
    pids_refused: int | None = None  # pids.events "max": forks refused in this group
    cpu_stat: CpuStat | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, int | None]:
        return {"usage_usec": self.cpu_usage_usec, "memory_current_bytes":
                self.memory_current_bytes, "memory_peak_bytes": self.memory_peak_bytes,
                "pids_current": self.pids_current}


def read_usage(cgroupfs: Cgroupfs, group: str) -> Usage | None:
    """Every figure the group still has; None once it is gone (nothing could be read)."""
    try:
        directory = cgroupfs.directory(group)
    except CgroupError:
        return None
    return read_usage_in(directory)


def read_usage_in(directory: GroupDirectory) -> Usage | None:
    """:func:`read_usage` of a checked directory; what tells a build's end comes first."""
    values: dict[str, int | None] = {}
    try:
        stat = parse_cpu_stat(directory.read(CPU_STAT))
    except (CgroupError, ParseError):
        return None  # cpu.stat exists in every group: the group is gone
    values["cpu_usage_usec"] = stat.usage_usec
    values["throttled_usec"] = stat.throttled_usec
    with contextlib.suppress(CgroupError, ParseError):
        values["memory_peak_bytes"] = parse_uint_or_max(directory.read(MEMORY_PEAK))
    for name, attribute, key in (("oom_kills", MEMORY_EVENTS_LOCAL, "oom_kill"),
                                 ("pids_refused", PIDS_EVENTS, "max")):
        with contextlib.suppress(CgroupError):
            values[name] = directory.read_flat_keyed(attribute).get(key, 0)
    for name, attribute in (("memory_current_bytes", MEMORY_CURRENT),
                            ("pids_current", PIDS_CURRENT)):
        with contextlib.suppress(CgroupError, ParseError):
            values[name] = parse_uint_or_max(directory.read(attribute))
    return Usage(**values, cpu_stat=stat)


class Histogram:
    """Cumulative Prometheus-style buckets of what finished builds used (no per-build label:
    the cardinality stays bounded however many builds come and go)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # observations <= each bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1

    def buckets(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs ending with "+Inf", as prometheus_client takes them."""
        return [*((repr(float(bound)), count) for bound, count in zip(self.bounds,
                                                                     self.counts, strict=True)),
                ("+Inf", self.count)]


_MIB = 1024 * 1024
MEMORY_PEAK_BUCKETS_BYTES = tuple(float(n * _MIB) for n in (16, 64, 256, 512, 1024, 2048, 4096,
                                                               8192, 16384))
CPU_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
DURATION_SECONDS_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0)
