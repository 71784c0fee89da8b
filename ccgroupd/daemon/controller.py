"""Limit changes: the layers in force, one change at a time, written and verified in the
kernel, saved when they are to outlive the daemon, and logged.

Every change (``set``, ``reset``, a reload, a drift repair) holds :attr:`LimitController.lock`,
writes through ccgroupd.limits.enforce (ordered, verified, rolled back on failure) in a
worker thread, because lowering memory.max blocks the writer in reclaim and the event
loop (and systemd's watchdog) must go on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

import structlog

from ccgroupd.daemon.status import read_memory_bytes
from ccgroupd.errors import CcgroupdError, LimitsError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import MEMORY_MAX, MEMORY_SWAP_MAX
from ccgroupd.limits.enforce import apply_limits, find_drift
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import LIMIT_NAMES, Limits, host_cpu_count
from ccgroupd.limits.store import StateStore
from ccgroupd.values import describe_limit_value, format_bytes

if TYPE_CHECKING:
    from ccgroupd.daemon.api import Peer

log = structlog.get_logger("ccgroupd")

ChangeScope = Literal["persistent", "runtime", "reset", "reload"]


class LimitController:
    """The engine group's limits: what is asked (the layers), what the kernel holds."""

    def __init__(self, cgroupfs: Cgroupfs, group: str, store: StateStore, config: Limits, *,
                 host_cpus: Callable[[], int] = host_cpu_count,
                 check: Callable[[Limits], None] = lambda _limits: None) -> None:
        self._cgroupfs = cgroupfs
        self._check = check  # what else the limits must fit: the budget and its neighbours
        self._group = group
        self._store = store
        self.state_file = store.path
        self._host_cpus = host_cpus
        self.layers = LimitLayers(config)
        self.limits: Limits = config  # in force once start() has applied them
        self.in_force: dict[str, str] = {}  # attribute -> value the kernel read back
        self.lock = asyncio.Lock()
        self.cgroup_path = str(cgroupfs.path(group))

    def start(self) -> None:
        """Apply the config file's limits and the persisted changes at start-up (the group
        is new or emptied). A persisted value this host cannot give is set aside."""
        config = self.layers.config
        self.layers = LimitLayers(config, self._store.load(config, usable=self._fits))
        limits = self.checked(self.layers)
        self._apply(limits, previous=None)
        if self.layers.persisted:
            log_limits_changed(self.layers.config, limits, cgroup=self.cgroup_path, peer=None,
                               scope="persistent")

    def reapply(self) -> None:
        """Write the limits in force again, into a group that was recreated empty."""
        self._apply(self.limits, previous=None)

    async def set(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                  peer: Peer) -> None:
        async with self.lock:
            layers = self.layers.with_set(changes, runtime=runtime)
            self._refuse_memory_below_usage(self.checked(layers), force=force)
            await self._change(layers, peer, "runtime" if runtime else "persistent",
                               persist=not runtime)

    async def reset(self, peer: Peer, *, force: bool = False) -> None:
        async with self.lock:
            layers = self.layers.reset()
            self._refuse_memory_below_usage(self.checked(layers), force=force)
            await self._change(layers, peer, "reset", persist=True)

    async def reload(self, config: Limits, peer: Peer | None) -> None:
        """The config file's new limits under the operator's changes, applied; a memory limit
        at or below usage is not: the one in force is kept as a runtime change, and said."""
        async with self.lock:
            layers = self.layers.with_config(config)
            new = self.checked(layers)
            try:
                self._refuse_memory_below_usage(new, force=False)
            except MemoryBelowUsageError as refused:
                kept = self.limits.memory_max_bytes
                layers = layers.with_set({"memory": kept}, runtime=True)
                self.checked(layers)
                log.warning("limits_kept", cgroup=self.cgroup_path, file=MEMORY_MAX,
                            limit_bytes=kept, config_bytes=new.memory_max_bytes,
                            usage_bytes=refused.usage_bytes)
            await self._change(layers, peer, "reload", persist=False)

    async def check_drift(self) -> dict[str, tuple[str, str]]:
        """Compare the kernel with the limits in force; re-apply and log what drifted."""
        async with self.lock:
            try:
                drift = find_drift(self._cgroupfs, self._group, self.limits)
                for attribute, (found, expected) in drift.items():
                    log.warning("limits_drifted", cgroup=self.cgroup_path, file=attribute,
                                old=found, new=expected)
                if drift:
                    await self._apply_in_thread(self.limits)
            except CcgroupdError as error:
                # The error is the record's field; a traceback would add nothing.
                log.error("limits_drifted",  # noqa: TRY400
                          cgroup=self.cgroup_path, error=str(error))
                return {}
            return drift

    def _refuse_memory_below_usage(self, new: Limits, *, force: bool) -> None:
        refuse_memory_below_usage(
            self.limits, new, cgroup=self.cgroup_path, force=force,
            read_usage_bytes=lambda: read_memory_bytes(self._cgroupfs, self._group))

    def check_host(self, limits: Limits) -> None:
        """Refuse what this host cannot give: more CPUs than it has, a swap limit without
        swap accounting (the kernel would refuse the write with ENOENT)."""
        limits.check_host(self._host_cpus())
        if (limits.memory_swap_max_bytes is not None
                and not self._cgroupfs.has_attribute(self._group, MEMORY_SWAP_MAX)):
            raise LimitsError("memory_swap", limits.memory_swap_max_bytes,
                              f"this host has no swap accounting (no {MEMORY_SWAP_MAX} in "
                              f"{self.cgroup_path}); leave memory_swap unset")

    def checked(self, layers: LimitLayers, *, alone: bool = False) -> Limits:
        """The effective limits of ``layers``; raises LimitsError if they do not fit this
        host and (unless ``alone``: the caller checks them with the others) what else
        they must fit."""
        limits = layers.effective()
        if alone:
            self.check_host(limits)
        else:
            self._fits(limits)
        return limits

    def _fits(self, limits: Limits) -> None:
        self.check_host(limits)
        self._check(limits)

    async def _change(self, layers: LimitLayers, peer: Peer | None, scope: ChangeScope,
                      *, persist: bool) -> None:
        old = self.limits
        new = layers.effective()
        if persist and layers.persisted != self.layers.persisted:
            await self._apply_and_save(new, layers.persisted, self.layers.persisted)
        else:
            await self._apply_in_thread(new)
        self.layers = layers
        log_limits_changed(old, new, cgroup=self.cgroup_path, peer=peer, scope=scope)

    def _apply(self, new: Limits, previous: Limits | None) -> None:
        in_force = apply_limits(self._cgroupfs, self._group, new, previous)
        # A reload that changed nothing here (another engine's did) is not news.
        unchanged = previous is not None and in_force == self.in_force
        self.in_force, self.limits = in_force, new
        if not unchanged:
            log.info("limits_applied", cgroup=self.cgroup_path,
                     values=", ".join(f"{attribute}={value}"
                                      for attribute, value in in_force.items()))

    async def _apply_in_thread(self, new: Limits) -> None:
        await asyncio.to_thread(self._apply, new, self.limits)

    async def _apply_and_save(self, new: Limits, persisted: Mapping[str, object],
                              persisted_before: Mapping[str, object]) -> None:
        """Apply ``new`` and save ``persisted`` side by side; whichever fails, both are undone.

        Both wait on the kernel, the writes in reclaim and the save in fsync: a persistent
        change takes as long as the slower of the two, not both. The file is replaced
        atomically, so a crash in between leaves the old or the new changes, whole.
        """
        previous = self.limits
        saving = asyncio.ensure_future(asyncio.to_thread(self._store.save, persisted))
        try:
            await self._apply_in_thread(new)
        except Exception as exc:
            await asyncio.wait([saving])
            if saving.exception() is None:
                try:
                    await asyncio.to_thread(self._store.save, persisted_before)
                except CcgroupdError as undo:
                    exc.add_note(f"restoring the saved changes failed: {undo}")
            raise
        try:
            await saving
        except Exception:
            await self._apply_in_thread(previous)
            raise


class MemoryBelowUsageError(LimitsError):
    def __init__(self, limit_bytes: int, usage_bytes: int, cgroup: str) -> None:
        self.usage_bytes = usage_bytes
        super().__init__(
            "memory", format_bytes(limit_bytes),
            f"at or below current usage {format_bytes(usage_bytes)} of {cgroup}; "
            "the kernel would OOM-kill the engine instead of failing; use --force")


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
        raise MemoryBelowUsageError(limit, usage_bytes, cgroup)


def log_limits_changed(old: Limits, new: Limits, *, cgroup: str, peer: Peer | None,
                       scope: ChangeScope) -> None:
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
    return ", ".join(f"{name}={describe_limit_value(name, values[name])}" for name in names)
