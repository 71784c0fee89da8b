"""One build: what the tracker knows of it from its group's creation to its end."""

from __future__ import annotations

from dataclasses import dataclass, field

from ccgroupd.daemon.builds.account import Usage
from ccgroupd.limits.model import Limits


@dataclass
class Build:
    group: str  # relative to the engine group
    created_s: float
    limits: Limits
    command: list[str] | None = None
    populated_seen: bool = False
    sample: Usage | None = None
    peak_seen_bytes: int = 0
    oom_kills_logged: int = 0  # the kernel log's, which outlive the group
    pids_refused_logged: int = 0
    command_checks: int = field(default=0, repr=False)

    @property
    def id(self) -> str:
        return self.group.rsplit("/", 1)[-1]

    def command_line(self) -> str | None:
        return None if self.command is None else " ".join(self.command)

    def finished_record(self, final: Usage | None, now_s: float,
                        cgroup: str) -> dict[str, object]:
        """The build_finished record's fields: from ``final`` (read as it ended), else from
        the last sample."""
        usage = final or self.sample
        accounting = "final" if final is not None else "sampled" if usage is not None else "none"
        usage = usage or Usage()
        return {
            "cgroup": cgroup, "build": self.group, "command": self.command_line(),
            "duration_s": round(now_s - self.created_s, 3),
            "cpu_usage_s": (None if usage.cpu_usage_usec is None
                            else round(usage.cpu_usage_usec / 1_000_000, 3)),
            "memory_peak_bytes": max(filter(None, (usage.memory_peak_bytes,
                                                   self.peak_seen_bytes)), default=None),
            "oom_kills": max(usage.oom_kills or 0, self.oom_kills_logged),
            "pids_refused": max(usage.pids_refused or 0, self.pids_refused_logged),
            "throttled_usec": usage.throttled_usec, "accounting": accounting}
