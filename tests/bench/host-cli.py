#!/usr/bin/env python3
"""Client-side cost of ccgroupctl on this machine, natively (no VM, no daemon).

``ccgroupctl --socket /nonexistent set --cpus 1`` (parses, validates, fails to connect:
exit 5) against ``python3 -c pass`` with the same interpreter, interleaved; medians with
min-max. Prints one line per command and the ratio; writes nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 21


def wall_ms(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    # the console script next to this interpreter (not a pyenv shim, which adds a shell)
    ctl = Path(sys.executable).parent / "ccgroupctl"
    if not ctl.exists():
        print(f"host-cli: no {ctl}; install ccgroupd into this interpreter (pip install -e .)")
        return 1
    cases = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "python3 -I -c pass": [sys.executable, "-I", "-c", "pass"],
        "ccgroupctl set (no daemon)": [str(ctl), "--socket", "/nonexistent", "set", "--cpus",
                                       "1"],
    }
    exit_code = subprocess.run(cases["ccgroupctl set (no daemon)"], capture_output=True,
                               check=False).returncode
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for command in cases.values():  # warm the page cache
        wall_ms(command)
    for rep in range(REPS):
        names = list(cases)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            samples[name].append(wall_ms(cases[name]))
    floor = statistics.median(samples["python3 -c pass"])
    report = {}
    for name, values in samples.items():
        median = statistics.median(values)
        report[name] = {"median_ms": round(median, 2), "min_ms": round(min(values), 2),
                        "max_ms": round(max(values), 2), "ratio_to_floor": round(median / floor, 3)}
        print(f"host  {name:28} {median:7.1f} ms ({min(values):.1f}-{max(values):.1f}, "
              f"n={len(values)})  x{median / floor:.2f} floor")
    ratio = report["ccgroupctl set (no daemon)"]["ratio_to_floor"]
    print(f"host  ccgroupctl exit code {exit_code} (5: daemon unreachable, as expected); "
          f"target <= 1.3x: {'PASS' if ratio <= 1.3 else 'MISS'} (x{ratio})")
    print("host-json " + json.dumps({"python": sys.version.split()[0], "reps": REPS,
                                      "results": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
