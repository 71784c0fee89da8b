"""Write a Limits into a group in a safe order, verified, all-or-nothing; and notice drift.

Order: what is not a limit goes first, then limits that loosen (or keep), then the
memory protections, then limits that tighten; within each part, ``WRITE_ORDER``.

- cpuset.cpus, cpuset.mems and io.weight neither loosen nor tighten anything that
  another write depends on: they go first, whatever their direction.
- Raising memory.max before lowering memory.swap.max (and the reverse) means no
  intermediate state is tighter than both the old and the new limits, so a change
  never OOM-kills what neither setting would have killed.
- memory.min and memory.low are protections, not limits: between the loosening and
  the tightening writes every limit is at the looser of its old and new values, so
  a raised protection lands after the limits above it loosened and a lowered one
  before they tighten. No write in between holds a protection above its limit (the
  kernel would not refuse it, but it would protect nothing).
- Among tightening writes memory.high comes before memory.max: the kernel then
  reclaims under the soft limit first, and the hard one, whose write can block in
  reclaim or OOM-kill, is the last thing done.

A failed write rolls back every attribute already written, so the group is left
as it was; the error that caused it is re-raised with any rollback failure
attached as a note.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping

from ccgroupd.errors import CgroupError, CgroupReadError, CgroupVerifyError, LimitsError
from ccgroupd.kernel import files
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.model import Limits
from ccgroupd.values import UNLIMITED

WRITE_ORDER = (files.CPUSET_CPUS, files.CPUSET_MEMS, files.IO_WEIGHT,
               files.CPU_WEIGHT, files.CPU_MAX, files.PIDS_MAX, files.MEMORY_SWAP_MAX,
               files.MEMORY_MIN, files.MEMORY_LOW, files.MEMORY_HIGH, files.MEMORY_MAX)
_NOT_LIMITS = frozenset({files.CPUSET_CPUS, files.CPUSET_MEMS, files.IO_WEIGHT})
_PROTECTIONS = frozenset({files.MEMORY_MIN, files.MEMORY_LOW})
# What a fresh group has: unset limits write exactly the kernel's defaults.
_KERNEL_DEFAULTS = Limits().cgroup_values()


def _is_default(attribute: str, value: str) -> bool:
    """True for the kernel's value of a fresh group (no limit, default weight, ...)."""
    return value == _KERNEL_DEFAULTS[attribute]


def _allowance(attribute: str, value: str) -> float:
    """How much a value lets the group use; larger is looser. ``max`` is unbounded."""
    tokens = value.split()
    if tokens[0] == UNLIMITED:
        return math.inf
    if attribute == files.CPU_MAX and len(tokens) == 2:
        return int(tokens[0]) / int(tokens[1])
    return float(tokens[0])


def write_order(current: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The attributes of ``new`` in the order to write them (see the module docstring)."""
    ranked = sorted(new, key=WRITE_ORDER.index)
    limits = [a for a in ranked if a not in _NOT_LIMITS and a not in _PROTECTIONS]
    loosening = [a for a in limits
                 if a not in current or _allowance(a, new[a]) >= _allowance(a, current[a])]
    return ([a for a in ranked if a in _NOT_LIMITS] + loosening
            + [a for a in ranked if a in _PROTECTIONS]
            + [a for a in limits if a not in loosening])


def read_current(cgroupfs: Cgroupfs, group: str, attributes: Mapping[str, str]) -> dict[str, str]:
    """What the kernel has now for each attribute; a file the group lacks is left out.

    A missing file is fine when the wanted value is the kernel default (no swap
    accounting and ``memory_swap`` unset, no cpuset or io controller and no cpuset or
    io_weight asked for); asking for a real limit there is refused.
    """
    current = {}
    for attribute, value in attributes.items():
        try:
            current[attribute] = cgroupfs.read(group, attribute).strip()
        except CgroupReadError as exc:
            if exc.errno != errno.ENOENT:
                raise
            if not _is_default(attribute, value):
                raise LimitsError(attribute, value,
                                  f"{exc.path} does not exist: the controller is not enabled "
                                  "for this group or the kernel lacks the feature") from exc
    return current


def apply_limits(cgroupfs: Cgroupfs, group: str, new: Limits,
                 previous: Limits | None = None) -> dict[str, str]:
    """Write ``new`` into ``group``; returns attribute -> value in force (as read back).

    On failure every attribute already written is set back to ``previous`` (or,
    without one, to what the kernel had before) and the error is re-raised.
    """
    wanted = new.cgroup_values()
    current = read_current(cgroupfs, group, wanted)
    restore = previous.cgroup_values() if previous is not None else current
    # What the kernel holds already is not written again: `set --cpus 2` writes cpu.max alone.
    in_force = {a: found for a, found in current.items() if cgroupfs.holds(a, found, wanted[a])}
    written: list[str] = []
    for attribute in write_order(current, {a: v for a, v in wanted.items()
                                           if a in current and a not in in_force}):
        try:
            in_force[attribute] = cgroupfs.write_verified(group, attribute, wanted[attribute])
        except CgroupError as exc:
            if isinstance(exc, CgroupVerifyError):
                written.append(attribute)  # the kernel took a value, just not ours
            _roll_back(cgroupfs, group, written, restore, exc)
            raise
        written.append(attribute)
    return in_force


def _roll_back(cgroupfs: Cgroupfs, group: str, written: list[str],
               restore: Mapping[str, str], cause: Exception) -> None:
    # Undo in reverse order: the writes were ordered loosest-first, so undoing
    # them backwards is again loosest-first relative to where we are now.
    for attribute in reversed(written):
        if attribute not in restore:
            continue
        try:
            cgroupfs.write(group, attribute, restore[attribute])
        except CgroupError as exc:
            cause.add_note(f"rollback of {attribute} to {restore[attribute]!r} failed: {exc}")


def find_drift(cgroupfs: Cgroupfs, group: str, limits: Limits) -> dict[str, tuple[str, str]]:
    """Attributes whose kernel value differs from ``limits``: attribute -> (found, expected)."""
    wanted = limits.cgroup_values()
    current = read_current(cgroupfs, group, wanted)
    drift = {}
    for attribute, found in current.items():
        if not cgroupfs.holds(attribute, found, wanted[attribute]):
            drift[attribute] = (found, cgroupfs.expected_read_back(attribute, wanted[attribute]))
    return drift
