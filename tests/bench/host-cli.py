#!/usr/bin/env python3
"""Client-side cost of ccgroupctl on this machine, natively (no VM, no daemon).

``ccgroupctl --socket /nonexistent set --cpus 1`` (parses, validates, fails to connect:
exit 5) against ``python3 -c pass`` and ``python3 -I -S -c pass`` with the same interpreter,
interleaved; medians with min-max. Prints one line per command and a PASS/MISS line per
target; writes nothing in the work tree. Two targets, both on the launcher:

- at most 1.3x ``python3 -c pass``, issue 7's target for what operators run;
- at most OWN_START_MAX x ``python3 -I -S -c pass``, the launcher's own interpreter mode:
  the client's own start, its imports and its work, without site's (which differs between
  machines). This is what keeps ccgroupctl light to import: the ratio grows with anything
  heavy that its quick path comes to load.

It measures the checkout this script lives in, not whatever ``ccgroupd`` this interpreter
has installed, started two ways: through the Debian package's launcher
(packaging/launcher.in, ``python3 -I -S``, with this checkout in place of the installed
paths; this row carries the target) and through a wrapper like the console script pip
writes (for reference). The package is byte-compiled into a temporary cache first (an
install has its .pyc files). A run that does not exit 5 is reported as a failure, not timed
as a fast client.
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
LAUNCHER_PATHS = '["/usr/lib/ccgroupd", "/usr/lib/python3/dist-packages"]'
# What pip 23 writes for a [project.scripts] entry (the guest's venv has this one).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from ccgroupd.client.ctl import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""
LAUNCHER = "ccgroupctl set (launcher, no daemon)"
PIP_SCRIPT = "ccgroupctl set (pip script, no daemon)"
SET_ARGS = ["--socket", "/nonexistent", "set", "--cpus", "1"]
FLOOR_MAX = 1.3
# Natively 1.5x on the development machine (10.4 vs 7.0 ms); importing enum alone, the
# lightest of the modules ccgroupctl's quick path avoids, makes it 2.0x, argparse 2.6x,
# typing 2.9x. The bound sits between, clear of the run-to-run noise (+-0.02x).
OWN_START_MAX = 1.75


def launcher_text() -> str:
    """packaging/launcher.in for ccgroupctl and this interpreter, with this checkout's path."""
    text = (CHECKOUT / "packaging" / "launcher.in").read_text()
    if LAUNCHER_PATHS not in text:
        raise SystemExit(f"host-cli: packaging/launcher.in no longer sets {LAUNCHER_PATHS}")
    version = sys.version_info[:2]
    return (text.replace(LAUNCHER_PATHS, repr([str(CHECKOUT)]))
            .replace("@SERVED_VERSIONS@", repr((version,)))
            .replace("@SERVED_TEXT@", f"{version[0]}.{version[1]}")
            .replace("@COMMAND@", "ccgroupctl").replace("@MODULE@", "client.ctl"))


def wall_ms(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env=env)
    return (time.perf_counter() - started) * 1000


def target(name: str, ok: bool, figure: str) -> dict[str, str]:
    verdict = "PASS" if ok else "MISS"
    print(f"host  target: {name}: {verdict} ({figure})")
    return {"target": name, "verdict": verdict, "figure": figure}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ccgroupd-host-cli-") as temp:
        pycache = Path(temp) / "pycache"
        script = Path(temp) / "ccgroupctl-pip"
        script.write_text(CONSOLE_SCRIPT.format(python=sys.executable))
        script.chmod(0o755)
        launcher = Path(temp) / "ccgroupctl"
        launcher.write_text(launcher_text())
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        env.update(PYTHONPATH=str(CHECKOUT), PYTHONPYCACHEPREFIX=str(pycache))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(CHECKOUT / "ccgroupd")],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        cases = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "python3 -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
            # As its shebang runs it; -I ignores PYTHONPYCACHEPREFIX, -X does not.
            LAUNCHER: [sys.executable, "-I", "-S", "-X", f"pycache_prefix={pycache}",
                       str(launcher), *SET_ARGS],
            PIP_SCRIPT: [str(script), *SET_ARGS],
        }
        for name in (LAUNCHER, PIP_SCRIPT):
            probe = subprocess.run(cases[name], capture_output=True, text=True, check=False,
                                   env=env)
            if probe.returncode != 5:
                print(f"host-cli: {name} exited {probe.returncode}, not 5 (daemon "
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
    bare_floor = statistics.median(samples["python3 -I -S -c pass"])
    report = {}
    for name, values in samples.items():
        median = statistics.median(values)
        report[name] = {"median_ms": round(median, 2), "min_ms": round(min(values), 2),
                        "max_ms": round(max(values), 2), "ratio_to_floor": round(median / floor, 3),
                        "ratio_to_bare_floor": round(median / bare_floor, 3)}
        print(f"host  {name:38} {median:7.1f} ms ({min(values):.1f}-{max(values):.1f}, "
              f"n={len(values)})  x{median / floor:.2f} floor  x{median / bare_floor:.2f} -I -S")
    print(f"host  ccgroupctl ({CHECKOUT}) exit code 5 (daemon unreachable, as expected)")
    launcher = report[LAUNCHER]
    launcher_ms = statistics.median(samples[LAUNCHER])  # unrounded, as in the rows above
    targets = [
        target(f"ccgroupctl set (the launcher) <= {FLOOR_MAX}x python3 -c pass",
               launcher["ratio_to_floor"] <= FLOOR_MAX,
               f"x{launcher['ratio_to_floor']}, {launcher_ms:.1f} vs {floor:.1f} ms; "
               f"pip script x{report[PIP_SCRIPT]['ratio_to_floor']}"),
        target(f"ccgroupctl's own start (the launcher) <= {OWN_START_MAX}x python3 -I -S -c pass",
               launcher["ratio_to_bare_floor"] <= OWN_START_MAX,
               f"x{launcher['ratio_to_bare_floor']}, {launcher_ms:.1f} vs {bare_floor:.1f} ms: "
               f"{launcher_ms - bare_floor:.1f} ms of its own"),
    ]
    print("host-json " + json.dumps({"python": sys.executable, "version": sys.version.split()[0],
                                      "reps": REPS, "checkout": str(CHECKOUT),
                                      "results": report, "targets": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
