"""Effective limits = config file <- persisted changes <- runtime changes, and which layer
each value came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ccgroupd.limits.model import LIMIT_NAMES, Limits

Source = Literal["config", "persisted", "runtime"]


@dataclass(frozen=True)
class LimitLayers:
    """The three layers; values in the change layers are kept as the operator wrote them."""

    config: Limits
    persisted: Mapping[str, object] = field(default_factory=dict)
    runtime: Mapping[str, object] = field(default_factory=dict)

    def effective(self) -> Limits:
        """Raises LimitsError if the layers do not combine (e.g. memory_high above memory)."""
        # One overlay, validated once: an intermediate layer may be inconsistent on its own.
        return self.config.with_changes({**self.persisted, **self.runtime})

    def source(self, name: str) -> Source:
        if name in self.runtime:
            return "runtime"
        if name in self.persisted:
            return "persisted"
        return "config"

    def with_set(self, changes: Mapping[str, object], *, runtime: bool) -> LimitLayers:
        """The layers after ``set``. A persistent change also drops runtime changes of the same
        limits: what the operator just asked for is what must be in force."""
        if runtime:
            return LimitLayers(self.config, self.persisted, {**self.runtime, **changes})
        kept_runtime = {k: v for k, v in self.runtime.items() if k not in changes}
        return LimitLayers(self.config, {**self.persisted, **changes}, kept_runtime)

    def with_config(self, config: Limits) -> LimitLayers:
        """The layers after a reload: the changes stay on top of the new config file."""
        return LimitLayers(config, self.persisted, self.runtime)

    def reset(self) -> LimitLayers:
        return LimitLayers(self.config)

    def describe(self) -> dict[str, dict[str, object]]:
        """``status`` ``limits``: every limit name -> {"value": ..., "source": ...}, and
        "relative": "75%" when the value is that share of the host."""
        effective = self.effective()
        values, relative = effective.to_mapping(), effective.relative()
        described: dict[str, dict[str, object]] = {
            name: {"value": values[name], "source": self.source(name)} for name in LIMIT_NAMES}
        for name, share in relative.items():
            described[name]["relative"] = share
        return described
