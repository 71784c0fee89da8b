"""The pydantic-free limit rules (ccgroupd.values): ccgroupctl refuses exactly what the
daemon's model refuses, and values are read as ASCII. Most rules are tested through the
model in test_limits.py; the new keys' forms and shares of the host are tested here."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator, Mapping

import pytest

from ccgroupd.errors import LimitsError
from ccgroupd.limits.model import Limits
from ccgroupd.values import (
    HostSize,
    check_values,
    describe_limit_value,
    format_id_list,
    id_list,
    parse_value,
    percentage,
    resolution_host,
    resolving_against,
)

GiB = 1024**3
HOST = HostSize(cpus=4, memory_bytes=8 * GiB)


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostSize]:
    """A host of 4 CPUs and 8 GiB, whatever runs the tests."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with resolving_against(HOST) as host:
        yield host

CASES: list[dict[str, object]] = [
    {},
    {"cpus": "2", "memory": "8G", "memory_high": "6G", "memory_swap": "0", "pids": "max",
     "cpu_weight": "200"},
    {"cpus": 0.5, "memory": 8 * 1024**3, "memory_high": None},
    {"memory": "1.5G", "memory_high": "max"},
    {"cpus": "0"},
    {"cpus": "0.001"},
    {"cpus": "nan"},
    {"memory": "8GB"},
    {"memory": "0.3K"},
    {"memory": "8"},
    {"memory": "9" * 5000},
    {"memory_swap": "-1"},
    {"pids": "0"},
    {"cpu_weight": "max"},
    {"memory": "8G", "memory_high": "9G"},
    {"memory": "8G", "memory_high": 8 * 1024**3 + 1},
    {"memory": "4G", "memory_high": "8G", "pids": "x"},  # a bad field before the combination
    {"cpu_weight": "0", "cpus": "0"},  # two bad fields: the model's field order decides
    {"memory_max_bytes": "8G"},
    {"pids": "many", "bogus": 1},  # unknown keys are refused before any value
    {"memory_min": "1G", "memory_low": "2G", "io_weight": 500, "cpuset_cpus": "0-3",
     "cpuset_mems": "0"},
    {"memory_min": "max"},
    {"memory": "1G", "memory_low": "2G"},
    {"memory_high": "1G", "memory_min": "1G", "memory_low": "1025M"},
    {"io_weight": "0", "cpuset_cpus": "9"},
    {"cpuset_cpus": "1-0"},
    {"cpus": "50%", "memory": "75%", "memory_high": "80%"},
    {"memory": "150%"},
    {"pids": "50%"},
]


def _outcome(check: Callable[[Mapping[str, object]], object],
             values: dict[str, object]) -> str | None:
    try:
        check(values)
    except LimitsError as error:
        return f"{error.field}: {error}"
    return None


@pytest.mark.parametrize("values", CASES)
def test_check_values_refuses_what_the_model_refuses(values: dict[str, object]) -> None:
    assert _outcome(check_values, values) == _outcome(Limits.from_mapping, values)


# Sizes, CPUs and counts are ASCII: str.isdigit(), str.isspace() and int() would also take
# other scripts' digits, superscripts, full-width forms, U+00A0 or the Kelvin sign.
@pytest.mark.parametrize(("name", "value"), [
    ("memory", "8\N{KELVIN SIGN}iB"),
    ("memory", "8\N{NO-BREAK SPACE}G"),
    ("memory", "8\N{SUPERSCRIPT TWO}"),
    ("memory", "\N{ARABIC-INDIC DIGIT THREE}G"),
    ("memory", "\N{FULLWIDTH DIGIT ONE}G"),
    ("memory", "8\N{FULLWIDTH LATIN CAPITAL LETTER G}"),
    ("memory", "8\N{LATIN SMALL LETTER E WITH ACUTE}"),
    ("memory_swap", "1.5.2"),
    ("memory_swap", "1.G"),
    ("memory_swap", "..5"),
    ("memory_swap", "1 . 5"),
    ("memory_swap", "8GiB8"),
    ("cpus", "\N{FULLWIDTH DIGIT ONE}"),
    ("cpus", "\N{ARABIC-INDIC DIGIT ONE}.5"),
    ("cpus", "1.5.2"),
    ("pids", "\N{SUPERSCRIPT TWO}"),
    ("pids", "4."),
    ("cpu_weight", "\N{FULLWIDTH DIGIT ONE}"),
])
def test_values_of_another_shape_are_refused(name: str, value: str) -> None:
    with pytest.raises(LimitsError) as caught:
        parse_value(name, value)
    assert caught.value.field == name


