"""What the kernel refuses to write, and with which errno: one table for the fake kernel's
unit tests (tests/test_cgroupfs.py) and for the real kernel (10-boundary.py), so the two
check the same facts.

Each row is written into a child group whose parent enables cpu, memory and pids (not io).
A helper of the guest scenarios, not one itself: it is not executable.
"""

from __future__ import annotations

import errno

from ccgroupd.kernel.files import (
    CGROUP_CONTROLLERS,
    CGROUP_KILL,
    CGROUP_PROCS,
    CGROUP_SUBTREE_CONTROL,
    CPU_MAX,
    CPU_STAT,
    CPU_WEIGHT,
    MEMORY_MAX,
    PIDS_MAX,
)

# No process has this pid: the kernel's pid_max is at most 4194304.
NO_SUCH_PID = "9999999"

# (file, value written, errno)
REFUSALS = (
    (CPU_MAX, "10 100000", errno.EINVAL),  # quota below 1 ms
    (CPU_MAX, "100000 500", errno.EINVAL),  # period below 1 ms
    (CPU_MAX, "100000 2000000", errno.EINVAL),  # period above 1 s
    (CPU_MAX, "lots", errno.EINVAL),
    (MEMORY_MAX, "-1", errno.EINVAL),
    (MEMORY_MAX, "8GB", errno.EINVAL),
    (PIDS_MAX, "4194305", errno.EINVAL),
    (CPU_WEIGHT, "0", errno.ERANGE),
    (CPU_WEIGHT, "10001", errno.ERANGE),
    (CGROUP_KILL, "2", errno.ERANGE),
    (CGROUP_PROCS, "not-a-pid", errno.EINVAL),
    (CGROUP_PROCS, NO_SUCH_PID, errno.ESRCH),
    (CGROUP_SUBTREE_CONTROL, "cpu", errno.EINVAL),
    (CGROUP_SUBTREE_CONTROL, "+bogus", errno.EINVAL),
    (CGROUP_SUBTREE_CONTROL, "+io", errno.ENOENT),  # the parent does not enable io
    (CPU_STAT, "0", errno.EINVAL),  # read-only: root may open it for writing, not write it
    (CGROUP_CONTROLLERS, "+cpu", errno.EINVAL),
)
