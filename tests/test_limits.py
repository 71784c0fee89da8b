"""The limits model: size parsing, kernel bounds, combinations, and what gets written."""

from __future__ import annotations

import json
import math
import os

import pydantic
import pytest

from ccgroupd.errors import EXIT_INVALID, LimitsError
from ccgroupd.limits.model import (
    LIMIT_NAMES,
    MIN_MEMORY_BYTES,
    Limits,
    format_bytes,
    host_cpu_count,
    parse_size,
)
from ccgroupd.values import HostSize, resolving_against

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


# -- parse_size ---------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0, 0),
    (1, 1),
    (8 * GiB, 8 * GiB),
    ("0", 0),
    ("4096", 4096),
    ("00012", 12),
    ("  42\t", 42),
    ("512B", 512),
    ("1K", KiB),
    ("1k", KiB),
    ("1KiB", KiB),
    ("8M", 8 * MiB),
    ("8m", 8 * MiB),
    ("8MiB", 8 * MiB),
    ("8G", 8 * GiB),
    ("8g", 8 * GiB),
    ("8GiB", 8 * GiB),
    ("8 G", 8 * GiB),
    (" 8 GiB ", 8 * GiB),
    ("2T", 2 * TiB),
    ("2t", 2 * TiB),
    ("2TiB", 2 * TiB),
    ("1.5G", 3 * GiB // 2),
    ("0.5K", 512),
    ("1.25 GiB", 5 * GiB // 4),
    ("max", None),
    ("MAX", None),
    ("infinity", None),
    (" Infinity ", None),
    (str(2**63 - 2**16 - 1), 2**63 - 2**16 - 1),
    (2**63 - 2**16 - 1, 2**63 - 2**16 - 1),
    ("8388607T", 8388607 * TiB),
])
def test_parse_size_accepts(value: str | int, expected: int | None) -> None:
    assert parse_size(value, "memory") == expected


HINT = "(use bytes, K/M/G/T, KiB/MiB/GiB/TiB, or max)"


@pytest.mark.parametrize(("value", "reason"), [
    ("", f"empty {HINT}"),
    ("   ", f"empty {HINT}"),
    ("garbage", f"not a size {HINT}"),
    ("12XB", f"unknown unit 'XB' {HINT}"),
    ("8Gi", f"unknown unit 'Gi' {HINT}"),
    ("8 bytes", f"unknown unit 'bytes' {HINT}"),
    ("8GB", "unit 'GB' is ambiguous (1000 or 1024?): write 8G or 8GiB for powers of 1024"),
    ("8kb", "unit 'kb' is ambiguous (1000 or 1024?): write 8K or 8KiB for powers of 1024"),
    ("-1", "a size cannot be negative (use max for no limit)"),
    ("-1G", "a size cannot be negative (use max for no limit)"),
    (-1, "a size cannot be negative (use max for no limit)"),
    ("nan", "NaN is not a size"),
    ("NaN", "NaN is not a size"),
    (math.nan, "NaN is not a size"),
    ("inf", "write max (or infinity) for no limit"),
    ("1.5", "is 1.5 bytes; sizes are whole bytes"),
    ("0.3K", "is 307.2 bytes; sizes are whole bytes"),
    # The kernel would clamp these to PAGE_COUNTER_MAX pages and read back "max".
    (str(2**63 - 2**16), "larger than the kernel keeps as a limit (at most "
                         "9223372036854710271 bytes); use max for no limit"),
    (2**63 - 1, "larger than the kernel keeps as a limit"),
    (2**63, "larger than the kernel keeps as a limit"),
    ("8388608T", "larger than the kernel keeps as a limit"),
    ("9" * 5000, "larger than the kernel keeps as a limit"),
    ("1e9", f"not a size {HINT}"),
    ("1_000", f"not a size {HINT}"),
    ("+5", f"not a size {HINT}"),
    ("0x10", f"not a size {HINT}"),
    (".5G", f"not a size {HINT}"),
    ("8 G B", f"not a size {HINT}"),
    ("\u0663", f"not a size {HINT}"),  # ARABIC-INDIC DIGIT THREE: Python's int() would take it
    (True, "expected a whole number of bytes"),
    (1.5, "expected a whole number of bytes"),
    (None, "expected a whole number of bytes"),
    ([8], "expected a whole number of bytes"),
])
def test_parse_size_refuses(value: object, reason: str) -> None:
    with pytest.raises(LimitsError) as caught:
        parse_size(value, "memory_swap")
    error = caught.value
    assert error.field == "memory_swap"
    assert error.value is value
    assert reason in error.reason
    assert str(error).startswith(f"memory_swap = {value!r}: ")
    assert error.exit_code == EXIT_INVALID


