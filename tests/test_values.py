"""The pydantic-free limit rules (ccgroupd.values): ccgroupctl refuses exactly what the
daemon's model refuses, and values are read as ASCII. The rules themselves are tested through
the model in test_limits.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from ccgroupd.errors import LimitsError
from ccgroupd.limits.model import Limits
from ccgroupd.values import check_values, describe_limit_value, parse_value

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
