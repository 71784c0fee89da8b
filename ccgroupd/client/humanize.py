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
