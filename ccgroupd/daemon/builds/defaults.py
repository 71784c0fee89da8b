"""The default limits of builds: the config file's [builds] values, under persisted and
run-time changes from ``ccgroupctl set --build-...``, the same three layers as the
engine's limits (and the same state file format, in its own file)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.builds.tracker import BuildTracker
from ccgroupd.limits.builds import BuildRule, check_builds
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits
from ccgroupd.limits.store import StateStore

log = structlog.get_logger("ccgroupd")


class BuildDefaults:
    def __init__(self, store: StateStore, config_limits: Limits, rules: Sequence[BuildRule],
                 engine_limits: Callable[[], Limits]) -> None:
        self._store = store
        self._rules = rules
        self._engine_limits = engine_limits
        persisted = store.load(config_limits, lambda limits: check_builds(
            rules, limits, engine_limits()))
        self.layers = LimitLayers(config_limits, persisted)

    def effective(self) -> Limits:
        return self.layers.effective()

    def checked_reload(self, config_limits: Limits, rules: Sequence[BuildRule],
                       engine_limits: Limits) -> LimitLayers:
        """The layers with a reloaded [builds] under the changes; raises LimitsError (the
        reload then changes nothing) if they do not fit the engine's reloaded limits."""
        layers = self.layers.with_config(config_limits)
        check_builds(rules, layers.effective(), engine_limits)
        return layers

    def reloaded(self, layers: LimitLayers, rules: Sequence[BuildRule]) -> None:
        self.layers, self._rules = layers, rules

    def set(self, changes: Mapping[str, object], *, runtime: bool, running: bool,
            tracker: BuildTracker | None, peer: Peer) -> None:
        """Raises LimitsError (nothing changed) for a value that is refused or above the
        engine's; StateError if the change could not be saved."""
        layers = self.layers.with_set(changes, runtime=runtime)
        new = layers.effective()
        check_builds(self._rules, new, self._engine_limits())
        if not runtime:
            self._store.save(layers.persisted)
        old, self.layers = self.effective(), layers
        if tracker is not None:
            tracker.set_defaults(new, running=running)
        log.info("build_defaults_changed", old=old.to_mapping(), new=new.to_mapping(),
                 scope="runtime" if runtime else "persistent", running=running,
                 uid=peer.uid, pid=peer.pid)
