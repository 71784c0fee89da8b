#!/usr/bin/python3
"""Several engines under one budget, in the test guest: the kernel's share of CPU and memory
among ccgroupd's engines, and the cost of many engines to the control socket.

    tests/bench/run engines

(which ships it with guestlib.py; SECTIONs cpu, memory, ctl as its arguments when run by
hand in the guest). ccgroupd runs under its unit with [budget] and [engines.NAME] tables
(mode "exec"); engine NAME's group is <unit group>/engines/NAME. Figures only, no timed
assertion; the targets are reported PASS/MISS.

1. cpu: three engines ``one``, ``two``, ``three`` with cpu_weight 100, 200, 500 under
   [budget] cpus = 2, each running 4 busy shell loops (one per vCPU). After
   BENCH_ENGINES_CPU_WARMUP_S (5) s, the usage_usec deltas of cpu.stat over
   BENCH_ENGINES_CPU_WINDOW_S (20) s: the budget group's CPUs (target: within 5% of 2.0) and
   each engine's share of the engines' sum (target: within 10% of 1/8, 2/8, 5/8); and, once a
   second, the vCPU of each runnable task (placement). BENCH_ENGINES_CPU_RUNS (3) times, the
   daemon started afresh each time, and as many times with the budget's 2 CPUs given by
   pinning ([budget] cpuset_cpus = "0-1") instead of a quota; then, for reference, once
   without the budget's CPU limit (all 4 vCPUs).
2. memory: engine ``a`` with memory_low = BENCH_ENGINES_MEMORY_LOW_MIB (300) MiB writes a
   file of BENCH_ENGINES_A_MIB (350) MiB and re-reads it in a loop (page cache, its working
   set); then engine ``b`` touches BENCH_ENGINES_B_ANON_MIB (200) MiB of anonymous memory and
   re-reads a file of its own of BENCH_ENGINES_B_FILE_MIB (300) MiB without a pause, under
   [budget] memory = BENCH_ENGINES_BUDGET_MEMORY_MIB (700) MiB: more than the budget, and all
   of it page cache but b's anonymous part, so that the kernel has both engines' pages to
   choose from (without swap, anonymous memory cannot be reclaimed: a neighbour of anonymous
   memory only would leave the kernel nothing to take but a's pages, protected or not). a's
   memory.current is sampled every 0.2 s from when b starts, for
   BENCH_ENGINES_MEMORY_WINDOW_S (20) s after b has all its memory; a's memory.events low at
   the end. Target: a never below memory_low. Each run also without memory_low on a (the
   control): what a loses then. Twice: a re-reading its file without a pause (hot: the LRU
   alone keeps much of it), then every BENCH_ENGINES_A_PAUSE_S (5) s (an engine's cache in
   periodic use: the LRU prefers b's pages to keep).
3. ctl: ``ccgroupctl --engine e0 status --json`` and ``set --memory 300M|310M --runtime``,
   BENCH_ENGINES_CTL_REPS (30) times each, interleaved, with 1 engine, then with
   BENCH_ENGINES_CTL_ENGINES (10) (idle: ``sleep infinity``; from 1 to 10 and back by
   ``ccgroupctl reload``), then with 1 again; and ``ccgroupctl status --json`` (every engine)
   with 10. Target: medians with 10 engines at most 1.2x those with 1 (both 1-engine runs
   pooled).

Results: $CCGROUPD_RESULTS/engines-bench.json; a table at the end. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

CPU_WARMUP_S = float(os.environ.get("BENCH_ENGINES_CPU_WARMUP_S", "5"))
CPU_WINDOW_S = float(os.environ.get("BENCH_ENGINES_CPU_WINDOW_S", "20"))
CPU_RUNS = int(os.environ.get("BENCH_ENGINES_CPU_RUNS", "3"))
MEMORY_LOW_MIB = int(os.environ.get("BENCH_ENGINES_MEMORY_LOW_MIB", "300"))
A_MIB = int(os.environ.get("BENCH_ENGINES_A_MIB", "350"))
B_ANON_MIB = int(os.environ.get("BENCH_ENGINES_B_ANON_MIB", "200"))
B_FILE_MIB = int(os.environ.get("BENCH_ENGINES_B_FILE_MIB", "300"))
A_PAUSE_S = float(os.environ.get("BENCH_ENGINES_A_PAUSE_S", "5"))
BUDGET_MEMORY_MIB = int(os.environ.get("BENCH_ENGINES_BUDGET_MEMORY_MIB", "700"))
MEMORY_WINDOW_S = float(os.environ.get("BENCH_ENGINES_MEMORY_WINDOW_S", "20"))
CTL_REPS = int(os.environ.get("BENCH_ENGINES_CTL_REPS", "30"))
CTL_ENGINES = int(os.environ.get("BENCH_ENGINES_CTL_ENGINES", "10"))
SAMPLE_S = 0.2
MIB = 1 << 20

CGROOT = Path("/sys/fs/cgroup")
BUDGET = CGROOT / "system.slice/ccgroupd.service/engines"
CONFIG = Path("/etc/ccgroupd/config.toml")
STATE_DIR = Path("/var/lib/ccgroupd")
WORK = Path("/run/ccgroupd-bench-engines")  # the engines' scripts and their "ready" markers
DATA = Path("/var/tmp/ccgroupd-bench-engines")  # their files: on disk, not tmpfs (see memory)
RESULTS = Path(os.environ.get("CCGROUPD_RESULTS", "/tmp"))
# The package's launcher when guest-bench.py has installed it, else the development one.
CTL = "/usr/bin/ccgroupctl" if Path("/usr/bin/ccgroupctl").exists() else "ccgroupctl"

sys.path.insert(0, os.environ.get("BENCH_LIB_DIR", ""))  # where tests/bench/run put guestlib
from guestlib import (  # noqa: E402
    fmt,
    results,
    run,
    run_section,
    say,
    say_verdicts,
    stats,
    target,
    timed,
    unknown_sections,
    wait_for,
)

results["parameters"] = {
    "cpu_warmup_s": CPU_WARMUP_S, "cpu_window_s": CPU_WINDOW_S, "cpu_runs": CPU_RUNS,
    "memory_low_mib": MEMORY_LOW_MIB,
    "a_mib": A_MIB, "b_anon_mib": B_ANON_MIB, "b_file_mib": B_FILE_MIB, "a_pause_s": A_PAUSE_S,
    "budget_memory_mib": BUDGET_MEMORY_MIB, "memory_window_s": MEMORY_WINDOW_S,
    "ctl_reps": CTL_REPS, "ctl_engines": CTL_ENGINES, "ctl": CTL}

BUSY = ["/bin/sh", "-c", "for i in 1 2 3 4; do (while :; do :; done) & done; wait"]
IDLE = ["/bin/sleep", "infinity"]

# An engine that holds a file in the page cache: writes PATH (MIB MiB, fsync'd) after
# touching ANON MiB of anonymous memory, then re-reads it in a loop, PAUSE s between passes,
# so that its pages stay in use; READY is created after the first full pass. With AFTER, it
# first waits for that file.
HOLDER = """import os, sys, time
path, mib, anon_mib, ready, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4], sys.argv[5]
pause = float(sys.argv[6])
while after != "-" and not os.path.exists(after):
    time.sleep(0.1)
