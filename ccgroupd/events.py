"""The registry of every event ccgroupd logs: name, MESSAGE_ID, level, message, catalog text.

An event name is the first argument of a log call (``log.warning("oom_kill",
cgroup=..., delta=1, total=3)``). The journald output (ccgroupd.daemon.logsetup) looks
the name up here for the record's MESSAGE_ID and for a human MESSAGE built from
the fields; systemd/ccgroupd.catalog explains each MESSAGE_ID for
``journalctl -x`` and is generated from this module (``python3 -m
ccgroupd.events > systemd/ccgroupd.catalog``), so the two cannot drift (a test
compares them). A test also scans the sources so that no log call uses a name
missing here.

MESSAGE_IDs were generated once with ``uuid.uuid4().hex`` and must never change:
journal queries and alerting rules match on them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ccgroupd.values import format_bytes

SUPPORT_URL = "file:///usr/share/doc/ccgroupd/README.md"

# structlog level name -> journald/syslog PRIORITY.
PRIORITIES: Mapping[str, int] = {
    "critical": 2,
    "error": 3,
    "warning": 4,
    "info": 6,
    "debug": 7,
}


class Fields:
    """Read-only view of a record's fields for message templates; a missing field shows as "?"."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        self._fields = fields

    def has(self, key: str) -> bool:
        return self._fields.get(key) is not None

    def text(self, key: str) -> str:
        value = self._fields.get(key)
        if value is None:
            return "?"
        if isinstance(value, Mapping):
            # "." is the watched group itself (names are relative to it).
            return ", ".join(f"{'the group itself' if name == '.' else name}: {item}"
                             for name, item in value.items())
        return str(value)

    def size(self, key: str) -> str:
        """A byte count for humans ("7.9 GiB"); None (no limit) reads "max"."""
        if key not in self._fields:
            return "?"
        value = self._fields[key]
        if value is None or isinstance(value, int):
            return format_bytes(value)
        return str(value)

    def count(self, key: str, singular: str, plural: str | None = None) -> str:
        value = self._fields.get(key)
        noun = singular if value == 1 else (plural or singular + "s")
        return f"{'?' if value is None else value} {noun}"

    def percent(self, key: str) -> str:
        value = self._fields.get(key)
        return f"{value:.0%}" if isinstance(value, int | float) else "?"


@dataclass(frozen=True)
class EventType:
    name: str
    message_id: str
    levels: frozenset[str]  # levels a log call may use for this event; PRIORITY follows the call
    render: Callable[[Fields], str]
    subject: str  # catalog Subject:; may use @CCGROUPD_FIELD@ substitutions
    explanation: str  # catalog body: what happened and what to do

    def message(self, fields: Mapping[str, object]) -> str:
        return self.render(Fields(fields))


def _limit_event(what: str, limit_file: str) -> Callable[[Fields], str]:
    def render(f: Fields) -> str:
        return (f"{f.text('cgroup')} {what} {f.count('delta', 'time')} "
                f"({f.text('total')} since start); {limit_file} {f.size('limit_bytes')}")
    return render


def _oom_kill(f: Fields) -> str:
    # The kernel's count (delta) counts a memory.oom.group victim twice; the kernel log's
    # distinct pids (victims), where known, do not.
    killed = 'victims' if f.has("victims") else 'delta'
    message = (f"OOM killer killed {f.count(killed, 'process', 'processes')} in "
               f"{f.text('cgroup')} ({f.text('total')} since start); "
               f"memory.max {f.size('limit_bytes')}, usage {f.size('usage_bytes')}")
    if f.has("peak_bytes"):
        message += f", peak {f.size('peak_bytes')}"
    if f.has("oom_groups"):
        message += f"; killed in {f.text('oom_groups')}"
    if f.has("build"):
        message += (f"; victim {f.text('victim_comm')} (pid {f.text('victim_pid')}, RSS "
                    f"{f.size('victim_rss_bytes')}) in build {f.text('build')}: "
                    f"{f.text('build_command')}")
    return message


def _cpu_throttled(f: Fields) -> str:
    message = (f"{f.text('cgroup')} was CPU-throttled in "
               f"{f.percent('throttled_periods_fraction')} of scheduler periods "
               f"({f.count('delta', 'period')}) and {f.percent('throttled_time_fraction')} of "
               f"the time over {f.text('interval_s')} s; cpu.max allows "
               f"{f.text('limit_cpus')} CPUs")
    if f.has("build"):
        message += (f"; build {f.text('build')}: {f.text('build_command')} (the most "
                    f"throttled of {f.count('builds_throttled', 'build')})")
    return message


