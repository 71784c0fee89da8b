#!/usr/bin/python3
"""Issue 13's benchmarks: build groups made and removed by the real runc, in the test guest.

    tests/bench/run builds

(which ships it with guestlib.py; SECTIONs limits, oom, scale as its arguments when run
by hand in the guest). ccgroupd runs under its unit with the
stand-in engine of tests/vm/scenarios/runc-builds (engine.sh: mode "exec" with a private
cgroup namespace; it runs ``runc run`` without --keep for each build, with
linux.cgroupsPath /buildkit/<id>, so runc creates <engine group>/buildkit/<id> and removes
it the moment the build exits, as BuildKit's runc executor does). Figures only, no timed
assertion; the targets of issue 13 are reported PASS/MISS.

1. limits: BENCH_BUILDS_LIMITS (50) runc builds, one started every BENCH_BUILDS_LIMITS_GAP_S
   (1.0) s; this script watches <engine group>/buildkit with inotify and, from the
   IN_CREATE of each build's group (the creation time: the daemon is woken by the same
   event), reads its memory.max in a tight loop until it is no longer "max": the latency
   of the default limits, median and p95. Each build prints memory.max, pids.max and its
   oom_score_adj at its first instruction: how many saw their limits.
2. oom: BENCH_BUILDS_OOM (20) builds that allocate 400 MiB under [builds] memory = 256M,
   one after the other, runc removing each group at once; ccgroupd's oom_kill record minus
   the kernel's "oom-kill:" line (both on the journal's monotonic clock), the fraction of
   records naming the build (CCGROUPD_BUILD); interleaved every other round with
   systemd's own OOM line for a plain unit (systemd-run -p MemoryMax=64M), against the same
   kind of kernel line: BENCH_BUILDS_SYSTEMD_OOM (10) rounds. [monitor] report_interval_s is
   BENCH_BUILDS_REPORT_INTERVAL_S (2, as in guest-bench.py) and rounds are spaced by
   BENCH_BUILDS_OOM_GAP_S (that + 0.5 s): kills within one report window are summed into one
   record at the window's end.
3. scale: BENCH_BUILDS_SCALE (1000) build groups created and removed at
   BENCH_BUILDS_SCALE_RATE (10) per second. runc cannot start 10 containers a second under
   emulation, so this script does what runc does to the group: mkdir
   <engine group>/buildkit/sN, a process (sleep BENCH_BUILDS_SCALE_LIFE_S, 0.5) started
   inside it, rmdir as soon as it has exited. Daemon CPU % of a core over the run, RSS and
   inotify watches (the "inotify wd:" lines of /proc/PID/fdinfo) before and after (after
   BENCH_BUILDS_SETTLE_S, 10, of rest), and build_finished records counted against the
   groups, with their accounting ("final" / "sampled" / "none").

Results: $CCGROUPD_RESULTS/builds-bench.json; a table at the end. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import traceback
from contextlib import suppress
from pathlib import Path
from typing import Any

LIMITS_N = int(os.environ.get("BENCH_BUILDS_LIMITS", "50"))
LIMITS_GAP_S = float(os.environ.get("BENCH_BUILDS_LIMITS_GAP_S", "1.0"))
OOM_N = int(os.environ.get("BENCH_BUILDS_OOM", "20"))
SYSTEMD_OOM_N = int(os.environ.get("BENCH_BUILDS_SYSTEMD_OOM", "10"))
SCALE_N = int(os.environ.get("BENCH_BUILDS_SCALE", "1000"))
SCALE_RATE = float(os.environ.get("BENCH_BUILDS_SCALE_RATE", "10"))
SCALE_LIFE_S = float(os.environ.get("BENCH_BUILDS_SCALE_LIFE_S", "0.5"))
SETTLE_S = float(os.environ.get("BENCH_BUILDS_SETTLE_S", "10"))
# [monitor] report_interval_s, 2 s as in guest-bench.py (the daemon's default is 10 s); OOM
# rounds are spaced by OOM_GAP_S, more than that: within one report window the daemon sums
# the kills of several builds into one record at the window's end (BENCH_BUILDS_OOM_GAP_S=0
# and BENCH_BUILDS_REPORT_INTERVAL_S=10 show what that costs).
REPORT_INTERVAL_S = float(os.environ.get("BENCH_BUILDS_REPORT_INTERVAL_S", "2"))
OOM_GAP_S = float(os.environ.get("BENCH_BUILDS_OOM_GAP_S", str(REPORT_INTERVAL_S + 0.5)))

CGROOT = Path("/sys/fs/cgroup")
GROUP = CGROOT / "system.slice/ccgroupd.service/dagger-engine"
BUILDKIT = GROUP / "buildkit"
CONFIG = Path("/etc/ccgroupd/config.toml")
STATE = Path("/var/lib/ccgroupd/limits.json")
RB = Path("/run/ccgroupd-runc-builds")
SCENARIOS = Path(os.environ.get("CCGROUPD_SCENARIOS", "/nonexistent"))
RESULTS = Path(os.environ.get("CCGROUPD_RESULTS", "/tmp"))
BUILD_MEMORY = 256 << 20
OOM_MESSAGE_ID = "fe6faa94e7774663a0da52717891d8ef"

sys.path.insert(0, os.environ.get("BENCH_LIB_DIR", ""))  # where tests/bench/run put guestlib
from guestlib import (  # noqa: E402
    event_time,
    fmt,
    journal,
    main_pid,
    monotonic_usec,
    results,
    rss_kib,
    run,
    run_section,
    say,
    say_verdicts,
    schedstat_s,
    stats,
    target,
    unknown_sections,
    wait_for,
)

results["parameters"] = {
    "limits_builds": LIMITS_N, "limits_gap_s": LIMITS_GAP_S, "oom_builds": OOM_N,
    "systemd_oom_rounds": SYSTEMD_OOM_N, "scale_groups": SCALE_N, "scale_rate_per_s": SCALE_RATE,
    "scale_life_s": SCALE_LIFE_S, "settle_s": SETTLE_S, "report_interval_s": REPORT_INTERVAL_S,
    "oom_gap_s": OOM_GAP_S}




















# -- inotify ---------------------------------------------------------------------------------

IN_NONBLOCK = 0o4000
IN_CREATE = 0x100
IN_ISDIR = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    def __init__(self, path: Path) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0 or _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")

    def created(self) -> list[tuple[str, float]]:
        """Directories created since the last call, each with the monotonic time (s) seen."""
        names: list[tuple[str, float]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            now = time.monotonic()
            offset = 0
            while offset < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if mask & IN_ISDIR:
                    names.append((name, now))

    def close(self) -> None:
        os.close(self.fd)


# -- the daemon and the stand-in engine ----------------------------------------------------------

def write_config() -> None:
    CONFIG.write_text(f"""[limits]