def test_unknown_unit_message_reads_as_documented() -> None:
    with pytest.raises(LimitsError) as caught:
        parse_size("12XB", "memory")
    assert str(caught.value) == (
        "memory = '12XB': unknown unit 'XB' (use bytes, K/M/G/T, KiB/MiB/GiB/TiB, or max)")


# -- format_bytes -------------------------------------------------------------

@pytest.mark.parametrize(("value", "text"), [
    (None, "max"),
    (0, "0 B"),
    (512, "512 B"),
    (1023, "1023 B"),
    (KiB, "1 KiB"),
    (1536, "1.5 KiB"),
    (512 * MiB, "512 MiB"),
    (8 * GiB, "8 GiB"),
    (3 * GiB // 2, "1.5 GiB"),
    (5 * GiB // 4, "1.25 GiB"),
    (123_456_789, "117.74 MiB"),
    (3 * TiB, "3 TiB"),
    (1024 * TiB, "1024 TiB"),
])
def test_format_bytes(value: int | None, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize("value", [0, 512, KiB, 1536, 512 * MiB, 3 * GiB // 2, 8 * GiB, 3 * TiB])
def test_format_bytes_output_parses_back(value: int) -> None:
    assert parse_size(format_bytes(value), "memory") == value


# -- cpus ---------------------------------------------------------------------

@pytest.mark.parametrize(("cpus", "stored", "cpu_max"), [
    (4, 4.0, "400000 100000"),
    ("4", 4.0, "400000 100000"),
    (" 2 ", 2.0, "200000 100000"),
    (0.5, 0.5, "50000 100000"),
    ("1.5", 1.5, "150000 100000"),
    (".5", 0.5, "50000 100000"),
    (0.01, 0.01, "1000 100000"),
    (0.014999, 0.014999, "1500 100000"),  # the quota is rounded to whole µs
    (1 / 3, 1 / 3, "33333 100000"),
    (64, 64.0, "6400000 100000"),
    (None, None, "max 100000"),
    ("max", None, "max 100000"),
    ("infinity", None, "max 100000"),
])
def test_cpus_map_to_cpu_max(cpus: object, stored: float | None, cpu_max: str) -> None:
    limits = Limits.from_mapping({"cpus": cpus})
    assert limits.cpus == stored
    assert limits.cgroup_values()["cpu.max"] == cpu_max


@pytest.mark.parametrize(("cpus", "reason"), [
    (0, "must be more than 0 (use max for no CPU limit)"),
    (0.0, "must be more than 0"),
    ("0", "must be more than 0"),
    (-1, "must be more than 0"),
    ("-1", "a number of CPUs cannot be negative"),
    (0.005, "must be at least 0.01: the kernel refuses a CPU quota below 1000 µs per "
            "100000 µs period"),
    (0.00994, "must be at least 0.01"),
    (math.nan, "NaN is not a number of CPUs"),
    ("nan", "NaN is not a number of CPUs"),
    (math.inf, "larger than the kernel accepts (at most 175921860)"),
    ("inf", "write max (or infinity) for no limit"),
    (1e30, "larger than the kernel accepts"),
    (10**400, "larger than the kernel accepts"),
    ("abc", "not a number of CPUs (e.g. 4, 0.5 or max)"),
    ("", "not a number of CPUs"),
    ("4 cpus", "not a number of CPUs"),
    ("1e3", "not a number of CPUs"),
    (True, "expected a number of CPUs"),
    ([4], "expected a number of CPUs"),
])
def test_cpus_refused(cpus: object, reason: str) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping({"cpus": cpus})
    assert caught.value.field == "cpus"
    assert reason in caught.value.reason


# -- memory, swap, pids, cpu_weight ---------------------------------------------

@pytest.mark.parametrize("name", ["memory", "memory_high"])
def test_memory_floor(name: str) -> None:
    assert Limits.from_mapping({name: "16M"}).to_mapping()[name] == MIN_MEMORY_BYTES
    for too_small in (0, "1M", MIN_MEMORY_BYTES - 1):
        with pytest.raises(LimitsError) as caught:
            Limits.from_mapping({name: too_small})
        assert caught.value.field == name
        assert caught.value.reason.startswith("below the 16 MiB floor: the engine could not")


@pytest.mark.parametrize(("value", "stored", "written"), [
    (0, 0, "0"),  # no swap at all, docker's --memory-swap equal to --memory
    ("1", 1, "1"),  # no floor for swap
    ("2G", 2 * GiB, str(2 * GiB)),
    ("max", None, "max"),
])
def test_memory_swap(value: object, stored: int | None, written: str) -> None:
    limits = Limits.from_mapping({"memory": "8G", "memory_swap": value})
    assert limits.memory_swap_max_bytes == stored
    assert limits.cgroup_values()["memory.swap.max"] == written


@pytest.mark.parametrize(("value", "stored"), [
    (1, 1), ("100", 100), (" 100 ", 100), (4194304, 4194304), ("max", None), (None, None),
])
def test_pids_accepted(value: object, stored: int | None) -> None:
    assert Limits.from_mapping({"pids": value}).pids_max == stored


@pytest.mark.parametrize("value", [0, -1, "-1", 4194305, "9" * 5000, 1.0, "1.5", True, "", "many"])
def test_pids_refused(value: object) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping({"pids": value})
    assert caught.value.field == "pids"
    assert "a whole number from 1 to 4194304, or max" in caught.value.reason


@pytest.mark.parametrize(("value", "written"), [
    (None, "100"), (1, "1"), ("50", "50"), (10000, "10000"),
])
def test_cpu_weight_accepted(value: object, written: str) -> None:
    assert Limits.from_mapping({"cpu_weight": value}).cgroup_values()["cpu.weight"] == written


@pytest.mark.parametrize("value", [0, 10001, "max", 50.5, False, "-5"])
def test_cpu_weight_refused(value: object) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping({"cpu_weight": value})
    assert caught.value.field == "cpu_weight"
    assert "a whole number from 1 to 10000" in caught.value.reason
    assert "max" not in caught.value.reason  # cpu.weight has no "no limit"


# -- combinations -------------------------------------------------------------

@pytest.mark.parametrize("values", [
    {"memory": "8G", "memory_high": "8G"},
    {"memory": "8G", "memory_high": "7G"},
    {"memory_high": "7G"},
    {"memory": "max", "memory_high": "100G"},
    {"memory": "8G", "memory_high": "max"},
])
def test_memory_high_at_most_memory_accepted(values: dict[str, object]) -> None:
    Limits.from_mapping(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"memory": "8G", "memory_high": "9G"},
     "memory_high = '9 GiB': memory_high (9 GiB) is above memory (8 GiB): "),
    # Rounded to two decimals both would read "8 GiB": the exact count is shown.
    ({"memory": "8G", "memory_high": 8 * GiB + 1},
     "memory_high (8 GiB, 8589934593 bytes) is above memory (8 GiB): "),
])
def test_memory_high_above_memory_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping(values)
    assert caught.value.field == "memory_high"
    assert message in str(caught.value)


# -- from_mapping, with_changes, to_mapping, cgroup_values -----------------------

def test_from_mapping_refuses_unknown_key() -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping({"cpus": 2, "memory_max_bytes": 1})
    assert str(caught.value) == ("memory_max_bytes = 1: unknown limit (known limits: cpus, memory, "
                                 "memory_high, memory_swap, pids, cpu_weight, memory_min, "
                                 "memory_low, io_weight, cpuset_cpus, cpuset_mems)")


def test_empty_mapping_means_no_limits() -> None:
    assert Limits.from_mapping({}) == Limits()
    assert list(Limits().cgroup_values().items()) == [
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
        ("memory.max", "max"),
        ("memory.high", "max"),
        ("memory.swap.max", "max"),
        ("pids.max", "max"),
        ("memory.min", "0"),
        ("memory.low", "0"),
        ("io.weight", "default 100"),
        ("cpuset.cpus", ""),
        ("cpuset.mems", ""),
    ]


def test_cgroup_values_every_attribute_in_order() -> None:
    limits = Limits.from_mapping({"cpus": 2.5, "memory": "8G", "memory_high": "6G",
                                  "memory_swap": "1G", "pids": 4096, "cpu_weight": 200,
                                  "memory_min": "1G", "memory_low": "2G", "io_weight": 50,
                                  "cpuset_cpus": "0", "cpuset_mems": "0"})
    assert list(limits.cgroup_values().items()) == [
        ("cpu.max", "250000 100000"),
        ("cpu.weight", "200"),
        ("memory.max", "8589934592"),
        ("memory.high", "6442450944"),
        ("memory.swap.max", "1073741824"),
        ("pids.max", "4096"),
        ("memory.min", "1073741824"),
        ("memory.low", "2147483648"),
        ("io.weight", "default 50"),
        ("cpuset.cpus", "0"),
        ("cpuset.mems", "0"),
    ]


def test_cgroup_values_as_the_issue_configures() -> None:
    assert Limits.from_mapping({"cpus": 4, "memory": "8G"}).cgroup_values() == {
        "cpu.max": "400000 100000", "cpu.weight": "100", "memory.max": "8589934592",
        "memory.high": "max", "memory.swap.max": "max", "pids.max": "max",
        "memory.min": "0", "memory.low": "0", "io.weight": "default 100", "cpuset.cpus": "",
        "cpuset.mems": "",
    }


def test_to_mapping_is_json_and_round_trips() -> None:
    limits = Limits.from_mapping({"cpus": "0.5", "memory": "1.5G", "pids": "max",
                                  "cpu_weight": "10"})
    mapping = limits.to_mapping()
    assert tuple(mapping) == LIMIT_NAMES
    assert json.loads(json.dumps(mapping)) == {
        "cpus": 0.5, "memory": 3 * GiB // 2, "memory_high": None, "memory_swap": None,
        "pids": None, "cpu_weight": 10, "memory_min": None, "memory_low": None,
        "io_weight": None, "cpuset_cpus": None, "cpuset_mems": None,
    }
    assert Limits.from_mapping(mapping) == limits


BASE = Limits.from_mapping({"cpus": 4, "memory": "8G", "memory_high": "6G", "pids": 1000})


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, BASE),
    ({"cpus": 2}, Limits.from_mapping({"cpus": 2, "memory": "8G", "memory_high": "6G",
                                       "pids": 1000})),
    ({"memory": "16G", "memory_swap": 0},
     Limits.from_mapping({"cpus": 4, "memory": "16G", "memory_high": "6G", "memory_swap": 0,
                          "pids": 1000})),
    ({"memory_high": None, "pids": "max"}, Limits.from_mapping({"cpus": 4, "memory": "8G"})),
    ({"cpus": "max"}, Limits.from_mapping({"memory": "8G", "memory_high": "6G", "pids": 1000})),
])
def test_with_changes(changes: dict[str, object], expected: Limits) -> None:
    assert BASE.with_changes(changes) == expected


