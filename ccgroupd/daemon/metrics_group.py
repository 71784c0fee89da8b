"""One cgroup's metrics, read from its files at scrape time (see ccgroupd.daemon.metrics).

:class:`GroupSampler` reads one group and adds its samples to :class:`Families`, which
holds each metric family once whatever the number of groups sampled into it
(prometheus_client refuses a family exposed twice). An engine's group is sampled whole;
the budget group only for its CPU and memory limits and its core usage, with the same
readers under another prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ccgroupd.daemon.status import UsageSample, read_or_none, sample_usage
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import (
    CPU_MAX,
    CPU_PRESSURE,
    CPU_WEIGHT,
    CPUSET_CPUS_EFFECTIVE,
    IO_MAX,
    IO_PRESSURE,
    IO_STAT,
    IO_WEIGHT,
    MEMORY_EVENTS,
    MEMORY_HIGH,
    MEMORY_LOW,
    MEMORY_MAX,
    MEMORY_MIN,
    MEMORY_PRESSURE,
    MEMORY_STAT,
    MEMORY_SWAP_EVENTS,
    MEMORY_SWAP_MAX,
    PIDS_EVENTS,
    PIDS_MAX,
)
from ccgroupd.kernel.parsers import (
    Psi,
    parse_cpu_list_count,
    parse_cpu_max,
    parse_io_max,
    parse_io_stat,
    parse_io_weight_default,
    parse_psi,
    parse_uint_or_max,
)

USEC_PER_S = 1_000_000
# "low": reclaimed below memory.low, i.e. the protection was breached.
MEMORY_EVENT_KEYS = ("low", "high", "max", "oom", "oom_kill")
MEMORY_SWAP_EVENT_KEYS = ("high", "max", "fail")
PIDS_EVENT_KEYS = ("max",)
# PSI as node_exporter and cAdvisor name it: "some" is time some task waited, "full" time
# all non-idle tasks were stalled at once.
PRESSURE_KINDS = (("some", "waiting"), ("full", "stalled"))
PRESSURE_FILES = (("cpu", CPU_PRESSURE), ("memory", MEMORY_PRESSURE), ("io", IO_PRESSURE))
# Disk I/O by device: io.stat's byte counters and io.max's byte rates.
IO_STAT_BYTES = (("rbytes", "io_read_bytes"), ("wbytes", "io_written_bytes"))
IO_MAX_BYTES = (("rbps", "io_max_read_bytes_per_second"),
                ("wbps", "io_max_write_bytes_per_second"))
PREFIX = "ccgroupd_"
M = TypeVar("M", bound=Metric)
BUDGET_PREFIX = "ccgroupd_budget_"


class MonotonicCounters:
    """Kernel counters kept monotonic across recreations of their group."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._offset: dict[str, int] = {}

    def total(self, key: str, current: int) -> int:
        """``current`` plus everything counted before the counter last went back."""
        last = self._last.get(key)
        if last is not None and current < last:
            self._offset[key] = self._offset.get(key, 0) + last
        self._last[key] = current
        return current + self._offset.get(key, 0)


