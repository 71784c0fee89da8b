"""The builds as ``ccgroupctl`` sees them: the ``builds`` reply (``ccgroupctl top``) and
the ``builds`` part of ``status``. Usage is read when asked, never cached."""

from __future__ import annotations

from typing import Any

from ccgroupd.daemon.builds.account import Usage, read_usage
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.model import Limits


def builds_reply(tracker: BuildTracker | None, cgroupfs: Cgroupfs, engine_group: str,
                 engine_limits: Limits, now_s: float) -> dict[str, Any]:
    engine_usage = read_usage(cgroupfs, engine_group) or Usage()
    builds = []
    for build in list(tracker.builds.values()) if tracker is not None else []:
        usage = read_usage(cgroupfs, f"{engine_group}/{build.group}") or Usage()
        builds.append({"id": build.id, "cgroup": build.group, "command": build.command_line(),
                       "age_s": round(now_s - build.created_s, 3), **usage.to_json(),
                       "limits": build.limits.to_mapping()})
    return {"read_at_s": now_s,
            "engine": {"cgroup": str(cgroupfs.path(engine_group)), **engine_usage.to_json(),
                       "limits": engine_limits.to_mapping()},
            "builds": builds}


def builds_summary(tracker: BuildTracker | None, cgroupfs: Cgroupfs, engine_group: str,
                   defaults: Limits) -> dict[str, Any]:
    """``status`` ``builds``: how many run, the largest by memory, totals, the defaults."""
    largest: dict[str, Any] | None = None
    largest_bytes = -1
    if tracker is not None:
        for build in list(tracker.builds.values()):
            usage = read_usage(cgroupfs, f"{engine_group}/{build.group}")
            memory = usage.memory_current_bytes if usage is not None else None
            if memory is not None and memory > largest_bytes:
                largest_bytes = memory
                largest = {"id": build.id, "cgroup": build.group,
                           "command": build.command_line(), "memory_current_bytes": memory}
    totals = tracker.stats.to_json() if tracker is not None else {}
    return {"running": len(tracker.builds) if tracker is not None else 0, **totals,
            "largest": largest, "defaults": defaults.to_mapping()}