anon = bytearray(anon_mib << 20)
for offset in range(0, len(anon), 4096):
    anon[offset] = 1
chunk = os.urandom(1 << 20)
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(chunk)
    f.flush()
    os.fsync(f.fileno())
buffer = bytearray(1 << 20)
first = True
while True:
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    if first:
        open(ready, "w").close()
        first = False
    time.sleep(pause)
"""


# -- the daemon ----------------------------------------------------------------------------

def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)  # strings and lists of strings: JSON's are TOML's too


def write_config(budget: Mapping[str, object], engines: Mapping[str, Mapping[str, object]]) -> None:
    lines = ["[daemon]", 'log_format = "journal"', "", "[budget]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in budget.items()]
    for name, keys in engines.items():
        lines += ["", f"[engines.{name}]", 'mode = "exec"', "stop_grace_s = 2"]
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    CONFIG.write_text("\n".join(lines) + "\n")


def forget_state() -> None:
    for name in ("limits.json", "budget-limits.json"):
        (STATE_DIR / name).unlink(missing_ok=True)
    shutil.rmtree(STATE_DIR / "engines", ignore_errors=True)


def status(engine: str | None = None) -> dict[str, Any]:
    command = [CTL, *(["--engine", engine] if engine else []), "status", "--json"]
    document: dict[str, Any] = json.loads(run(*command).stdout)
    return document


def running(names: list[str]) -> bool:
    """Every engine of ``names`` is known to the daemon, its engine running, and no other."""
    overview = status()
    states = {doc.get("name"): (doc.get("engine") or {}).get("state")
              for doc in overview.get("engines", [])}
    return sorted(states) == sorted(names) and all(s == "running" for s in states.values())


def start(budget: Mapping[str, object], engines: Mapping[str, Mapping[str, object]]) -> None:
    """ccgroupd (re)started with this budget and these engines, from no saved state."""
    stop()
    write_config(budget, engines)
    run("systemctl", "start", "ccgroupd")
    if not wait_for(lambda: running(list(engines)), 60, step_s=0.5):
        raise RuntimeError(f"the engines {list(engines)} did not all come up: "
                           f"{run(CTL, 'status', check=False).stdout[-800:]}")


def stop() -> None:
    run("systemctl", "stop", "ccgroupd", check=False)
    run("systemctl", "reset-failed", "ccgroupd", check=False)
    forget_state()


def group(name: str) -> Path:
    return BUDGET / name


def read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (cpu.stat, memory.events, memory.stat) as name -> number."""
    return {key: int(value) for key, value in
            (line.split() for line in path.read_text().splitlines() if line.strip())}