def _pids_max(f: Fields) -> str:
    message = (f"{f.text('cgroup')}: fork() refused at pids.max {f.text('limit_pids')} "
               f"{f.count('delta', 'time')} ({f.text('total')} since start)")
    if f.has("build"):
        message += f"; in build {f.text('build')}: {f.text('build_command')}"
    if f.has("build_limit_pids"):
        message += f" (its own pids.max {f.text('build_limit_pids')})"
    return message


def _build_finished(f: Fields) -> str:
    return (f"Build {f.text('build')} ({f.text('command')}) finished after "
            f"{f.text('duration_s')} s: CPU {f.text('cpu_usage_s')} s, peak memory "
            f"{f.size('memory_peak_bytes')}, {f.count('oom_kills', 'OOM kill')}, "
            f"{f.count('pids_refused', 'refused fork')}; accounting {f.text('accounting')}")


def _engine_exited(f: Fields) -> str:
    if f.has("error"):
        return f"Dagger engine could not be started: {f.text('error')}"
    if f.has("signal"):
        how = f"was killed by signal {f.text('signal')}"
    else:
        how = f"exited with code {f.text('exit_code')}"
    if f.has("oom_killed") and f.text("oom_killed") == "True":
        how += " (OOM-killed)"
    if f.has("stopped"):
        how += " after it was asked to stop"
    return f"Dagger engine (pid {f.text('pid')}) {how}"


def _limits(verb: str) -> Callable[[Fields], str]:
    def render(f: Fields) -> str:
        values = f.text("values") if f.has("values") else f"{f.text('old')} -> {f.text('new')}"
        how = f" ({f.text('scope')}, uid {f.text('uid')})" if f.has("uid") else ""
        return f"Limits {verb} on {f.text('cgroup')}{how}: {values}"
    return render


