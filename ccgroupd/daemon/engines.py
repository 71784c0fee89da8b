"""The control socket's requests for several engines: each goes to the engine it names
(or the only one), ``status`` without a name gives every engine and the budget, and a
change of one engine's limits is checked against the budget first."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ccgroupd.daemon.commands import Commands
from ccgroupd.daemon.status import CpuMeter, read_usage
from ccgroupd.engine.supervisor import EngineState
from ccgroupd.errors import EXIT_USAGE, CcgroupdError
from ccgroupd.limits.budget import check_guarantees
from ccgroupd.limits.model import Limits
from ccgroupd.values import DEFAULT_WEIGHT

if TYPE_CHECKING:
    from ccgroupd.daemon.api import Peer
    from ccgroupd.daemon.budget import BudgetGroup
    from ccgroupd.daemon.unit import EngineUnit


class EngineNameError(CcgroupdError):
    """No engine of that name, or none named where several run."""

    exit_code = EXIT_USAGE


class EngineCommands:
    """Implements ccgroupd.daemon.api.Controller over every engine."""

    def __init__(self, engines: Mapping[str, EngineUnit],
                 budget: Callable[[], BudgetGroup | None], *,
                 reload: Callable[[Peer], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engines = engines
        self._budget = budget
        self._reload = reload
        self._budget_cpu = CpuMeter(clock)
        # During a reload: every engine's limits and the budget's as they will be, which a
        # change of one engine must fit rather than the others' before the reload.
        self._planned: tuple[Mapping[str, Limits], Limits] | None = None

    def unit(self, name: str | None) -> EngineUnit:
        if name is None:
            if len(self._engines) == 1:
                return next(iter(self._engines.values()))
            raise EngineNameError(f"several engines run here ({', '.join(self._engines)}): "
                                  "name one with --engine NAME")
        unit = self._engines.get(name)
        if unit is None:
            raise EngineNameError(f"no engine named {name!r} (engines: "
                                  f"{', '.join(self._engines) or 'none'})")
        return unit

    def _commands(self, name: str | None) -> tuple[EngineUnit, Commands]:
        unit = self.unit(name)
        if unit.commands is None:
            raise EngineNameError(f"engine {unit.name!r} is still starting; try again")
        return unit, unit.commands

    # -- what the API asks ---------------------------------------------------------------

    def status(self, engine: str | None = None) -> dict[str, Any]:
        if engine is not None:
            return _document(*self._commands(engine))
        documents = [_document(unit, unit.commands)
                     for unit in self._engines.values() if unit.commands is not None]
        overview: dict[str, Any] = {"engines": documents, "budget": self._budget_status()}
        if len(documents) == 1:
            # The single-engine fields at the top, as before several engines (one release).
            return {**documents[0], **overview}
        return overview

    def builds(self, engine: str | None = None) -> dict[str, Any]:
        unit, commands = self._commands(engine)
        return {"name": unit.name, **commands.builds()}

    async def set_limits(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                         peer: Peer, builds: Mapping[str, object] | None = None,
                         running: bool = False, engine: str | None = None) -> dict[str, Any]:
        unit, commands = self._commands(engine)
        with unit.logging_as():
            reply = await commands.set_limits(changes, runtime=runtime, force=force, peer=peer,
                                              builds=builds, running=running)
        return {"name": unit.name, **reply}

    async def reset(self, peer: Peer, *, force: bool = False,
                    engine: str | None = None) -> dict[str, Any]:
        unit, commands = self._commands(engine)
        with unit.logging_as():
            return {"name": unit.name, **await commands.reset(peer, force=force)}

    async def reload(self, peer: Peer) -> dict[str, Any]:
        await self._reload(peer)
        return self.status()

    async def restart_engine(self, peer: Peer, engine: str | None = None) -> dict[str, Any]:
        unit, commands = self._commands(engine)
        with unit.logging_as():
            return {"name": unit.name, **await commands.restart_engine(peer)}

    # -- the budget ----------------------------------------------------------------------

    def check_limits(self, name: str, limits: Limits) -> None:
        """Refuse limits for engine ``name`` above the budget's, or guarantees that add up
        with the other engines' to more than the budget has (LimitsError)."""
        budget = self._budget()
        if budget is None:
            return
        engines, budget_limits = self._planned or (
            {other: unit.controller.limits for other, unit in self._engines.items()},
            budget.controller.limits)
        limits.check_within(budget_limits, f"engines.{name}", outer_name="the budget's")
        check_guarantees({**engines, name: limits}, budget_limits)

    @contextlib.contextmanager
    def planned(self, engines: Mapping[str, Limits], budget: Limits) -> Iterator[None]:
        """Check ``engines`` (every engine's limits after a reload) against the ``budget``
        after it, and hold changes to them for the reload's duration (LimitsError)."""
        for name, limits in engines.items():
            limits.check_within(budget, f"engines.{name}", outer_name="the budget's")
        check_guarantees(engines, budget)
        self._planned = engines, budget
        try:
            yield
        finally:
            self._planned = None

    def _budget_status(self) -> dict[str, Any] | None:
        budget = self._budget()
        if budget is None:
            return None
        controller = budget.controller
        limits = {name: unit.controller.limits for name, unit in self._engines.items()}
        weights = {name: engine.cpu_weight or DEFAULT_WEIGHT for name, engine in limits.items()}
        contending = {name for name, unit in self._engines.items()
                      if unit.state not in (EngineState.FAILED, EngineState.EXITED)}
        total_weight = sum(weights[name] for name in contending) or 1
        usage = read_usage(budget.cgroupfs, budget.group, controller.limits, self._budget_cpu)
        cpu_percent = usage["cpu_percent"]
        # The schema ccgroupctl reads (and documents): CPUs in use, as the budget's cpus.
        usage["cpu_cores"] = None if cpu_percent is None else round(cpu_percent / 100, 3)
        return {
            "cgroup": controller.cgroup_path,
            "limits": controller.layers.describe(),
            "usage": usage,
            "guarantees": {
                f"{key}_bytes": sum(getattr(engine, f"{key}_bytes") or 0
                                    for engine in limits.values())
                for key in ("memory_min", "memory_low")},
            # What each engine gets when all contend: its weight's share of the CPU (an
            # engine that ended has an empty group, which takes no share).
            "shares": {name: {"cpu_weight": weights[name],
                              "cpu_share": round(weights[name] / total_weight, 3)
                              if name in contending else 0.0,
                              "memory_min_bytes": engine.memory_min_bytes or 0,
                              "memory_low_bytes": engine.memory_low_bytes or 0}
                       for name, engine in limits.items()},
        }


def _document(unit: EngineUnit, commands: Commands) -> dict[str, Any]:
    """One engine's status: the single-engine document, its name and its disk I/O limits."""
    return {"name": unit.name, **commands.status(), "io_max": unit.io.status()}
