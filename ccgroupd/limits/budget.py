"""Several engines under one budget: each engine's limits within the budget, and the
guarantees of all engines together within what the budget (or the host) can give. Pure
functions of the models; no kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ccgroupd.errors import LimitsError
from ccgroupd.limits.builds import BuildRule, check_builds
from ccgroupd.limits.model import Limits


def check_engines(engines: Mapping[str, Limits], budget: Limits, rules: Sequence[BuildRule],
                  build_defaults: Limits) -> None:
    """Refuse engine limits above the budget's and build limits above an engine's
    (LimitsError naming the engine and the key)."""
    for name, limits in engines.items():
        limits.check_within(budget, f"engines.{name}", outer_name="the budget's")
        try:
            check_builds(rules, build_defaults, limits)
        except LimitsError as exc:
            raise LimitsError(exc.field, exc.value, f"{exc.reason} (engine {name})") from None
