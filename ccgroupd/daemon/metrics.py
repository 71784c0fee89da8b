"""Prometheus metrics of the engine group, read from its cgroup files at scrape time.

A scrape reads a dozen small files of the engine group (``cpu.max``,
``memory.{max,high,swap.max,current,swap.current,stat,events,swap.events}``,
``pids.{max,current,events}``, ``cpu.stat``, ``{cpu,memory,io}.pressure``) and nothing
per process; it runs in the HTTP server's thread, so the monitoring loop never waits
for it. The daemon's own process metrics (``process_*``) come with it.

Naming follows Prometheus: base units (seconds, bytes), ``_total`` counters,
every sample labelled ``cgroup`` (the group's path). A limit that is ``max``
(unlimited) is left out rather than exposed as +Inf, so that ``usage / limit``
has no series (and alerts on it stay silent) for an unlimited resource.

The kernel's counters restart from zero when the group is recreated (after a
daemon restart, or a leftover group being removed); :class:`MonotonicCounters`
adds the last value seen before such a reset, so every ``_total`` is monotonic
while the daemon runs. A reset that happens entirely between two scrapes and
overtakes the old value is not seen (Prometheus' own ``rate()`` has the same
blind spot).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ccgroupd import __version__
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.status import read_or_none, sample_usage
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import (
    CPU_MAX,
    CPU_PRESSURE,
    IO_PRESSURE,
    MEMORY_EVENTS,
    MEMORY_HIGH,
    MEMORY_MAX,
    MEMORY_PRESSURE,
    MEMORY_STAT,
    MEMORY_SWAP_EVENTS,
    MEMORY_SWAP_MAX,
    PIDS_EVENTS,
    PIDS_MAX,
)
from ccgroupd.kernel.parsers import Psi, parse_cpu_max, parse_psi, parse_uint_or_max

if TYPE_CHECKING:
    from ccgroupd.config import MetricsSection

USEC_PER_S = 1_000_000
MEMORY_EVENT_KEYS = ("high", "max", "oom", "oom_kill")
MEMORY_SWAP_EVENT_KEYS = ("high", "max", "fail")
PIDS_EVENT_KEYS = ("max",)
# PSI as node_exporter and cAdvisor name it: "some" is time some task waited, "full" time
# all non-idle tasks were stalled at once.
PRESSURE_KINDS = (("some", "waiting"), ("full", "stalled"))
PRESSURE_FILES = (("cpu", CPU_PRESSURE), ("memory", MEMORY_PRESSURE), ("io", IO_PRESSURE))


class EngineView(Protocol):
    """What the collector reads from the supervisor (ccgroupd.engine.supervisor.Supervisor)."""

    @property
    def state(self) -> EngineState: ...

    @property
    def restarts(self) -> int: ...

    def uptime_s(self) -> float | None: ...


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


class EngineGroupCollector(Collector):
    """Every ccgroupd_* metric, read when Prometheus scrapes (see the module docstring)."""

    def __init__(self, cgroupfs: Cgroupfs, group: str,
                 engine: Callable[[], EngineView | None], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._cgroupfs = cgroupfs
        self._group = group.strip("/")
        self._cgroup_path = str(cgroupfs.path(self._group))
        self._engine = engine
        self._clock = clock
        self._counters = MonotonicCounters()
        self._last_sample_s: float | None = None
        # Scrapes may run concurrently (one thread per request); the counters are shared.
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        yield from self._limits()
        complete = yield from self._usage()
        yield from self._events()
        yield from self._pressure()
        yield from self._engine_metrics()
        if complete:
            self._last_sample_s = self._clock()
        if self._last_sample_s is not None:
            yield self._gauge("ccgroupd_last_sample_timestamp_seconds",
                              "Unix time of the last scrape that read the engine group's "
                              "cpu.stat and memory.current", self._last_sample_s)
        info = GaugeMetricFamily("ccgroupd_build_info", "ccgroupd's version (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["cgroup"])
        family.add_metric([self._cgroup_path], value)
        return family

    def _counter(self, name: str, documentation: str, key: str, current: int,
                 scale: int = 1) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["cgroup"])
        family.add_metric([self._cgroup_path], self._counters.total(key, current) / scale)
        return family

    def _read_uint_or_max(self, attribute: str) -> int | None:
        return read_or_none(lambda: parse_uint_or_max(self._cgroupfs.read(self._group, attribute)))

    def _limits(self) -> Iterator[Metric]:
        cpu_max = read_or_none(lambda: parse_cpu_max(self._cgroupfs.read(self._group, CPU_MAX)))
        if cpu_max is not None and cpu_max.quota_usec is not None:
            yield self._gauge("ccgroupd_cpu_limit_cpus", "cpu.max quota / period, in CPUs",
                              cpu_max.quota_usec / cpu_max.period_usec)
        for attribute, name in ((MEMORY_MAX, "ccgroupd_memory_max_bytes"),
                                (MEMORY_HIGH, "ccgroupd_memory_high_bytes"),
                                (MEMORY_SWAP_MAX, "ccgroupd_memory_swap_max_bytes"),
                                (PIDS_MAX, "ccgroupd_pids_max")):
            value = self._read_uint_or_max(attribute)
            if value is not None:
                yield self._gauge(name, f"{attribute} (absent when max)", value)

    def _usage(self) -> Generator[Metric, None, bool]:
        """Usage and throttling; returns whether cpu.stat and memory.current were read."""
        usage = sample_usage(self._cgroupfs, self._group)
        if usage.memory_bytes is not None:
            yield self._gauge("ccgroupd_memory_current_bytes", "memory.current",
                              usage.memory_bytes)
            inactive_file = read_or_none(partial(self._read_stat_key, "inactive_file"))
            if inactive_file is not None:
                # What the kernel cannot simply drop under pressure: memory.current counts
                # page cache too, which healthy I/O-heavy builds fill (cAdvisor's
                # container_memory_working_set_bytes).
                yield self._gauge("ccgroupd_memory_working_set_bytes",
                                  "memory.current minus memory.stat inactive_file",
                                  max(0, usage.memory_bytes - inactive_file))
        if usage.swap_bytes is not None:
            yield self._gauge("ccgroupd_memory_swap_current_bytes", "memory.swap.current",
                              usage.swap_bytes)
        if usage.pids is not None:
            yield self._gauge("ccgroupd_pids_current", "pids.current", usage.pids)
        stat = usage.cpu_stat
        if stat is None:
            return False
        yield self._counter("ccgroupd_cpu_usage_seconds", "cpu.stat usage_usec, in seconds",
                            "usage_usec", stat.usage_usec, USEC_PER_S)
        if stat.nr_periods is not None:
            yield self._counter("ccgroupd_cpu_periods", "cpu.stat nr_periods",
                                "nr_periods", stat.nr_periods)
        if stat.nr_throttled is not None:
            yield self._counter("ccgroupd_cpu_throttled_periods", "cpu.stat nr_throttled",
                                "nr_throttled", stat.nr_throttled)
        if stat.throttled_usec is not None:
            yield self._counter("ccgroupd_cpu_throttled_seconds",
                                "cpu.stat throttled_usec, in seconds",
                                "throttled_usec", stat.throttled_usec, USEC_PER_S)
        return usage.memory_bytes is not None

    def _read_stat_key(self, key: str) -> int | None:
        return self._cgroupfs.read_flat_keyed(self._group, MEMORY_STAT).get(key)

    def _events(self) -> Iterator[Metric]:
        for attribute, keys in ((MEMORY_EVENTS, MEMORY_EVENT_KEYS),
                                (MEMORY_SWAP_EVENTS, MEMORY_SWAP_EVENT_KEYS),
                                (PIDS_EVENTS, PIDS_EVENT_KEYS)):
            values = read_or_none(partial(self._cgroupfs.read_flat_keyed, self._group,
                                          attribute))
            if values is None:
                continue
            name = f"ccgroupd_{attribute.replace('.', '_')}"
            family = CounterMetricFamily(name, f"{attribute}, by event",
                                         labels=["cgroup", "event"])
            for key in keys:
                total = self._counters.total(f"{attribute} {key}", values.get(key, 0))
                family.add_metric([self._cgroup_path, key], total)
            yield family

    def _pressure(self) -> Iterator[Metric]:
        families = {kind: CounterMetricFamily(
            f"ccgroupd_pressure_{name}_seconds",
            f"PSI {kind} total ({{cpu,memory,io}}.pressure), in seconds",
            labels=["cgroup", "resource"]) for kind, name in PRESSURE_KINDS}
        for resource, attribute in PRESSURE_FILES:
            psi = read_or_none(partial(self._read_psi, attribute))
            if psi is None:
                continue  # PSI off (psi=0) or the group is gone
            for kind, line in (("some", psi.some), ("full", psi.full)):
                if line is not None:
                    total = self._counters.total(f"{attribute} {kind}", line.total_usec)
                    families[kind].add_metric([self._cgroup_path, resource],
                                              total / USEC_PER_S)
        yield from (family for family in families.values() if family.samples)

    def _read_psi(self, attribute: str) -> Psi:
        return parse_psi(self._cgroupfs.read(self._group, attribute))

    def _engine_metrics(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        state = GaugeMetricFamily("ccgroupd_engine_state",
                                  "1 for the engine's current state, 0 for the others",
                                  labels=["cgroup", "state"])
        for candidate in EngineState:
            state.add_metric([self._cgroup_path, candidate.value],
                             1 if candidate is engine.state else 0)
        yield state
        restarts = CounterMetricFamily("ccgroupd_engine_restarts",
                                       "Engine starts after the first, since ccgroupd started",
                                       labels=["cgroup"])
        restarts.add_metric([self._cgroup_path], engine.restarts)
        yield restarts
        uptime_s = engine.uptime_s()
        if uptime_s is not None:
            yield self._gauge("ccgroupd_engine_uptime_seconds",
                              "Seconds since the running engine started", uptime_s)


# A client that opens connections and never finishes a request must not hold threads (or
# the scrapes) for good: each connection gets this long to send its request, and only this
# many are served at once; more are closed at once and Prometheus retries on its next
# scrape.
READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16


class BuildsCollector(Collector):
    """The builds' totals: counters and histograms over every build that finished, with no
    label per build (builds come and go by the thousand; the cardinality stays fixed)."""

    def __init__(self, tracker: Callable[[], BuildTracker | None]) -> None:
        self._tracker = tracker

    def collect(self) -> Iterable[Metric]:
        tracker = self._tracker()
        if tracker is None:
            return []
        stats = tracker.stats
        families: list[Metric] = [GaugeMetricFamily(
            "ccgroupd_builds_running", "Build groups below the engine group now",
            value=len(tracker.builds))]
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
            families.append(CounterMetricFamily(name, documentation, value=value))
        for name, documentation, histogram in (
                ("ccgroupd_build_memory_peak_bytes", "Peak memory of each finished build",
                 stats.memory_peak_bytes),
                ("ccgroupd_build_cpu_seconds", "CPU time of each finished build",
                 stats.cpu_seconds),
                ("ccgroupd_build_duration_seconds", "Wall time of each finished build",
                 stats.duration_seconds)):
            families.append(HistogramMetricFamily(name, documentation,
                                                  buckets=histogram.buckets(),
                                                  sum_value=histogram.sum))
        return families


class _QuietHandler(WSGIRequestHandler):

    def log_message(self, format: str, *args: object) -> None:
        """One line per scrape on stderr would flood the journal."""


class _BoundedWSGIServer(ThreadingWSGIServer):
    """A thread per connection, at most ``max_connections`` of them."""

    max_connections = MAX_CONNECTIONS
    request_queue_size = 64

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedWSGIServer6(_BoundedWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """prometheus_client's WSGI app in a threading HTTP server bound to one address."""

    def __init__(self, collector: Collector, address: IPv4Address | IPv6Address,
                 port: int, *, read_timeout_s: float = READ_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, more: Iterable[Collector] = ()) -> None:
        registry = CollectorRegistry(auto_describe=False)
        for each in (collector, *more):
            registry.register(each)
        # process_* of the daemon itself (RSS, CPU, open fds), as every exporter has.
        ProcessCollector(registry=registry)
        base = _BoundedWSGIServer if address.version == 4 else _BoundedWSGIServer6
        server_class: type[_BoundedWSGIServer] = type(
            "MetricsHTTPServer", (base,), {"max_connections": max_connections})
        handler_class: type[_QuietHandler] = type(
            "MetricsHandler", (_QuietHandler,), {"timeout": read_timeout_s})
        # Binds now: a port in use fails the caller, not a thread.
        self._server = make_server(str(address), port, make_wsgi_app(registry),
                                   server_class, handler_class=handler_class)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="ccgroupd-metrics", daemon=True)

    @classmethod
    def from_config(cls, collector: Collector, settings: MetricsSection,
                    more: Iterable[Collector] = ()) -> MetricsServer:
        return cls(collector, settings.listen_address, settings.port, more=more)

    @property
    def address(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving (waits up to serve_forever's 0.5 s poll) and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
