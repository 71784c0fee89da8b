"""What the daemon reports about the engine group: the ``status`` reply (whose schema
``ccgroupctl status --help`` and ccgroupctl(1) document), its usage figures and CPU
meter, and the one-line ``STATUS=`` systemd shows."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ccgroupd.engine.supervisor import Supervisor
from ccgroupd.errors import CgroupReadError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import CPU_STAT, MEMORY_CURRENT, MEMORY_SWAP_CURRENT, PIDS_CURRENT
from ccgroupd.kernel.parsers import CpuStat, ParseError, parse_cpu_stat, parse_uint_or_max
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits
from ccgroupd.notify import Notifier
from ccgroupd.values import describe_limit_value

T = TypeVar("T")


class CpuMeter:
    """CPU use as a percentage of one CPU (top's convention: 250 = two and a half CPUs),
    averaged between consecutive samples. The daemon samples on its periodic tick so
    that ``status`` shows recent use, not an average since the previous ``status``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[int, float] | None = None
        self.percent: float | None = None

    def sample(self, usage_usec: int) -> float | None:
        now_s = self._clock()
        if self._last is not None:
            last_usec, last_s = self._last
            elapsed_s = now_s - last_s
            if elapsed_s > 0 and usage_usec >= last_usec:
                self.percent = (usage_usec - last_usec) / 1e6 / elapsed_s * 100
        self._last = (usage_usec, now_s)
        return self.percent


@dataclass(frozen=True)
class UsageSample:
    """The group's usage files at one moment; None where a file could not be read."""

    cpu_stat: CpuStat | None
    memory_bytes: int | None
    swap_bytes: int | None
    pids: int | None


def sample_usage(cgroupfs: Cgroupfs, group: str) -> UsageSample:
    """Read ``cpu.stat``, ``memory.current``, ``memory.swap.current`` and ``pids.current``;
    a file that cannot be read (group gone, no swap) reads None."""
    return UsageSample(
        cpu_stat=read_or_none(lambda: parse_cpu_stat(cgroupfs.read(group, CPU_STAT))),
        memory_bytes=read_memory_bytes(cgroupfs, group),
        swap_bytes=read_or_none(
            lambda: parse_uint_or_max(cgroupfs.read(group, MEMORY_SWAP_CURRENT))),
        pids=read_or_none(lambda: parse_uint_or_max(cgroupfs.read(group, PIDS_CURRENT))),
    )


def read_memory_bytes(cgroupfs: Cgroupfs, group: str) -> int | None:
    """``memory.current``, or None if it cannot be read."""
    return read_or_none(lambda: parse_uint_or_max(cgroupfs.read(group, MEMORY_CURRENT)))


def read_usage(cgroupfs: Cgroupfs, group: str, limits: Limits,
               cpu_meter: CpuMeter) -> dict[str, Any]:
    """``status`` ``usage``; a file that cannot be read (group gone, no swap) reads null."""
    sample = sample_usage(cgroupfs, group)
    cpu_percent = (cpu_meter.sample(sample.cpu_stat.usage_usec)
                   if sample.cpu_stat is not None else None)
    memory_bytes = sample.memory_bytes
    limit = limits.memory_max_bytes
    return {
        "cpu_percent": None if cpu_percent is None else round(cpu_percent, 1),
        "memory_bytes": memory_bytes,
        "memory_percent": (None if memory_bytes is None or limit is None
                           else round(memory_bytes / limit * 100, 1)),
        "swap_bytes": sample.swap_bytes,
        "pids": sample.pids,
    }


def read_or_none(read: Callable[[], T]) -> T | None:
    """``read()``, or None if the file is missing or unreadable (the group may be gone)."""
    try:
        return read()
    except (CgroupReadError, ParseError):
        return None


def status_document(*, cgroup_path: str, layers: LimitLayers, usage: Mapping[str, Any],
                    events: Mapping[str, int], engine: Mapping[str, Any],
                    origins: Mapping[str, str], state_file: str) -> dict[str, Any]:
    """The ``status`` reply (its schema: ``ccgroupctl status --help``).

    ``engine`` carries ``state``, ``pid``, ``uptime_s`` and ``restarts``;
    ``events`` the monitor's counters since the daemon started; ``origins`` the file or
    variable that set each config key ("limits.memory" -> "/etc/ccgroupd/config.d/x.toml").
    """
    limits = layers.describe()
    for name, entry in limits.items():
        # Which file (or variable, or command) to change to change this value.
        entry["set_by"] = {"config": origins.get(f"limits.{name}", "default"),
                           "persisted": state_file,
                           "runtime": "ccgroupctl set --runtime"}[str(entry["source"])]
    return {
        "cgroup": {"path": cgroup_path},
        "limits": limits,
        "usage": dict(usage),
        "events": dict(events),
        "engine": dict(engine),
    }


def engine_status(supervisor: Supervisor | None) -> dict[str, Any]:
    """``status`` ``engine``: state, pid, uptime, restarts and the last unasked exit."""
    if supervisor is None:
        return {"state": None, "pid": None, "uptime_s": None, "restarts": 0}
    uptime_s = supervisor.uptime_s()
    engine: dict[str, Any] = {"state": supervisor.state.value, "pid": supervisor.pid,
                              "uptime_s": None if uptime_s is None else round(uptime_s, 1),
                              "restarts": supervisor.restarts}
    if supervisor.last_exit is not None:
        engine["last_exit"] = supervisor.last_exit.log_fields()
    return engine


def status_line(limits: Limits | None, supervisor: Supervisor | None,
                violation: str | None, *,
                engines: Sequence[tuple[str, Supervisor | None]] = ()) -> str:
    """systemd's STATUS=: "cpus=2 memory=1 GiB pids=max; engine running (pid 42), ...";
    with several ``engines`` (and the budget's limits): "...; ci running (pid 42), web failed"."""
    values = (limits or Limits()).to_mapping()
    line = " ".join(f"{name}={describe_limit_value(name, values[name])}"
                    for name in ("cpus", "memory", "pids"))
    if engines:
        return line + "; " + ", ".join(f"{name} {_engine_state(engine)}"
                                       for name, engine in engines)
    line += f"; engine {_engine_state(supervisor)}"
    if violation:
        line += f"; last violation: {violation}"
    return line


def _engine_state(supervisor: Supervisor | None) -> str:
    if supervisor is None:
        return "not started"
    text = supervisor.state.value
    if supervisor.pid is not None:
        text += f" (pid {supervisor.pid})"
    if supervisor.restarts:
        text += f", {supervisor.restarts} restart{'s' if supervisor.restarts > 1 else ''}"
    return text


class SystemdStatus:
    """STATUS= for systemd, sent only when the line changed."""

    def __init__(self, notifier: Notifier, line: Callable[[], str]) -> None:
        self._notifier = notifier
        self.line = line
        self._last = ""

    def update(self) -> None:
        line = self.line()
        if line != self._last:
            self._last = line
            self._notifier.status(line)
