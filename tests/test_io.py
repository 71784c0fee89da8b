"""Disk I/O limits: the disk behind a path, the io_max model, applying io.max, drift.

The fake kernel plays a Debian 12 guest: virtio disk vda (254:0) with partition vda1
(254:1) holding /, an LVM volume dm-0 (253:0) at /srv, a tmpfs (0:45) at /run.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.errors import CgroupVerifyError, CgroupWriteError, IoDeviceError, LimitsError
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.parsers import parse_io_max
from ccgroupd.limits.io import (
    IoMax,
    apply_io_max,
    describe,
    find_io_drift,
    io_max_lines,
)
from fakekernel import FakeKernel

GROUP = "engine"
MIB = 1024**2
DISK, PARTITION, LVM = "254:0", "254:1", "253:0"
ALL_MAX = "rbps=max wbps=max riops=max wiops=max"
# Made before pyfakefs starts: pydantic cannot make Path values inside a fake file system.
CI = IoMax(path=Path("/var/lib/dagger/ci"), wbps="50M", wiops=1000)
CI_READS = IoMax(path=Path("/var/lib/dagger/ci"), rbps="100M")
OTHER_ON_ROOT = IoMax(path=Path("/home"), riops=500)
ON_LVM = IoMax(path=Path("/srv/cache"), wbps="10M")
ON_TMPFS = IoMax(path=Path("/run/cache"), wbps="10M")


@pytest.fixture
def kernel(fake_kernel: FakeKernel, fs: FakeFilesystem) -> FakeKernel:
    fake_kernel.add_disk("vda", DISK, {"vda1": PARTITION})
    fake_kernel.add_disk("dm-0", LVM, bus="devices/virtual")
    for path in ("/var/lib/dagger/ci", "/home", "/srv/cache", "/run/cache"):
        fs.create_dir(path)
    fake_kernel.put_on("/", PARTITION)
    fake_kernel.put_on("/srv", LVM)
    fake_kernel.put_on("/run", "0:45")
    fake_kernel.enable("", "cpu", "io", "memory", "pids")
    fake_kernel.mkdir(GROUP)
    return fake_kernel


@pytest.fixture
def devices(kernel: FakeKernel) -> BlockDevices:
    return BlockDevices(**kernel.blockdevices_args())


def io_max(kernel: FakeKernel) -> str:
    """What reading the group's io.max gives."""
    return Path(kernel.root, GROUP, "io.max").read_text()


# -- the disk behind a path -------------------------------------------------------


def test_the_sysfs_tree_is_linked_like_the_kernels(kernel: FakeKernel) -> None:
    assert os.readlink(f"/sys/dev/block/{PARTITION}") == (
        "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1")
    assert os.readlink(f"/sys/dev/block/{LVM}") == "../../devices/virtual/block/dm-0"


def test_a_path_on_a_partition_is_on_its_whole_disk(devices: BlockDevices) -> None:
    assert devices.disk_of(Path("/var/lib/dagger/ci")) == DISK


def test_a_path_on_a_whole_disk(kernel: FakeKernel, devices: BlockDevices) -> None:
    kernel.put_on("/home", DISK)  # a file system made on the disk itself, no partition table
    assert devices.disk_of(Path("/home")) == DISK


def test_a_device_mapper_volume_is_a_disk_of_its_own(devices: BlockDevices) -> None:
    assert devices.disk_of(Path("/srv/cache")) == LVM


def test_a_path_on_no_block_device_is_refused(devices: BlockDevices) -> None:
    with pytest.raises(IoDeviceError) as caught:
        devices.disk_of(Path("/run/cache"))
    assert str(caught.value).startswith("/run/cache is on no block device (device 0:45 has "
                                        "no /sys/dev/block/0:45: tmpfs")
    assert (caught.value.path, caught.value.device, caught.value.errno) == (
        "/run/cache", "0:45", None)


def test_a_missing_path_is_refused_with_its_errno(devices: BlockDevices) -> None:
    with pytest.raises(IoDeviceError) as caught:
        devices.disk_of(Path("/var/lib/dagger/nope"))
    assert str(caught.value) == (
        "cannot stat /var/lib/dagger/nope: [Errno 2] No such file or directory (the path "
        "does not exist; create it first or name its parent)")
    assert caught.value.errno == errno.ENOENT


