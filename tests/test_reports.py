"""Report windows and the throttle meter on their own: no kernel, fake or real."""

from __future__ import annotations

from collections.abc import Mapping

from ccgroupd.daemon.monitor.reports import ReportWindows
from ccgroupd.daemon.monitor.throttle import ThrottleMeter, throttle_fields
from ccgroupd.kernel.parsers import CpuMax, CpuStat


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, int], int]] = []

    def __call__(self, event: str, amounts: Mapping[str, int], total: int) -> None:
        self.reports.append((event, dict(amounts), total))


def test_first_occurrence_at_once_then_summed_until_the_window_ends() -> None:
    recorder = Recorder()
    windows = ReportWindows(["oom_kill", "memory_max"], 10.0, recorder)
    windows.count("oom_kill", 1)
    assert windows.occurred("oom_kill", 100.0, {"delta": 1}) is True  # a new window
    for at in (101.0, 105.0):
        windows.count("oom_kill", 2)
        assert windows.occurred("oom_kill", at, {"delta": 2}) is False
    assert recorder.reports == [("oom_kill", {"delta": 1}, 1)]
    assert windows.next_deadline() == 110.0
    windows.flush_due(109.9)
    assert len(recorder.reports) == 1
    windows.flush_due(110.0)
    assert recorder.reports[-1] == ("oom_kill", {"delta": 4}, 5)
    assert windows.next_deadline() == 120.0  # the summed report opened the next window


def test_a_quiet_window_closes_and_the_next_occurrence_is_at_once() -> None:
    recorder = Recorder()
    windows = ReportWindows(["pids_max"], 2.0, recorder)
    windows.occurred("pids_max", 0.0, {"delta": 1})
    windows.flush_due(2.0)  # nothing pending
    assert windows.next_deadline() is None
    assert windows.occurred("pids_max", 50.0, {"delta": 1}) is True
    assert recorder.reports == [("pids_max", {"delta": 1}, 0)] * 2


def test_events_have_windows_and_totals_of_their_own() -> None:
    recorder = Recorder()
    windows = ReportWindows(["a", "b"], 5.0, recorder)
    windows.occurred("a", 0.0, {"delta": 1})
    assert windows.occurred("b", 1.0, {"delta": 1}) is True
    windows.count("b", 7)
    assert windows.totals() == {"a": 0, "b": 7}


def stat(periods: int, throttled: int, usec: int) -> CpuStat:
    return CpuStat(0, 0, 0, nr_periods=periods, nr_throttled=throttled, throttled_usec=usec)


def test_throttle_meter_reports_a_share_above_the_threshold() -> None:
    meter = ThrottleMeter(0.1)
    assert meter.sample(stat(100, 5, 1000), 10.0) == (0, None)  # the baseline
    assert meter.sample(stat(200, 10, 2000), 15.0) == (5, None)  # 5 %: counted, not reported
    throttled, amounts = meter.sample(stat(300, 60, 502_000), 20.0)
    assert throttled == 50
    assert amounts == {"delta": 50, "periods": 100, "throttled_usec": 500_000,
                       "interval_usec": 5_000_000}
    assert throttle_fields(amounts, CpuMax(50_000, 100_000)) == {
        "periods": 100, "throttled_usec": 500_000, "interval_s": 5.0,
        "throttled_periods_fraction": 0.5, "throttled_time_fraction": 0.1,
        "limit_cpus": 0.5}


def test_throttle_meter_starts_over_when_the_counters_go_back() -> None:
    meter = ThrottleMeter(0.1)
    meter.sample(stat(1000, 900, 10), 0.0)
    assert meter.sample(stat(10, 9, 1), 5.0) == (0, None)  # a recreated group
    assert meter.sample(CpuStat(1, 1, 0), 10.0) == (0, None)  # no cpu controller
    meter.reset()
    assert meter.sample(stat(20, 19, 2), 15.0) == (0, None)
