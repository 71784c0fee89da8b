"""An engine's disk I/O limits (io_max) in its group: resolved to disks, written, verified,
written again into a recreated group, and reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import IO_MAX
from ccgroupd.limits.io import IoMax, apply_io_max, describe, io_max_lines

log = structlog.get_logger("ccgroupd")


class IoLimits:
    def __init__(self, cgroupfs: Cgroupfs, group: str, devices: BlockDevices) -> None:
        self._cgroupfs = cgroupfs
        self._group = group
        self._devices = devices
        self._entries: Sequence[IoMax] = ()
        self._lines: Mapping[str, str] = {}  # device -> the io.max line wanted
        self._device_of: dict[Path, str] = {}
        self.in_force: dict[str, str] = {}  # device -> the line the kernel shows

    def plan(self, entries: Sequence[IoMax]) -> dict[str, str]:
        """Device -> line for ``entries``; raises IoDeviceError or LimitsError, changes nothing."""
        return io_max_lines(entries, self._devices)

    def apply(self, entries: Sequence[IoMax], lines: Mapping[str, str]) -> None:
        """Write the planned lines; the disks of earlier entries no longer wanted are lifted."""
        if not lines and not self.in_force:
            return
        in_force = apply_io_max(self._cgroupfs, self._group, lines, managed=list(self.in_force))
        self._entries, self._lines = entries, lines
        # io_max_lines gave one disk per entry, in order (two on one disk are refused).
        self._device_of = {entry.path: device for entry, device in zip(entries, lines, strict=True)}
        if in_force != self.in_force:
            log.info("limits_applied", cgroup=str(self._cgroupfs.path(self._group)),
                     values=", ".join(f"{IO_MAX}={line}" for line in in_force.values()))
        self.in_force = in_force

    def reapply(self) -> None:
        """Into a group that was recreated empty."""
        if self._lines:
            self.in_force = apply_io_max(self._cgroupfs, self._group, self._lines)

    def status(self) -> list[dict[str, object]]:
        return [describe(entry, self._device_of[entry.path]) for entry in self._entries]
