"""Which groups are builds, and which limits a build gets: pure functions of paths and
command lines, no kernel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Protocol

from ccgroupd.limits.model import Limits


class BuildRule(Protocol):
    """A [[builds.rules]] entry (ccgroupd.config.BuildRule)."""

    @property
    def command(self) -> str | None: ...
    @property
    def command_regex(self) -> str | None: ...
    @property
    def limits(self) -> Limits: ...


class BuildGroups:
    """Globs on a group's path relative to the engine group ("**/buildkit/*"): "*" and the
    other fnmatch forms match within one component, "**" any number of components."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = [tuple(pattern.strip("/").split("/")) for pattern in patterns]

    def is_build(self, group: str) -> bool:
        parts = tuple(group.strip("/").split("/"))
        return any(_matches(pattern, parts) for pattern in self._patterns)

    def may_hold_builds(self, group: str) -> bool:
        """Whether a build could appear below ``group`` ("" is the engine group itself): a
        directory worth watching for new groups."""
        parts = tuple(part for part in group.strip("/").split("/") if part)
        return any(_prefix_of_match(pattern, parts) for pattern in self._patterns)


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[skip:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])


def _prefix_of_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether some path that starts with ``parts`` and is longer matches ``pattern``."""
    if not parts:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    return fnmatchcase(parts[0], pattern[0]) and _prefix_of_match(pattern[1:], parts[1:])


def matching_rule(rules: Sequence[BuildRule], argv: Sequence[str]) -> int | None:
    """The index of the first rule that matches the command, None if none does."""
    if not argv:
        return None
    name = argv[0].rsplit("/", 1)[-1]
    line = " ".join(argv)
    for index, rule in enumerate(rules):
        if rule.command is not None and fnmatchcase(name, rule.command):
            return index
        if rule.command_regex is not None and re.search(rule.command_regex, line):
            return index
    return None


def rule_limits(defaults: Limits, rule: BuildRule) -> Limits:
    """The defaults with the limits the rule names laid over (a rule's unnamed keys keep
    the defaults)."""
    return defaults.with_changes(rule.limits.given())


def check_builds(rules: Sequence[BuildRule], defaults: Limits, engine: Limits) -> None:
    """Refuse build limits above the engine's (LimitsError naming the key)."""
    defaults.check_within(engine, "builds")
    for number, rule in enumerate(rules):
        rule_limits(defaults, rule).check_within(engine, f"builds.rules[{number}]")