def test_a_stat_failure_without_advice_still_names_path_and_errno(kernel: FakeKernel) -> None:
    def stat(path: str) -> os.stat_result:
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    with pytest.raises(IoDeviceError, match=r"cannot stat /home: \[Errno 5\] Input/output error$"):
        BlockDevices(stat=stat).disk_of(Path("/home"))


def test_a_partition_whose_disk_sysfs_hides_is_refused(kernel: FakeKernel,
                                                        fs: FakeFilesystem) -> None:
    disk_dev = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/dev"
    fs.remove(disk_dev)
    with pytest.raises(IoDeviceError) as caught:
        BlockDevices(**kernel.blockdevices_args()).disk_of(Path("/home"))
    assert str(caught.value).startswith(
        f"cannot read {disk_dev}, the disk of partition 254:1 that holds /home: [Errno 2]")
    assert caught.value.device == PARTITION


def test_the_sys_root_is_a_parameter(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, sys_root="/srv/sys")
    kernel.add_disk("sda", "8:0", {"sda1": "8:1", "sda2": "8:2"}, bus="devices/pci0000:00/ata1")
    fs.create_dir("/data")
    kernel.put_on("/data", "8:2")
    assert BlockDevices(**kernel.blockdevices_args()).disk_of(Path("/data")) == "8:0"
    with pytest.raises(IoDeviceError, match="no /sys/dev/block/8:2"):
        BlockDevices(stat=kernel.stat).disk_of(Path("/data"))  # the default root, /sys


# -- the io_max entry -------------------------------------------------------------


def entry(**values: object) -> IoMax:
    return IoMax.model_validate({"path": "/var/lib/dagger", **values})


@pytest.mark.parametrize(("values", "expected"), [
    ({"wbps": "50M"}, {"rbps": None, "wbps": 50 * MIB, "riops": None, "wiops": None}),
    ({"rbps": 104857600, "wbps": "max"},
     {"rbps": 100 * MIB, "wbps": None, "riops": None, "wiops": None}),
    ({"rbps": "1.5GiB", "riops": "2000", "wiops": 2},
     {"rbps": 3 * 512 * MIB, "wbps": None, "riops": 2000, "wiops": 2}),
    ({"riops": "max", "wiops": 4294967294},
     {"rbps": None, "wbps": None, "riops": None, "wiops": 4294967294}),
])
def test_rates(values: dict[str, object], expected: dict[str, int | None]) -> None:
    assert entry(**values).kernel_values() == expected