def usage_usec(path: Path) -> int:
    return read_keyed(path / "cpu.stat")["usage_usec"]


def memory_current(path: Path) -> int:
    return int((path / "memory.current").read_text())


def memory_max_is(path: Path, value: int) -> bool:
    return int((path / "memory.max").read_text()) == value


def kernel_files(path: Path, *names: str) -> dict[str, str]:
    """What the kernel says for these interface files (a record of what the daemon wrote)."""
    return {name: (path / name).read_text().strip() for name in names}


# -- 1. cpu ------------------------------------------------------------------------------------

WEIGHTS = {"one": 100, "two": 200, "three": 500}


def running_on(path: Path) -> list[int]:
    """The vCPU of each runnable (R) task in the group now (/proc/PID/stat's processor)."""
    cpus = []
    for pid in (path / "cgroup.procs").read_text().split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "R":
            cpus.append(int(fields[36]))  # field 39 of proc(5); these start at field 3
    return cpus


def cpu_run(budget: Mapping[str, object]) -> dict[str, Any]:
    """The three busy engines under ``budget``: CPUs of the budget group and each engine's
    share of the engines' sum over the window, and the kernel's throttling counters."""
    total_weight = sum(WEIGHTS.values())
    start(budget, {name: {"command": BUSY, "cpu_weight": weight}
                   for name, weight in WEIGHTS.items()})
    paths = {"budget": BUDGET, **{name: group(name) for name in WEIGHTS}}
    written = {name: kernel_files(path, "cpu.max", "cpu.weight") for name, path in paths.items()}
    time.sleep(CPU_WARMUP_S)
    began, before = time.monotonic(), {name: read_keyed(p / "cpu.stat") for name, p in
                                       paths.items()}
    placement = {name: [0] * (os.cpu_count() or 1) for name in WEIGHTS}
    while time.monotonic() < began + CPU_WINDOW_S:
        time.sleep(min(1.0, max(0.0, began + CPU_WINDOW_S - time.monotonic())))
        for name in WEIGHTS:
            for cpu in running_on(group(name)):
                placement[name][cpu] += 1
    ended, after = time.monotonic(), {name: read_keyed(p / "cpu.stat") for name, p in
                                      paths.items()}
    stop()
    elapsed_usec = (ended - began) * 1e6
    delta = {name: {key: after[name][key] - before[name][key] for key in after[name]}
             for name in paths}
    engines_sum = sum(delta[name]["usage_usec"] for name in WEIGHTS)
    shares = {name: delta[name]["usage_usec"] / engines_sum for name in WEIGHTS}
    ideal = {name: weight / total_weight for name, weight in WEIGHTS.items()}
    out: dict[str, Any] = {
        "budget": dict(budget), "kernel": written, "window_s": round(ended - began, 2),
        "cpu_stat_delta": delta,
        "budget_cpus": round(delta["budget"]["usage_usec"] / elapsed_usec, 4),
        "engines_sum_cpus": round(engines_sum / elapsed_usec, 4),
        "shares": {n: round(v, 4) for n, v in shares.items()}, "ideal": ideal,
        "relative_error": {n: round((shares[n] - ideal[n]) / ideal[n], 4) for n in WEIGHTS},
        "runnable_tasks_by_cpu": placement}
    throttled = delta["budget"].get("nr_throttled")
    say(f"   [budget] {dict(budget) or 'without limits'}: over {ended - began:.1f} s the budget "
        f"group used {out['budget_cpus']:.3f} CPUs (throttled in {throttled} periods; "
        f"cpu.max {written['budget']['cpu.max']})")
    for name, weight in WEIGHTS.items():
        say(f"   {name:5} weight {weight:3} (cpu.weight {written[name]['cpu.weight']}, cpu.max "
            f"{written[name]['cpu.max']}): {delta[name]['usage_usec'] / elapsed_usec:.3f} CPUs, "
            f"share {shares[name]:.3f} (ideal {ideal[name]:.3f}, "
            f"{100 * out['relative_error'][name]:+.1f}%); runnable tasks seen by vCPU "
            f"{placement[name]}")
    return out


