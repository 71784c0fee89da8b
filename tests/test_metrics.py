"""ccgroupd.daemon.metrics: the exposition, parsed with prometheus_client's own text parser,
against the fake kernel's files."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ccgroupd import __version__
from ccgroupd.config import BuildsSection, MonitorSection
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.daemon.metrics import MetricsServer
from ccgroupd.daemon.metrics_engines import (
    BuildsCollector,
    EnginesCollector,
    EngineSource,
    EngineView,
)
from ccgroupd.daemon.metrics_group import MonotonicCounters
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from fakekernel import FakeKernel

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
DASHBOARD = PACKAGING / "grafana" / "ccgroupd.json"
RULES = PACKAGING / "prometheus" / "ccgroupd-rules.yml"
RULES_TESTS = PACKAGING / "prometheus" / "ccgroupd-rules.test.yml"
# Read before pyfakefs replaces the file system in the tests that need the fake kernel.
DASHBOARD_TEXT = DASHBOARD.read_text()
RULES_TEXT = RULES.read_text()
METRIC_NAME = re.compile(r"\bccgroupd_[a-z_]+\b")
METRIC_SELECTOR = re.compile(r"\bccgroupd_[a-z_]+\b(\{[^}]*\}|)")  # its label matchers
# Two engines in their budget group, as a host with one engine per project has them.
BUDGET = "budget"
BUDGET_PATH = "/sys/fs/cgroup/budget"
ENGINE, GROUP, PATH = "ci", "budget/ci", "/sys/fs/cgroup/budget/ci"
OTHER, OTHER_GROUP, OTHER_PATH = "web", "budget/web", "/sys/fs/cgroup/budget/web"
MiB = 1024**2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class FakeEngine:
    state: EngineState = EngineState.RUNNING
    restarts: int = 0
    uptime: float | None = 12.5

    def uptime_s(self) -> float | None:
        return self.uptime


def source(name: str, group: str, engine: EngineView | None = None,
           tracker: BuildTracker | None = None) -> EngineSource:
    return EngineSource(name, group, lambda: engine, lambda: tracker)


def render(*collectors: Collector) -> str:
    """The exposition text, from a fresh registry that checks the collectors' names."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def scrape(*collectors: Collector) -> Samples:
    """The exposition text as Prometheus would parse it: (sample name, labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(render(*collectors))
            for sample in family.samples}


def value(samples: Samples, name: str, engine: str = ENGINE, cgroup: str = PATH,
          **labels: str) -> float:
    return samples[(name, frozenset({"engine": engine, "cgroup": cgroup, **labels}.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def engine_group(fake_kernel: FakeKernel) -> str:
    fake_kernel.mkdir(BUDGET)
    fake_kernel.enable("", "cpu", "memory", "pids", "io")
    fake_kernel.enable(BUDGET, "cpu", "memory", "pids", "io")
    fake_kernel.mkdir(GROUP)
    return GROUP


@pytest.fixture
def other_group(fake_kernel: FakeKernel, engine_group: str) -> str:
    fake_kernel.mkdir(OTHER_GROUP)
    return OTHER_GROUP


@pytest.fixture
def collector(cgroupfs: Cgroupfs, engine_group: str) -> EnginesCollector:
    engines = [source(ENGINE, engine_group, FakeEngine())]
    return EnginesCollector(cgroupfs, lambda: engines, clock=lambda: 1700.0)


def test_scrape_reports_the_kernel_files(fake_kernel: FakeKernel, cgroupfs: Cgroupfs,
                                         collector: EnginesCollector) -> None:
    cgroupfs.write(GROUP, "cpu.max", "250000 100000")
    cgroupfs.write(GROUP, "memory.max", str(512 * MiB))
    cgroupfs.write(GROUP, "memory.high", str(384 * MiB))
    cgroupfs.write(GROUP, "pids.max", "100")
    fake_kernel.update(GROUP, "memory.current", str(200 * MiB))
    fake_kernel.update(GROUP, "memory.swap.current", str(3 * MiB))
    cgroupfs.write(GROUP, "memory.swap.max", str(64 * MiB))
    fake_kernel.bump(GROUP, "memory.stat", file=150 * MiB, active_file=30 * MiB,
                     inactive_file=120 * MiB)
    fake_kernel.bump(GROUP, "memory.swap.events", max=7, fail=1)
    fake_kernel.spawn(GROUP)
    fake_kernel.spawn(GROUP)
    fake_kernel.bump(GROUP, "cpu.stat", usage_usec=7_250_000, nr_periods=40, nr_throttled=9,
                     throttled_usec=1_500_000)
    fake_kernel.bump(GROUP, "memory.events", low=8, high=5, max=4, oom=2, oom_kill=3)
    fake_kernel.bump(GROUP, "pids.events", max=6)
    fake_kernel.update(GROUP, "memory.pressure",
                       "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
                       "full avg10=0.50 avg60=0.20 avg300=0.05 total=1250000\n")

    samples = scrape(collector)

    assert value(samples, "ccgroupd_cpu_limit_cpus") == 2.5
    assert value(samples, "ccgroupd_memory_max_bytes") == 512 * MiB
    assert value(samples, "ccgroupd_memory_high_bytes") == 384 * MiB
    assert value(samples, "ccgroupd_pids_max") == 100
    assert value(samples, "ccgroupd_memory_current_bytes") == 200 * MiB
    assert value(samples, "ccgroupd_memory_swap_current_bytes") == 3 * MiB
    assert value(samples, "ccgroupd_memory_swap_max_bytes") == 64 * MiB
    # memory.current less the page cache the kernel can drop at once (cAdvisor's).
    assert value(samples, "ccgroupd_memory_working_set_bytes") == 80 * MiB
    assert value(samples, "ccgroupd_pids_current") == 2
    assert value(samples, "ccgroupd_cpu_usage_seconds_total") == 7.25
    assert value(samples, "ccgroupd_cpu_periods_total") == 40
    assert value(samples, "ccgroupd_cpu_throttled_periods_total") == 9
    assert value(samples, "ccgroupd_cpu_throttled_seconds_total") == 1.5
    assert {event: value(samples, "ccgroupd_memory_events_total", event=event)
            for event in ("low", "high", "max", "oom", "oom_kill")} == {
        "low": 8, "high": 5, "max": 4, "oom": 2, "oom_kill": 3}
    assert value(samples, "ccgroupd_pids_events_total", event="max") == 6
    assert {event: value(samples, "ccgroupd_memory_swap_events_total", event=event)
            for event in ("high", "max", "fail")} == {"high": 0, "max": 7, "fail": 1}
    # node_exporter's and cAdvisor's names: "some" is waiting, "full" is stalled.
    assert value(samples, "ccgroupd_pressure_waiting_seconds_total", resource="memory") == 2.5
    assert value(samples, "ccgroupd_pressure_stalled_seconds_total", resource="memory") == 1.25
    assert value(samples, "ccgroupd_pressure_waiting_seconds_total", resource="cpu") == 0
    assert value(samples, "ccgroupd_last_sample_timestamp_seconds") == 1700.0
    assert samples[("ccgroupd_build_info", frozenset({("version", __version__)}))] == 1


def test_unset_limits_and_protections_are_absent_not_infinite_or_zero(
        collector: EnginesCollector) -> None:
    samples = scrape(collector)

    assert not names(samples) & {
        "ccgroupd_cpu_limit_cpus", "ccgroupd_memory_max_bytes", "ccgroupd_memory_high_bytes",
        "ccgroupd_pids_max", "ccgroupd_memory_min_bytes", "ccgroupd_memory_low_bytes"}
    assert "ccgroupd_memory_current_bytes" in names(samples)  # usage is there all the same
    # A weight is a share, never unset: the kernel's default 100 is shown.
    assert value(samples, "ccgroupd_cpu_weight") == 100
    assert value(samples, "ccgroupd_io_weight") == 100
    # No cpuset controller in the group, no cpuset.cpus.effective.
    assert "ccgroupd_cpuset_cpus_count" not in names(samples)
    assert all(math.isfinite(sample) for sample in samples.values())


def test_protections_weights_and_cpus_are_reported(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, collector: EnginesCollector) -> None:
    fake_kernel.enable("", "cpuset")
    fake_kernel.enable(BUDGET, "cpuset")
    cgroupfs.write(GROUP, "memory.min", str(64 * MiB))
    cgroupfs.write(GROUP, "memory.low", str(256 * MiB))
    cgroupfs.write(GROUP, "cpu.weight", "250")
    fake_kernel.update(GROUP, "io.weight", "default 300\n8:16 50")
    fake_kernel.update(GROUP, "cpuset.cpus.effective", "0-2,5")

    samples = scrape(collector)

    assert value(samples, "ccgroupd_memory_min_bytes") == 64 * MiB
    assert value(samples, "ccgroupd_memory_low_bytes") == 256 * MiB
    assert value(samples, "ccgroupd_cpu_weight") == 250
    assert value(samples, "ccgroupd_io_weight") == 300
    assert value(samples, "ccgroupd_cpuset_cpus_count") == 4


def test_io_weight_is_absent_without_the_io_controller(
        cgroupfs: Cgroupfs, collector: EnginesCollector) -> None:
    cgroupfs.write(BUDGET, "cgroup.subtree_control", "-io")
    samples = scrape(collector)

    assert "ccgroupd_io_weight" not in names(samples)
    assert value(samples, "ccgroupd_cpu_weight") == 100


def test_engine_state_is_one_hot_with_restarts_and_uptime(
        cgroupfs: Cgroupfs, engine_group: str) -> None:
    engine = FakeEngine(EngineState.BACKOFF, restarts=3, uptime=None)
    engines = [source(ENGINE, engine_group, engine)]
    collector = EnginesCollector(cgroupfs, lambda: engines)
    samples = scrape(collector)

    states = {state.value: value(samples, "ccgroupd_engine_state", state=state.value)
              for state in EngineState}
    assert states == {state.value: 1 if state is EngineState.BACKOFF else 0
                      for state in EngineState}
    assert value(samples, "ccgroupd_engine_restarts_total") == 3
    assert "ccgroupd_engine_uptime_seconds" not in names(samples)

    engine.state, engine.uptime = EngineState.RUNNING, 42.0
    assert value(scrape(collector), "ccgroupd_engine_uptime_seconds") == 42.0


def test_two_engines_are_one_family_each_with_a_sample_per_engine(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, other_group: str,
        procfs: Procfs) -> None:
    cgroupfs.write(GROUP, "memory.max", str(512 * MiB))
    cgroupfs.write(OTHER_GROUP, "memory.max", str(2048 * MiB))
    fake_kernel.bump(GROUP, "memory.events", oom_kill=2)
    fake_kernel.bump(OTHER_GROUP, "cpu.stat", usage_usec=3_000_000)
    trackers = {name: BuildTracker(cgroupfs, procfs, group, BuildsSection(), MonitorSection())
                for name, group in ((ENGINE, GROUP), (OTHER, OTHER_GROUP))}
    trackers[OTHER].stats.started()
    engines = [source(name, group, FakeEngine(restarts=restarts), trackers[name])
               for name, group, restarts in ((ENGINE, GROUP, 1), (OTHER, OTHER_GROUP, 4))]

    text = render(EnginesCollector(cgroupfs, lambda: engines), BuildsCollector(lambda: engines))
    samples = scrape(EnginesCollector(cgroupfs, lambda: engines),
                     BuildsCollector(lambda: engines))

    families = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(families) == len(set(families))  # each family once ...
    assert "ccgroupd_memory_max_bytes" in families
    # ... with each engine's sample in it, labelled with the engine's name and group.
    assert value(samples, "ccgroupd_memory_max_bytes") == 512 * MiB
    assert value(samples, "ccgroupd_memory_max_bytes", OTHER, OTHER_PATH) == 2048 * MiB
    assert value(samples, "ccgroupd_memory_events_total", event="oom_kill") == 2
    assert value(samples, "ccgroupd_memory_events_total", OTHER, OTHER_PATH,
                 event="oom_kill") == 0
    assert value(samples, "ccgroupd_cpu_usage_seconds_total") == 0
    assert value(samples, "ccgroupd_cpu_usage_seconds_total", OTHER, OTHER_PATH) == 3
    assert value(samples, "ccgroupd_engine_restarts_total") == 1
    assert value(samples, "ccgroupd_engine_restarts_total", OTHER, OTHER_PATH) == 4
    builds = {labels: sample for (name, labels), sample in samples.items()
              if name == "ccgroupd_builds_started_total"}
    assert builds == {frozenset({("engine", ENGINE)}): 0, frozenset({("engine", OTHER)}): 1}
    assert text.count("ccgroupd_build_info{") == 1


def test_an_engine_listed_twice_is_exposed_once(cgroupfs: Cgroupfs, engine_group: str) -> None:
    engines = [source(ENGINE, GROUP), source(ENGINE, GROUP)]
    text = render(EnginesCollector(cgroupfs, lambda: engines))

    assert text.count('ccgroupd_memory_current_bytes{cgroup="/sys/fs/cgroup/budget/ci",'
                      'engine="ci"}') == 1


def test_counters_stay_monotonic_per_engine_when_a_group_is_recreated(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, other_group: str) -> None:
    engines = [source(ENGINE, GROUP), source(OTHER, OTHER_GROUP)]
    collector = EnginesCollector(cgroupfs, lambda: engines)
    fake_kernel.bump(GROUP, "memory.events", oom_kill=3)
    fake_kernel.bump(GROUP, "cpu.stat", usage_usec=5_000_000)
    fake_kernel.bump(OTHER_GROUP, "memory.events", oom_kill=7)
    before = scrape(collector)

    cgroupfs.remove(GROUP)
    gone = scrape(collector)
    fake_kernel.mkdir(GROUP)
    fake_kernel.bump(GROUP, "memory.events", oom_kill=1)
    fake_kernel.bump(GROUP, "cpu.stat", usage_usec=1_000_000)
    fake_kernel.bump(OTHER_GROUP, "memory.events", oom_kill=1)
    after = scrape(collector)

    assert value(before, "ccgroupd_memory_events_total", event="oom_kill") == 3
    assert ("ccgroupd_memory_events_total",
            frozenset({"engine": ENGINE, "cgroup": PATH, "event": "oom_kill"}.items())) \
        not in gone
    assert value(gone, "ccgroupd_memory_events_total", OTHER, OTHER_PATH,
                 event="oom_kill") == 7
    assert value(after, "ccgroupd_memory_events_total", event="oom_kill") == 4
    assert value(after, "ccgroupd_cpu_usage_seconds_total") == 6.0
    # The other engine's group lived on: its counter only counts on, with nothing added.
    assert value(after, "ccgroupd_memory_events_total", OTHER, OTHER_PATH,
                 event="oom_kill") == 8


def test_an_engine_no_longer_listed_is_forgotten(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, other_group: str) -> None:
    engines = [source(ENGINE, GROUP), source(OTHER, OTHER_GROUP)]
    collector = EnginesCollector(cgroupfs, lambda: engines)
    fake_kernel.bump(OTHER_GROUP, "memory.events", oom_kill=3)
    scrape(collector)

    del engines[1]  # a reload removed it ...
    removed = scrape(collector)
    cgroupfs.remove(OTHER_GROUP)
    fake_kernel.mkdir(OTHER_GROUP)
    fake_kernel.bump(OTHER_GROUP, "memory.events", oom_kill=1)
    engines.append(source(OTHER, OTHER_GROUP))  # ... and a later one brought it back
    back = scrape(collector)

    assert not [labels for _, labels in removed if ("engine", OTHER) in labels]
    # Counted afresh: nothing of the removed engine's 3 is added.
    assert value(back, "ccgroupd_memory_events_total", OTHER, OTHER_PATH,
                 event="oom_kill") == 1


def test_disk_io_per_engine_and_disk(fake_kernel: FakeKernel, cgroupfs: Cgroupfs,
                                     other_group: str) -> None:
    fake_kernel.add_disk("vda", "254:0")
    fake_kernel.add_disk("vdb", "254:16")
    fake_kernel.update(GROUP, "io.stat",
                       "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                       "254:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0")
    fake_kernel.update(OTHER_GROUP, "io.stat",
                       "254:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0")
    cgroupfs.write(GROUP, "io.max", "254:0 wbps=10485760")
    engines = [source(ENGINE, GROUP), source(OTHER, OTHER_GROUP)]
    collector = EnginesCollector(cgroupfs, lambda: engines)

    samples = scrape(collector)

    assert value(samples, "ccgroupd_io_read_bytes_total", device="254:0") == 4096
    assert value(samples, "ccgroupd_io_written_bytes_total", device="254:0") == 8192
    assert value(samples, "ccgroupd_io_read_bytes_total", device="254:16") == 100
    assert value(samples, "ccgroupd_io_written_bytes_total", OTHER, OTHER_PATH,
                 device="254:0") == 2
    assert value(samples, "ccgroupd_io_max_write_bytes_per_second",
                 device="254:0") == 10485760
    # rbps is max, and the other engine has no io.max at all: no series.
    assert not [labels for name, labels in samples
                if name == "ccgroupd_io_max_read_bytes_per_second"
                or (name == "ccgroupd_io_max_write_bytes_per_second"
                    and ("engine", OTHER) in labels)]

    cgroupfs.remove(GROUP)  # recreated: io.stat starts again
    fake_kernel.mkdir(GROUP)
    fake_kernel.update(GROUP, "io.stat", "254:0 rbytes=10 wbytes=0 rios=1 wios=0 dbytes=0 dios=0")
    assert value(scrape(collector), "ccgroupd_io_read_bytes_total", device="254:0") == 4106


def test_monotonic_counter_adds_the_value_seen_before_each_reset() -> None:
    counters = MonotonicCounters()
    totals = [counters.total("oom_kill", current) for current in (2, 5, 1, 1, 0, 4)]
    assert totals == [2, 5, 6, 6, 6, 10]


def test_last_sample_time_stays_while_the_group_is_gone(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, engine_group: str) -> None:
    now_s = [100.0]
    engines = [source(ENGINE, engine_group)]
    collector = EnginesCollector(cgroupfs, lambda: engines, clock=lambda: now_s[0])
    assert value(scrape(collector), "ccgroupd_last_sample_timestamp_seconds") == 100.0

    cgroupfs.remove(GROUP)
    now_s[0] = 160.0
    samples = scrape(collector)

    assert value(samples, "ccgroupd_last_sample_timestamp_seconds") == 100.0
    assert not any(name.startswith("ccgroupd_engine_") for name in names(samples))


def test_budget_metrics_come_only_with_a_budget_group(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, other_group: str) -> None:
    cgroupfs.write(BUDGET, "cpu.max", "400000 100000")
    cgroupfs.write(BUDGET, "memory.max", str(4096 * MiB))
    fake_kernel.update(BUDGET, "memory.current", str(1024 * MiB))
    fake_kernel.bump(BUDGET, "cpu.stat", usage_usec=9_500_000)
    fake_kernel.spawn(GROUP)
    fake_kernel.spawn(OTHER_GROUP)
    engines = [source(ENGINE, GROUP), source(OTHER, OTHER_GROUP)]
    budget: list[str | None] = [None]

    collector = EnginesCollector(cgroupfs, lambda: engines, budget_group=lambda: budget[0])
    without = scrape(collector)
    budget[0] = BUDGET
    with_budget = scrape(collector)

    assert not any(name.startswith("ccgroupd_budget_") for name in names(without))
    budget_samples = {name: sample for (name, labels), sample in with_budget.items()
                      if name.startswith("ccgroupd_budget_")
                      and labels == frozenset({("cgroup", BUDGET_PATH)})}
    assert budget_samples == {
        "ccgroupd_budget_cpu_limit_cpus": 4,
        "ccgroupd_budget_memory_max_bytes": 4096 * MiB,
        "ccgroupd_budget_memory_current_bytes": 1024 * MiB,
        "ccgroupd_budget_cpu_usage_seconds_total": 9.5,
        "ccgroupd_budget_pids_current": 2,  # one in each engine
    }
    assert {name for name in names(with_budget) if name.startswith("ccgroupd_budget_")} \
        == set(budget_samples)


def test_an_unlimited_budget_has_usage_but_no_limits(
        cgroupfs: Cgroupfs, engine_group: str) -> None:
    engines = [source(ENGINE, GROUP)]
    samples = scrape(EnginesCollector(cgroupfs, lambda: engines, budget_group=lambda: BUDGET))

    budget = {name for name in names(samples) if name.startswith("ccgroupd_budget_")}
    assert budget == {"ccgroupd_budget_memory_current_bytes", "ccgroupd_budget_pids_current",
                      "ccgroupd_budget_cpu_usage_seconds_total"}


class _OneGauge(Collector):
    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("ccgroupd_test_gauge", "a test gauge")
        family.add_metric([], 7)
        return [family]


def test_server_serves_the_exposition_on_the_configured_address_only() -> None:
    server = MetricsServer(_OneGauge(), IPv4Address("127.0.0.1"), 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        bound = server.address
    finally:
        server.close()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["ccgroupd_test_gauge"].samples[0].value == 7
    assert bound == "127.0.0.1"
    # The daemon's own process, as every exporter shows it.
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value > 0



def hung_up(connection: socket.socket) -> bool:
    """Whether the peer closed the connection (within the socket's timeout)."""
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_half_sent_requests_neither_pile_up_threads_nor_block_scrapes() -> None:
    server = MetricsServer(_OneGauge(), IPv4Address("127.0.0.1"), 0, read_timeout_s=0.5,
                           max_connections=4)
    server.start()
    threads_before = threading.active_count()
    stalled = []
    try:
        for _ in range(40):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            connection.sendall(b"GET /metr")  # and never the rest
            stalled.append(connection)
        time.sleep(0.2)
        assert threading.active_count() - threads_before <= 4
        # Past the read timeout the server has hung up on every one of them ...
        for connection in stalled:
            assert hung_up(connection)
        time.sleep(0.3)
        assert threading.active_count() - threads_before <= 1
        # ... and a real scrape is served.
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"ccgroupd_test_gauge 7.0" in response.read()
    finally:
        for connection in stalled:
            connection.close()
        server.close()


# -- the alert rules and the dashboard -------------------------------------------------


def every_exposed_name(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> set[str]:
    """The sample names of a scrape where every file has a value (no limit is max, no
    protection 0), the budget group's included."""
    fake_kernel.enable("", "cpuset")
    fake_kernel.enable(BUDGET, "cpuset")
    for group in (BUDGET, GROUP):
        for attribute, text in (("cpu.max", "200000 100000"), ("memory.max", str(512 * MiB)),
                                ("memory.high", str(384 * MiB)), ("pids.max", "100"),
                                ("memory.min", str(MiB)), ("memory.low", str(MiB))):
            cgroupfs.write(group, attribute, text)
    fake_kernel.add_disk("vda", "254:0")
    cgroupfs.write(GROUP, "io.max", "254:0 rbps=1048576 wbps=1048576")
    fake_kernel.update(GROUP, "io.stat",
                       "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0")
    engines = [source(ENGINE, GROUP, FakeEngine())]
    return names(scrape(EnginesCollector(cgroupfs, lambda: engines,
                                         budget_group=lambda: BUDGET)))


def dashboard_exprs(dashboard: dict[str, object]) -> list[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    return exprs


def test_dashboard_queries_only_exposed_metrics_for_the_chosen_hosts(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs, engine_group: str) -> None:
    dashboard = json.loads(DASHBOARD_TEXT)
    exprs = dashboard_exprs(dashboard)
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}

    assert len(exprs) >= 10
    assert used <= every_exposed_name(fake_kernel, cgroupfs)
    assert all('instance=~"$host"' in expr for expr in exprs)  # one host, or the fleet
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["host"]["multi"], variables["host"]["includeAll"]) == (True, True)
    assert METRIC_NAME.findall(variables["host"]["definition"]) == ["ccgroupd_build_info"]
    # One engine, several, or all of them; listed from a metric every engine keeps.
    engine = variables["engine"]
    assert (engine["multi"], engine["includeAll"], engine["allValue"]) == (True, True, ".*")
    assert METRIC_NAME.findall(engine["definition"]) == [
        "ccgroupd_last_sample_timestamp_seconds"]
    assert engine["definition"].endswith(", engine)")


def test_dashboard_filters_and_names_every_engine(fake_kernel: FakeKernel, cgroupfs: Cgroupfs,
                                                  engine_group: str) -> None:
    """Every engine's series is filtered by $engine and named in its legend; the budget's
    (which has no engine) are not filtered by it, and have a row of their own."""
    dashboard = json.loads(DASHBOARD_TEXT)
    targets = [target for panel in dashboard["panels"] for target in panel.get("targets", [])]
    budget = [target for target in targets if "ccgroupd_budget_" in target["expr"]]
    engines = [target for target in targets if target not in budget]

    selectors = [matchers for target in engines
                 for matchers in METRIC_SELECTOR.findall(target["expr"])]
    assert len(selectors) > len(engines)  # some have two (a ratio)
    assert all('engine=~"$engine"' in matchers for matchers in selectors)
    assert all("{{engine}}" in target["legendFormat"] for target in engines
               if "legendFormat" in target)
    assert not any("$engine" in target["expr"] for target in budget)
    assert {name for target in budget for name in METRIC_NAME.findall(target["expr"])} == {
        "ccgroupd_budget_cpu_usage_seconds_total", "ccgroupd_budget_cpu_limit_cpus",
        "ccgroupd_budget_memory_current_bytes", "ccgroupd_budget_memory_max_bytes"}
    assert any(panel["type"] == "row" and panel["title"].startswith("Budget")
               for panel in dashboard["panels"])
    annotation = dashboard["annotations"]["list"][0]
    assert 'engine=~"$engine"' in annotation["expr"]
    assert "{{engine}}" in annotation["titleFormat"]


def test_alert_rules_use_only_exposed_metrics(fake_kernel: FakeKernel, cgroupfs: Cgroupfs,
                                              engine_group: str) -> None:
    exprs = re.findall(r"^ +expr: (?:\|\n((?: {10}.*\n)+)|(.*)\n)", RULES_TEXT, re.M)
    used = {name for block, line in exprs for name in METRIC_NAME.findall(block + line)}

    assert len(exprs) == 10
    assert used <= every_exposed_name(fake_kernel, cgroupfs)
    assert "ccgroupd_memory_current_bytes" not in used  # page cache is no engine's alert
    assert {"ccgroupd_memory_events_total", "ccgroupd_last_sample_timestamp_seconds",
            "ccgroupd_pids_max", "ccgroupd_engine_restarts_total",
            "ccgroupd_budget_memory_current_bytes", "ccgroupd_budget_memory_max_bytes"} <= used


def test_every_engine_alert_keeps_and_names_the_engine() -> None:
    rules = yaml.safe_load(RULES_TEXT)["groups"][0]["rules"]
    # The daemon being down, and the budget that holds every engine, are no engine's.
    about_no_engine = {"CcgroupdDown", "CcgroupdBudgetMemoryNearLimit"}
    engine_rules = [rule for rule in rules if rule["alert"] not in about_no_engine]

    assert len(engine_rules) == len(rules) - 2
    for rule in engine_rules:
        assert "{{ $labels.engine }}" in rule["annotations"]["summary"], rule["alert"]
        # Aggregations would drop the label unless they keep it by name.
        assert not re.search(r"\b(sum|max|min|avg|count)\b", rule["expr"]) \
            or "by (engine" in rule["expr"], rule["alert"]


def test_every_alert_has_a_runbook_in_the_deployment_guide() -> None:
    alerts = re.findall(r"^      - alert: (\w+)$", RULES_TEXT, re.M)
    runbooks = re.findall(r'^          runbook_url: "file:///usr/share/doc/ccgroupd/'
                          r'deployment\.md#([a-z0-9-]+)"$', RULES_TEXT, re.M)
    guide = (PACKAGING / "README.md").read_text()
    # GitHub's and most renderers' anchors: the heading, lower-cased.
    headings = {heading.strip().lower().replace(" ", "-")
                for heading in re.findall(r"^#+ (.*)$", guide, re.M)}
    assert runbooks == [alert.lower() for alert in alerts]
    assert set(runbooks) <= headings


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_rules_fire_for_one_engine_and_not_the_other() -> None:
    """ccgroupd-rules.test.yml: two engines on one host, each alert for one of them."""
    result = subprocess.run(["promtool", "test", "rules", RULES_TESTS.name],
                            cwd=RULES_TESTS.parent, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"][0]["alert_rule_test"]
    engines = {alert["exp_labels"].get("engine") for test in tests
               for alert in test["exp_alerts"]}
    assert {"ci", "web"} <= engines
