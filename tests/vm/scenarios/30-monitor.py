#!/opt/ccgroupd/venv/bin/python3
"""Real kernel: the Monitor turns OOM kills, CPU throttling, pids.max and a memory.high storm
into journald records (latency, fractions and record counts are printed).

Runs as root in the guest. A scratch group G under the cgroup root gets memory.max 64M,
pids.max 20, cpu.max "50000 100000"; the load runs in child groups of G, as the Dagger
engine's build containers do (G/buildkit/<id>). The Monitor runs in this process with
journald logging, exactly as the daemon configures it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccgroupd.config import MonitorSection
from ccgroupd.daemon.logsetup import configure_logging
from ccgroupd.daemon.monitor.core import Monitor
from ccgroupd.events import EVENTS, render_catalog
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs

G = "ccgroupd-monitor-test"
REPORT_INTERVAL_S = 4.0
SETTINGS = MonitorSection(cpu_poll_interval_s=2.0, throttle_threshold=0.1,
                          report_interval_s=REPORT_INTERVAL_S)
CATALOG = Path("/usr/lib/systemd/catalog/ccgroupd.catalog")
RESULTS = Path(os.environ.get("CCGROUPD_RESULTS", "/tmp"))

fs = Cgroupfs()
failures: list[str] = []
figures: dict[str, Any] = {}
# Cleared while a phase must see what inotify alone reports.
polling = asyncio.Event()
polling.set()
# Forks until the kernel refuses one; writes the CLOCK_MONOTONIC microsecond of the refusal.
FIRST_REFUSAL = """
import os, sys, time
children = []
while len(children) < 100:
    try:
        pid = os.fork()
    except OSError:
        refused = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    children.append(pid)
else:
    refused = 0
with open(sys.argv[1], "w") as marker:
    marker.write(str(refused))
for pid in children:
    os.waitpid(pid, 0)
