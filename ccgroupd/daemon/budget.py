"""The budget: the group above every engine, and its limits (config [budget]), which the
kernel holds all engines to together."""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccgroupd.daemon.controller import LimitController
from ccgroupd.errors import CgroupError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.model import Limits
from ccgroupd.limits.store import BUDGET_STATE_FILE_NAME, StateStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ccgroupd.daemon.api import Peer
    from ccgroupd.daemon.housekeeping import Polled


class BudgetGroup:
    """The engines' parent group and its limits; written before any engine starts."""

    def __init__(self, cgroupfs: Cgroupfs, group: str, state_dir: Path, config: Limits, *,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.group = group
        self.cgroupfs = cgroupfs
        self._spawn = spawn
        self.controller = LimitController(
            cgroupfs, group, StateStore(state_dir, name=BUDGET_STATE_FILE_NAME), config)

    def check_reload(self, config: Limits) -> Limits:
        """The budget after a reload; raises LimitsError if it does not fit this host."""
        return self.controller.checked(self.controller.layers.with_config(config))

    async def reload(self, config: Limits, peer: Peer | None) -> None:
        await self.controller.reload(config, peer)

    def polled(self) -> Iterable[Polled]:
        return ()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._spawn(coroutine)

    def remove(self) -> None:
        """Remove the group once every engine's is gone; one left behind keeps it."""
        with contextlib.suppress(CgroupError):
            self.cgroupfs.remove(self.group)