_EVENTS = (
    EventType(
        "build_defaults_changed", "3625c7923b16450ba52cc14d58cabd20", frozenset({"info"}),
        lambda f: (f"Build default limits changed ({f.text('scope')}, uid {f.text('uid')}"
                   f"{', running builds too' if f.text('running') == 'True' else ''}): "
                   f"{f.text('old')} -> {f.text('new')}"),
        "Default limits of builds changed",
        "ccgroupctl set --build-... changed the limits every new build gets (with --running,\n"
        "the running builds got them too). CCGROUPD_OLD and CCGROUPD_NEW show the values.",
    ),
    EventType(
        "build_finished", "ee3dd3c13d2b482fb87e804a59c07c69", frozenset({"info"}),
        _build_finished,
        "Build @CCGROUPD_BUILD@ finished",
        "A build container below the engine's cgroup ended. The record gives what it\n"
        "used: CPU seconds, peak memory (memory.peak, or the highest sample where the\n"
        "kernel has none), OOM kills, refused forks and throttled time. CCGROUPD_ACCOUNTING\n"
        "is final when the figures were read as the build's last process exited, sampled\n"
        "when the runtime had already removed its group (the figures are then from the\n"
        "last periodic sample), none when there was no sample either.",
    ),
    EventType(
        "build_limits_failed", "ff4e6ee9004e4ceebd2c373e7d37a286", frozenset({"warning"}),
        lambda f: f"Could not write {f.text('value')} to {f.text('cgroup')}: {f.text('error')}",
        "Build limits could not be written",
        "ccgroupd could not write a build's default or rule limits into its group (a\n"
        "controller not enabled for it, a value the kernel refuses). This is logged once;\n"
        "ccgroupctl status counts later failures in builds.limit_failures_total.",
    ),
    EventType(
        "kernel_log_unavailable", "c0f806d88d5c4034bb46a07a558d8bae", frozenset({"warning"}),
        lambda f: f"Cannot read the kernel log {f.text('file')}: {f.text('error')}",
        "The kernel log cannot be read",
        "ccgroupd reads /dev/kmsg to name the build of an OOM kill or a refused fork after\n"
        "the runtime removed the build's group. Without it, oom_kill and pids_max records\n"
        "name a build only while its group still exists.",
    ),
    EventType(
        "limits_applied", "986a82d4653d47499d4e03438f3fc61a", frozenset({"info"}),
        _limits("applied"),
        "Resource limits applied to @CCGROUPD_CGROUP@",
        "ccgroupd wrote the configured CPU, memory and pids limits into the engine's\n"
        "cgroup and read them back. CCGROUPD_VALUES lists what is in force.",
    ),
    EventType(
        "limits_changed", "eda85a8e9be04be5987d5512828b726f", frozenset({"info"}),
        _limits("changed"),
        "Resource limits of @CCGROUPD_CGROUP@ changed",
        "The limits changed through ccgroupctl, a reload (SIGHUP) or at start-up from\n"
        "persisted changes. CCGROUPD_OLD and CCGROUPD_NEW show the values; CCGROUPD_UID\n"
        "is the user who asked, if the change came over the control socket.",
    ),
    EventType(
        "limits_drifted", "d8f344d3a7844ae9b294dd4ef8ce8637", frozenset({"warning", "error"}),
        lambda f: (f"Could not re-apply the limits of {f.text('cgroup')}: {f.text('error')}"
                   if f.has("error") else
                   f"{f.text('cgroup')}/{f.text('file')} was {f.text('old')} instead of "
                   f"{f.text('new')}; re-applied"),
        "Limit @CCGROUPD_FILE@ of @CCGROUPD_CGROUP@ changed behind ccgroupd's back",
        "Something other than ccgroupd rewrote a limit file of the engine's cgroup\n"
        "(an administrator, a tool, or systemd after daemon-reload or set-property).\n"
        "ccgroupd wrote its configured value back (a record with CCGROUPD_ERROR says the\n"
        "write failed: the limits are then not what ccgroupd reports). If the change was\n"
        "meant, make it in /etc/ccgroupd/config.toml or with ccgroupctl instead, or it\n"
        "will keep being undone.",
    ),
    EventType(
        "engine_started", "59610d070bb34c79a1b86a58d8f18ec3", frozenset({"info"}),
        lambda f: f"Dagger engine started as pid {f.text('pid')} in {f.text('cgroup')}",
        "Dagger engine started in @CCGROUPD_CGROUP@",
        "ccgroupd started the engine inside its cgroup (the process joined the group\n"
        "before exec, so none of its memory or children escaped the limits).",
    ),
    EventType(
        "engine_ready", "74abacd0478440399fc2d39a672ca026", frozenset({"info"}),
        lambda f: (f"Dagger engine (pid {f.text('pid')}) is ready after "
                   f"{f.text('ready_after_s')} s ({f.text('probe')})"),
        "Dagger engine is ready",
        "The engine's readiness probe succeeded (its socket accepted a connection, or the\n"
        "probe command exited 0): Dagger clients can connect now. ccgroupd reports READY=1\n"
        "to systemd only after this record.",
    ),
    EventType(
        "engine_not_ready", "8fe2ca8f74bd40e8bba4abdac6920ffd", frozenset({"error"}),
        lambda f: (f"Dagger engine (pid {f.text('pid')}) was not ready within "
                   f"{f.text('timeout_s')} s ({f.text('probe')}): {f.text('last_error')}"),
        "Dagger engine did not become ready in time",
        "The engine was started but its readiness probe (CCGROUPD_PROBE) still failed\n"
        "after CCGROUPD_TIMEOUT_S seconds; CCGROUPD_LAST_ERROR is what the last attempt\n"
        "saw. ccgroupd stops the engine (SIGTERM, the grace period, then cgroup.kill) and\n"
        "counts the start as a failure for the restart policy. Look at the engine's own\n"
        "output (journalctl -u ccgroupd) for why it did not listen; raise\n"
        "[engine] ready_timeout_s if it is only slow (a first start with an empty cache).",
    ),
    EventType(
        "engine_exited", "f261a3d0343343628c429f69b84265e0",
        frozenset({"info", "warning", "error"}),
        _engine_exited,
        "Dagger engine exited",
        "The engine's main process ended. CCGROUPD_EXIT_CODE or CCGROUPD_SIGNAL say how;\n"
        "CCGROUPD_OOM_KILLED says whether the kernel's OOM killer took it, in which case\n"
        "the engine needed more memory than memory.max allows: raise the limit or run\n"
        "fewer builds at once. ccgroupd restarts the engine per its restart policy.",
    ),
    EventType(
        "engine_restarting", "848cb5194f274a0aa1eff01d59bbad70", frozenset({"info", "warning"}),
        lambda f: (f"Restarting the Dagger engine in {f.text('delay_s')} s "
                   f"(restart {f.text('restarts')} within the window)"),
        "Dagger engine is being restarted",
        "The engine exited and the restart policy asks for a restart after a back-off\n"
        "delay that doubles with every quick failure. Look at the engine_exited record\n"
        "before this one for the reason. A restart asked for with `ccgroupctl\n"
        "restart-engine` carries the caller's CCGROUPD_UID.",
    ),
    EventType(
        "engine_failed", "ea58c52730844174b5959e08ba2ed5d3", frozenset({"error"}),
        lambda f: f"Dagger engine failed and will not be restarted: {f.text('reason')}",
        "Dagger engine failed; ccgroupd stopped restarting it",
        "The engine exited too often within the restart window (or the policy forbids\n"
        "restarts). ccgroupd gave up so as not to loop. Read the engine's own output\n"
        "(journalctl -u ccgroupd) and the engine_exited records, fix the cause, then\n"
        "run `ccgroupctl restart-engine` or restart the ccgroupd service.",
    ),
    EventType(
        "engine_stopping", "b9076cb84dad4c92a2d9756afa1a6718", frozenset({"info"}),
        lambda f: (f"Stopping the Dagger engine (pid {f.text('pid')}): SIGTERM, then "
                   f"cgroup.kill after {f.text('grace_s')} s"),
        "Dagger engine is stopping",
        "ccgroupd sent SIGTERM to the engine and waits for the grace period before it\n"
        "kills what is left in the cgroup. The engine may need minutes to shut down\n"
        "cleanly; a kill before that can cost it its cache.",
    ),
    EventType(
        "oom_kill", "7eda59e52bc644b495756bcf2adb76c2", frozenset({"warning"}),
        _oom_kill,
        "The OOM killer killed processes in @CCGROUPD_CGROUP@",
        "Processes in the engine's cgroup (the engine or its build containers) used all\n"
        "the memory memory.max allows, and the kernel killed @CCGROUPD_DELTA@ of them.\n"
        "The record carries a snapshot taken right after the kill: CCGROUPD_USAGE_BYTES,\n"
        "CCGROUPD_PEAK_BYTES (kernels with memory.peak), CCGROUPD_LIMIT_BYTES, the largest\n"
        "memory.stat entries (CCGROUPD_MEMORY_STAT_BYTES), the largest processes by RSS\n"
        "(CCGROUPD_TOP_PROCESSES) and the child groups where the kills happened\n"
        "(CCGROUPD_OOM_GROUPS, e.g. buildkit/<id> for a build container).\n"
        "\n"
        "Raise the memory limit (`ccgroupctl set --memory SIZE` or config.toml), or run\n"
        "fewer or smaller builds at once.",
    ),
    EventType(
        "oom", "b7d59e85f24e4de297152d5db6bfe280", frozenset({"warning"}),
        _limit_event("entered the OOM path", "memory.max"),
        "@CCGROUPD_CGROUP@ ran out of memory",
        "Memory use reached memory.max and reclaim could not free enough, so the kernel\n"
        "invoked the OOM killer (an oom_kill record follows if it killed something).\n"
        "Raise the memory limit or reduce the load.",
    ),
    EventType(
        "memory_max", "bd194bb15eb3429882641e1fdf952ade", frozenset({"warning"}),
        _limit_event("hit memory.max", "memory.max"),
        "@CCGROUPD_CGROUP@ hit its memory limit",
        "Memory use reached memory.max; the kernel reclaimed memory (page cache first)\n"
        "to stay under it. Occasional hits are normal for a cache-heavy engine; a steady\n"
        "stream with oom records means the limit is too small for the work.",
    ),
    EventType(
        "memory_high", "e3807cbba82d435e91aab817fefa69e0", frozenset({"warning"}),
        _limit_event("went over memory.high", "memory.high"),
        "@CCGROUPD_CGROUP@ is being throttled at memory.high",
        "Memory use went over memory.high, so the kernel throttled the group's\n"
        "allocations and forced reclaim. Work slows down but nothing is killed. Raise\n"
        "memory_high if the slowdown is not wanted.",
    ),
    EventType(
        "swap_max", "d139200aa07a49b887f693ac48ccb5a3", frozenset({"warning"}),
        _limit_event("hit memory.swap.max", "memory.swap.max"),
        "@CCGROUPD_CGROUP@ hit its swap limit",
        "The group's swap use reached memory.swap.max, so its memory can no longer be\n"
        "swapped out; once memory.max is reached as well, the OOM killer acts.",
    ),
    EventType(
        "pids_max", "946ca2b5d6744e0b8b949a937a3a8f64", frozenset({"warning"}),
        _pids_max,
        "@CCGROUPD_CGROUP@ hit its process limit",
        "fork() or clone() failed with EAGAIN in the engine's cgroup because pids.max was\n"
        "reached. Builds may fail with 'resource temporarily unavailable'. Raise the pids\n"
        "limit, or look for a runaway build that forks without end.",
    ),
    EventType(
        "cpu_throttled", "f2d6e891b3be47e6987ce10dd00a9c60", frozenset({"warning"}),
        _cpu_throttled,
        "@CCGROUPD_CGROUP@ is being CPU-throttled",
        "The group used its whole cpu.max quota in a share of the scheduler periods above\n"
        "the configured threshold, so its threads had to wait for the next period.\n"
        "CCGROUPD_THROTTLED_PERIODS_FRACTION is the share of periods throttled and\n"
        "CCGROUPD_THROTTLED_TIME_FRACTION the throttled time per second of wall clock\n"
        "(summed over CPUs, so it can exceed 1 when several CPUs wait at once).\n"
        "Builds run slower; raise `cpus` if that is not wanted.",
    ),
    EventType(
        "cgroup_leftover_killed", "577f1ac94c62459f952df4703403e860", frozenset({"warning"}),
        lambda f: (f"Killed {f.count('delta', 'process', 'processes')} left over in "
                   f"{f.text('cgroup')} from an earlier run"),
        "Processes left over in @CCGROUPD_CGROUP@ were killed",
        "The engine's cgroup still held processes when ccgroupd started (a crashed\n"
        "earlier run, or an engine started by hand). The configured policy is to kill\n"
        "them before starting a new engine, so that nothing shares its limits unseen.",
    ),
    EventType(
        "config_reload_failed", "83e90334dab94754bcf939f63038d5d8", frozenset({"error"}),
        lambda f: f"Configuration reload failed; keeping the running one: {f.text('error')}",
        "ccgroupd configuration reload failed",
        "A reload (SIGHUP, `systemctl reload ccgroupd`) found the configuration invalid.\n"
        "Nothing changed: the previous limits and engine stay in force. Fix the file named\n"
        "in the message (`ccgroupd check` validates it) and reload again.",
    ),
    EventType(
        "limits_kept", "29e4d5ff7ab24938976a7314534a3cfb", frozenset({"warning"}),
        lambda f: (f"Reload kept {f.text('file')} at {f.size('limit_bytes')} in "
                   f"{f.text('cgroup')}: the configuration's {f.size('config_bytes')} is at "
                   f"or below usage {f.size('usage_bytes')}"),
        "ccgroupd kept a memory limit the reloaded configuration would lower below usage",
        "A reload would have set memory.max at or below what the engine group uses now. On\n"
        "cgroup v2 such a write does not fail: the kernel reclaims and then OOM-kills inside\n"
        "the group, the engine first in line. ccgroupd applied every other value and kept the\n"
        "memory limit in force as a runtime change (`ccgroupctl status` shows it). Lower the\n"
        "usage first, or apply the limit on purpose with `ccgroupctl set --memory ... --force`.",
    ),
    EventType(
        "state_file_corrupt", "b38586951f4e4053aecb806f85085ec5", frozenset({"warning"}),
        lambda f: (f"State file {f.text('file')} is unreadable ({f.text('reason')}); moved to "
                   f"{f.text('moved_to')}; persisted limit changes are lost"),
        "ccgroupd state file was corrupt",
        "The file that keeps limits set with `ccgroupctl set` across restarts could not be\n"
        "parsed. It was moved aside (kept for inspection) and ccgroupd continues with the\n"
        "limits from the configuration file. Re-apply persistent changes if needed.",
    ),
    EventType(
        "state_value_set_aside", "5d860be805ac480bba0b11fafebef977", frozenset({"warning"}),
        lambda f: (f"Persisted {f.text('limit')} = {f.text('value')} in {f.text('file')} "
                   f"does not fit this host ({f.text('reason')}); starting without it"),
        "ccgroupd set aside a persisted limit this host cannot give",
        "A limit kept by `ccgroupctl set` no longer fits this host: more CPUs than it has\n"
        "now (a VM resized, AllowedCPUs= changed), or a swap limit where swap accounting is\n"
        "gone. ccgroupd started with the configuration file's value for that limit and the\n"
        "other persisted changes. The state file is rewritten without it at the next\n"
        "`ccgroupctl set`; set the limit again if the host gives it back.",
    ),
    EventType(
        "cgroup_recreated", "8bc4cbf029d741cfa668b63da2f84335", frozenset({"warning"}),
        lambda f: (f"The engine group {f.text('cgroup')} was gone before a start; created it "
                   f"again with the limits in force"),
        "ccgroupd recreated the engine's cgroup",
        "Something removed the engine's group while the engine was down (between restarts).\n"
        "ccgroupd created it again and wrote the limits before starting the engine, so the\n"
        "engine and its builds stay limited. Find out what removes groups in ccgroupd's\n"
        "delegated subtree: nothing but ccgroupd should.",
    ),
    EventType(
        "inotify_overflow", "a26ca47a5db548b6bc2dc9d66fcef6b1", frozenset({"warning"}),
        lambda f: (f"inotify's queue overflowed while watching {f.text('cgroup')}; every "
                   f"watched counter was read again"),
        "ccgroupd's inotify queue overflowed",
        "The kernel dropped change notifications for the engine group's event files\n"
        "(fs.inotify.max_queued_events was reached, in an event storm). ccgroupd read every\n"
        "watched counter again, so the counts it reports stay right; only the moment of\n"
        "some events may be reported late. Logged once per daemon run.",
    ),
    EventType(
        "daemon_started", "92550bae0f064b78b8925da8aebb8375", frozenset({"info"}),
        lambda f: f"ccgroupd {f.text('version')} started; engine cgroup {f.text('cgroup')}",
        "ccgroupd started",
        "The daemon is up: its cgroup, the limits and the engine are in place.",
    ),
    EventType(
        "daemon_stopping", "fc4bd0dcd680405aad4bd2ded480e41f", frozenset({"info"}),
        lambda f: f"ccgroupd stopping ({f.text('reason')})",
        "ccgroupd is stopping",
        "The daemon was asked to stop; it stops the engine first (see engine_stopping).",
    ),
    EventType(
        "cgroup_vanished", "ce7009ea1e7f47999404150b8232e6b8", frozenset({"info", "warning"}),
        lambda f: f"{f.text('cgroup')} is gone; monitoring resumes if it comes back",
        "Cgroup @CCGROUPD_CGROUP@ disappeared",
        "The monitored cgroup was removed (normally by ccgroupd itself while the engine is\n"
        "restarted). Violation monitoring pauses and resumes when the group exists again.\n"
        "If nothing else is logged around it, something outside ccgroupd removed it.",
    ),
    EventType(
        "journald_unavailable", "46d39d3a5cb942d8acbc0a63a1940433", frozenset({"warning"}),
        lambda f: f"journald output unavailable ({f.text('error')}); logging JSON lines",
        "ccgroupd cannot log natively to journald",
        "stderr goes to the journal but the python3-systemd module is missing, so records\n"
        "are written as JSON lines: their fields are not indexed. Install python3-systemd.",
    ),
    EventType(
        "api_request_failed", "e00ffc3fe1e14f1d9294de89d42f74a3", frozenset({"error"}),
        lambda f: f"A control request from uid {f.text('uid')} failed inside ccgroupd",
        "A ccgroupctl request failed with an internal error",
        "An operation on the control socket raised an unexpected error (a bug in\n"
        "ccgroupd). The caller got an error reply; the daemon and the engine keep running.\n"
        "The message carries the traceback: please report it. At most one such record is\n"
        "written per 10 seconds; CCGROUPD_DELTA counts the failures held back before it.",
    ),
)

EVENTS: Mapping[str, EventType] = {event.name: event for event in _EVENTS}


def fallback_message(event: str, fields: Mapping[str, object]) -> str:
    """The MESSAGE of a record whose name is not registered (a bug the source-scan test catches)."""
    details = " ".join(f"{key}={json.dumps(value, default=str)}" for key, value in fields.items())
    return f"{event} {details}".rstrip()


def render_catalog() -> str:
    """The contents of systemd/ccgroupd.catalog."""
    entries = []
    for event in _EVENTS:
        entries.append(
            f"-- {event.message_id}\n"
            f"Subject: {event.subject}\n"
            f"Defined-By: ccgroupd\n"
            f"Support: {SUPPORT_URL}\n"
            f"\n"
            f"{event.explanation}\n"
            f"\n"
            f"ccgroupd event: {event.name} (journal field CCGROUPD_EVENT={event.name}).\n"
        )
    header = ("# journald catalog for ccgroupd; generated by `python3 -m ccgroupd.events`.\n"
              "# Install into /usr/lib/systemd/catalog/ and run `journalctl --update-catalog`.\n")
    return header + "\n" + "\n".join(entries)


if __name__ == "__main__":
    sys.stdout.write(render_catalog())
