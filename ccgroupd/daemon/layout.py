"""Where the engine group goes, and taking it over at start-up.

Under systemd with Delegate=yes the daemon moves itself into the leaf
``<unit>/supervisor`` (the unit's group may hold no processes once controllers are
enabled for its children), enables cpu, memory, pids (and cpuset and io if offered) in
the unit's ``cgroup.subtree_control`` and uses ``<unit>/<cgroup.name>``. Without systemd the group
is ``<cgroup root>/<cgroup.name>``, with the controllers enabled top-down from the root.
No file of a group systemd manages is written: only the delegated unit group's
subtree_control and what is below.

A group left over from an earlier run has its processes killed (``cgroup.leftover =
"kill"``, logged as ``cgroup_leftover_killed``), or the daemon refuses to start
("refuse").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from ccgroupd.engine.supervisor import CgroupEngineGroup, empty_group
from ccgroupd.errors import CcgroupdError, ConfigError, HostUnsupportedError
from ccgroupd.kernel.cgroupfs import Cgroupfs

log = structlog.get_logger("ccgroupd")

# What the engine group needs, and what it takes when the host offers it.
REQUIRED_CONTROLLERS = ("cpu", "memory", "pids")
OPTIONAL_CONTROLLERS = ("cpuset", "io")
SUPERVISOR_LEAF = "supervisor"
LEFTOVER_KILL_TIMEOUT_S = 30.0


class LeftoverProcessesError(CcgroupdError):
    """The engine group holds processes and ``cgroup.leftover = "refuse"``."""


@dataclass(frozen=True)
class Layout:
    engine: str  # the engine group, relative to the cgroup root
    delegated: bool  # True: inside our systemd unit's delegated subtree
    unit: str | None = None  # the unit's group (delegated only)


def plan_layout(cgroupfs: Cgroupfs, own: str, name: str) -> Layout:
    """Decide where the engine group lives, for a daemon in the group ``own``; see the
    module docstring. Changes nothing."""
    unit = own.removesuffix(f"/{SUPERVISOR_LEAF}")
    if not unit.endswith(".service"):
        return Layout(engine=name.strip("/"), delegated=False)
    if not cgroupfs.delegated(unit):
        raise HostUnsupportedError(
            f"ccgroupd runs in the systemd unit group /{unit} without delegation; "
            "add Delegate=yes to its unit (see systemd/ccgroupd.service)")
    if name.startswith("/"):
        raise ConfigError(
            f"cgroup.name = {name!r}: an absolute group is outside this unit's delegated "
            f"subtree /{unit}; under systemd use a relative name such as 'dagger-engine'")
    return Layout(engine=f"{unit}/{name}", delegated=True, unit=unit)


def set_up_layout(cgroupfs: Cgroupfs, layout: Layout) -> None:
    """Join the supervisor leaf (delegated) and enable the controllers the engine group needs."""
    parent = layout.engine.rpartition("/")[0]
    if layout.unit is not None:
        leaf = f"{layout.unit}/{SUPERVISOR_LEAF}"
        cgroupfs.create(leaf)
        cgroupfs.attach(leaf, 0)
        top = layout.unit
    else:
        top = ""
    wanted = {*REQUIRED_CONTROLLERS, *(set(OPTIONAL_CONTROLLERS) & cgroupfs.controllers(top))}
    cgroupfs.create(parent)  # several engines: the group above them, which holds the budget
    cgroupfs.enable_controllers(parent, wanted, top=top)


async def claim_engine_group(cgroupfs: Cgroupfs, group: str, leftover: str,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Create the engine group, or take over an existing one per the leftover policy."""
    if cgroupfs.create(group):
        return
    pids = cgroupfs.subtree_procs(group)
    if pids:
        path = cgroupfs.path(group)
        if leftover == "refuse":
            raise LeftoverProcessesError(
                f"{path} still holds {len(pids)} processes (pids {', '.join(map(str, pids[:10]))})"
                " from an earlier run or another tool, and cgroup.leftover = 'refuse'; stop them "
                "or set cgroup.leftover = 'kill'")
        try:
            await asyncio.wait_for(empty_group(CgroupEngineGroup(cgroupfs, group), sleep),
                                   LEFTOVER_KILL_TIMEOUT_S)
        except TimeoutError:
            raise LeftoverProcessesError(
                f"{path} still holds processes {LEFTOVER_KILL_TIMEOUT_S:g} s after cgroup.kill "
                "(stuck in the kernel?); not starting a new engine next to them") from None
        log.warning("cgroup_leftover_killed", cgroup=str(path), delta=len(pids))
    CgroupEngineGroup(cgroupfs, group).prepare()


async def take_engine_group(cgroupfs: Cgroupfs, own: str, name: str, leftover: str,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Layout:
    """Plan the layout for a daemon in the group ``own``, set it up, and claim the engine
    group (new, or emptied per the leftover policy)."""
    layout = plan_layout(cgroupfs, own, name)
    set_up_layout(cgroupfs, layout)
    await claim_engine_group(cgroupfs, layout.engine, leftover, sleep)
    return layout