cpus = 3
memory = "1500M"
memory_swap = 0

[builds]
memory = "256M"
pids = 64

[monitor]
cpu_poll_interval_s = 5
report_interval_s = {REPORT_INTERVAL_S}

[daemon]
log_format = "journal"

[engine]
mode = "exec"
private_cgroup_namespace = true
command = ["/bin/bash", "{RB}/engine.sh", "{RB}"]
restart = "on-failure"
stop_grace_s = 30
""")




def start() -> None:
    shutil.rmtree(RB, ignore_errors=True)
    (RB / "bundles").mkdir(parents=True)
    for name in ("engine.sh", "build.py"):
        shutil.copy(SCENARIOS / "runc-builds" / name, RB / name)
    os.mkfifo(RB / "requests")
    run("systemctl", "stop", "ccgroupd", check=False)
    run("systemctl", "reset-failed", "ccgroupd", check=False)
    STATE.unlink(missing_ok=True)
    write_config()
    run("systemctl", "start", "ccgroupd")
    if not wait_for(lambda: (RB / "engine.pid").exists() and BUILDKIT.is_dir(), 60):
        raise RuntimeError("the stand-in engine did not come up")


def stop() -> None:
    run("systemctl", "stop", "ccgroupd", check=False)
    runc = ["runc", "--root", str(RB / "runc")]
    for cid in run(*runc, "list", "-q", check=False).stdout.split():
        run(*runc, "delete", "--force", cid, check=False)
    if GROUP.exists():
        for top, _, _ in sorted(os.walk(GROUP), key=lambda w: -len(w[0])):
            with suppress(OSError):
                os.rmdir(top)
    shutil.rmtree(RB, ignore_errors=True)
    STATE.unlink(missing_ok=True)


def bundle(build_id: str, *argv: str) -> Path:
    path = RB / "bundles" / build_id
    path.mkdir(parents=True, exist_ok=True)
    run("runc", "spec", "--bundle", str(path))
    spec = json.loads((path / "config.json").read_text())
    spec["root"] = {"path": str(RB / "rootfs"), "readonly": True}  # the engine binds / there
    spec["process"].update(args=list(argv), terminal=False, cwd="/")
    spec["hostname"] = build_id
    spec["linux"]["cgroupsPath"] = f"/buildkit/{build_id}"
    (path / "config.json").write_text(json.dumps(spec))
    return path


def build(build_id: str, *args: str) -> None:
    """Ask the engine to `runc run` build.py ARGS as build BUILD_ID."""
    path = bundle(build_id, "python3", "-S", str(RB / "build.py"), *args)
    with open(RB / "requests", "w") as fifo:
        fifo.write(f"build {build_id} {path}\n")


def done(build_id: str) -> bool:
    return (RB / "builds" / f"{build_id}.rc").exists()


def seen(build_id: str) -> dict[str, str]:
    """What the build printed at its first instruction (memory.max=..., t_ns=...)."""
    with suppress(OSError):
        for line in (RB / "builds" / f"{build_id}.out").read_text().splitlines():
            if line.startswith("limits "):
                return dict(part.split("=", 1) for part in line.split()[1:])
    return {}






def inotify_watches(pid: int) -> int:
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with suppress(OSError):
            count += sum(line.startswith("inotify wd:") for line in info.read_text().splitlines())
    return count


def builds_status() -> dict[str, Any]:
    status = json.loads(run("ccgroupctl", "status", "--json").stdout)
    return status.get("builds") or {}


def report_failed(build_ids: list[str]) -> dict[str, str]:
    """The builds whose runc run did not exit 0 (or has not exited): exit code and output."""
    failed = {}
    for build_id in build_ids:
        rc = (RB / "builds" / f"{build_id}.rc")
        code = rc.read_text().strip() if rc.exists() else "still running"
        if code != "0":
            with suppress(OSError):
                code += ": " + (RB / "builds" / f"{build_id}.out").read_text()[-300:].strip()
            failed[build_id] = code
    for build_id, why in list(failed.items())[:5]:
        say(f"   ! {build_id}: {why}")
    return failed


# -- 1. limits ---------------------------------------------------------------------------------

def time_limits(watch: Inotify) -> tuple[list[float], list[str]]:
    """Start the builds; for each group that appears, the ms from its IN_CREATE until its
    memory.max is no longer "max"; and the groups where that was never seen."""
    pending: dict[str, float] = {}
    latency_ms: list[float] = []
    never: list[str] = []
    started = appeared = 0
    next_start = time.monotonic()
    deadline = math.inf
    while appeared < LIMITS_N or pending:
        now = time.monotonic()
        if now > deadline:
            break
        if started < LIMITS_N and now >= next_start:
            build(f"l{started}", "exit")
            started += 1
            next_start = now + LIMITS_GAP_S
            if started == LIMITS_N:
                deadline = now + 120
        for name, seen_at in watch.created():
            if name.startswith("l"):
                pending[name] = seen_at
                appeared += 1
        for name, created_at in list(pending.items()):
            try:
                value = (BUILDKIT / name / "memory.max").read_text().strip()
            except OSError:  # gone before we saw a limit
                never.append(name)
                del pending[name]
                continue
            if value != "max":
                latency_ms.append((time.monotonic() - created_at) * 1000)
                del pending[name]
        if pending:
            time.sleep(0.0005)
        else:  # nothing to time: sleep until a group appears or the next build is due
            select.select([watch.fd], [], [], max(0.0, min(1.0, next_start - now)))
    return latency_ms, never + list(pending)


def section_limits() -> None:
    say(f"== builds 1. default limits of {LIMITS_N} runc-created groups (one every "
        f"{LIMITS_GAP_S} s)")
    watch = Inotify(BUILDKIT)
    try:
        latency_ms, never = time_limits(watch)
    finally:
        watch.close()
    wait_for(lambda: all(done(f"l{i}") for i in range(LIMITS_N)), 120)
    failed = report_failed([f"l{i}" for i in range(LIMITS_N)])
    firsts = [seen(f"l{i}") for i in range(LIMITS_N)]
    saw_memory = sum(s.get("memory.max") == str(BUILD_MEMORY) for s in firsts)
    saw_pids = sum(s.get("pids.max") == "64" for s in firsts)
    saw_adj = sum(s.get("oom_score_adj") == "0" for s in firsts)
    printed = sum(bool(s) for s in firsts)
    lat = stats(latency_ms)
    results["limits"] = {"latency_ms": lat, "no_limit_seen": never, "builds_printed": printed,
                         "builds_failed": failed,
                         "first_instruction_saw_memory_max": saw_memory,
                         "first_instruction_saw_pids_max": saw_pids,
                         "first_instruction_oom_score_adj_0": saw_adj}
    say(f"   creation -> memory.max written: {fmt(lat, p95=True)}; never seen: {len(never)} "
        f"{never[:5]}; "
        f"runc run failed: {len(failed)}")
    say(f"   at the build's first instruction: memory.max 256M in {saw_memory}/{printed}, "
        f"pids.max 64 in {saw_pids}/{printed}, oom_score_adj 0 in {saw_adj}/{printed}")
    if lat["n"]:
        target("a build group gets its default limits within 20 ms (median) of its creation",
               lat["median"] <= 20 and not never, fmt(lat, p95=True))


# -- 2. oom ------------------------------------------------------------------------------------

def kernel_oom_lines(since: int) -> list[dict[str, Any]]:
    return [r for r in journal(kernel=True, since_usec=since)
            if str(r.get("MESSAGE", "")).startswith("oom-kill:")]


def systemd_oom(rep: int) -> dict[str, Any] | None:
    unit = f"bench-builds-oom-{rep}.service"
    since = monotonic_usec()
    try:
        run("systemd-run", "--wait", "--quiet", "--unit", unit, "-p", "MemoryMax=64M",
            "-p", "MemorySwapMax=0", "stress-ng", "--vm", "1", "--vm-bytes", "200M",
            "--vm-keep", "--timeout", "3s", check=False, timeout=60)
    finally:
        run("systemctl", "stop", unit, check=False)
        run("systemctl", "reset-failed", unit, check=False)
    kills = [r for r in kernel_oom_lines(since)
             if f"task_memcg=/system.slice/{unit}," in r["MESSAGE"]]
    records = journal(f"MESSAGE_ID={OOM_MESSAGE_ID}", f"UNIT={unit}", since_usec=since)
    if not kills or not records:
        say(f"   ! systemd round {rep}: {len(kills)} kernel lines, {len(records)} OOM records")
        return None
    kernel_usec = int(kills[0]["_SOURCE_MONOTONIC_TIMESTAMP"])
    return {"latency_ms": (event_time(records[0])[0] - kernel_usec) / 1000}


def section_oom() -> None:
    say(f"== builds 2. OOM records of {OOM_N} builds killed under [builds] memory = 256M "
        f"(runc removes each group), systemd's OOM line in {SYSTEMD_OOM_N} rounds")
    since = monotonic_usec()
    windows: list[tuple[str, int]] = []
    theirs: list[float] = []
    systemd_every = max(1, OOM_N // SYSTEMD_OOM_N) if SYSTEMD_OOM_N else 0
    for rep in range(OOM_N):
        build_id = f"o{rep}"
        windows.append((build_id, monotonic_usec()))
        build(build_id, "hog", "400")
        if not wait_for(lambda build_id=build_id: done(build_id), 120):
            say(f"   ! {build_id} did not end")
        time.sleep(OOM_GAP_S)
        if systemd_every and rep % systemd_every == 0 and len(theirs) < SYSTEMD_OOM_N:
            systemd = systemd_oom(rep)
            if systemd:
                theirs.append(systemd["latency_ms"])
    time.sleep(3)
    kernel = kernel_oom_lines(since)
    records = journal("_SYSTEMD_UNIT=ccgroupd.service", "CCGROUPD_EVENT=oom_kill", since_usec=since)
    prefix = f"task_memcg=/{GROUP.relative_to(CGROOT)}/buildkit/"
    ours: list[float] = []
    attributed = killed = 0
    rounds = []
    for index, (build_id, start_usec) in enumerate(windows):
        end_usec = windows[index + 1][1] if index + 1 < len(windows) else 1 << 62
        line = next((r for r in kernel if prefix + build_id + "," in r["MESSAGE"]), None)
        mine = [r for r in records if r.get("CCGROUPD_BUILD") == f"buildkit/{build_id}"]
        unnamed = [r for r in records if "CCGROUPD_BUILD" not in r
                   and start_usec <= int(r["__MONOTONIC_TIMESTAMP"]) < end_usec]
        killed += line is not None
        attributed += bool(mine)
        entry: dict[str, Any] = {"build": build_id, "kernel_line": line is not None,
                                 "attributed": bool(mine), "unattributed_records": len(unnamed)}
        record = (mine or unnamed)[0] if mine or unnamed else None
        if line is not None and record is not None:
            kernel_usec = int(line["_SOURCE_MONOTONIC_TIMESTAMP"])
            entry["latency_ms"] = (event_time(record)[0] - kernel_usec) / 1000
            ours.append(entry["latency_ms"])
        if mine:
            entry.update(victim_comm=mine[0].get("CCGROUPD_VICTIM_COMM"),
                         victim_rss_bytes=mine[0].get("CCGROUPD_VICTIM_RSS_BYTES"),
                         command=mine[0].get("CCGROUPD_BUILD_COMMAND"))
        rounds.append(entry)
    s_ours, s_theirs = stats(ours), stats(theirs)
    results["oom"] = {"ccgroupd_ms": s_ours, "systemd_ms": s_theirs, "kernel_kills": killed,
                      "attributed": attributed, "builds": OOM_N, "rounds": rounds}
    say(f"   kernel oom-kill lines for {killed}/{OOM_N} builds; ccgroupd records naming the "
        f"build: {attributed}/{killed}")
    say(f"   ccgroupd oom_kill - kernel oom-kill line: {fmt(s_ours, p95=True)}")
    say(f"   systemd OOM line - kernel oom-kill line:  {fmt(s_theirs, p95=True)}")
    if s_ours["n"]:
        target("OOM records with the build's attribution within 100 ms of the kernel's",
               attributed == killed == OOM_N and s_ours["max"] <= 100,
               f"{attributed}/{OOM_N} attributed; {fmt(s_ours, p95=True)}")
        if s_theirs["n"]:
            target("ccgroupd's OOM record no later than systemd's (medians)",
                   s_ours["median"] <= s_theirs["median"],
                   f"ccgroupd {s_ours['median']:.1f} ms vs systemd {s_theirs['median']:.1f} ms")


# -- 3. scale ----------------------------------------------------------------------------------

def section_scale() -> None:
    say(f"== builds 3. {SCALE_N} build groups created and removed at {SCALE_RATE}/s "
        f"(mkdir, a {SCALE_LIFE_S} s process inside, rmdir at its exit: what runc does)")
    pid = main_pid()
    time.sleep(SETTLE_S)
    status_before = builds_status()
    rss0, watches0, cpu0 = rss_kib(pid), inotify_watches(pid), schedstat_s(pid)
    since = monotonic_usec()
    started_at = time.monotonic()
    running: dict[str, subprocess.Popen[bytes]] = {}
    removed = failed_rmdir = 0
    for index in range(SCALE_N):
        name = f"s{index}"
        (BUILDKIT / name).mkdir()
        running[name] = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {BUILDKIT / name}/cgroup.procs && exec sleep {SCALE_LIFE_S}'])
        for other, process in list(running.items()):
            if process.poll() is not None:
                try:
                    (BUILDKIT / other).rmdir()
                    removed += 1
                except OSError:
                    failed_rmdir += 1
                del running[other]
        time.sleep(max(0.0, started_at + (index + 1) / SCALE_RATE - time.monotonic()))
    for name, process in running.items():
        process.wait()
        (BUILDKIT / name).rmdir()
        removed += 1
    elapsed = time.monotonic() - started_at
    cpu1 = schedstat_s(pid)
    rss_peak = rss_kib(pid)
    time.sleep(SETTLE_S)
    rss1, watches1 = rss_kib(pid), inotify_watches(pid)
    records = journal("_SYSTEMD_UNIT=ccgroupd.service", "CCGROUPD_EVENT=build_finished",
                      since_usec=since)
    mine = {r.get("CCGROUPD_BUILD"): r for r in records
            if str(r.get("CCGROUPD_BUILD", "")).startswith("buildkit/s")}
    accounting: dict[str, int] = {}
    for record in mine.values():
        kind = str(record.get("CCGROUPD_ACCOUNTING"))
        accounting[kind] = accounting.get(kind, 0) + 1
    status_after = builds_status()
    cpu_pct = 100 * (cpu1 - cpu0) / elapsed
    results["scale"] = {
        "groups": SCALE_N, "seconds": round(elapsed, 1), "rate_per_s": round(SCALE_N / elapsed, 2),
        "removed": removed, "rmdir_failed": failed_rmdir,
        "daemon_cpu_s": round(cpu1 - cpu0, 3), "daemon_cpu_pct_of_core": round(cpu_pct, 2),
        "rss_kib_before": rss0, "rss_kib_end_of_run": rss_peak, "rss_kib_after": rss1,
        "inotify_watches_before": watches0, "inotify_watches_after": watches1,
        "build_finished_records": len(mine), "accounting": accounting,
        "status_before": status_before, "status_after": status_after}
    say(f"   {SCALE_N} groups in {elapsed:.0f} s ({SCALE_N / elapsed:.1f}/s); daemon CPU "
        f"{cpu1 - cpu0:.1f} s = {cpu_pct:.2f}% of a core")
    say(f"   daemon RSS {rss0 / 1024:.1f} MiB before, {rss_peak / 1024:.1f} MiB at the end of "
        "the run, "
        f"{rss1 / 1024:.1f} MiB {SETTLE_S:.0f} s later; inotify watches {watches0} -> {watches1}")
    say(f"   build_finished records: {len(mine)}/{SCALE_N}, accounting {accounting}")
    say(f"   status builds before {status_before}; after {status_after}")
    target(f"{SCALE_N} groups at {SCALE_RATE:g}/s: daemon CPU under 5% of a core", cpu_pct < 5,
           f"{cpu_pct:.2f}%")
    target("RSS back within 2 MiB of before", rss1 - rss0 <= 2048,
           f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
    target("no growth in inotify watches", watches1 <= watches0, f"{watches0} -> {watches1}")
    target("100% build_finished records", len(mine) == SCALE_N,
           f"{len(mine)}/{SCALE_N}, accounting {accounting}")


def main() -> int:
    sections = {"limits": section_limits, "oom": section_oom, "scale": section_scale}
    wanted = sys.argv[1:] or list(sections)
    if unknown_sections(sections, wanted):
        return 2
    original = CONFIG.read_text() if CONFIG.exists() else None
    try:
        start()
        say(f"   daemon pid {main_pid()}, engine pid {(RB / 'engine.pid').read_text().strip()}")
        for name in wanted:
            run_section(name, sections[name])
    except Exception as error:
        traceback.print_exc()
        results["errors"].append(f"setup: {error!r}")
    finally:
        stop()
        if original is not None:
            CONFIG.write_text(original)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "builds-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    say("")
    say("=" * 100)
    say_verdicts()
    say("=" * 100)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
