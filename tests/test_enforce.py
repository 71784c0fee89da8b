"""enforce.py: safe write order, verified writes, rollback on failure, drift detection."""

from __future__ import annotations

import errno

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.errors import CgroupWriteError, LimitsError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.limits.enforce import apply_limits, find_drift, write_order
from ccgroupd.limits.model import Limits
from fakekernel import FakeKernel

GROUP = "engine"
GIB = 1024**3


class RecordingCgroupfs(Cgroupfs):
    """Records the order of verified writes; refuses the one attribute named in ``fail_on``."""

    def __init__(self, kernel: FakeKernel, fail_on: str | None = None) -> None:
        super().__init__(**kernel.cgroupfs_args())
        self.fail_on = fail_on
        self.written: list[str] = []

    def write_verified(self, group: str, attribute: str, value: str) -> str:
        if attribute == self.fail_on:
            raise CgroupWriteError(self.path(group, attribute), value, errno.EBUSY)
        self.written.append(attribute)
        return super().write_verified(group, attribute, value)


@pytest.fixture
def kernel(fake_kernel: FakeKernel) -> FakeKernel:
    fake_kernel.enable("", "cpuset", "cpu", "io", "memory", "pids")
    fake_kernel.mkdir(GROUP)
    return fake_kernel


def read(kernel: FakeKernel, attribute: str) -> str:
    return kernel.group(GROUP).values[attribute]


@pytest.mark.parametrize(("current", "new", "expected"), [
    # Raising memory while cutting swap: memory first, so nothing is squeezed in between.
    ({"memory.swap.max": "max", "memory.max": str(GIB)},
     {"memory.swap.max": "0", "memory.max": str(2 * GIB)},
     ["memory.max", "memory.swap.max"]),
    # Cutting memory while allowing swap: swap first, so reclaim has somewhere to go.
    ({"memory.swap.max": "0", "memory.max": str(2 * GIB)},
     {"memory.swap.max": "max", "memory.max": str(GIB)},
     ["memory.swap.max", "memory.max"]),
    # Tightening both memory limits: the soft one before the hard one.
    ({"memory.max": "max", "memory.high": "max"},
     {"memory.max": str(GIB), "memory.high": str(GIB // 2)},
     ["memory.high", "memory.max"]),
    # cpu.max compares quota/period, not the raw numbers.
    ({"cpu.max": "50000 50000", "pids.max": "100"},
     {"cpu.max": "150000 100000", "pids.max": "50"},
     ["cpu.max", "pids.max"]),
])
def test_write_order_loosens_before_it_tightens(current: dict[str, str], new: dict[str, str],
                                                expected: list[str]) -> None:
    assert write_order(current, new) == expected


def test_apply_limits_writes_reads_back_and_returns_what_is_in_force(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    limits = Limits.from_mapping({"cpus": 1.5, "memory": GIB + 100, "pids": 64})

    in_force = apply_limits(cgroupfs, GROUP, limits)

    assert read(kernel, "cpu.max") == "150000 100000"
    assert read(kernel, "memory.max") == str(GIB)  # page-rounded, as the kernel does
    assert read(kernel, "pids.max") == "64"
    assert in_force["memory.max"] == str(GIB)
    assert in_force["memory.high"] == "max"
    assert set(in_force) == set(limits.cgroup_values())


def test_apply_limits_from_unlimited_puts_memory_max_last(kernel: FakeKernel) -> None:
    cgroupfs = RecordingCgroupfs(kernel)
    apply_limits(cgroupfs, GROUP,
                 Limits.from_mapping({"memory": "2G", "memory_high": "1G", "pids": 10}))
    assert cgroupfs.written[-2:] == ["memory.high", "memory.max"]
    assert cgroupfs.written.index("pids.max") < cgroupfs.written.index("memory.high")


def test_apply_limits_writes_only_what_the_kernel_does_not_hold(kernel: FakeKernel,
                                                                cgroupfs: Cgroupfs) -> None:
    before = Limits.from_mapping({"cpus": 1, "memory": GIB + 100, "pids": 10})
    apply_limits(cgroupfs, GROUP, before)
    recording = RecordingCgroupfs(kernel)

    in_force = apply_limits(recording, GROUP, before.with_changes({"cpus": 2}), before)

    assert recording.written == ["cpu.max"]
    assert read(kernel, "cpu.max") == "200000 100000"
    assert in_force["memory.max"] == str(GIB)  # what the kernel shows, as if written
    assert set(in_force) == set(before.cgroup_values())


def test_failed_write_rolls_back_to_previous_and_reraises(kernel: FakeKernel,
                                                          cgroupfs: Cgroupfs) -> None:
    previous = Limits.from_mapping({"cpus": 1, "memory": "1G", "memory_high": "512M", "pids": 10})
    apply_limits(cgroupfs, GROUP, previous)
    failing = RecordingCgroupfs(kernel, fail_on="memory.max")
    new = Limits.from_mapping({"cpus": 2, "memory": "512M", "memory_high": "256M", "pids": 20})

    with pytest.raises(CgroupWriteError) as caught:
        apply_limits(failing, GROUP, new, previous)

    assert caught.value.errno == errno.EBUSY
    assert "memory.high" in failing.written  # it got that far before memory.max failed
    assert read(kernel, "cpu.max") == "100000 100000"
    assert read(kernel, "memory.high") == str(512 * 1024**2)
    assert read(kernel, "memory.max") == str(GIB)
    assert read(kernel, "pids.max") == "10"


def test_rollback_without_previous_restores_what_the_kernel_had(kernel: FakeKernel) -> None:
    failing = RecordingCgroupfs(kernel, fail_on="memory.max")
    with pytest.raises(CgroupWriteError):
        apply_limits(failing, GROUP, Limits.from_mapping({"pids": 5, "memory": "1G"}))
    assert read(kernel, "pids.max") == "max"


def test_missing_swap_file_is_fine_unless_a_swap_limit_is_asked_for(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, swap_accounting=False)
    kernel.enable("", "cpu", "memory", "pids")
    kernel.mkdir(GROUP)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())

    in_force = apply_limits(cgroupfs, GROUP, Limits.from_mapping({"memory": "1G"}))
    assert "memory.swap.max" not in in_force

    with pytest.raises(LimitsError, match=r"memory\.swap\.max"):
        apply_limits(cgroupfs, GROUP, Limits.from_mapping({"memory_swap": "1G"}))


def test_find_drift_reports_found_and_expected(kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    limits = Limits.from_mapping({"memory": "1G", "pids": 10})
    apply_limits(cgroupfs, GROUP, limits)
    assert find_drift(cgroupfs, GROUP, limits) == {}

    cgroupfs.write(GROUP, "memory.max", "max")
    cgroupfs.write(GROUP, "pids.max", "11")

    assert find_drift(cgroupfs, GROUP, limits) == {
        "memory.max": ("max", str(GIB)),
        "pids.max": ("11", "10"),
    }
