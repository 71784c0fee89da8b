"""The daemon's only timer, so that an idle daemon wakes once per tick.

Each tick pings systemd's watchdog, polls each engine's monitor (cpu.stat has no change
notification) and build tracker (its samples) and refreshes STATUS=, all on the
loop without a thread hop. Every Nth tick the drift check starts as a task of its own:
re-applying drifted limits can block in reclaim (in a thread), and the pings must go on
meanwhile. A change of limits under way (the controller's lock is held) verifies them
anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from ccgroupd.config import MonitorSection
from ccgroupd.daemon.controller import LimitController
from ccgroupd.notify import Notifier


class Polled(Protocol):
    def poll(self) -> None: ...


class Housekept(Protocol):
    """An engine (or the budget group): what it polls, and its limits to check for drift."""

    @property
    def controller(self) -> LimitController: ...

    def polled(self) -> Iterable[Polled]: ...

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...


def housekeeping_schedule(settings: MonitorSection,
                          watchdog_interval_s: float | None) -> tuple[float, int]:
    """Seconds between ticks, and every how many ticks drift is checked.

    The tick is the monitoring interval (monitor.cpu_poll_interval_s), or systemd's
    watchdog interval (WatchdogSec/2) if that is shorter. Drift is checked every
    drift_check_interval_s rounded to whole ticks, at least once per tick.
    """
    interval_s = min(settings.cpu_poll_interval_s,
                     watchdog_interval_s or settings.cpu_poll_interval_s)
    return interval_s, max(1, round(settings.drift_check_interval_s / interval_s))


async def housekeep(settings: MonitorSection, *, notifier: Notifier,
                    parts: Callable[[], Iterable[Housekept]],
                    update_status: Callable[[], None],
                    sleep: Callable[[float], Awaitable[None]]) -> None:
    """Tick until cancelled (see the module docstring)."""
    interval_s, drift_every = housekeeping_schedule(settings, notifier.watchdog_interval_s)
    ticks = 0
    while True:
        notifier.watchdog()
        current = list(parts())
        for part in current:
            for polled in part.polled():  # the monitor and the build tracker, once they run
                polled.poll()
        update_status()
        if ticks and ticks % drift_every == 0:
            for part in current:
                if not part.controller.lock.locked():
                    part.spawn(_check_drift(part.controller))
        ticks += 1
        await sleep(interval_s)


async def _check_drift(controller: LimitController) -> None:
    await controller.check_drift()
