"""The kernel boundary for /proc, on the fake kernel's /proc."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.errors import CgroupReadError
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import ProcessMemory, Procfs
from fakekernel import FakeKernel


def test_cgroup_of(fake_kernel: FakeKernel, procfs: Procfs) -> None:
    assert procfs.cgroup_of() == ""
    assert procfs.cgroup_of(1) == "init.scope"
    assert procfs.cgroup_of(fake_kernel.spawn("x/y")) == "x/y"


def test_cgroup_of_a_missing_process(procfs: Procfs) -> None:
    with pytest.raises(CgroupReadError) as caught:
        procfs.cgroup_of(424242)
    assert caught.value.errno == errno.ENOENT


def test_cgroup_of_a_v1_only_process(fs: FakeFilesystem, procfs: Procfs) -> None:
    fs.create_file("/proc/77/cgroup", contents="4:memory:/x\n")
    with pytest.raises(CgroupReadError, match="no cgroup v2"):
        procfs.cgroup_of(77)


def test_mount_type(fake_kernel: FakeKernel, procfs: Procfs) -> None:
    assert procfs.mount_type(Path("/sys/fs/cgroup")) == "cgroup2"
    assert procfs.mount_type(Path("/sys/fs")) is None


def test_mount_type_on_a_hybrid_host(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, layout="hybrid", controllers=["hugetlb"])
    assert Procfs().mount_type(Path("/sys/fs/cgroup")) == "tmpfs"
    assert Procfs().mount_type(Path(kernel.root)) == "cgroup2"
    assert Cgroupfs(str(kernel.root)).controllers("") == {"hugetlb"}
    v1 = {m.target for m in Procfs().mounts() if m.fstype == "cgroup"}
    assert "/sys/fs/cgroup/memory" in v1


def test_mounts_unreadable(fs: FakeFilesystem) -> None:
    with pytest.raises(CgroupReadError) as caught:
        Procfs().mounts()
    assert caught.value.errno == errno.ENOENT


def test_process_memory(fake_kernel: FakeKernel, procfs: Procfs) -> None:
    engine = fake_kernel.spawn("e", "dagger-engine", rss_bytes=300 * 4096)
    gone = fake_kernel.spawn("e", "short")
    fake_kernel.exit(gone)
    assert procfs.process_memory([engine, gone]) == [
        ProcessMemory(engine, "dagger-engine", 300 * 4096)]


def test_comm(fake_kernel: FakeKernel, procfs: Procfs) -> None:
    assert procfs.comm(1) == "systemd"
    assert procfs.comm("self") == "ccgroupd"
    assert procfs.comm(424242) is None