def section_cpu() -> None:
    say(f"== engines 1. CPU of 3 busy engines (4 loops each) with cpu_weight "
        f"{':'.join(map(str, WEIGHTS.values()))} under a budget of 2 CPUs: [budget] cpus = 2 "
        "(a quota) and [budget] cpuset_cpus = 0-1 (pinned); for reference the same without "
        "the budget's CPU limit (all 4 vCPUs)")
    results["cpu"] = {}
    for index in range(CPU_RUNS):
        for label, budget in (("cpus = 2", {"cpus": 2}), ("cpuset_cpus = 0-1",
                                                          {"cpuset_cpus": "0-1"})):
            say(f"   - [budget] {label}, run {index + 1} of {CPU_RUNS} (the daemon and engines "
                "started afresh)")
            run = cpu_run(budget)
            key = "budget_cpus_2" if "cpus" in budget else "budget_cpuset_0_1"
            results["cpu"][f"{key}_run{index + 1}"] = run
            combined = run["budget_cpus"]
            target(f"3 engines under [budget] {label} use 2.0 CPUs together (within 5%), run "
                   f"{index + 1}", abs(combined - 2.0) <= 0.05 * 2.0, f"{combined:.3f} CPUs")
            errors = run["relative_error"]
            target(f"cpu_weight 1:2:5 under [budget] {label} gives shares within 10% of 1/8, "
                   f"2/8, 5/8, run {index + 1}", all(abs(e) <= 0.10 for e in errors.values()),
                   ", ".join(f"{run['shares'][n]:.3f} ({100 * errors[n]:+.1f}%)"
                             for n in WEIGHTS))
    say("   - reference: no CPU limit on the budget")
    reference = cpu_run({})
    results["cpu"]["no_budget_cpu_limit"] = reference


