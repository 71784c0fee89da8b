"""Every Cgroupfs verb against the fake kernel; the same facts are checked on a real
kernel by tests/vm/scenarios/10-boundary.py."""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
from pathlib import Path
from types import ModuleType

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.errors import (
    CgroupCreateError,
    CgroupError,
    CgroupPathError,
    CgroupReadError,
    CgroupRemoveError,
    CgroupVerifyError,
    CgroupWriteError,
)
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import (
    CGROUP_KILL,
    CGROUP_SUBTREE_CONTROL,
    CPU_MAX,
    CPU_STAT,
    MEMORY_CURRENT,
    MEMORY_EVENTS,
    MEMORY_MAX,
    MEMORY_SWAP_MAX,
    PIDS_MAX,
)
from ccgroupd.kernel.procfs import Procfs
from fakekernel import FakeKernel


def _load_refusals() -> ModuleType:
    # The guest's scenarios use the same table (tests/vm/scenarios/10-boundary.py).
    path = Path(__file__).parent / "vm" / "scenarios" / "kernel_refusals.py"
    spec = importlib.util.spec_from_file_location("kernel_refusals", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kernel_refusals = _load_refusals()

ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def group(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> str:
    """``scratch/g``, with cpu memory pids enabled for it."""
    cgroupfs.create("scratch/g")
    cgroupfs.enable_controllers("scratch", ["cpu", "memory", "pids"])
    return "scratch/g"


# -- paths ---------------------------------------------------------------------


@pytest.mark.parametrize(("group", "attribute", "expected"), [
    ("", None, "/sys/fs/cgroup"),
    ("", "cgroup.procs", "/sys/fs/cgroup/cgroup.procs"),
    ("a/b", None, "/sys/fs/cgroup/a/b"),
    ("/a/b/", "cpu.max", "/sys/fs/cgroup/a/b/cpu.max"),
    ("a/./b", None, "/sys/fs/cgroup/a/b"),
])
def test_path(cgroupfs: Cgroupfs, group: str, attribute: str | None, expected: str) -> None:
    # Compared as text: pyfakefs swaps the Path class, so paths built at import differ in type.
    assert str(cgroupfs.path(group, attribute)) == expected


@pytest.mark.parametrize(("group", "attribute"), [
    ("..", None), ("a/../../etc", None), ("a/..", None),
    ("a", ".."), ("a", "../cpu.max"), ("a", ""), ("a", "."), ("a", "x/y"),
])
def test_path_refuses_escapes(cgroupfs: Cgroupfs, group: str, attribute: str | None) -> None:
    with pytest.raises(CgroupPathError):
        cgroupfs.path(group, attribute)


def test_symlinked_group_is_refused(fs: FakeFilesystem, fake_kernel: FakeKernel,
                                    cgroupfs: Cgroupfs) -> None:
    fs.create_dir("/etc/elsewhere")
    fs.create_symlink(ROOT / "evil", "/etc/elsewhere")
    for action in (lambda: cgroupfs.create("evil/x"), lambda: cgroupfs.write("evil", CPU_MAX, "1"),
                   lambda: cgroupfs.read("evil", CPU_MAX), lambda: cgroupfs.remove("evil")):
        with pytest.raises(CgroupPathError, match="symlink"):
            action()
    assert os.listdir("/etc/elsewhere") == []


def test_symlinked_attribute_is_refused(fs: FakeFilesystem, group: str,
                                        cgroupfs: Cgroupfs) -> None:
    fs.create_file("/etc/secret", contents="x")
    fs.create_symlink(ROOT / group / "sneaky.max", "/etc/secret")
    with pytest.raises(CgroupPathError, match="symlink"):
        cgroupfs.write(group, "sneaky.max", "0")
    assert Path("/etc/secret").read_text() == "x"


# -- create, children, exists --------------------------------------------------


def test_create_is_mkdir_p_and_interface_files_appear(fake_kernel: FakeKernel,
                                                      cgroupfs: Cgroupfs) -> None:
    assert cgroupfs.create("a/b/c") is True
    assert cgroupfs.exists("a/b/c")
    assert fake_kernel.exists("a/b/c")
    assert (ROOT / "a/b/c/cgroup.procs").is_file()
    assert cgroupfs.children("a") == ["a/b"]
    assert cgroupfs.children("") == ["a", "init.scope"]


def test_create_is_idempotent(cgroupfs: Cgroupfs) -> None:
    assert cgroupfs.create("a/b") is True
    assert cgroupfs.create("a/b") is False
    assert cgroupfs.create("a") is False
    assert cgroupfs.create("") is False


def test_create_over_a_file_names_it(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupCreateError, match="not a directory") as caught:
        cgroupfs.create(f"{group}/cpu.max/x")
    assert caught.value.path == str(ROOT / group / "cpu.max")


def test_create_failure_carries_errno(fake_kernel: FakeKernel) -> None:
    elsewhere = Cgroupfs("/sys/fs/cgroup-missing")
    with pytest.raises(CgroupCreateError) as caught:
        elsewhere.create("a")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == "/sys/fs/cgroup-missing/a"


# -- read, write, write_verified -----------------------------------------------


def test_read_missing_attribute(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupReadError) as caught:
        cgroupfs.read(group, "memory.maxx")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == str(ROOT / group / "memory.maxx")


def test_read_not_ascii(fake_kernel: FakeKernel, group: str, cgroupfs: Cgroupfs) -> None:
    fake_kernel.update(group, MEMORY_CURRENT, "\u00ff")
    with pytest.raises(CgroupReadError, match="not ASCII"):
        cgroupfs.read(group, MEMORY_CURRENT)


def test_read_flat_keyed_sees_bumped_counters(fake_kernel: FakeKernel, group: str,
                                              cgroupfs: Cgroupfs) -> None:
    fake_kernel.bump(group, MEMORY_EVENTS, oom=1, oom_kill=2)
    events = cgroupfs.read_flat_keyed(group, MEMORY_EVENTS)
    assert events == {"low": 0, "high": 0, "max": 0, "oom": 1, "oom_kill": 2,
                      "oom_group_kill": 0}
    # memory.events counts descendants; .local does not.
    assert cgroupfs.read_flat_keyed("scratch", MEMORY_EVENTS)["oom_kill"] == 2
    assert cgroupfs.read_flat_keyed(group, "memory.events.local")["oom_kill"] == 2


def test_read_flat_keyed_malformed(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupReadError, match="expected 'key value'") as caught:
        cgroupfs.read_flat_keyed(group, MEMORY_CURRENT)
    assert caught.value.path == str(ROOT / group / MEMORY_CURRENT)


def test_attribute_file_reads_the_current_counters_each_time(
        fake_kernel: FakeKernel, group: str, cgroupfs: Cgroupfs) -> None:
    events = cgroupfs.attribute_file(group, MEMORY_EVENTS)
    assert events.read_flat_keyed()["high"] == 0
    fake_kernel.bump(group, MEMORY_EVENTS, high=7)
    assert events.read_flat_keyed()["high"] == 7
    with pytest.raises(CgroupReadError, match="expected 'key value'"):
        cgroupfs.attribute_file(group, MEMORY_CURRENT).read_flat_keyed()


def test_attribute_file_of_a_removed_group_fails_with_enoent(
        group: str, cgroupfs: Cgroupfs) -> None:
    events = cgroupfs.attribute_file(group, MEMORY_EVENTS)
    cgroupfs.remove(group)
    with pytest.raises(CgroupReadError) as caught:
        events.read_flat_keyed()
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == str(ROOT / group / MEMORY_EVENTS)


def test_attribute_file_refuses_a_path_outside_the_root(cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupPathError):
        cgroupfs.attribute_file("../etc", "passwd")


def test_write_and_read(group: str, cgroupfs: Cgroupfs) -> None:
    cgroupfs.write(group, CPU_MAX, "200000 100000")
    assert cgroupfs.read(group, CPU_MAX) == "200000 100000\n"


def test_misspelled_attribute_fails_and_creates_nothing(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write(group, "memory.maxx", "1G")
    assert caught.value.errno == errno.ENOENT
    assert not (ROOT / group / "memory.maxx").exists()


@pytest.mark.parametrize(("attribute", "value", "errno_"), kernel_refusals.REFUSALS)
def test_write_refused_with_the_kernels_errno(group: str, cgroupfs: Cgroupfs, attribute: str,
                                              value: str, errno_: int) -> None:
    before = cgroupfs.read(group, attribute) if attribute != CGROUP_KILL else ""
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write(group, attribute, value)
    error = caught.value
    assert (error.errno, error.value, error.path) == (errno_, value, str(ROOT / group / attribute))
    assert f"[Errno {errno_}]" in str(error)
    assert repr(value) in str(error)
    assert str(ROOT / group / attribute) in str(error)
    if attribute != CGROUP_KILL:
        assert cgroupfs.read(group, attribute) == before


def test_write_refuses_non_ascii(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupWriteError, match="not ASCII") as caught:
        cgroupfs.write(group, MEMORY_MAX, "1\u00a0G")
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize(("attribute", "value", "in_force"), [
    (CPU_MAX, "200000 100000", "200000 100000"),
    (CPU_MAX, "max 100000", "max 100000"),
    (CPU_MAX, "50000", "50000 100000"),  # quota only: the period stays
    (CPU_MAX, "max", "max 100000"),
    (MEMORY_MAX, "1000000", "999424"),  # rounded down to a 4 KiB page
    (MEMORY_MAX, "8589934592", "8589934592"),
    (MEMORY_MAX, "max", "max"),
    (MEMORY_SWAP_MAX, "0", "0"),
    (MEMORY_SWAP_MAX, "1000001", "999424"),
    ("memory.high", "536870913", "536870912"),
    (PIDS_MAX, "100", "100"),
    (PIDS_MAX, "max", "max"),
    ("cpu.weight", "250", "250"),
])
def test_write_verified_returns_what_is_in_force(group: str, cgroupfs: Cgroupfs,
                                                 attribute: str, value: str,
                                                 in_force: str) -> None:
    assert cgroupfs.write_verified(group, attribute, value) == in_force
    assert cgroupfs.read(group, attribute).strip() == in_force


def test_write_verified_quota_only_keeps_a_changed_period(group: str, cgroupfs: Cgroupfs) -> None:
    cgroupfs.write(group, CPU_MAX, "100000 50000")
    assert cgroupfs.write_verified(group, CPU_MAX, "25000") == "25000 50000"


def test_write_verified_notices_a_different_read_back(group: str, cgroupfs: Cgroupfs) -> None:
    # The kernel takes "007" but shows "7": what is in force is not what was written.
    with pytest.raises(CgroupVerifyError) as caught:
        cgroupfs.write_verified(group, PIDS_MAX, "007")
    assert (caught.value.value, caught.value.read_back) == ("007", "7")
    assert caught.value.path == str(ROOT / group / PIDS_MAX)


def test_write_verified_propagates_the_write_error(group: str, cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write_verified(group, CPU_MAX, "10 100000")
    assert caught.value.errno == errno.EINVAL
    assert cgroupfs.read(group, CPU_MAX) == "max 100000\n"


@pytest.mark.parametrize(("attribute", "value", "expected"), [
    (MEMORY_MAX, "1000000", "999424"),
    (MEMORY_MAX, "4096", "4096"),
    (MEMORY_MAX, "4095", "0"),
    (MEMORY_MAX, "max", "max"),
    ("memory.low", " 8193 ", "8192"),
    (CPU_MAX, "400000 100000", "400000 100000"),
    (CPU_MAX, "400000", "400000"),
    (PIDS_MAX, "4097", "4097"),
])
def test_expected_read_back(cgroupfs: Cgroupfs, attribute: str, value: str,
                            expected: str) -> None:
    assert cgroupfs.expected_read_back(attribute, value) == expected


# -- controllers -----------------------------------------------------------------


def test_enable_controllers_top_down(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("a/b/c")
    cgroupfs.enable_controllers("a/b", ["memory", "cpu"])
    for parent in ("", "a", "a/b"):
        assert cgroupfs.subtree_controllers(parent) == {"cpu", "memory"}
    assert cgroupfs.controllers("a/b/c") == {"cpu", "memory"}
    assert (ROOT / "a/b/c" / MEMORY_MAX).is_file()
    assert not (ROOT / "a/b/c" / PIDS_MAX).exists()
    assert cgroupfs.controllers("") == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids",
                                        "rdma", "misc"}


def test_enable_controllers_from_a_top_leaves_the_parents_alone(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("owned/engine")
    fake_kernel.enable("", "cpu", "pids")
    cgroupfs.enable_controllers("owned", ["pids"], top="owned")
    assert cgroupfs.subtree_controllers("") == {"cpu", "pids"}
    assert cgroupfs.subtree_controllers("owned") == {"pids"}
    with pytest.raises(CgroupWriteError, match="not available here") as caught:
        cgroupfs.enable_controllers("owned", ["memory"], top="owned")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == str(ROOT / "owned" / CGROUP_SUBTREE_CONTROL)


def test_enable_controllers_outside_top_is_refused(cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupPathError):
        cgroupfs.enable_controllers("a/b", ["cpu"], top="c")


def test_enable_controllers_in_a_group_with_processes_is_ebusy(
        fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    pid = fake_kernel.spawn("busy")
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.enable_controllers("busy", ["memory"])
    assert (caught.value.errno, caught.value.value) == (errno.EBUSY, "+memory")
    assert cgroupfs.subtree_controllers("busy") == frozenset()
    # Once the process lives in a leaf, the group may enable controllers.
    cgroupfs.create("busy/leaf")
    cgroupfs.attach("busy/leaf", pid)
    cgroupfs.enable_controllers("busy", ["memory"])
    assert cgroupfs.controllers("busy/leaf") == {"memory"}


def test_enabling_again_is_not_a_write(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    # The root may hold processes and enable controllers; enabling what is on writes nothing.
    cgroupfs.enable_controllers("", ["cpu"])
    cgroupfs.enable_controllers("", ["cpu"])
    assert cgroupfs.subtree_controllers("") == {"cpu"}


# -- processes -----------------------------------------------------------------------


def test_attach_moves_the_process(fake_kernel: FakeKernel, group: str, cgroupfs: Cgroupfs) -> None:
    pid = fake_kernel.spawn("")
    cgroupfs.attach(group, pid)
    assert cgroupfs.procs(group) == [pid]
    assert pid not in cgroupfs.procs("")
    assert fake_kernel.group_of(pid) == group
    assert Procfs().cgroup_of(pid) == group
    assert cgroupfs.populated("scratch")


def test_attach_zero_moves_the_caller(fake_kernel: FakeKernel, group: str,
                                      cgroupfs: Cgroupfs) -> None:
    cgroupfs.attach(group, 0)
    assert Procfs().cgroup_of("self") == group
    assert cgroupfs.procs(group) == [fake_kernel.self_pid]


def test_attach_into_a_group_with_controllers_enabled_is_ebusy(
        fake_kernel: FakeKernel, group: str, cgroupfs: Cgroupfs) -> None:
    pid = fake_kernel.spawn("")
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.attach("scratch", pid)  # scratch enables controllers for scratch/g
    assert caught.value.errno == errno.EBUSY
    assert fake_kernel.group_of(pid) == ""


def test_subtree_procs_and_populated(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("p/empty")
    assert not cgroupfs.populated("p")
    a, b = fake_kernel.spawn("p/x"), fake_kernel.spawn("p/x/y")
    assert sorted(cgroupfs.subtree_procs("p")) == [a, b]
    assert cgroupfs.populated("p") and not cgroupfs.populated("p/empty")


def test_kill_empties_the_subtree(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    pids = [fake_kernel.spawn("k"), fake_kernel.spawn("k/a"), fake_kernel.spawn("k/a/b")]
    bystander = fake_kernel.spawn("other")
    cgroupfs.kill("k")
    assert fake_kernel.killed == pids
    assert cgroupfs.subtree_procs("k") == []
    assert not cgroupfs.populated("k")
    assert fake_kernel.alive(bystander)


def test_kill_without_cgroup_kill_signals_each_process(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, cgroup_kill=False)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    pids = [kernel.spawn("old"), kernel.spawn("old/child")]
    assert not cgroupfs.has_attribute("old", CGROUP_KILL)
    cgroupfs.kill("old")
    assert kernel.signals == [(pid, signal.SIGKILL) for pid in pids]
    assert cgroupfs.subtree_procs("old") == []


def test_kill_of_a_missing_group_says_so(cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.kill("nothing/here")
    assert caught.value.errno == errno.ENOENT


# -- remove ----------------------------------------------------------------------------


def test_remove_bottom_up(fake_kernel: FakeKernel, cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("r/a/b")
    cgroupfs.create("r/c")
    cgroupfs.remove("r")
    assert not cgroupfs.exists("r")
    assert not fake_kernel.exists("r/a")
    cgroupfs.remove("r")  # already gone: nothing to do


def test_remove_root_is_refused(cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupPathError):
        cgroupfs.remove("/")


def test_remove_retries_ebusy_while_processes_exit(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, exit_on_kill=False)
    cgroupfs = Cgroupfs(**kernel.cgroupfs_args())
    kernel.spawn("dying/child")
    cgroupfs.kill("dying")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            kernel.reap()  # the killed processes finish exiting

    cgroupfs.remove("dying", sleep=sleep, clock=lambda: 0.0)
    assert sleeps == [0.01, 0.02, 0.04]  # EBUSY each time, backing off
    assert not cgroupfs.exists("dying")


def test_remove_gives_up_with_ebusy_after_the_timeout(fake_kernel: FakeKernel,
                                                      cgroupfs: Cgroupfs) -> None:
    fake_kernel.spawn("stuck")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(CgroupRemoveError) as caught:
        cgroupfs.remove("stuck", timeout_s=1.0, sleep=sleep, clock=lambda: now[0])
    assert caught.value.errno == errno.EBUSY
    assert caught.value.path == str(ROOT / "stuck")
    assert 1.0 <= now[0] < 1.6
    assert cgroupfs.exists("stuck")


def test_has_attribute(group: str, cgroupfs: Cgroupfs) -> None:
    assert cgroupfs.has_attribute(group, CGROUP_KILL)
    assert not cgroupfs.has_attribute("", CGROUP_KILL)  # the root has none
    assert not cgroupfs.has_attribute(group, "memory.maxx")


def test_delegated(group: str, cgroupfs: Cgroupfs) -> None:
    assert not cgroupfs.delegated(group)
    os.setxattr(ROOT / group, "trusted.delegate", b"1")
    assert cgroupfs.delegated(group)


def test_every_error_is_a_cgroup_error(cgroupfs: Cgroupfs) -> None:
    for error in (CgroupReadError, CgroupWriteError, CgroupCreateError, CgroupRemoveError,
                  CgroupVerifyError):
        assert issubclass(error, CgroupError)


# -- the fake kernel's own rules (confirmed on a real kernel by the VM scenario) --------


def test_new_group_sees_only_what_its_parent_enables(fake_kernel: FakeKernel,
                                                     cgroupfs: Cgroupfs) -> None:
    cgroupfs.create("n")
    assert cgroupfs.read("n", "cgroup.controllers") == ""
    assert CPU_MAX not in os.listdir(ROOT / "n")
    assert cgroupfs.read_flat_keyed("n", CPU_STAT).keys() == {
        "usage_usec", "user_usec", "system_usec"}
    assert "nr_throttled" in cgroupfs.read_flat_keyed("", CPU_STAT)  # the root always has cpu
    fake_kernel.enable("", "cpu")
    assert cgroupfs.read("n", "cgroup.controllers") == "cpu\n"
    assert "nr_throttled" in cgroupfs.read_flat_keyed("n", CPU_STAT)


def test_disabling_a_controller_drops_its_files_and_settings(
        fake_kernel: FakeKernel, group: str, cgroupfs: Cgroupfs) -> None:
    cgroupfs.write(group, MEMORY_MAX, "1G")
    cgroupfs.write("scratch", CGROUP_SUBTREE_CONTROL, "-memory")
    assert not (ROOT / group / MEMORY_MAX).exists()
    cgroupfs.write("scratch", CGROUP_SUBTREE_CONTROL, "+memory")
    assert cgroupfs.read(group, MEMORY_MAX) == "max\n"


def test_disabling_what_a_child_still_enables_is_ebusy(fake_kernel: FakeKernel, group: str,
                                                       cgroupfs: Cgroupfs) -> None:
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write("", CGROUP_SUBTREE_CONTROL, "-memory")  # scratch still enables it
    assert caught.value.errno == errno.EBUSY


def test_rmdir_refuses_populated_groups_and_parents(fake_kernel: FakeKernel,
                                                    cgroupfs: Cgroupfs) -> None:
    fake_kernel.spawn("full/leaf")
    for path in ("full/leaf", "full"):
        with pytest.raises(OSError) as caught:
            os.rmdir(ROOT / path)
        assert caught.value.errno == errno.EBUSY


def test_cpu_max_below_the_burst_is_einval(group: str, cgroupfs: Cgroupfs) -> None:
    cgroupfs.write(group, CPU_MAX, "30000 100000")
    cgroupfs.write(group, "cpu.max.burst", "20000")
    with pytest.raises(CgroupWriteError) as caught:
        cgroupfs.write(group, CPU_MAX, "10000 100000")
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize(("value", "shown"), [
    ("8G", "8589934592"), ("8g", "8589934592"), ("512M", "536870912"), ("1k", "0"),
    (str(2**63), "max"),  # clamped to the page counter's maximum
])
def test_memory_sizes_as_the_kernel_reads_them(group: str, cgroupfs: Cgroupfs, value: str,
                                               shown: str) -> None:
    cgroupfs.write(group, MEMORY_MAX, value)
    assert cgroupfs.read(group, MEMORY_MAX).strip() == shown


def test_pids_current_counts_the_subtree(fake_kernel: FakeKernel, group: str,
                                         cgroupfs: Cgroupfs) -> None:
    fake_kernel.spawn(group)
    fake_kernel.spawn(f"{group}/sub")
    assert cgroupfs.read(group, "pids.current") == "2\n"


def test_buffered_writes_follow_the_same_rules(group: str, cgroupfs: Cgroupfs) -> None:
    (ROOT / group / PIDS_MAX).write_text("64\n")
    assert cgroupfs.read(group, PIDS_MAX) == "64\n"
    with pytest.raises(OSError) as caught:
        (ROOT / group / PIDS_MAX).write_text("lots\n")
    assert caught.value.errno == errno.EINVAL
    assert cgroupfs.read(group, PIDS_MAX) == "64\n"


def test_signals_never_reach_real_processes(fake_kernel: FakeKernel) -> None:
    pid = fake_kernel.spawn("s")
    os.kill(pid, signal.SIGTERM)
    assert not fake_kernel.alive(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_tree_deeper_than_pythons_recursion_limit_is_walked_and_removed(
        tmp_path: Path) -> None:
    # The engine or a privileged build can make such a tree (plain directories stand in;
    # made one level at a time, since pathlib's own mkdir(parents=True) recurses).
    depth = 1_100
    levels = [tmp_path / "engine"]
    levels += [levels[0].joinpath(*("d" for _ in range(n))) for n in range(1, depth + 1)]
    for level in levels:
        level.mkdir()
        (level / "cgroup.procs").write_text("")
    root = Cgroupfs(tmp_path, page_size=4096)
    assert len(root.descendants("engine")) == depth
    assert root.subtree_procs("engine") == []
    for level in levels:  # rmdir refuses a directory with files in it: empty them first
        (level / "cgroup.procs").unlink()
    root.remove("engine")
    assert not levels[0].exists()
