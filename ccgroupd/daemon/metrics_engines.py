"""The collectors of the metrics endpoint (ccgroupd.daemon.metrics serves them): every
engine's group, supervisor and builds, and the budget group above them.

Each engine's samples carry ``engine`` (its name) and ``cgroup`` (its group's path);
each family is yielded once, with one sample per engine. An engine's counters are kept
monotonic (MonotonicCounters) for as long as it is listed with the same group, and
forgotten when it is not (an engine removed by a reload starts from zero if it comes back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccgroupd import __version__
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.metrics_group import (
    BUDGET_PREFIX,
    Families,
    GroupSampler,
    MonotonicCounters,
)
from ccgroupd.daemon.status import sample_usage
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import MEMORY_MAX


class EngineView(Protocol):
    """What the collector reads from the supervisor (ccgroupd.engine.supervisor.Supervisor)."""

    @property
    def state(self) -> EngineState: ...

    @property
    def restarts(self) -> int: ...

    def uptime_s(self) -> float | None: ...


@dataclass(frozen=True)
class EngineSource:
    """One engine, as the collectors see it."""

    name: str  # the engine's name, e.g. "ci": the ``engine`` label
    group: str  # its cgroup, relative to the cgroup root
    engine: Callable[[], EngineView | None]  # the supervisor, None while there is none
    tracker: Callable[[], BuildTracker | None]  # its builds, None while not tracked


@dataclass
class _EngineSeries:
    """What outlives a scrape for one engine (and group)."""

    counters: MonotonicCounters
    last_sample_s: float | None = None


class EnginesCollector(Collector):
    """Every ccgroupd_* metric but the builds', read when Prometheus scrapes."""

    def __init__(self, cgroupfs: Cgroupfs, engines: Callable[[], Sequence[EngineSource]], *,
                 budget_group: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self._cgroupfs = cgroupfs
        self._engines = engines
        self._budget_group = budget_group
        self._clock = clock
        self._series: dict[tuple[str, str], _EngineSeries] = {}
        self._budget: tuple[str, MonotonicCounters] | None = None
        # Scrapes may run concurrently (one thread per request); the counters are shared.
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return self._collect()

    def _collect(self) -> list[Metric]:
        families = Families()
        listed: dict[tuple[str, str], _EngineSeries] = {}
        for source in self._engines():
            key = (source.name, source.group.strip("/"))
            if key in listed:
                continue  # listed twice: its series once (Prometheus refuses duplicates)
            series = listed[key] = self._series.get(key) or _EngineSeries(MonotonicCounters())
            self._engine(families, source, series)
        self._series = listed  # an engine no longer listed is forgotten
        self._budget_metrics(families)
        info = GaugeMetricFamily("ccgroupd_build_info", "ccgroupd's version (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        return [*families, info]

    def _engine(self, families: Families, source: EngineSource,
                series: _EngineSeries) -> None:
        labels = {"engine": source.name, "cgroup": str(self._cgroupfs.path(source.group))}
        sampler = GroupSampler(self._cgroupfs, source.group, labels, series.counters, families)
        sampler.limits()
        complete = sampler.usage()
        sampler.events()
        sampler.pressure()
        sampler.io()
        view = source.engine()
        if view is not None:
            self._engine_view(families, labels, view)
        if complete:
            series.last_sample_s = self._clock()
        if series.last_sample_s is not None:
            sampler.gauge("last_sample_timestamp_seconds",
                          "Unix time of the last scrape that read the engine group's "
                          "cpu.stat and memory.current", series.last_sample_s)

    @staticmethod
    def _engine_view(families: Families, labels: dict[str, str], view: EngineView) -> None:
        for candidate in EngineState:
            families.gauge("ccgroupd_engine_state",
                           "1 for the engine's current state, 0 for the others",
                           {**labels, "state": candidate.value},
                           1 if candidate is view.state else 0)
        families.counter("ccgroupd_engine_restarts",
                         "Engine starts after the first, since ccgroupd started",
                         labels, view.restarts)
        uptime_s = view.uptime_s()
        if uptime_s is not None:
            families.gauge("ccgroupd_engine_uptime_seconds",
                           "Seconds since the running engine started", labels, uptime_s)

    def _budget_metrics(self, families: Families) -> None:
        """The budget group's CPU and memory limits and its usage, with the engines' readers."""
        group = self._budget_group()
        if group is None:
            self._budget = None
            return
        group = group.strip("/")
        if self._budget is None or self._budget[0] != group:
            self._budget = (group, MonotonicCounters())
        labels = {"cgroup": str(self._cgroupfs.path(group))}
        sampler = GroupSampler(self._cgroupfs, group, labels, self._budget[1], families,
                               prefix=BUDGET_PREFIX)
        sampler.cpu_limit()
        sampler.uint_limit(MEMORY_MAX, "memory_max_bytes")
        sampler.core_usage(sample_usage(self._cgroupfs, group))


class BuildsCollector(Collector):
    """The builds' totals of every engine: counters and histograms over every build that
    finished, labelled ``engine`` and with no label per build (builds come and go by the
    thousand; the cardinality stays fixed)."""

    def __init__(self, engines: Callable[[], Sequence[EngineSource]]) -> None:
        self._engines = engines

    def collect(self) -> Iterable[Metric]:
        families = Families()
        for source in self._engines():
            tracker = source.tracker()
            if tracker is not None:
                self._builds(families, {"engine": source.name}, tracker)
        return list(families)

    @staticmethod
    def _builds(families: Families, labels: dict[str, str], tracker: BuildTracker) -> None:
        stats = tracker.stats
        families.gauge("ccgroupd_builds_running", "Build groups below the engine group now",
                       labels, len(tracker.builds))
        for name, documentation, value in (
                ("ccgroupd_builds_started", "Build groups seen since the daemon started",
                 stats.started_total),
                ("ccgroupd_builds_finished", "Builds that ended (one build_finished record "
                 "each)", stats.finished_total),
                ("ccgroupd_builds_unaccounted", "Builds whose group was removed before "
                 "their end could be read (figures from the last sample)",
                 stats.unaccounted_total),
                ("ccgroupd_build_oom_kills", "OOM kills the kernel log put in a build",
                 stats.oom_kills_total)):
            families.counter(name, documentation, labels, value)
        for name, documentation, histogram in (
                ("ccgroupd_build_memory_peak_bytes", "Peak memory of each finished build",
                 stats.memory_peak_bytes),
                ("ccgroupd_build_cpu_seconds", "CPU time of each finished build",
                 stats.cpu_seconds),
                ("ccgroupd_build_duration_seconds", "Wall time of each finished build",
                 stats.duration_seconds)):
            families.histogram(name, documentation, labels, histogram.buckets(),
                               histogram.sum)