# -- 2. memory ---------------------------------------------------------------------------------

def memory_run(protected: bool, pause_s: float) -> dict[str, Any]:
    """One squeeze of a by b; a with memory_low when ``protected``, re-reading its file every
    ``pause_s``. a's memory.current."""
    label = "memory_low" if protected else "control"
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.rmtree(DATA, ignore_errors=True)
    WORK.mkdir(parents=True)
    DATA.mkdir(parents=True)
    # Pages of the previous run's files would be charged to groups that are gone.
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    (WORK / "holder.py").write_text(HOLDER)
    a_ready, b_ready = WORK / "a.ready", WORK / "b.ready"

    def holder(name: str, mib: int, anon_mib: int, ready: Path, *, after: Path | None,
               pause: float) -> list[str]:
        return ["/usr/bin/python3", str(WORK / "holder.py"), str(DATA / name), str(mib),
                str(anon_mib), str(ready), str(after or "-"), str(pause)]

    a: dict[str, object] = {"command": holder("a", A_MIB, 0, a_ready, after=None, pause=pause_s)}
    if protected:
        a["memory_low"] = f"{MEMORY_LOW_MIB}M"
    start({"memory": f"{BUDGET_MEMORY_MIB}M"},
          {"a": a, "b": {"command": holder("b", B_FILE_MIB, B_ANON_MIB, b_ready, after=a_ready,
                                             pause=0)}})
    written = {"budget": kernel_files(BUDGET, "memory.max"),
               "a": kernel_files(group("a"), "memory.low", "memory.min"),
               "b": kernel_files(group("b"), "memory.low", "memory.max")}
    if not wait_for(a_ready.exists, 300, step_s=0.2):
        raise RuntimeError(f"{label}: engine a did not write and read its file")
    a_alone = memory_current(group("a"))
    events_before = read_keyed(group("a") / "memory.events")
    samples: list[tuple[float, int, int]] = []  # (s since b started, a's current, b's current)
    began = time.monotonic()
    steady_from: float | None = None
    while steady_from is None or time.monotonic() < steady_from + MEMORY_WINDOW_S:
        now = time.monotonic()
        samples.append((now - began, memory_current(group("a")), memory_current(group("b"))))
        if steady_from is None and b_ready.exists():
            steady_from = now
        if steady_from is None and now - began > 300:
            raise RuntimeError(f"{label}: engine b did not take its memory in 300 s")
        time.sleep(SAMPLE_S)
    assert steady_from is not None
    steady_at = steady_from - began
    events = read_keyed(group("a") / "memory.events")
    b_events = read_keyed(group("b") / "memory.events")
    budget_events = read_keyed(BUDGET / "memory.events")
    a_stat = read_keyed(group("a") / "memory.stat")
    stop()
    shutil.rmtree(DATA, ignore_errors=True)
    ramp = [s[1] for s in samples if s[0] < steady_at]
    steady = [s[1] for s in samples if s[0] >= steady_at]
    b_steady = [s[2] for s in samples if s[0] >= steady_at]
    out: dict[str, Any] = {
           "kernel": written, "a_alone_bytes": a_alone, "b_ramp_s": round(steady_at, 1),
           "a_min_bytes": min(ramp + steady), "a_min_steady_bytes": min(steady),
           "a_median_steady_bytes": int(statistics.median(steady)),
           "b_median_steady_bytes": int(statistics.median(b_steady)),
           "a_memory_events": events, "a_low_events_during": events["low"] - events_before["low"],
           "b_memory_events": b_events, "budget_memory_events": budget_events,
           "a_memory_stat_end": {k: a_stat[k] for k in ("anon", "file", "active_file",
                                                         "inactive_file") if k in a_stat},
           "samples": [(round(t, 2), a_bytes, b_bytes) for t, a_bytes, b_bytes in samples]}
    say(f"   {label:10}: a alone {a_alone / MIB:.0f} MiB; b took its memory in {steady_at:.1f} s; "
        f"a during the squeeze min {out['a_min_bytes'] / MIB:.1f} MiB, then over "
        f"{MEMORY_WINDOW_S:.0f} s min {min(steady) / MIB:.1f} / median "
        f"{out['a_median_steady_bytes'] / MIB:.1f} MiB (b median "
        f"{out['b_median_steady_bytes'] / MIB:.1f} MiB); a's memory.events low "
        f"{events['low']}; b oom_kill {b_events.get('oom_kill')}; budget max "
        f"{budget_events.get('max')}")
    return out


