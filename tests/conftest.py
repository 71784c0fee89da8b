"""Fixtures shared by every test: a fake cgroup v2 kernel, and a Cgroupfs and a Procfs
bound to it."""

from __future__ import annotations

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from fakekernel import FakeKernel


@pytest.fixture
def fake_kernel(fs: FakeFilesystem) -> FakeKernel:
    """A unified cgroup v2 host with cpuset cpu io memory pids, PSI and swap accounting.

    For another host build your own: ``FakeKernel(fs, controllers=..., layout="hybrid")``.
    """
    return FakeKernel(fs)


@pytest.fixture
def cgroupfs(fake_kernel: FakeKernel) -> Cgroupfs:
    return Cgroupfs(**fake_kernel.cgroupfs_args())


@pytest.fixture
def procfs(fake_kernel: FakeKernel) -> Procfs:
    return Procfs(**fake_kernel.procfs_args())