@pytest.mark.parametrize(("name", "value", "parsed"), [
    ("memory", "8\t\n G", 8 * 1024**3),
    ("memory_swap", "00.00", 0),
    ("cpus", "4.", 4.0),
    ("cpus", ".5", 0.5),
])
def test_values_of_the_documented_shapes_are_read(name: str, value: str,
                                                  parsed: float | int) -> None:
    assert parse_value(name, value) == parsed


@pytest.mark.parametrize(("name", "value", "text"), [
    ("cpus", 2.0, "2"),
    ("cpus", 0.5, "0.5"),
    ("cpus", None, "max"),
    ("memory", 512 * 1024**2, "512 MiB"),
    ("memory_high", None, "max"),
    ("memory_swap", 0, "0 B"),
    ("pids", 4096, "4096"),
    ("pids", None, "max"),
    ("cpu_weight", 200, "200"),
    ("cpu_weight", None, "default"),  # cpu.weight has no "no limit": the kernel's default
])
def test_describe_limit_value(name: str, value: object, text: str) -> None:
    assert describe_limit_value(name, value) == text


@pytest.mark.parametrize(("name", "value", "text"), [
    ("memory_min", None, "none"),
    ("memory_low", 2 * GiB, "2 GiB"),
    ("io_weight", None, "default"),
    ("io_weight", 500, "500"),
    ("cpuset_cpus", None, "all"),
    ("cpuset_mems", "0-1", "0-1"),
])
def test_describe_new_limit_values(name: str, value: object, text: str) -> None:
    assert describe_limit_value(name, value) == text


# -- protections, io_weight, cpusets ----------------------------------------------------

@pytest.mark.parametrize(("name", "value", "parsed"), [
    ("memory_min", "1G", GiB),
    ("memory_min", 0, 0),  # no protection
    ("memory_low", "4096", 4096),  # no floor: a protection may be small
    ("memory_low", None, None),
    ("io_weight", "1", 1),
    ("io_weight", 10_000, 10_000),
    ("cpuset_cpus", "0-2", "0-2"),
    ("cpuset_cpus", " 1 ", "1"),
    ("cpuset_cpus", "0,1,2,3", "0-3"),  # the kernel shows ranges
    ("cpuset_cpus", "3,0-1", "0-1,3"),
    ("cpuset_cpus", "", None),  # the parent's CPUs
    ("cpuset_mems", "0-1,4-5", "0-1,4-5"),
    ("cpuset_mems", "4095", "4095"),
    ("cpuset_mems", 0, "0"),
])
def test_new_keys_accepted(name: str, value: object, parsed: object) -> None:
    assert parse_value(name, value) == parsed


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("memory_min", "max", "a protection, not a limit: give a size, or 0 for none"),
    ("memory_low", "infinity", "a protection, not a limit"),
    ("memory_low", "8GB", "is ambiguous"),
    ("io_weight", 0, "a whole number from 1 to 10000"),
    ("io_weight", "max", "a whole number from 1 to 10000"),
    ("cpuset_cpus", "4", "CPU 4 does not exist: this host has CPUs 0-3"),
    ("cpuset_cpus", "0-9", "CPU 4 does not exist"),
    ("cpuset_cpus", "0, 1", "' 1' is not an id or a range"),
    ("cpuset_cpus", "0,,1", "'' is not an id or a range"),
    ("cpuset_cpus", "-1", "'-1' is not an id or a range"),
    ("cpuset_cpus", "3-1", "range '3-1' runs backwards"),
    ("cpuset_cpus", "max", "'max' is not an id or a range"),
    ("cpuset_mems", "4096", "ids are below 4096"),
    ("cpuset_mems", "0-" + "9" * 5000, "ids are below 4096"),
    ("cpuset_mems", "\N{FULLWIDTH DIGIT ONE}", "is not an id or a range"),
    ("cpuset_mems", 1.0, 'expected a list of ids like 0-3,6, or "" for the parent\'s'),
])
def test_new_keys_refused(name: str, value: object, reason: str) -> None:
    with pytest.raises(LimitsError) as caught:
        parse_value(name, value)
    assert caught.value.field == name
    assert reason in caught.value.reason


