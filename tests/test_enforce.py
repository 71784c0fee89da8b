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


# -- protections, io.weight, cpusets -----------------------------------------------

NEW_KEYS = {"memory": "4G", "memory_min": GIB + 100, "memory_low": "2G", "io_weight": 300,
            "cpuset_cpus": "0,1,2", "cpuset_mems": "0"}


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host has the fake kernel's 4 CPUs, whatever runs the tests."""
    monkeypatch.setattr("ccgroupd.values.os.cpu_count", lambda: 4)


@pytest.mark.usefixtures("four_cpus")
def test_apply_limits_writes_protections_io_weight_and_cpusets(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    in_force = apply_limits(cgroupfs, GROUP, Limits.from_mapping(NEW_KEYS))

    assert read(kernel, "memory.min") == str(GIB)  # page-rounded, as the kernel does
    assert read(kernel, "memory.low") == str(2 * GIB)
    assert read(kernel, "io.weight") == "default 300"
    assert read(kernel, "cpuset.cpus") == "0-2"
    assert read(kernel, "cpuset.mems") == "0"
    assert in_force["memory.min"] == str(GIB)
    assert find_drift(cgroupfs, GROUP, Limits.from_mapping(NEW_KEYS)) == {}

    # Unset again: back to the kernel's defaults; "" gives the group its parent's CPUs.
    apply_limits(cgroupfs, GROUP, Limits())
    assert [read(kernel, a) for a in ("memory.min", "memory.low", "io.weight", "cpuset.cpus",
                                      "cpuset.mems")] == ["0", "0", "default 100", "", ""]


@pytest.mark.usefixtures("four_cpus")
def test_cpusets_and_io_weight_hold_however_the_kernel_shows_them(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    limits = Limits.from_mapping(NEW_KEYS)
    apply_limits(cgroupfs, GROUP, limits)
    cgroupfs.write(GROUP, "io.weight", "8:0 50")  # a device's own weight is not ours
    cgroupfs.write(GROUP, "cpuset.cpus", "2,0-1")
    recording = RecordingCgroupfs(kernel)

    assert find_drift(recording, GROUP, limits) == {}
    apply_limits(recording, GROUP, limits, limits)
    assert recording.written == []
    assert read(kernel, "io.weight") == "default 300\n8:0 50"
    assert read(kernel, "cpuset.cpus") == "0-2"  # the kernel shows its own form


@pytest.mark.usefixtures("four_cpus")
def test_find_drift_reports_protections_io_weight_and_cpusets(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    limits = Limits.from_mapping(NEW_KEYS)
    apply_limits(cgroupfs, GROUP, limits)
    for attribute, value in [("memory.min", "0"), ("memory.low", "4096"),
                             ("io.weight", "default 100"), ("cpuset.cpus", "3"),
                             ("cpuset.mems", "")]:
        cgroupfs.write(GROUP, attribute, value)

    assert find_drift(cgroupfs, GROUP, limits) == {
        "memory.min": ("0", str(GIB)),
        "memory.low": ("4096", str(2 * GIB)),
        "io.weight": ("default 100", "default 300"),
        "cpuset.cpus": ("3", "0-2"),
        "cpuset.mems": ("", "0"),
    }


@pytest.mark.parametrize(("current", "new", "expected"), [
    # A raised protection under a lowered limit: the protection first, then the limit.
    ({"memory.max": str(4 * GIB), "memory.low": "0"},
     {"memory.max": str(2 * GIB), "memory.low": str(GIB)},
     ["memory.low", "memory.max"]),
    # A raised protection above a raised limit: the limit first.
    ({"memory.max": str(GIB), "memory.min": "0"},
     {"memory.max": str(4 * GIB), "memory.min": str(2 * GIB)},
     ["memory.max", "memory.min"]),
    # A lowered protection before the limit above it tightens.
    ({"memory.high": str(4 * GIB), "memory.low": str(3 * GIB)},
     {"memory.high": str(GIB), "memory.low": str(GIB // 2)},
     ["memory.low", "memory.high"]),
    # cpusets and io.weight are no limits: first, whichever way they change.
    ({"cpuset.cpus": "0-3", "io.weight": "default 500", "pids.max": "10"},
     {"pids.max": "20", "io.weight": "default 100", "cpuset.cpus": "0"},
     ["cpuset.cpus", "io.weight", "pids.max"]),
])
def test_write_order_of_protections_and_what_is_no_limit(
        current: dict[str, str], new: dict[str, str], expected: list[str]) -> None:
    assert write_order(current, new) == expected


def test_apply_limits_raises_a_protection_while_lowering_memory(kernel: FakeKernel,
                                                                cgroupfs: Cgroupfs) -> None:
    apply_limits(cgroupfs, GROUP, Limits.from_mapping({"memory": "4G"}))
    recording = RecordingCgroupfs(kernel)
    apply_limits(recording, GROUP, Limits.from_mapping({"memory": "2G", "memory_low": "1G"}))
    assert recording.written == ["memory.low", "memory.max"]


@pytest.mark.usefixtures("four_cpus")
def test_io_weight_and_cpusets_need_their_controllers_only_when_asked_for(
        fake_kernel: FakeKernel) -> None:
    fake_kernel.enable("", "cpu", "memory", "pids")
    fake_kernel.mkdir(GROUP)
    cgroupfs = Cgroupfs(**fake_kernel.cgroupfs_args())

    in_force = apply_limits(cgroupfs, GROUP, Limits.from_mapping({"memory_low": "1G"}))
    assert not {"io.weight", "cpuset.cpus", "cpuset.mems"} & set(in_force)

    for key, value, attribute in [("io_weight", 200, "io.weight"),
                                  ("cpuset_cpus", "1", "cpuset.cpus")]:
        with pytest.raises(LimitsError) as caught:
            apply_limits(cgroupfs, GROUP, Limits.from_mapping({key: value}))
        assert caught.value.field == attribute


def test_a_cpuset_the_kernel_refuses_rolls_back_what_was_written(
        kernel: FakeKernel) -> None:
    # cpuset.cpus goes in first; the host has one memory node, so node 1 is refused.
    recording = RecordingCgroupfs(kernel)
    limits = Limits.from_mapping({"cpuset_cpus": "0", "cpuset_mems": "0-1", "pids": 10})
    with pytest.raises(CgroupWriteError) as caught:
        apply_limits(recording, GROUP, limits)
    assert caught.value.errno == errno.EINVAL
    assert recording.written == ["cpuset.cpus", "cpuset.mems"]
    assert [read(kernel, a) for a in ("cpuset.cpus", "cpuset.mems", "pids.max")] == ["", "", "max"]
