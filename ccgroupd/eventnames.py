"""Names of the limit-violation events: a constant cheap enough for ``ccgroupctl`` to import.

The monitor counts exactly these (the ``events`` of ``ccgroupctl status``) and
``ccgroupctl events`` shows their journald records. ccgroupd.events, the
registry that describes every event, imports dataclasses and is too slow to
load for a tuple; the monitor checks at import that each name is registered.
"""

# The order of the counters in `ccgroupctl status` (the monitor's counters()).
VIOLATION_EVENTS = ("oom_kill", "oom", "memory_max", "memory_high", "swap_max", "pids_max",
                    "cpu_throttled")
