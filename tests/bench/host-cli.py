#!/usr/bin/env python3
"""Client-side cost of ccgroupctl on this machine, natively (no VM, no daemon).

``ccgroupctl --socket /nonexistent set --cpus 1`` (parses, validates, fails to connect:
exit 5) against ``python3 -c pass`` with the same interpreter, interleaved; medians with
min-max. Prints one line per command and the ratio; writes nothing in the work tree.

It measures the checkout this script lives in, not whatever ``ccgroupd`` this interpreter
has installed: the package is byte-compiled into a temporary cache (an install has its
.pyc files; PYTHONDONTWRITEBYTECODE would otherwise recompile it on every run) and started
through a wrapper like the console script pip writes. Every command, the floor included,
runs with the same environment. A run that does not exit 5 is reported as a failure, not
timed as a fast client.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 21
CHECKOUT = Path(__file__).resolve().parents[2]
# What pip 23 writes for a [project.scripts] entry (the guest's venv has this one).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from ccgroupd.ctl import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def wall_ms(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env=env)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ccgroupd-host-cli-") as temp:
        ctl = Path(temp) / "ccgroupctl"
        ctl.write_text(CONSOLE_SCRIPT.format(python=sys.executable))
        ctl.chmod(0o755)
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        env.update(PYTHONPATH=str(CHECKOUT), PYTHONPYCACHEPREFIX=str(Path(temp) / "pycache"))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(CHECKOUT / "ccgroupd")],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        cases = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "python3 -I -c pass": [sys.executable, "-I", "-c", "pass"],
            "ccgroupctl set (no daemon)": [str(ctl), "--socket", "/nonexistent", "set",
                                           "--cpus", "1"],
        }
        probe = subprocess.run(cases["ccgroupctl set (no daemon)"], capture_output=True,
                               text=True, check=False, env=env)
        if probe.returncode != 5:
            print(f"host-cli: ccgroupctl exited {probe.returncode}, not 5 (daemon "
                  f"unreachable): {probe.stderr.strip()[-500:]}")
            return 1
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for command in cases.values():  # warm the page cache
            wall_ms(command, env)
        for rep in range(REPS):
            names = list(cases)
            names = names[rep % len(names):] + names[:rep % len(names)]
            for name in names:
                samples[name].append(wall_ms(cases[name], env))
    floor = statistics.median(samples["python3 -c pass"])
    report = {}
    for name, values in samples.items():
        median = statistics.median(values)
        report[name] = {"median_ms": round(median, 2), "min_ms": round(min(values), 2),
                        "max_ms": round(max(values), 2), "ratio_to_floor": round(median / floor, 3)}
        print(f"host  {name:28} {median:7.1f} ms ({min(values):.1f}-{max(values):.1f}, "
              f"n={len(values)})  x{median / floor:.2f} floor")
    ratio = report["ccgroupctl set (no daemon)"]["ratio_to_floor"]
    print(f"host  ccgroupctl ({CHECKOUT}) exit code 5 (daemon unreachable, as expected); "
          f"target <= 1.3x: {'PASS' if ratio <= 1.3 else 'MISS'} (x{ratio})")
    print("host-json " + json.dumps({"python": sys.version.split()[0], "reps": REPS,
                                      "checkout": str(CHECKOUT), "results": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
