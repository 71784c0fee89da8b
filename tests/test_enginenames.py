"""The engine name rule: the str-method check and its regular expression agree."""

from __future__ import annotations

import re

import pytest

from ccgroupd.enginenames import ENGINE_NAME_PATTERN, is_engine_name

NAMES = ["ci", "web", "a", "0", "9lives", "my_project-2", "a" * 32, "a" * 33, "", "-ci", "_ci",
         "Ci", "c i", "ci.prod", "ci/../x", "é", "ci\n", "x-", "ci_", "\u0660", "\uff43\uff49"]


@pytest.mark.parametrize("name", NAMES)
def test_the_check_is_the_pattern(name: str) -> None:
    assert is_engine_name(name) == (re.fullmatch(ENGINE_NAME_PATTERN, name) is not None)


def test_what_is_and_is_not_a_name() -> None:
    assert [name for name in NAMES if is_engine_name(name)] == [
        "ci", "web", "a", "0", "9lives", "my_project-2", "a" * 32, "x-", "ci_"]


def test_the_journal_field_is_what_the_daemon_makes_of_the_key_engine() -> None:
    from ccgroupd.daemon.logsetup import journal_field_name
    from ccgroupd.enginenames import ENGINE_JOURNAL_FIELD

    assert journal_field_name("engine") == ENGINE_JOURNAL_FIELD