def section_memory() -> None:
    say(f"== engines 2. memory_low = {MEMORY_LOW_MIB}M of engine a ({A_MIB} MiB of page cache, "
        f"re-read without a pause, then every {A_PAUSE_S:g} s) while b takes {B_ANON_MIB} MiB "
        f"anonymous + {B_FILE_MIB} MiB of page cache (re-read without a pause), [budget] memory "
        f"= {BUDGET_MEMORY_MIB}M; each also without memory_low (the control)")
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    say(f"   swap: {len(swaps)} device(s)" + ("" if swaps else
                                                 " (anonymous memory cannot be reclaimed)"))
    results["memory"] = {"swap_devices": len(swaps)}
    low = MEMORY_LOW_MIB * MIB
    for pause_s in (0.0, A_PAUSE_S):
        variant = f"a re-reads every {pause_s:g} s" if pause_s else "a re-reads without a pause"
        say(f"   - {variant}")
        protected = memory_run(True, pause_s)
        control = memory_run(False, pause_s)
        results["memory"][f"pause_{pause_s:g}s"] = {"protected": protected, "control": control}
        lost = control["a_alone_bytes"] - control["a_median_steady_bytes"]
        kept = protected["a_alone_bytes"] - protected["a_median_steady_bytes"]
        say(f"   control: a lost {lost / MIB:.0f} MiB of {control['a_alone_bytes'] / MIB:.0f} "
            f"(median), down to {control['a_min_bytes'] / MIB:.1f} MiB at the least; with "
            f"memory_low it lost {kept / MIB:.0f} MiB, min {protected['a_min_bytes'] / MIB:.1f}")
        target(f"memory_low = {MEMORY_LOW_MIB}M stays resident under the neighbour's pressure, "
               f"{variant} (min memory.current)", protected["a_min_bytes"] >= low,
               f"min {protected['a_min_bytes'] / MIB:.1f} MiB, median "
               f"{protected['a_median_steady_bytes'] / MIB:.1f} MiB, memory.events low "
               f"{protected['a_memory_events']['low']}; control min "
               f"{control['a_min_bytes'] / MIB:.1f} MiB, median "
               f"{control['a_median_steady_bytes'] / MIB:.1f} MiB")


# -- 3. ctl ------------------------------------------------------------------------------------

def idle_engines(count: int) -> dict[str, dict[str, object]]:
    return {f"e{index}": {"command": IDLE} for index in range(count)}


CTL_BUDGET = {"cpus": 2, "memory": "1G"}


def reload_to(count: int) -> float:
    """Rewrite the config for ``count`` idle engines and `ccgroupctl reload`; its ms."""
    write_config(CTL_BUDGET, idle_engines(count))
    elapsed_ms, ok = timed([CTL, "reload"])
    if not ok:
        raise RuntimeError(f"ccgroupctl reload to {count} engines failed")
    if not wait_for(lambda: running(list(idle_engines(count))), 60, step_s=0.5):
        raise RuntimeError(f"after reload: not {count} engines running: "
                           f"{run(CTL, 'status', check=False).stdout[-800:]}")
    return elapsed_ms


