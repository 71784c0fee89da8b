"""Rate-limited report windows, one per event type.

The first occurrence after a quiet period is reported at once (an OOM kill within
milliseconds) and opens a window of ``interval_s``; later occurrences in the window are
summed and reported as one at its end; a window that ends with nothing pending closes,
so the next occurrence is again reported at once. The totals since the start are kept
here too, since every report carries one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# report(event, amounts summed in the window, total since the start)
Report = Callable[[str, Mapping[str, int], int], None]


@dataclass
class _Window:
    total: int = 0  # since the start
    end: float | None = None  # while set, occurrences are summed until then
    pending: Counter[str] = field(default_factory=Counter)


class ReportWindows:
    def __init__(self, events: Iterable[str], interval_s: float, report: Report) -> None:
        self._windows = {event: _Window() for event in events}
        self._interval_s = interval_s
        self._report = report

    def count(self, event: str, amount: int) -> None:
        """Add to the event's total without reporting (throttled periods below the
        threshold still count)."""
        self._windows[event].total += amount

    def occurred(self, event: str, now: float, amounts: Mapping[str, int]) -> bool:
        """Report ``amounts`` (which carry ``delta``) now, or sum them into the open window.
        True when a new window opened: its end may be the next deadline."""
        window = self._windows[event]
        if window.end is not None and now < window.end:
            window.pending.update(amounts)
            return False
        window.end = now + self._interval_s
        self._report(event, amounts, window.total)
        return True

    def flush_due(self, now: float) -> None:
        """Report what was summed in the windows that ended by ``now``."""
        for event, window in self._windows.items():
            if window.end is None or now < window.end:
                continue
            if not window.pending:
                window.end = None  # quiet: the next occurrence is reported at once
                continue
            pending, window.pending = window.pending, Counter()
            window.end = now + self._interval_s
            self._report(event, pending, window.total)

    def next_deadline(self) -> float | None:
        """When the next window ends; None while none is open."""
        return min((w.end for w in self._windows.values() if w.end is not None), default=None)

    def totals(self) -> dict[str, int]:
        return {event: window.total for event, window in self._windows.items()}
