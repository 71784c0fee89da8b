"""Numbers for people that ccgroupctl's commands share and the leaves do not offer.

A module of its own so that `top` can use them without importing ctl (ctl imports top),
and ctl only when it renders: its quick path stays as light as it was.
"""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Two units at most, the largest first: "2d 3h", "2h 3m", "5m 12s", "42s"."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


# Powers of 1024, as ccgroupctl set reads the letters (and the kernel and docker do).
_SIZE_LETTERS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))


def short_size(value: int) -> str:
    """A size as `set --memory` takes it, to three significant digits: "512M", "1.5G",
    "1.25G", "942M", "1000M", "0". For the status overview's table, whose columns
    format_bytes' "941.9 MiB/1.5 GiB" would push past 100 columns."""
    for letter, size in _SIZE_LETTERS:
        if value >= size:
            amount = value / size
            return f"{amount:.0f}{letter}" if amount >= 1000 else f"{amount:.3g}{letter}"
    return str(value)