def test_id_lists_read_and_write_the_kernels_form() -> None:
    assert format_id_list([6, 0, 1, 2, 3, 3]) == "0-3,6"
    assert format_id_list([]) == ""
    assert id_list("0-3,6\n") == frozenset({0, 1, 2, 3, 6})
    assert id_list("") == frozenset()
    assert id_list("0-") is None


# -- shares of the host -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "parsed"), [
    ("cpus", "50%", 2.0),
    ("cpus", "100%", 4.0),
    ("cpus", "12.5%", 0.5),
    ("memory", "75%", 6 * GiB),
    ("memory", " 50% ", 4 * GiB),
    ("memory_high", "100%", 8 * GiB),
    ("memory_swap", "12.5%", GiB),
    ("memory_min", "0.5%", 8 * GiB // 200 // 4096 * 4096),  # rounded down to 4 KiB
    ("memory_low", "25%", 2 * GiB),
])
def test_shares_resolve_against_the_host(name: str, value: str, parsed: float | int) -> None:
    assert parse_value(name, value) == parsed


def test_a_share_of_memory_is_exact_and_rounded_down_to_4_kib() -> None:
    # 12.5% of an odd size: floor(memory * 125 / 1000), then down to a multiple of 4096.
    memory_bytes = 2**50 + 4096 * 12_345 + 777
    with resolving_against(HostSize(cpus=1, memory_bytes=memory_bytes)):
        assert parse_value("memory", "12.5%") == memory_bytes * 125 // 1000 // 4096 * 4096
        assert parse_value("memory", "33.333333333%") == (
            memory_bytes * 33_333_333_333 // 10**11 // 4096 * 4096)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("memory", "150%", "150% is over 100%: a share of the host cannot exceed it"),
    ("cpus", "100.01%", "100.01% is over 100%"),
    ("memory", "9" * 5000 + "%", "is over 100%"),
    ("memory", "0%", "must be more than 0%"),
    ("memory", "0.000%", "must be more than 0%"),
    ("memory", "%", "not a percentage"),
    ("memory", "abc%", "not a percentage"),
    ("memory", "5 0%", "not a percentage"),
    ("memory", ".5%", "not a percentage"),
    ("memory", "-5%", "a percentage cannot be negative"),
    ("memory", "1.0000000001%", "more than 9 decimals"),
    ("pids", "50%", "takes no percentage"),
    ("cpu_weight", "50%", "takes no percentage"),
    ("io_weight", "50%", "takes no percentage"),
    ("cpuset_cpus", "50%", "takes no percentage"),
    # Resolved, then checked like any other value; the message says what it came to.
    ("memory", "0.1%", "0.1% of this host's 8 GiB is 8.19 MiB: below the 16 MiB floor"),
    ("cpus", "0.1%", "0.1% of this host's 4 CPUs is 0.004: must be at least 0.01"),
])
def test_bad_shares_are_refused(name: str, value: str, reason: str) -> None:
    with pytest.raises(LimitsError) as caught:
        parse_value(name, value)
    assert caught.value.field == name
    assert caught.value.value == value
    assert reason in caught.value.reason


def test_percentage_is_the_share_as_written_or_none() -> None:
    assert percentage("memory", " 75% ") == "75%"
    assert percentage("memory", "75") is None
    assert percentage("memory", 75) is None


def test_resolving_against_is_undone_on_leaving() -> None:
    other = HostSize(cpus=16, memory_bytes=64 * GiB)
    with resolving_against(other):
        assert parse_value("cpus", "50%") == 8.0
    assert resolution_host() == HOST


def test_without_a_fixed_host_the_host_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(os, "sysconf", {"SC_PHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}.get)
    # A fresh context has no host fixed (the fixture fixed one in this one).
    assert contextvars.Context().run(resolution_host) == HostSize(cpus=3, memory_bytes=4_096_000)
    assert HostSize.measure() == HostSize(cpus=3, memory_bytes=4_096_000)


def test_host_size_is_immutable() -> None:
    with pytest.raises(AttributeError):
        HOST.cpus = 8  # type: ignore[misc]