@pytest.mark.parametrize(("values", "key", "message"), [
    ({"wbps": 0}, "wbps", "0 would stop all I/O; use max for no limit"),
    ({"rbps": "0M"}, "rbps", "0 would stop all I/O; use max for no limit"),
    ({"riops": "0"}, "riops", "0 would stop all I/O; use max for no limit"),
    ({"wiops": 1}, "wiops", "the kernel refuses a rate below 2"),
    ({"wbps": 1}, "wbps", "the kernel refuses a rate below 2"),
    ({"wbps": "50MB"}, "wbps", "unit 'MB' is ambiguous"),
    ({"wbps": "-5M"}, "wbps", "cannot be negative"),
    ({"wiops": 4294967295}, "wiops", "out of range: expected a whole number from 2 to 4294967294"),
    ({"wiops": "9" * 5000}, "wiops", "out of range"),
    ({"riops": "1k"}, "riops", "expected a whole number"),
    ({"riops": 1.5}, "riops", "expected a whole number"),
    ({"riops": True}, "riops", "expected a whole number"),
])
def test_bad_rates_are_refused_naming_the_key(values: dict[str, object], key: str,
                                              message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        entry(**values)
    [error] = caught.value.errors()
    assert error["loc"] == (key,)  # the key people write, for the config's message
    assert message in error["msg"]


@pytest.mark.parametrize(("values", "message"), [
    ({}, "an io_max entry without rbps, wbps, riops or wiops limits nothing"),
    ({"wbps": "max", "riops": "max"}, "limits nothing"),
    ({"path": "var/lib/dagger", "wbps": "1M"}, "must be an absolute path"),
    ({"wbps_bytes": "1M"}, "Extra inputs are not permitted"),  # one spelling: the short key
    ({"wbps": "1M", "io_weight": 100}, "Extra inputs are not permitted"),
])
def test_bad_entries_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        entry(**values)


def test_an_entry_is_immutable() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        CI.wiops = 5  # type: ignore[misc]


def test_the_kernel_line_names_all_four_keys() -> None:
    assert CI.kernel_line(DISK) == "254:0 rbps=max wbps=52428800 riops=max wiops=1000"
    assert CI_READS.kernel_line("8:0") == "8:0 rbps=104857600 wbps=max riops=max wiops=max"


def test_rates_for_people() -> None:
    assert CI.describe_rates() == "wbps 50 MiB/s, wiops 1000/s"
    assert entry(rbps=3 * 512 * MIB, riops=2).describe_rates() == "rbps 1.5 GiB/s, riops 2/s"


def test_describe_for_status() -> None:
    assert describe(CI, DISK) == {"path": "/var/lib/dagger/ci", "device": DISK, "rbps": None,
                                  "wbps": 50 * MIB, "riops": None, "wiops": 1000}


def test_lines_per_disk(devices: BlockDevices) -> None:
    assert io_max_lines([CI, ON_LVM], devices) == {
        DISK: "254:0 rbps=max wbps=52428800 riops=max wiops=1000",
        LVM: "253:0 rbps=max wbps=10485760 riops=max wiops=max",
    }
    assert io_max_lines([], devices) == {}


def test_two_entries_on_one_disk_are_refused(devices: BlockDevices) -> None:
    with pytest.raises(LimitsError) as caught:
        io_max_lines([CI, ON_LVM, OTHER_ON_ROOT], devices)
    assert str(caught.value) == (
        "io_max = '/home': /var/lib/dagger/ci and /home are both on disk 254:0; io.max limits "
        "a whole disk, so give one entry per disk")


def test_lines_for_a_path_on_no_disk_are_refused(devices: BlockDevices) -> None:
    with pytest.raises(IoDeviceError, match="/run/cache is on no block device"):
        io_max_lines([CI, ON_TMPFS], devices)


# -- the fake kernel's io.max, as 6.1 behaves ---------------------------------------


def test_io_max_is_per_device_and_a_write_changes_only_the_keys_it_names(
        kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    assert io_max(kernel) == ""
    cgroupfs.write(GROUP, "io.max", "254:0 wbps=1000")
    cgroupfs.write(GROUP, "io.max", "253:0 riops=7\n")
    cgroupfs.write(GROUP, "io.max", "254:0 rbps=2000")
    assert parse_io_max(io_max(kernel)) == {
        DISK: {"rbps": 2000, "wbps": 1000, "riops": None, "wiops": None},
        LVM: {"rbps": None, "wbps": None, "riops": 7, "wiops": None},
    }
    cgroupfs.write(GROUP, "io.max", f"253:0 {ALL_MAX}")
    assert io_max(kernel) == "254:0 rbps=2000 wbps=1000 riops=max wiops=max\n"
    # UINT_MAX operations per second is how the kernel stores max.
    cgroupfs.write(GROUP, "io.max", "254:0 rbps=max wbps=max wiops=4294967295")
    assert io_max(kernel) == ""


@pytest.mark.parametrize(("line", "error"), [
    ("254:1 wbps=1000", errno.ENODEV),  # a partition
    ("8:0 wbps=1000", errno.ENODEV),  # no such disk
    ("254:0 wbps=0", errno.ERANGE),
    ("254:0 wbps=1", errno.EINVAL),
    ("254:0 wbps=1M", errno.EINVAL),
    ("254:0 wbps", errno.EINVAL),
    ("254:0 weight=100", errno.EINVAL),
    ("vda wbps=1000", errno.EINVAL),
    ("254:0", errno.EINVAL),
    ("254:0 wbps=1000\n253:0 wbps=1000", errno.EINVAL),  # one line per write
])
def test_io_max_refuses_like_the_kernel(kernel: FakeKernel, cgroupfs: Cgroupfs, line: str,
                                        error: int) -> None:
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write(GROUP, "io.max", line)
    assert caught.value.errno == error
    assert io_max(kernel) == ""


def test_io_max_and_io_stat_come_with_the_io_controller(kernel: FakeKernel,
                                                        cgroupfs: Cgroupfs) -> None:
    kernel.mkdir("other/leaf")
    assert not cgroupfs.has_attribute("other/leaf", "io.max")  # "other" enables nothing
    assert not cgroupfs.has_attribute("", "io.max")  # never on the root
    assert cgroupfs.has_attribute("", "io.stat")
    kernel.update(GROUP, "io.stat", "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0")
    assert cgroupfs.read(GROUP, "io.stat") == (
        "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n")


# -- applying ---------------------------------------------------------------------


class CountingCgroupfs(Cgroupfs):
    """Records every write; once ``writes_left`` is down to 0, refuses them (EBUSY)."""

    def __init__(self, kernel: FakeKernel) -> None:
        super().__init__(**kernel.cgroupfs_args())
        self.writes_left: int | None = None
        self.written: list[str] = []

    def write(self, group: str, attribute: str, value: str) -> None:
        if self.writes_left is not None:
            if self.writes_left == 0:
                raise CgroupWriteError(self.path(group, attribute), value, errno.EBUSY)
            self.writes_left -= 1
        self.written.append(value)
        super().write(group, attribute, value)


def test_apply_writes_verifies_and_returns_the_lines(kernel: FakeKernel) -> None:
    cgroupfs = CountingCgroupfs(kernel)
    wanted = {DISK: CI.kernel_line(DISK), LVM: ON_LVM.kernel_line(LVM)}
    assert apply_io_max(cgroupfs, GROUP, wanted) == wanted
    assert cgroupfs.written == list(wanted.values())  # one write per device
    assert parse_io_max(io_max(kernel)) == {d: parse_io_max(line)[d] for d, line in wanted.items()}
    # Applied again: the kernel has it all already, nothing is written.
    assert apply_io_max(cgroupfs, GROUP, wanted) == wanted
    assert len(cgroupfs.written) == 2


def test_a_changed_entry_lifts_what_it_no_longer_limits(kernel: FakeKernel,
                                                        cgroupfs: Cgroupfs) -> None:
    apply_io_max(cgroupfs, GROUP, {DISK: CI.kernel_line(DISK)})
    assert apply_io_max(cgroupfs, GROUP, {DISK: CI_READS.kernel_line(DISK)}) == {
        DISK: "254:0 rbps=104857600 wbps=max riops=max wiops=max"}
    assert io_max(kernel) == "254:0 rbps=104857600 wbps=max riops=max wiops=max\n"


def test_a_managed_device_no_longer_wanted_is_reset(kernel: FakeKernel) -> None:
    cgroupfs = CountingCgroupfs(kernel)
    apply_io_max(cgroupfs, GROUP, {DISK: CI.kernel_line(DISK), LVM: ON_LVM.kernel_line(LVM)})
    in_force = apply_io_max(cgroupfs, GROUP, {LVM: ON_LVM.kernel_line(LVM)},
                            managed={DISK, LVM, "8:0"})  # 8:0 had no limit: nothing to reset
    assert in_force == {LVM: ON_LVM.kernel_line(LVM)}
    assert cgroupfs.written[2:] == [f"254:0 {ALL_MAX}"]
    assert io_max(kernel) == "253:0 rbps=max wbps=10485760 riops=max wiops=max\n"
    assert apply_io_max(cgroupfs, GROUP, {}, managed={LVM}) == {}
    assert io_max(kernel) == ""


def test_a_refused_write_names_file_value_and_errno_and_rolls_back(kernel: FakeKernel,
                                                                  cgroupfs: Cgroupfs) -> None:
    apply_io_max(cgroupfs, GROUP, {DISK: CI_READS.kernel_line(DISK)})
    before = io_max(kernel)
    line = "254:1 rbps=max wbps=1048576 riops=max wiops=max"
    with pytest.raises(CgroupWriteError) as caught:
        apply_io_max(cgroupfs, GROUP, {DISK: CI.kernel_line(DISK), PARTITION: line})
    assert caught.value.errno == errno.ENODEV
    assert str(caught.value).startswith(
        f"cannot write {line!r} to {kernel.root}/{GROUP}/io.max: [Errno 19]")
    assert io_max(kernel) == before  # 254:0 got its previous line back
    assert getattr(caught.value, "__notes__", []) == []


def test_a_failed_rollback_is_noted(kernel: FakeKernel) -> None:
    cgroupfs = CountingCgroupfs(kernel)
    apply_io_max(cgroupfs, GROUP, {DISK: CI.kernel_line(DISK), LVM: ON_LVM.kernel_line(LVM)})
    cgroupfs.writes_left = 1  # the new line for 254:0, then nothing, not even the rollback
    with pytest.raises(CgroupWriteError) as caught:
        apply_io_max(cgroupfs, GROUP, {DISK: CI_READS.kernel_line(DISK), LVM: f"{LVM} {ALL_MAX}"})
    assert caught.value.errno == errno.EBUSY
    assert caught.value.value == f"{LVM} {ALL_MAX}"
    assert caught.value.__notes__ == [
        f"rollback of io.max to {CI.kernel_line(DISK)!r} failed: cannot write "
        f"{CI.kernel_line(DISK)!r} to {kernel.root}/{GROUP}/io.max: [Errno 16] "
        "Device or resource busy"]
    assert io_max(kernel).startswith(f"{CI_READS.kernel_line(DISK)}\n")


def test_a_value_the_kernel_shows_otherwise_fails_the_check(kernel: FakeKernel,
                                                            cgroupfs: Cgroupfs) -> None:
    # 2**32 - 1 operations per second is the kernel's max: the limit would be gone.
    line = "254:0 rbps=max wbps=max riops=max wiops=4294967295"
    with pytest.raises(CgroupVerifyError) as caught:
        apply_io_max(cgroupfs, GROUP, {DISK: line})
    assert caught.value.read_back == f"254:0 {ALL_MAX}"
    assert str(caught.value).startswith(f"cannot verify {line!r} to {kernel.root}/engine/io.max")


def test_without_the_io_controller(kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    kernel.mkdir("other/leaf")  # "other" enables no controller for its children
    with pytest.raises(LimitsError) as caught:
        apply_io_max(cgroupfs, "other/leaf", {DISK: CI.kernel_line(DISK)})
    assert str(caught.value) == (
        f"io_max = ['{CI.kernel_line(DISK)}']: {kernel.root}/other/leaf/io.max does not exist: "
        "the io controller is not enabled for the group 'other/leaf'")
    assert apply_io_max(cgroupfs, "other/leaf", {}, managed={DISK}) == {}
    assert find_io_drift(cgroupfs, "other/leaf", {}) == {}


def test_a_wanted_line_for_another_device_is_refused(kernel: FakeKernel,
                                                     cgroupfs: Cgroupfs) -> None:
    with pytest.raises(LimitsError, match=r"not an io\.max line for device 253:0"):
        apply_io_max(cgroupfs, GROUP, {LVM: CI.kernel_line(DISK)})
    assert io_max(kernel) == ""


# -- drift ------------------------------------------------------------------------


def test_drift(kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    wanted = {DISK: CI.kernel_line(DISK), LVM: ON_LVM.kernel_line(LVM)}
    assert find_io_drift(cgroupfs, GROUP, wanted) == {
        DISK: (f"254:0 {ALL_MAX}", CI.kernel_line(DISK)),
        LVM: (f"253:0 {ALL_MAX}", ON_LVM.kernel_line(LVM)),
    }
    apply_io_max(cgroupfs, GROUP, wanted)
    assert find_io_drift(cgroupfs, GROUP, wanted) == {}
    cgroupfs.write(GROUP, "io.max", "254:0 wiops=50")  # someone else's change
    assert find_io_drift(cgroupfs, GROUP, wanted) == {
        DISK: ("254:0 rbps=max wbps=52428800 riops=max wiops=50", CI.kernel_line(DISK))}
    # A disk limited in the group but not wanted is drift as well.
    assert find_io_drift(cgroupfs, GROUP, {LVM: wanted[LVM]}) == {
        DISK: ("254:0 rbps=max wbps=52428800 riops=max wiops=50", f"254:0 {ALL_MAX}")}


def test_the_entries_mapping_round_trips() -> None:
    mapping: dict[str, Any] = CI.to_mapping()
    assert IoMax.model_validate(mapping) == CI
