"""The pydantic-free limit rules: ccgroupctl refuses exactly what the daemon's model refuses.
The rules themselves are tested in test_limits.py; tests/bench/host-cli.py keeps the client
light to import."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping

import pytest

from ccgroupd.errors import LimitsError
from ccgroupd.limits.model import Limits
from ccgroupd.values import _is_decimal, _is_digits, _split_size, check_values

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


# The oracle: the regexes limitvalues used before it stopped importing re.
OLD_SIZE_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)", re.ASCII)
OLD_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
OLD_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)

# Characters the str methods could read differently from the ASCII-only regexes: Unicode
# whitespace, other scripts' digits, superscripts, full-width digits, non-ASCII letters, and
# the Kelvin sign, which re.IGNORECASE (not used) would match as k.
ALPHABET = ["0", "7", ".", "K", "i", "B", "e", "-", " ", "\t", "\n", "\x0b", "\x1c",
            "\N{NO-BREAK SPACE}", "\N{LINE SEPARATOR}", "\N{ARABIC-INDIC DIGIT ONE}",
            "\N{SUPERSCRIPT TWO}", "\N{LATIN SMALL LETTER E WITH ACUTE}", "\N{KELVIN SIGN}",
            "\N{FULLWIDTH DIGIT ONE}"]
PIECES = ["", "0", "12", "1.5", ".", ".5", "5.", "KiB", "G", "g", "KB", "max", "inf", "nan",
          "1e3", "1_0", "+1", "  ", "\r\f", "\N{ARABIC-INDIC DIGIT THREE}",
          "\N{FULLWIDTH DIGIT ONE}\N{FULLWIDTH DIGIT TWO}", "\N{FULLWIDTH LATIN CAPITAL LETTER G}",
          "0" * 30]
HAND_PICKED = ["8589934592", "1.5G", "8 KiB", "8\t\n G", "0.5", "4.", "00.00", "1.5.2", "8G ",
               " 8G", "8GiB8", "1 . 5", "1.G", "..5", "8\N{KELVIN SIGN}iB",
               "8\N{SUPERSCRIPT TWO}", "8\N{NO-BREAK SPACE}G", "\N{ARABIC-INDIC DIGIT THREE}G"]


def _corpus() -> set[str]:
    """Every string of up to 4 ALPHABET characters or 3 PIECES, and HAND_PICKED."""
    corpus = set(HAND_PICKED)
    for length in range(5):
        corpus.update(map("".join, itertools.product(ALPHABET, repeat=length)))
    for length in range(4):
        corpus.update(map("".join, itertools.product(PIECES, repeat=length)))
    return corpus


def test_str_helpers_accept_what_the_old_regexes_accepted() -> None:
    corpus = _corpus()
    for accepted in ("8589934592", "1.5G", "8 KiB", "8\t\n G", ".5", "4."):  # not all refusals
        assert accepted in corpus
    sizes, decimals, counts = [], [], []
    for text in corpus:
        match = OLD_SIZE_RE.fullmatch(text)
        if _split_size(text) != (None if match is None else (match["number"], match["unit"])):
            sizes.append(text)
        if _is_decimal(text) != bool(OLD_DECIMAL_RE.fullmatch(text)):
            decimals.append(text)
        if _is_digits(text) != bool(OLD_COUNT_RE.fullmatch(text)):
            counts.append(text)
    assert (sizes, decimals, counts) == ([], [], [])
