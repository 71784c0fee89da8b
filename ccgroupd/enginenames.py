"""What an engine's name may be: a rule cheap enough for ``ccgroupctl`` to import.

Each engine on a host (one per project) has a name: its cgroup's, its journald records'
``CCGROUPD_ENGINE`` and ``ccgroupctl --engine NAME``'s. The rule is checked with str
methods, not re (re loads enum, functools and collections: start-up time ccgroupctl does
not have); ENGINE_NAME_PATTERN is the same rule as a regular expression, for messages and
for whoever validates with one (tests/test_enginenames.py holds both to each other).
"""

from __future__ import annotations

ENGINE_NAME_PATTERN = "[a-z0-9][a-z0-9_-]{0,31}"
MAX_ENGINE_NAME_LENGTH = 32
# The journald field of the daemon's records that names their engine: the daemon's logging
# makes CCGROUPD_<KEY> of each key a record carries, so it is the key "engine".
ENGINE_JOURNAL_FIELD = "CCGROUPD_ENGINE"
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("_-")


def is_engine_name(name: str) -> bool:
    """Whether ``name`` matches ENGINE_NAME_PATTERN in full."""
    return (0 < len(name) <= MAX_ENGINE_NAME_LENGTH and name[0] in _FIRST
            and all(char in _REST for char in name[1:]))