def time_engine_commands(label: str) -> dict[str, dict[str, Any]]:
    """status --json and set --memory --runtime of e0, CTL_REPS each, interleaved."""
    status_ms: list[float] = []
    set_ms: list[float] = []
    failed = 0
    for rep in range(CTL_REPS):
        elapsed, ok = timed([CTL, "--engine", "e0", "status", "--json"])
        status_ms.append(elapsed)
        failed += not ok
        mib = 300 if rep % 2 else 310
        elapsed, ok = timed([CTL, "--engine", "e0", "set", "--memory", f"{mib}M", "--runtime"],
                            after=partial(memory_max_is, group("e0"), mib * MIB))
        set_ms.append(elapsed)
        failed += not ok
    if failed:
        results["errors"].append(f"ctl {label}: {failed} commands failed")
    s_status, s_set = stats(status_ms), stats(set_ms)
    say(f"   {label:11} status --json {fmt(s_status)}, p90 {s_status['p90']:.1f} ms; "
        f"set --runtime {fmt(s_set)}, p90 {s_set['p90']:.1f} ms")
    return {"status": s_status, "set": s_set}


def section_ctl() -> None:
    say(f"== engines 3. ccgroupctl --engine e0 status / set --runtime with 1 and {CTL_ENGINES} "
        f"idle engines ({CTL_REPS} each, interleaved; 1 -> {CTL_ENGINES} -> 1 by reload)")
    start(CTL_BUDGET, idle_engines(1))
    out: dict[str, Any] = {"one_before": time_engine_commands("1 engine")}
    out["reload_to_many_ms"] = reload_to(CTL_ENGINES)
    out["many"] = time_engine_commands(f"{CTL_ENGINES} engines")
    overview_ms = [timed([CTL, "status", "--json"])[0] for _ in range(CTL_REPS)]
    out["overview_status"] = stats(overview_ms)
    say(f"   {CTL_ENGINES} engines: ccgroupctl status --json (all of them) "
        f"{fmt(out['overview_status'])}, p90 {out['overview_status']['p90']:.1f} ms; reload "
        f"1 -> {CTL_ENGINES}: {out['reload_to_many_ms']:.0f} ms")
    out["reload_to_one_ms"] = reload_to(1)
    out["one_after"] = time_engine_commands("1 engine")
    stop()
    for command in ("status", "set"):
        one = stats(out["one_before"][command]["values"] + out["one_after"][command]["values"])
        many = out["many"][command]
        out[f"{command}_one_pooled"] = one
        ratio = many["median"] / one["median"]
        ratio_p90 = many["p90"] / one["p90"]
        out[f"{command}_ratio"] = round(ratio, 3)
        out[f"{command}_ratio_p90"] = round(ratio_p90, 3)
        target(f"ccgroupctl --engine e0 {command} with {CTL_ENGINES} engines within 1.2x of 1 "
               "(median)", ratio <= 1.2,
               f"x{ratio:.2f} ({many['median']:.1f} vs {one['median']:.1f} ms; p90 "
               f"{many['p90']:.1f} vs {one['p90']:.1f} ms, x{ratio_p90:.2f})")
    results["ctl"] = out


def main() -> int:
    sections: dict[str, Callable[[], None]] = {"cpu": section_cpu, "memory": section_memory,
                                               "ctl": section_ctl}
    wanted = sys.argv[1:] or list(sections)
    if unknown_sections(sections, wanted):
        return 2
    original = CONFIG.read_text() if CONFIG.exists() else None
    try:
        for name in wanted:
            run_section(name, sections[name])
    finally:
        stop()
        shutil.rmtree(WORK, ignore_errors=True)
        shutil.rmtree(DATA, ignore_errors=True)
        if original is not None:
            CONFIG.write_text(original)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "engines-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    say("")
    say("=" * 100)
    say_verdicts()
    say("=" * 100)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