@pytest.mark.parametrize(("changes", "field"), [
    ({"memory": "4G"}, "memory_high"),  # would put memory_high (6G) above memory
    ({"memory": "12XB"}, "memory"),
    ({"cpus": 0}, "cpus"),
    ({"pid": 10}, "pid"),
])
def test_with_changes_refused_leaves_original(changes: dict[str, object], field: str) -> None:
    before = BASE.to_mapping()
    with pytest.raises(LimitsError) as caught:
        BASE.with_changes(changes)
    assert caught.value.field == field
    assert BASE.to_mapping() == before


def test_limits_are_frozen_and_hashable() -> None:
    with pytest.raises(pydantic.ValidationError):
        BASE.cpus = 1
    assert hash(BASE) == hash(Limits.from_mapping(BASE.to_mapping()))


def test_direct_construction_validates_the_same_way() -> None:
    assert Limits(memory_max_bytes="8G").memory_max_bytes == 8 * GiB  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="must be more than 0"):
        Limits(cpus=0)


# -- host ---------------------------------------------------------------------

@pytest.mark.parametrize(("cpus", "host_cpus"), [(None, 1), (2, 2), (1.5, 2), (0.01, 1)])
def test_check_host_accepts(cpus: float | None, host_cpus: int) -> None:
    Limits(cpus=cpus).check_host(host_cpus)


