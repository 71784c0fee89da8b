"""The pydantic-free limit rules: ccgroupctl refuses exactly what the daemon's model refuses,
and its client path stays light. The rules themselves are tested in test_limits.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from ccgroupd.errors import LimitsError
from ccgroupd.limits import Limits
from ccgroupd.limitvalues import check_values

REPO = Path(__file__).resolve().parent.parent

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


# What the client paths must not load, and why: pydantic and the modules built on it
# (the model, the event registry) multiply start-up time; the rest cost milliseconds
# each under emulation, more than the whole of ccgroupctl's own code.
HEAVY_MODULES = ["pydantic", "ccgroupd.limits", "ccgroupd.events", "typing", "dataclasses",
                 "decimal", "shutil", "socket", "selectors"]
CLIENT_PATHS = """
import sys
sys.path.insert(0, sys.argv[1])
from ccgroupd import ctl
for argv in (["--socket", "/nonexistent", "set", "--cpus", "2", "--memory", "8G"],
             ["--socket", "/nonexistent", "status"]):
    assert ctl.main(argv) == 5
ctl.render_status({"limits": {"memory": {"value": 2**33, "source": "config"}},
                   "usage": {"memory_bytes": 2**30, "memory_percent": 12.5}})
print(__import__("json").dumps(sorted(sys.modules)))
"""


def test_client_paths_load_no_heavy_module() -> None:
    # -S: only the standard library and this tree, as the packaged launcher sees it.
    run = subprocess.run([sys.executable, "-S", "-c", CLIENT_PATHS, str(REPO)],
                         capture_output=True, text=True, check=True)
    loaded = set(json.loads(run.stdout))
    assert "ccgroupd.limitvalues" in loaded
    assert sorted(loaded & set(HEAVY_MODULES)) == []
