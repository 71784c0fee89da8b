"""Every kernel file ccgroupd names, spelled as the kernel spells it: one place to look
up what the daemon reads and writes, and nothing here touches the kernel."""

from __future__ import annotations

# cgroup v2 interface files, in every group's directory.
CGROUP_PROCS = "cgroup.procs"
CGROUP_CONTROLLERS = "cgroup.controllers"
CGROUP_SUBTREE_CONTROL = "cgroup.subtree_control"
CGROUP_EVENTS = "cgroup.events"
CGROUP_KILL = "cgroup.kill"
CGROUP_MAX_DEPTH = "cgroup.max.depth"
CPU_MAX = "cpu.max"
CPU_WEIGHT = "cpu.weight"
CPU_STAT = "cpu.stat"
CPU_PRESSURE = "cpu.pressure"
MEMORY_MAX = "memory.max"
MEMORY_HIGH = "memory.high"
MEMORY_MIN = "memory.min"
MEMORY_LOW = "memory.low"
MEMORY_SWAP_MAX = "memory.swap.max"
MEMORY_OOM_GROUP = "memory.oom.group"
MEMORY_CURRENT = "memory.current"
MEMORY_PEAK = "memory.peak"
MEMORY_SWAP_CURRENT = "memory.swap.current"
MEMORY_STAT = "memory.stat"
MEMORY_EVENTS = "memory.events"
MEMORY_EVENTS_LOCAL = "memory.events.local"  # this group's own, not its descendants'
MEMORY_SWAP_EVENTS = "memory.swap.events"
MEMORY_PRESSURE = "memory.pressure"
IO_PRESSURE = "io.pressure"
IO_MAX = "io.max"
IO_STAT = "io.stat"
IO_WEIGHT = "io.weight"  # "default N", then any per-device "MAJ:MIN N" lines
CPUSET_CPUS = "cpuset.cpus"
CPUSET_MEMS = "cpuset.mems"
CPUSET_CPUS_EFFECTIVE = "cpuset.cpus.effective"
PIDS_MAX = "pids.max"
PIDS_CURRENT = "pids.current"
PIDS_EVENTS = "pids.events"
PIDS_EVENTS_LOCAL = "pids.events.local"  # Linux 6.11 and later

# Files whose numbers the kernel rounds down to a page on write.
PAGE_ROUNDED = frozenset({MEMORY_MAX, MEMORY_HIGH, MEMORY_MIN, MEMORY_LOW, MEMORY_SWAP_MAX})
# Files holding a list of ids ("0-3,6"), which the kernel shows in its own normal form.
ID_LISTS = frozenset({CPUSET_CPUS, CPUSET_MEMS})

# systemd marks the cgroup of a unit with Delegate=yes with this extended attribute.
DELEGATE_XATTR = "trusted.delegate"

# Per-process files, in /proc/PID/.
PROC_CGROUP = "cgroup"
PROC_CMDLINE = "cmdline"
PROC_OOM_SCORE_ADJ = "oom_score_adj"
PROC_COMM = "comm"
PROC_MOUNTS = "mounts"
PROC_STATM = "statm"
PROC_STATUS = "status"
