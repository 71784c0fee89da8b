"""What the guest benchmarks share (guest-bench.py, guest-builds.py): running commands,
reading the journal, statistics and the PASS/MISS targets. tests/bench/run ships it beside
them into the guest ($BENCH_LIB_DIR). Standard library only: it runs on the guest's
/usr/bin/python3."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

# The results of the script that imports this: targets, notes and errors, and what the
# script adds; written to its JSON file at its end.
results: dict[str, Any] = {"targets": [], "notes": [], "errors": []}


def say(*parts: object) -> None:
    print(*parts, flush=True)


def run(*command: str, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout)


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "p95": None, "min": None, "max": None,
                "values": []}
    ordered = sorted(values)

    def nearest_rank(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

    return {"n": len(values), "median": statistics.median(values), "p90": nearest_rank(0.9),
            "p95": nearest_rank(0.95),
            "min": ordered[0], "max": ordered[-1], "values": [round(v, 3) for v in values]}


def fmt(s: dict[str, Any], unit: str = "ms", digits: int = 1, *, p95: bool = False) -> str:
    """"12.3 ms (10.1-15.0, n=9)", with p95: "median 12.3 ms, p95 14.9 ms (...)"."""
    if not s.get("n"):
        return "n/a"
    spread = f"({s['min']:.{digits}f}-{s['max']:.{digits}f}, n={s['n']})"
    if p95:
        return (f"median {s['median']:.{digits}f} {unit}, p95 {s['p95']:.{digits}f} {unit} "
                f"{spread}")
    return f"{s['median']:.{digits}f} {unit} {spread}"


def target(name: str, ok: bool | None, figure: str, bound: str = "") -> None:
    verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
    results["targets"].append({"target": name, "verdict": verdict, "figure": figure,
                               "bound": bound})
    say(f"   target: {name}: {verdict} ({figure})")


def unknown_sections(sections: Mapping[str, Callable[[], None]], wanted: list[str]) -> bool:
    """Say so and return True if ``wanted`` names a section that is not in ``sections``."""
    unknown = [name for name in wanted if name not in sections]
    if unknown:
        say(f"unknown sections {unknown}; known: {list(sections)}")
    return bool(unknown)


def run_section(name: str, section: Callable[[], None]) -> None:
    """Run one section and say how long it took; its failure goes to results["errors"] (with
    the traceback on stderr) and does not stop the sections after it."""
    began = time.monotonic()
    try:
        section()
    except Exception as error:  # a failed section must not stop the others
        traceback.print_exc()
        results["errors"].append(f"{name}: {error!r}")
    say(f"   ({name} took {time.monotonic() - began:.0f} s)")


def say_verdicts() -> None:
    """The targets' PASS/MISS lines and the errors, as the end of a table."""
    for t in results["targets"]:
        say(f"{t['verdict']:5} {t['target']}: {t['figure']}")
    for problem in results["errors"]:
        say(f"ERROR {problem}")


def timed(command: list[str], after: Callable[[], bool] | None = None,
          exit_code: int = 0) -> tuple[float, bool]:
    """Wall time in ms of ``command`` (and of ``after``, the in-kernel check), and success:
    ``command`` exited with ``exit_code`` and ``after`` holds."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    ok = done.returncode == exit_code and (after() if after else True)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if done.returncode != exit_code:
        say(f"   ! {' '.join(command)} -> exit {done.returncode}: {done.stderr.strip()[:200]}")
    return elapsed_ms, ok


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def journal(*matches: str, kernel: bool = False, since_usec: int = 0) -> list[dict[str, Any]]:
    run("journalctl", "--sync", check=False)
    command = ["journalctl", "-b", "-o", "json", "--no-pager", *(["-k"] if kernel else []),
               *matches]
    out = run(*command, check=False).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r for r in records if int(r["__MONOTONIC_TIMESTAMP"]) >= since_usec]


def event_time(record: dict[str, Any]) -> tuple[int, str]:
    """The record's own monotonic time if the sender gave one, else journald's receive time."""
    if "_SOURCE_MONOTONIC_TIMESTAMP" in record:
        return int(record["_SOURCE_MONOTONIC_TIMESTAMP"]), "_SOURCE_MONOTONIC_TIMESTAMP"
    return int(record["__MONOTONIC_TIMESTAMP"]), "__MONOTONIC_TIMESTAMP"


def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with suppress(OSError, ValueError):
            if predicate():
                return True
        time.sleep(step_s)
    return False


def main_pid() -> int:
    return int(run("systemctl", "show", "-p", "MainPID", "--value", "ccgroupd").stdout)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def schedstat_s(pid: int) -> float:
    """On-CPU time of the live threads, from schedstat (ns resolution), in seconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9