@pytest.mark.parametrize(("cpus", "host_cpus"), [(3, 2), (2.5, 2), (64, 8)])
def test_check_host_refuses_more_cpus_than_the_host(cpus: float, host_cpus: int) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits(cpus=cpus).check_host(host_cpus)
    assert caught.value.field == "cpus"
    assert caught.value.reason.startswith(f"above the {host_cpus} CPUs this host gives ccgroupd")


def test_host_cpu_count_follows_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert host_cpu_count() == 3


# -- protections and cpusets between limits ---------------------------------------

@pytest.mark.parametrize(("values", "field", "message"), [
    ({"memory": "1G", "memory_low": "2G"}, "memory_low",
     "memory_low (2 GiB) is above memory (1 GiB): the kernel cannot protect more than the "
     "group may hold"),
    ({"memory": "1G", "memory_min": GiB + 1}, "memory_min",
     "memory_min (1 GiB, 1073741825 bytes) is above memory (1 GiB)"),
    ({"memory": "8G", "memory_high": "2G", "memory_min": "3G"}, "memory_min",
     "memory_min (3 GiB) is above memory_high (2 GiB): above memory_high the group is "
     "throttled"),
    ({"memory_high": "2G", "memory_low": "3G"}, "memory_low", "is above memory_high (2 GiB)"),
])
def test_protection_above_a_memory_limit_refused(values: dict[str, object], field: str,
                                                 message: str) -> None:
    with pytest.raises(LimitsError) as caught:
        Limits.from_mapping(values)
    assert caught.value.field == field
    assert message in caught.value.reason


