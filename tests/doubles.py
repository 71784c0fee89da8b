"""Test doubles shared by the test files: one definition each.

The fake cgroup kernel is tests/fakekernel.py; what is here stands in for time, the
event loop's entry point and helper commands.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ccgroupd.engine.process import Completed

Reply = Completed | Exception


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, bounded so a hang fails instead of blocking."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 10))
    return wrapper


class FakeTime:
    """A clock that moves only when told to or when the code under test sleeps.

    ``clock`` and ``sleep`` go where the code takes its clock and sleep. A sleep of
    ``block_from_s`` or longer never ends (a test can show a forced stop cutting it
    short); the others take a few loop turns, so that whatever finished already wins a
    race, then move the clock. ``on_sleep`` sees each finished sleep.
    """

    def __init__(self, now: float = 1000.0, *, block_from_s: float = float("inf"),
                 on_sleep: Callable[[float], None] | None = None) -> None:
        self.now = now
        self.block_from_s = block_from_s
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, delay_s: float) -> None:
        if delay_s >= self.block_from_s:
            await asyncio.Event().wait()
        for _ in range(5):
            await asyncio.sleep(0)
        self.sleeps.append(delay_s)
        if self._on_sleep is not None:
            self._on_sleep(delay_s)
        self.now += delay_s


class ScriptedCommands:
    """A CommandRunner whose helper commands answer from a script.

    An argv in ``script`` gets its replies in turn (the last one repeats); any other argv
    gets those of ``otherwise``, and with none there the test fails: the code ran a
    command nobody expected. A reply is a Completed, or an exception to raise.
    """

    def __init__(self, script: Mapping[tuple[str, ...], Reply | Sequence[Reply]] | None = None,
                 *, otherwise: Sequence[Reply] = ()) -> None:
        self.script = {argv: _replies(reply) for argv, reply in (script or {}).items()}
        self.otherwise = list(otherwise)
        self.calls: list[tuple[tuple[str, ...], float]] = []
        self._turns: Counter[tuple[str, ...] | None] = Counter()  # None: the otherwise ones

    @property
    def ran(self) -> list[tuple[str, ...]]:
        return [argv for argv, _timeout in self.calls]

    async def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        key = tuple(argv)
        replies = self.script.get(key, self.otherwise)
        if not replies:
            raise AssertionError(f"ran a command no test expected: {key}")
        self.calls.append((key, timeout_s))
        turn = key if key in self.script else None
        reply = replies[min(self._turns[turn], len(replies) - 1)]
        self._turns[turn] += 1
        if isinstance(reply, Exception):
            raise reply
        return reply


def _replies(reply: Reply | Sequence[Reply]) -> list[Reply]:
    return [reply] if isinstance(reply, Completed | Exception) else list(reply)
