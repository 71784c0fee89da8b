"""Several engines under one budget: each engine's limits within the budget, and the
guarantees of all engines together within what the budget (or the host) can give. Pure
functions of the models; no kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ccgroupd.errors import LimitsError
from ccgroupd.limits.builds import BuildRule, check_builds
from ccgroupd.limits.model import Limits
from ccgroupd.values import format_bytes, resolution_host


def check_engines(engines: Mapping[str, Limits], budget: Limits, rules: Sequence[BuildRule],
                  build_defaults: Limits) -> None:
    """Refuse engine limits above the budget's, guarantees that add up to more than the
    budget (or the host) has, and build limits above an engine's (LimitsError naming the
    engine and the key)."""
    for name, limits in engines.items():
        limits.check_within(budget, f"engines.{name}", outer_name="the budget's")
        try:
            check_builds(rules, build_defaults, limits)
        except LimitsError as exc:
            raise LimitsError(exc.field, exc.value, f"{exc.reason} (engine {name})") from None
    check_guarantees(engines, budget)


def check_guarantees(engines: Mapping[str, Limits], budget: Limits) -> None:
    """Refuse memory_min, or memory_low, that add up over the engines to more than the
    budget's memory (the host's memory without one): the kernel would protect each engine
    only in proportion, so no guarantee would hold."""
    if budget.memory_max_bytes is not None:
        cap_bytes, cap = budget.memory_max_bytes, "the budget's memory"
    else:
        cap_bytes, cap = resolution_host().memory_bytes, "the host's memory"
    for key, protected in (("memory_min", _memory_min), ("memory_low", _protected)):
        shares = {name: protected(limits) for name, limits in engines.items()}
        total_bytes = sum(shares.values())
        if total_bytes > cap_bytes:
            last = next(name for name in reversed(shares) if shares[name])
            listed = ", ".join(f"{name} {format_bytes(size)}"
                               for name, size in shares.items() if size)
            raise LimitsError(f"engines.{last}.{key}", format_bytes(shares[last]),
                              f"the engines' {key} add up to {format_bytes(total_bytes)} "
                              f"({listed}), above {cap} ({format_bytes(cap_bytes)})")


def _memory_min(limits: Limits) -> int:
    return limits.memory_min_bytes or 0


def _protected(limits: Limits) -> int:
    # The kernel protects max(memory.min, memory.low) of a group from reclaim.
    return max(limits.memory_min_bytes or 0, limits.memory_low_bytes or 0)