@pytest.mark.parametrize("values", [
    {"memory": "1G", "memory_high": "1G", "memory_min": "1G", "memory_low": "1G"},
    {"memory_min": "64G", "memory_low": "64G"},  # no limit to be above
    {"memory": "1G", "memory_min": 0},
])
def test_protection_at_most_the_memory_limits_accepted(values: dict[str, object]) -> None:
    Limits.from_mapping(values)


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)


@pytest.mark.usefixtures("four_cpus")
@pytest.mark.parametrize(("engine", "build", "refused"), [
    ({"cpuset_cpus": "0-3"}, {"cpuset_cpus": "1,3"}, None),
    ({"cpuset_cpus": "0-3"}, {}, None),
    ({}, {"cpuset_cpus": "2"}, None),  # the engine has all of the parent's
    ({"cpuset_cpus": "0-1"}, {"cpuset_cpus": "1-2"}, "builds.cpuset_cpus"),
    ({"cpuset_mems": "0"}, {"cpuset_mems": "0-1"}, "builds.cpuset_mems"),
    # Not bounded by the engine's: protections and weights are the build's own.
    ({"memory_low": "1G", "io_weight": 10}, {"memory_low": "2G", "io_weight": 1000}, None),
])
def test_check_within_keeps_a_builds_cpusets_inside_the_engines(
        engine: dict[str, object], build: dict[str, object], refused: str | None) -> None:
    outer, inner = Limits.from_mapping(engine), Limits.from_mapping(build)
    if refused is None:
        inner.check_within(outer, "builds")
        return
    with pytest.raises(LimitsError) as caught:
        inner.check_within(outer, "builds")
    assert caught.value.field == refused
    name = refused.rpartition(".")[2]
    assert caught.value.reason.startswith(f"not within the engine's {name} ({engine[name]})")