"""


def check(what: str, ok: bool) -> None:
    print(f"{'ok' if ok else 'FAILED'}: {what}", flush=True)
    if not ok:
        failures.append(what)


def journal(*matches: str, kernel: bool = False) -> list[dict[str, Any]]:
    subprocess.run(["journalctl", "--sync"], check=True)
    command = ["journalctl", "-b", "-o", "json", "--no-pager", *(["-k"] if kernel else []),
               *matches]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def ours(event: str, since_usec: int) -> list[dict[str, Any]]:
    return [r for r in journal(f"CCGROUPD_EVENT={event}")
            if int(r["__MONOTONIC_TIMESTAMP"]) >= since_usec]


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


async def run_in(group: str, command: str, timeout_s: float) -> None:
    """Start ``command`` inside ``group`` (it joins before exec) and wait for it."""
    fs.create(group)
    procs = fs.path(group, "cgroup.procs")
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", f'echo $$ > {procs} && exec {command}',
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
    fs.kill(group)


def cpu_stat() -> dict[str, int]:
    return fs.read_flat_keyed(G, "cpu.stat")


def setup() -> None:
    CATALOG.write_text(render_catalog())
    subprocess.run(["journalctl", "--update-catalog"], check=True)
    if fs.exists(G):
        fs.kill(G)
        fs.remove(G)
    fs.enable_controllers("", ["cpu", "memory", "pids"])
    fs.create(G)
    fs.enable_controllers(G, ["cpu", "memory", "pids"], top=G)
    fs.create(f"{G}/buildkit")
    fs.enable_controllers(f"{G}/buildkit", ["memory"], top=f"{G}/buildkit")
    fs.write(G, "memory.max", "64M")
    if fs.path(G, "memory.swap.max").exists():
        fs.write(G, "memory.swap.max", "0")
    fs.write(G, "pids.max", "20")
    fs.write(G, "cpu.max", "50000 100000")
    print(f"kernel {os.uname().release}; G files: memory.peak "
          f"{'present' if fs.path(G, 'memory.peak').exists() else 'absent'}, memory.swap.events "
          f"{'present' if fs.path(G, 'memory.swap.events').exists() else 'absent'}", flush=True)


async def phase_oom() -> None:
    print("== OOM: stress-ng --vm 200M in G/buildkit/abc under G's memory.max 64M", flush=True)
    since = monotonic_usec()
    await run_in(f"{G}/buildkit/abc",
                 "stress-ng --vm 1 --vm-bytes 200M --vm-keep --timeout 6s", 30)
    await asyncio.sleep(REPORT_INTERVAL_S + 1)  # the last window's flush
    records = ours("oom_kill", since)
    check(f"an oom_kill record ({len(records)} records)", bool(records))
    if not records:
        return
    first = records[0]
    for field in ("CCGROUPD_CGROUP", "CCGROUPD_DELTA", "CCGROUPD_TOTAL", "CCGROUPD_LIMIT_BYTES",
                  "CCGROUPD_USAGE_BYTES", "CCGROUPD_MEMORY_STAT_BYTES", "CCGROUPD_TOP_PROCESSES",
                  "CCGROUPD_OOM_GROUPS", "MESSAGE_ID", "MESSAGE", "PRIORITY"):
        check(f"oom_kill record has {field}", field in first)
    print("   MESSAGE:", first.get("MESSAGE"))
    print("   snapshot:", {k: v for k, v in first.items() if k.startswith("CCGROUPD_")})
    check("MESSAGE_ID is the registered one",
          first.get("MESSAGE_ID") == EVENTS["oom_kill"].message_id)
    check("CCGROUPD_CGROUP is the absolute path", first.get("CCGROUPD_CGROUP") == str(fs.path(G)))
    check("CCGROUPD_LIMIT_BYTES is 64 MiB", first.get("CCGROUPD_LIMIT_BYTES") == str(64 << 20))
    check("the kill is placed in buildkit/abc",
          "buildkit/abc" in json.loads(first.get("CCGROUPD_OOM_GROUPS", "{}")))
    delta_total = sum(int(r["CCGROUPD_DELTA"]) for r in records)
    kernel_kills = [r for r in journal(kernel=True)
                    if "Memory cgroup out of memory: Killed process" in str(r.get("MESSAGE"))
                    and int(r["__MONOTONIC_TIMESTAMP"]) >= since]
    memory_events = fs.read_flat_keyed(G, "memory.events")
    print(f"   {len(records)} oom_kill records, deltas sum {delta_total}; kernel logged "
          f"{len(kernel_kills)} kills; G memory.events oom_kill {memory_events['oom_kill']}")
    check("the deltas add up to the kernel's count", delta_total == memory_events["oom_kill"])
    bound = math.ceil(8 / REPORT_INTERVAL_S) + 2
    check(f"records bounded ({len(records)} <= {bound})", len(records) <= bound)
    if kernel_kills:
        kill_usec = int(kernel_kills[0]["_SOURCE_MONOTONIC_TIMESTAMP"])
        ours_usec = int(first["__MONOTONIC_TIMESTAMP"])
        delay_ms = (ours_usec - kill_usec) / 1000
        figures["oom_latency_ms"] = delay_ms
        print(f"   latency: kernel kill at {kill_usec} us, our record at {ours_usec} us "
              f"-> {delay_ms:.1f} ms", flush=True)
        check(f"oom_kill record within 1 s of the kernel's kill ({delay_ms:.1f} ms)",
              0 <= delay_ms < 1000)
    explained = subprocess.run(
        ["journalctl", "-b", "-x", "--no-pager", "-n", "1", "CCGROUPD_EVENT=oom_kill"],
        check=True, capture_output=True, text=True).stdout
    print("   journalctl -x:\n" + "\n".join("      " + line for line in explained.splitlines()))
    check("journalctl -x shows the catalog entry", "Defined-By: ccgroupd" in explained
          and "OOM killer killed processes in" in explained)


async def phase_cpu() -> None:
    print("== CPU: stress-ng --cpu 1 in G/cpu under cpu.max 50000 100000", flush=True)
    since = monotonic_usec()
    before, started = cpu_stat(), time.monotonic()
    await run_in(f"{G}/cpu", "stress-ng --cpu 1 --timeout 10s", 30)
    after, elapsed_s = cpu_stat(), time.monotonic() - started
    await asyncio.sleep(SETTINGS.cpu_poll_interval_s)
    records = ours("cpu_throttled", since)
    check(f"cpu_throttled records ({len(records)})", bool(records))
    periods = after["nr_periods"] - before["nr_periods"]
    kernel_periods = (after["nr_throttled"] - before["nr_throttled"]) / max(periods, 1)
    kernel_time = (after["throttled_usec"] - before["throttled_usec"]) / (elapsed_s * 1e6)
    figures["cpu_kernel"] = {"periods_fraction": round(kernel_periods, 3),
                             "time_fraction": round(kernel_time, 3)}
    print(f"   kernel cpu.stat over the phase ({elapsed_s:.1f} s): throttled periods "
          f"{kernel_periods:.3f}, throttled time {kernel_time:.3f}")
    figures["cpu_records"] = []
    for record in records:
        fractions = (float(record["CCGROUPD_THROTTLED_PERIODS_FRACTION"]),
                     float(record["CCGROUPD_THROTTLED_TIME_FRACTION"]))
        figures["cpu_records"].append(fractions)
        print(f"   record: periods {fractions[0]:.3f}, time {fractions[1]:.3f} over "
              f"{record['CCGROUPD_INTERVAL_S']} s: {record['MESSAGE']}")
    if records:
        periods_fraction = float(records[0]["CCGROUPD_THROTTLED_PERIODS_FRACTION"])
        check(f"reported periods fraction {periods_fraction:.2f} near the kernel's "
              f"{kernel_periods:.2f}", abs(periods_fraction - kernel_periods) < 0.25)


async def phase_pids() -> None:
    print("== pids: a fork bomb in G/bomb against G's pids.max 20", flush=True)
    since = monotonic_usec()
    await run_in(f"{G}/bomb", "timeout 5 sh -c 'f() { f & f & wait; }; f'", 30)
    # Kernel 6.1 counts refusals in G/bomb, not G: found by a subtree poll, then flushed.
    await asyncio.sleep(SETTINGS.cpu_poll_interval_s + REPORT_INTERVAL_S + 1)
    records = ours("pids_max", since)
    own = fs.read_flat_keyed(G, "pids.events")
    bomb = fs.read_flat_keyed(f"{G}/bomb", "pids.events")
    delta_total = sum(int(r["CCGROUPD_DELTA"]) for r in records)
    figures["pids"] = {"records": len(records), "deltas": delta_total,
                       "G_events_max": own.get("max"), "bomb_events_max": bomb.get("max")}
    print(f"   G pids.events max {own.get('max')}, G/bomb pids.events max {bomb.get('max')}, "
          f"{len(records)} pids_max records, deltas sum {delta_total}")
    check("a pids_max record", bool(records))
    check("the deltas add up to the refusals counted in the subtree",
          delta_total == own.get("max", 0) + bomb.get("max", 0))
    for record in records:
        print(f"   record: {record['MESSAGE']}")

    print("== pids again: G/bomb is known now, its pids.events watched; polling paused",
          flush=True)
    marker = Path("/run/ccgroupd-monitor-test-refusal")
    since = monotonic_usec()
    polling.clear()
    try:
        await run_in(f"{G}/bomb", f"python3 -c '{FIRST_REFUSAL}' {marker}", 30)
        await asyncio.sleep(1)
        records = ours("pids_max", since)
    finally:
        polling.set()
    refused_usec = int(marker.read_text())
    marker.unlink()
    check("the kernel refused a fork", refused_usec > 0)
    check("a pids_max record without a poll (inotify on the child group's pids.events)",
          bool(records))
    if records and refused_usec:
        latency_ms = (int(records[0]["__MONOTONIC_TIMESTAMP"]) - refused_usec) / 1000
        figures["pids_watched_latency_ms"] = round(latency_ms, 1)
        print(f"   reported {latency_ms:.1f} ms after the first refused fork")


async def phase_storm() -> None:
    print("== storm: memory.high 4M on G, stress-ng --vm 32M in G/buildkit/storm", flush=True)
    fs.write(G, "memory.high", "4M")
    since = monotonic_usec()
    duration_s = 12
    await run_in(f"{G}/buildkit/storm",
                 f"stress-ng --vm 1 --vm-bytes 32M --vm-keep --timeout {duration_s}s", 40)
    fs.write(G, "memory.high", "max")
    await asyncio.sleep(REPORT_INTERVAL_S + 1)
    records = ours("memory_high", since)
    elapsed_s = (monotonic_usec() - since) / 1e6
    delta_total = sum(int(r["CCGROUPD_DELTA"]) for r in records)
    stamps_s = [int(r["__MONOTONIC_TIMESTAMP"]) / 1e6 for r in records]
    gaps_s = [round(later - earlier, 2) for earlier, later in itertools.pairwise(stamps_s)]
    bound = math.ceil(elapsed_s / REPORT_INTERVAL_S) + 1
    kernel_high = fs.read_flat_keyed(G, "memory.events")["high"]
    figures["storm"] = {"records": len(records), "events": delta_total, "bound": bound,
                        "elapsed_s": round(elapsed_s, 1), "gaps_s": gaps_s}
    print(f"   {len(records)} memory_high records for {delta_total} kernel events "
          f"(G memory.events high {kernel_high}) over {elapsed_s:.1f} s "
          f"(report interval {REPORT_INTERVAL_S} s); gaps between records {gaps_s} s")
    check("memory_high records", bool(records))
    check(f"storm records bounded: one per interval ({len(records)} <= {bound})",
          len(records) <= bound)
    # Journald stamps on receipt, so allow it a little jitter.
    check(f"no two records closer than the report interval (min gap {min(gaps_s, default=0)} s)",
          all(gap >= REPORT_INTERVAL_S - 0.2 for gap in gaps_s))


async def poll_forever(monitor: Monitor) -> None:
    """The daemon's housekeeping tick, as far as the Monitor sees it: poll() per interval."""
    while True:
        await polling.wait()
        monitor.poll()
        await asyncio.sleep(SETTINGS.cpu_poll_interval_s)


async def main() -> int:
    setup()
    configure_logging("journal")
    monitor = Monitor(fs, Procfs(), G, SETTINGS)
    watching = asyncio.create_task(monitor.run())
    await asyncio.sleep(0)  # run() takes its baseline before the first poll, as in the daemon
    polling = asyncio.create_task(poll_forever(monitor))
    task = asyncio.gather(watching, polling)
    phases: list[Callable[[], Any]] = [phase_oom, phase_cpu, phase_pids, phase_storm]
    try:
        for phase in phases:
            await phase()
            if task.done():
                task.result()  # the Monitor crashed: raise its error
        print("counters():", monitor.counters())
        print("last_violation():", monitor.last_violation())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fs.kill(G)
        fs.remove(G)
        # Leave the host as found: 50-deb compares the file system around its install.
        CATALOG.unlink(missing_ok=True)
        subprocess.run(["journalctl", "--update-catalog"], check=True)
    (RESULTS / "30-monitor.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    print("FAILURES:", failures if failures else "none")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