class Families:
    """Metric families by name, each made at its first sample and yielded once with the
    samples of every group (the label names are those of the first sample's labels; every
    caller passes them in the same order)."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def __iter__(self) -> Iterator[Metric]:
        return iter(list(self._families.values()))

    def gauge(self, name: str, documentation: str, labels: Mapping[str, str],
              value: float) -> None:
        family = self._families.get(name)
        if not isinstance(family, GaugeMetricFamily):
            family = self._add(name, GaugeMetricFamily(name, documentation, labels=list(labels)))
        family.add_metric(list(labels.values()), value)

    def counter(self, name: str, documentation: str, labels: Mapping[str, str],
                value: float) -> None:
        """``name`` without ``_total`` (prometheus_client adds it)."""
        family = self._families.get(name)
        if not isinstance(family, CounterMetricFamily):
            family = self._add(name, CounterMetricFamily(name, documentation,
                                                         labels=list(labels)))
        family.add_metric(list(labels.values()), value)

    def histogram(self, name: str, documentation: str, labels: Mapping[str, str],
                  buckets: Sequence[tuple[str, float]], sum_value: float) -> None:
        family = self._families.get(name)
        if not isinstance(family, HistogramMetricFamily):
            family = self._add(name, HistogramMetricFamily(name, documentation,
                                                           labels=list(labels)))
        family.add_metric(list(labels.values()), list(buckets), sum_value)

    def _add(self, name: str, family: M) -> M:
        if name in self._families:
            raise ValueError(f"metric family {name} added twice with different types")
        self._families[name] = family
        return family


def read_uint_or_max(cgroupfs: Cgroupfs, group: str, attribute: str) -> int | None:
    """An integer file (``memory.max``, ``pids.max``, ...); None for ``max`` or no file."""
    return read_or_none(lambda: parse_uint_or_max(cgroupfs.read(group, attribute)))


def read_cpu_limit_cpus(cgroupfs: Cgroupfs, group: str) -> float | None:
    """``cpu.max`` quota / period, in CPUs; None when there is no quota (or no file)."""
    cpu_max = read_or_none(lambda: parse_cpu_max(cgroupfs.read(group, CPU_MAX)))
    if cpu_max is None or cpu_max.quota_usec is None:
        return None
    return cpu_max.quota_usec / cpu_max.period_usec


class GroupSampler:
    """Adds one group's samples, labelled ``labels``, to ``families``; the group's counters
    are kept monotonic in ``counters`` (one per group: see MonotonicCounters)."""

    def __init__(self, cgroupfs: Cgroupfs, group: str, labels: Mapping[str, str],
                 counters: MonotonicCounters, families: Families, *,
                 prefix: str = PREFIX) -> None:
        self._cgroupfs = cgroupfs
        self._group = group.strip("/")
        self._labels = dict(labels)
        self._counters = counters
        self._families = families
        self._prefix = prefix

    def gauge(self, name: str, documentation: str, value: float) -> None:
        self._families.gauge(self._prefix + name, documentation, self._labels, value)

    def _counter(self, name: str, documentation: str, key: str, current: int,
                 scale: int = 1) -> None:
        total = self._counters.total(key, current)
        self._families.counter(self._prefix + name, documentation, self._labels, total / scale)

    # -- limits --------------------------------------------------------------------------

    def cpu_limit(self) -> None:
        cpus = read_cpu_limit_cpus(self._cgroupfs, self._group)
        if cpus is not None:
            self.gauge("cpu_limit_cpus", "cpu.max quota / period, in CPUs", cpus)

    def uint_limit(self, attribute: str, name: str, *, unset: int | None = None) -> None:
        """``attribute`` as ``name``; absent when ``max`` (or ``unset``, its default)."""
        value = read_uint_or_max(self._cgroupfs, self._group, attribute)
        if value is not None and value != unset:
            absent = "max" if unset is None else str(unset)
            self.gauge(name, f"{attribute} (absent when {absent})", value)

    def limits(self) -> None:
        """Every limit, protection and weight of an engine's group."""
        self.cpu_limit()
        for attribute, name in ((MEMORY_MAX, "memory_max_bytes"),
                                (MEMORY_HIGH, "memory_high_bytes"),
                                (MEMORY_SWAP_MAX, "memory_swap_max_bytes"),
                                (PIDS_MAX, "pids_max")):
            self.uint_limit(attribute, name)
        self.uint_limit(MEMORY_MIN, "memory_min_bytes", unset=0)
        self.uint_limit(MEMORY_LOW, "memory_low_bytes", unset=0)
        cpu_weight = read_uint_or_max(self._cgroupfs, self._group, CPU_WEIGHT)
        if cpu_weight is not None:
            self.gauge("cpu_weight", "cpu.weight (1..10000, the kernel's default 100)",
                       cpu_weight)
        io_weight = read_or_none(lambda: parse_io_weight_default(
            self._cgroupfs.read(self._group, IO_WEIGHT)))
        if io_weight is not None:
            self.gauge("io_weight", "io.weight default (absent without io.weight)", io_weight)
        cpus = read_or_none(lambda: parse_cpu_list_count(
            self._cgroupfs.read(self._group, CPUSET_CPUS_EFFECTIVE)))
        if cpus is not None:
            self.gauge("cpuset_cpus_count", "CPUs in cpuset.cpus.effective", cpus)

    # -- usage ---------------------------------------------------------------------------

    def core_usage(self, usage: UsageSample) -> None:
        """memory.current, pids.current and the CPU time (an engine's and the budget's)."""
        if usage.memory_bytes is not None:
            self.gauge("memory_current_bytes", "memory.current", usage.memory_bytes)
        if usage.pids is not None:
            self.gauge("pids_current", "pids.current", usage.pids)
        if usage.cpu_stat is not None:
            self._counter("cpu_usage_seconds", "cpu.stat usage_usec, in seconds",
                          "usage_usec", usage.cpu_stat.usage_usec, USEC_PER_S)

    def usage(self) -> bool:
        """Usage and throttling; returns whether cpu.stat and memory.current were read."""
        usage = sample_usage(self._cgroupfs, self._group)
        self.core_usage(usage)
        if usage.memory_bytes is not None:
            inactive_file = read_or_none(partial(self._read_stat_key, "inactive_file"))
            if inactive_file is not None:
                # What the kernel cannot simply drop under pressure: memory.current counts
                # page cache too, which healthy I/O-heavy builds fill (cAdvisor's
                # container_memory_working_set_bytes).
                self.gauge("memory_working_set_bytes",
                           "memory.current minus memory.stat inactive_file",
                           max(0, usage.memory_bytes - inactive_file))
        if usage.swap_bytes is not None:
            self.gauge("memory_swap_current_bytes", "memory.swap.current", usage.swap_bytes)
        stat = usage.cpu_stat
        if stat is None:
            return False
        if stat.nr_periods is not None:
            self._counter("cpu_periods", "cpu.stat nr_periods", "nr_periods", stat.nr_periods)
        if stat.nr_throttled is not None:
            self._counter("cpu_throttled_periods", "cpu.stat nr_throttled",
                          "nr_throttled", stat.nr_throttled)
        if stat.throttled_usec is not None:
            self._counter("cpu_throttled_seconds", "cpu.stat throttled_usec, in seconds",
                          "throttled_usec", stat.throttled_usec, USEC_PER_S)
        return usage.memory_bytes is not None

    def _read_stat_key(self, key: str) -> int | None:
        return self._cgroupfs.read_flat_keyed(self._group, MEMORY_STAT).get(key)

    # -- events and pressure -------------------------------------------------------------

    def events(self) -> None:
        for attribute, keys in ((MEMORY_EVENTS, MEMORY_EVENT_KEYS),
                                (MEMORY_SWAP_EVENTS, MEMORY_SWAP_EVENT_KEYS),
                                (PIDS_EVENTS, PIDS_EVENT_KEYS)):
            values = read_or_none(partial(self._cgroupfs.read_flat_keyed, self._group,
                                          attribute))
            if values is None:
                continue
            name = self._prefix + attribute.replace(".", "_")
            for key in keys:
                total = self._counters.total(f"{attribute} {key}", values.get(key, 0))
                self._families.counter(name, f"{attribute}, by event",
                                       {**self._labels, "event": key}, total)

    def pressure(self) -> None:
        for resource, attribute in PRESSURE_FILES:
            psi = read_or_none(partial(self._read_psi, attribute))
            if psi is None:
                continue  # PSI off (psi=0) or the group is gone
            for (kind, name), line in zip(PRESSURE_KINDS, (psi.some, psi.full), strict=True):
                if line is not None:
                    total = self._counters.total(f"{attribute} {kind}", line.total_usec)
                    self._families.counter(
                        f"{self._prefix}pressure_{name}_seconds",
                        f"PSI {kind} total ({{cpu,memory,io}}.pressure), in seconds",
                        {**self._labels, "resource": resource}, total / USEC_PER_S)

    def _read_psi(self, attribute: str) -> Psi:
        return parse_psi(self._cgroupfs.read(self._group, attribute))

    # -- disk I/O ------------------------------------------------------------------------

    def io(self) -> None:
        """Bytes read and written per disk (io.stat), and the rates io.max allows (absent
        when ``max``, or for a disk io.max does not list)."""
        stats = read_or_none(lambda: parse_io_stat(self._cgroupfs.read(self._group, IO_STAT)))
        for device, counters in (stats or {}).items():
            for key, name in IO_STAT_BYTES:
                if key in counters:
                    total = self._counters.total(f"{IO_STAT} {device} {key}", counters[key])
                    self._families.counter(self._prefix + name, f"io.stat {key}, by disk",
                                           {**self._labels, "device": device}, total)
        limits = read_or_none(lambda: parse_io_max(self._cgroupfs.read(self._group, IO_MAX)))
        for device, values in (limits or {}).items():
            for key, name in IO_MAX_BYTES:
                value = values.get(key)
                if value is not None:
                    self._families.gauge(self._prefix + name,
                                         f"io.max {key}, by disk (absent when max)",
                                         {**self._labels, "device": device}, value)
