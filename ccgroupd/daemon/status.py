"""Daemon-side building blocks of the control plane, used by ccgroupd.daemon.daemon.

- :func:`refuse_memory_below_usage`: the guard that keeps ``set --memory`` from
  turning into an OOM kill;
- :func:`log_limits_changed`: the audit record of every change;
- :func:`read_usage`, :class:`CpuMeter`, :func:`status_document`: the
  ``status`` reply, whose schema ccgroupctl documents and renders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog

from ccgroupd.errors import CgroupReadError, LimitsError
from ccgroupd.kernel.cgroupfs import (
    CPU_STAT,
    MEMORY_CURRENT,
    MEMORY_SWAP_CURRENT,
    PIDS_CURRENT,
    Cgroupfs,
)
from ccgroupd.kernel.parsers import CpuStat, ParseError, parse_cpu_stat, parse_uint_or_max
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import LIMIT_NAMES, Limits, format_bytes
from ccgroupd.values import describe_limit_value

if TYPE_CHECKING:
    from ccgroupd.daemon.api import Peer

log = structlog.get_logger("ccgroupd")

T = TypeVar("T")


def refuse_memory_below_usage(old: Limits, new: Limits, *,
                              read_usage_bytes: Callable[[], int | None], cgroup: str,
                              force: bool) -> None:
    """Refuse a new memory.max at or below what the group uses now, unless forced.

    On cgroup v2 such a write does not fail: the writer blocks in reclaim and
    then the kernel OOM-kills inside the group, the engine first in line.
    ``read_usage_bytes`` is called only when the memory limit changes.
    """
    limit = new.memory_max_bytes
    if force or limit is None or limit == old.memory_max_bytes:
        return
    usage_bytes = read_usage_bytes()
    if usage_bytes is not None and limit <= usage_bytes:
        raise LimitsError(
            "memory", format_bytes(limit),
            f"at or below current usage {format_bytes(usage_bytes)} of {cgroup}; "
            "the kernel would OOM-kill the engine instead of failing; use --force")


def log_limits_changed(old: Limits, new: Limits, *, cgroup: str, peer: Peer | None,
                       scope: Literal["persistent", "runtime", "reset", "reload"]) -> None:
    """One ``limits_changed`` record naming who asked and each value before and after."""
    before, after = old.to_mapping(), new.to_mapping()
    changed = [name for name in LIMIT_NAMES if before[name] != after[name]]
    if not changed:
        return
    log.info("limits_changed", cgroup=cgroup, scope=scope,
             uid=None if peer is None else peer.uid, pid=None if peer is None else peer.pid,
             old=_describe_values(before, changed), new=_describe_values(after, changed))


def _describe_values(values: Mapping[str, object], names: list[str]) -> str:
    """"cpus=2, memory=512 MiB": one readable journal field, sizes in binary units."""
    return ", ".join(f"{name}={_describe_value(name, values[name])}" for name in names)


def _describe_value(name: str, value: object) -> str:
    return describe_limit_value(name, value)


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
                    events: Mapping[str, int], engine: Mapping[str, Any]) -> dict[str, Any]:
    """The ``status`` reply (schema: ccgroupd.client.ctl STATUS_SCHEMA).

    ``engine`` carries ``state``, ``pid``, ``uptime_s`` and ``restarts``;
    ``events`` the monitor's counters since the daemon started.
    """
    return {
        "cgroup": {"path": cgroup_path},
        "limits": layers.describe(),
        "usage": dict(usage),
        "events": dict(events),
        "engine": dict(engine),
    }