# -- shares of the host -------------------------------------------------------------

HOST = HostSize(cpus=4, memory_bytes=8 * GiB)
BIGGER = HostSize(cpus=8, memory_bytes=16 * GiB)


def test_relative_limits_remember_their_share() -> None:
    with resolving_against(HOST):
        limits = Limits.from_mapping({"cpus": "50%", "memory": "75%", "memory_high": "4G"})
    assert (limits.cpus, limits.memory_max_bytes) == (2.0, 6 * GiB)
    assert limits.relative() == {"cpus": "50%", "memory": "75%"}
    assert limits.given() == {"cpus": "50%", "memory": "75%", "memory_high": 4 * GiB}
    assert limits.to_mapping()["memory"] == 6 * GiB  # numbers, as before
    assert json.loads(limits.model_dump_json())["memory_max_bytes"] == 6 * GiB
    # The same numbers written absolutely are other limits: status would show them otherwise.
    absolute = Limits.from_mapping({"cpus": 2, "memory": "6G", "memory_high": "4G"})
    assert absolute.relative() == {}
    assert limits != absolute
    with resolving_against(HOST):
        assert limits == Limits.from_mapping({"cpus": "50%", "memory": "75%",
                                              "memory_high": "4G"})


def test_with_changes_resolves_the_other_shares_again() -> None:
    with resolving_against(HOST):
        limits = Limits.from_mapping({"cpus": "50%", "memory": "75%"})
    with resolving_against(BIGGER):
        changed = limits.with_changes({"pids": 100})
    assert (changed.cpus, changed.memory_max_bytes, changed.pids_max) == (4.0, 12 * GiB, 100)
    assert changed.relative() == {"cpus": "50%", "memory": "75%"}
    with resolving_against(HOST):
        absolute = limits.with_changes({"memory": "2G"})  # an absolute value replaces a share
    assert absolute.relative() == {"cpus": "50%"}
    assert absolute.memory_max_bytes == 2 * GiB


def test_a_share_given_to_a_build_rule_is_resolved_where_it_is_laid() -> None:
    with resolving_against(HOST):
        rule = Limits.from_mapping({"memory": "25%"})
        defaults = Limits.from_mapping({"cpus": 1})
    with resolving_against(BIGGER):
        laid = defaults.with_changes(rule.given())
    assert laid.memory_max_bytes == 4 * GiB
    assert laid.relative() == {"memory": "25%"}


def test_a_share_that_no_longer_fits_is_refused_on_resolution() -> None:
    with resolving_against(BIGGER):
        limits = Limits.from_mapping({"memory_low": "50%", "memory": "10G"})  # 8 GiB of 16
    with resolving_against(HOST):
        assert limits.with_changes({}).memory_low_bytes == 4 * GiB
        with pytest.raises(LimitsError) as caught:
            limits.with_changes({"memory": "3G"})
    assert caught.value.field == "memory_low"
    assert "memory_low (4 GiB) is above memory (3 GiB)" in caught.value.reason
