"""`ccgroupd check` against fake hosts: unified, hybrid (like the development machine), broken."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from ccgroupd.config import Config, DaemonSection, EngineSection, LoadedConfig
from ccgroupd.daemon.check import (
    Finding,
    Status,
    engine_launch_finding,
    io_path_findings,
    kernel_log_finding,
    preflight,
    run_check,
)
from ccgroupd.engine.process import Completed
from ccgroupd.errors import EXIT_INVALID, EXIT_OK, EXIT_UNSUPPORTED
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.procfs import Procfs
from ccgroupd.limits.io import IoMax
from ccgroupd.main import main
from doubles import ScriptedCommands
from fakekernel import FakeKernel, FakeMount

SERVICE = "system.slice/ccgroupd.service"
# Built before pyfakefs starts: once ccgroupd.config is imported, pydantic cannot make Path
# values inside a fake file system (pathlib.Path loses _flavour there, on Python 3.11).
CONFIG_PATH = "/etc/ccgroupd/config.toml"
# Made before pyfakefs patches pathlib: pydantic's Path fields do not load under it.
CI_WRITES = IoMax(path=Path("/var/lib/dagger/ci"), wbps="50M", wiops=1000)
CI_HOME = IoMax(path=Path("/home/ci"), riops=500)




def engines_with_io(**entries: dict[str, object]) -> LoadedConfig:
    """Exec engines (/bin/true), each with one io_max entry. Made outside pyfakefs, where
    pydantic cannot make a Path from a string."""
    engines = {name: {"command": ["/bin/true"], "io_max": [entry]}
               for name, entry in entries.items()}
    return LoadedConfig(Config(engines=engines), (Path(CONFIG_PATH),), {})


IO_PASSING = engines_with_io(ci={"path": "/var/lib/dagger/ci", "wbps": "50M", "wiops": 1000},
                             nightly={"path": "/home/ci", "riops": 500})
IO_FAILING = engines_with_io(ci={"path": "/var/lib/dagger/gone", "wbps": "1G"},
                             cache={"path": "/run/cache", "rbps": "10M"})
SRV_CONFIG = LoadedConfig(
    Config(daemon=DaemonSection(cgroup_root=Path("/srv/cg"), proc_root=Path("/srv/proc"))),
    (Path(CONFIG_PATH),), {"daemon.cgroup_root": CONFIG_PATH})


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCGROUPD_"):
            monkeypatch.delenv(name)


def systemd_host(fs: FakeFilesystem, **kernel_options: object) -> FakeKernel:
    fs.create_dir("/run/systemd/system")
    fs.create_file("/dev/kmsg")  # the kernel's log
    return FakeKernel(fs, **kernel_options)  # type: ignore[arg-type]


def check() -> tuple[int, str]:
    """Exit code and output of `ccgroupd check` with the default configuration."""
    out = io.StringIO()
    code = run_check(None, out=out)
    return code, out.getvalue()


def unwrapped(text: str) -> str:
    return " ".join(text.split())


def by_topic(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.topic: finding for finding in findings}


def test_a_delegated_unified_host_passes(fs: FakeFilesystem) -> None:
    systemd_host(fs, self_group=f"{SERVICE}/supervisor")
    os.setxattr(f"/sys/fs/cgroup/{SERVICE}", "trusted.delegate", b"1")
    code, out = check()
    assert code == EXIT_OK, out
    assert "FAIL" not in out and "WARN" not in out
    assert "cgroup v2 is mounted unified at /sys/fs/cgroup" in out
    assert f"delegated by systemd at /{SERVICE}" in unwrapped(out)
    assert out.rstrip().endswith("This host can run ccgroupd.")


def test_a_shell_outside_the_unit_is_only_a_warning(fs: FakeFilesystem) -> None:
    systemd_host(fs, self_group="user.slice/user-0.slice/session-1.scope")
    code, out = check()
    assert code == EXIT_OK, out
    assert "WARN  delegation" in out
    assert "Delegate=yes" in out


def test_the_hybrid_layout_fails_and_explains(fs: FakeFilesystem) -> None:
    # The development machine: tmpfs at /sys/fs/cgroup, v1 hierarchies, unified holds hugetlb.
    FakeKernel(fs, layout="hybrid", controllers=["hugetlb"], init_comm="process_api")
    code, out = check()
    assert code == EXIT_UNSUPPORTED
    assert "Traceback" not in out
    flat = unwrapped(out)
    for fact in ("/sys/fs/cgroup is a tmpfs holding cgroup v1 hierarchies",
                 "hybrid (cgroup v1 + v2)", "cpu, memory, pids belong to v1",
                 "cgroup v2 is mounted at /sys/fs/cgroup/unified with controllers: hugetlb",
                 "systemd.unified_cgroup_hierarchy=1", "GRUB_CMDLINE_LINUX", "update-grub",
                 "reboot", "mount -t cgroup2 none /sys/fs/cgroup", "PID 1 is 'process_api'",
                 "were not checked"):
        assert fact in flat, fact


def test_a_hybrid_systemd_host_gets_only_the_boot_advice(fs: FakeFilesystem) -> None:
    systemd_host(fs, layout="hybrid", controllers=[])
    code, out = check()
    assert code == EXIT_UNSUPPORTED
    assert "systemd.unified_cgroup_hierarchy=1" in out
    assert "mount -t cgroup2" not in unwrapped(out)
    assert "with controllers: none" in out


def test_a_legacy_host(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs, layout="hybrid", controllers=[])
    kernel.set_mounts(m for m in kernel.mounts if m.fstype != "cgroup2")
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert findings["cgroup v2"].status is Status.FAIL
    assert "legacy (cgroup v1 only)" in findings["cgroup v2"].text


def test_nothing_mounted(fs: FakeFilesystem) -> None:
    kernel = FakeKernel(fs)
    kernel.set_mounts([FakeMount("proc", "/proc", "proc", "rw")])
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert findings["cgroup v2"].text == "nothing is mounted at /sys/fs/cgroup"
    assert findings["cgroup v2"].status is Status.FAIL


def test_missing_controllers_fail(fs: FakeFilesystem) -> None:
    systemd_host(fs, controllers=["cpu", "io"])
    code, out = check()
    assert code == EXIT_UNSUPPORTED
    assert ("memory pids missing from /sys/fs/cgroup/cgroup.controllers (has: cpu io)"
            in unwrapped(out))
    assert "cgroup_disable=" in out


def test_missing_io_is_fine(fs: FakeFilesystem) -> None:
    systemd_host(fs, controllers=["cpuset", "cpu", "memory", "pids"])
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert findings["controllers"].status is Status.OK
    assert "optional io missing" in findings["controllers"].text
    assert findings["disk I/O"].status is Status.WARN
    assert findings["disk I/O"].text == (
        "io is missing from /sys/fs/cgroup/cgroup.controllers: io_max and io_weight cannot be "
        "enforced; CPU, memory and pids limits work without it")
    assert "cgroup_disable=io" in findings["disk I/O"].advice[0]
    assert findings["CPU pinning"].status is Status.OK


def test_missing_cpuset_is_fine_but_said(fs: FakeFilesystem) -> None:
    systemd_host(fs, controllers=["cpu", "io", "memory", "pids"])
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert "optional cpuset missing: see CPU pinning" in findings["controllers"].text
    assert findings["CPU pinning"].status is Status.WARN
    assert findings["CPU pinning"].text == (
        "cpuset is missing from /sys/fs/cgroup/cgroup.controllers: cpuset_cpus and "
        "cpuset_mems cannot be enforced; CPU, memory and pids limits work without it")


def test_the_io_controller_is_offered(fs: FakeFilesystem) -> None:
    systemd_host(fs)
    finding = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))["disk I/O"]
    assert finding.status is Status.OK
    assert "io_max and io_weight can be enforced" in finding.text


def disk_host(fs: FakeFilesystem) -> BlockDevices:
    """A systemd host whose / is on vda1 (254:1) and /run on a tmpfs (0:45)."""
    kernel = systemd_host(fs, self_group=f"{SERVICE}/supervisor")
    os.setxattr(f"/sys/fs/cgroup/{SERVICE}", "trusted.delegate", b"1")
    kernel.add_disk("vda", "254:0", {"vda1": "254:1"})
    for path in ("/var/lib/dagger/ci", "/home/ci", "/run/cache"):
        fs.create_dir(path)
    kernel.put_on("/", "254:1")
    kernel.put_on("/run", "0:45")
    return BlockDevices(**kernel.blockdevices_args())


def test_io_max_paths_on_disks_pass(fs: FakeFilesystem,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    devices = disk_host(fs)
    out = io.StringIO()
    monkeypatch.setattr("ccgroupd.config.read_config", lambda path: IO_PASSING)
    code = run_check(None, out=out, devices=devices)
    assert code == EXIT_OK, out.getvalue()
    assert ("OK disk I/O engine ci: /var/lib/dagger/ci is on disk 254:0: wbps 50 MiB/s, "
            "wiops 1000/s") in unwrapped(out.getvalue())
    assert "engine nightly: /home/ci is on disk 254:0: riops 500/s" in unwrapped(out.getvalue())


def test_io_max_paths_on_no_disk_fail_the_configuration(
        fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch) -> None:
    devices = disk_host(fs)
    out = io.StringIO()
    monkeypatch.setattr("ccgroupd.config.read_config", lambda path: IO_FAILING)
    code = run_check(None, out=out, devices=devices)
    assert code == EXIT_INVALID
    flat = unwrapped(out.getvalue())
    assert "FAIL config" not in flat
    assert ("FAIL disk I/O engine ci: io_max: cannot stat /var/lib/dagger/gone: [Errno 2] No "
            "such file or directory (the path does not exist; create it first or name its "
            "parent)") in flat
    assert ("FAIL disk I/O engine cache: io_max: /run/cache is on no block device (device "
            "0:45") in flat
    assert "The host is usable, but the configuration is not" in flat


def test_two_io_max_entries_of_an_engine_on_one_disk_fail(fs: FakeFilesystem) -> None:
    devices = disk_host(fs)
    findings = io_path_findings([("ci", CI_WRITES), ("ci", CI_HOME), ("nightly", CI_HOME)],
                                devices)
    assert [f.status for f in findings] == [Status.OK, Status.OK, Status.OK, Status.FAIL]
    assert findings[-1].text == (
        "engine ci: io_max = '/home/ci': /var/lib/dagger/ci and /home/ci are both on disk "
        "254:0; io.max limits a whole disk, so give one entry per disk")


def test_config_only_does_not_look_for_disks(fs: FakeFilesystem,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    FakeKernel(fs, layout="hybrid", controllers=["hugetlb"], init_comm="process_api")
    out = io.StringIO()
    monkeypatch.setattr("ccgroupd.config.read_config", lambda path: IO_FAILING)
    assert run_check(None, config_only=True, out=out, devices=BlockDevices()) == EXIT_OK
    assert "disk I/O" not in out.getvalue()


def test_old_kernel_without_cgroup_kill_or_psi_warns(fs: FakeFilesystem) -> None:
    systemd_host(fs, cgroup_kill=False, psi=False, self_group="user.slice")
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert findings["cgroup.kill"].status is Status.WARN
    assert "older than 5.14" in findings["cgroup.kill"].text
    assert findings["PSI"].status is Status.WARN
    assert "CONFIG_PSI" in findings["PSI"].advice[0]


def test_cgroup_kill_is_looked_for_below_the_root(fs: FakeFilesystem) -> None:
    systemd_host(fs, self_group="")  # the root has no cgroup.kill; init.scope has
    assert by_topic(preflight(Cgroupfs(), Procfs(), euid=0))["cgroup.kill"].status is Status.OK


def test_without_systemd(fs: FakeFilesystem) -> None:
    FakeKernel(fs, init_comm="init")
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=0))
    assert findings["systemd"].status is Status.WARN
    assert "absolute path" in findings["systemd"].advice[0]
    assert findings["delegation"].status is Status.OK
    assert "cgroup.subtree_control is writable" in findings["delegation"].text


def test_not_root_warns(fs: FakeFilesystem) -> None:
    systemd_host(fs)
    findings = by_topic(preflight(Cgroupfs(), Procfs(), euid=1000))
    assert findings["privileges"].status is Status.WARN
    assert "sudo ccgroupd check" in findings["privileges"].advice[0]


def test_unreadable_proc_is_a_line_not_a_traceback(fs: FakeFilesystem) -> None:
    fs.create_dir("/sys/fs/cgroup")
    code, out = check()
    assert code == EXIT_UNSUPPORTED
    assert "FAIL  cgroup v2    cannot read /proc/self/mounts: [Errno 2]" in out


def test_a_bad_config_file_is_reported(fs: FakeFilesystem) -> None:
    systemd_host(fs)
    out = io.StringIO()
    code = run_check(Path("/etc/ccgroupd/missing.toml"), out=out)
    assert code == EXIT_INVALID
    assert "FAIL  config" in out.getvalue()
    assert "missing.toml" in out.getvalue()


def test_roots_come_from_the_config(fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch) -> None:
    systemd_host(fs, mount_point="/srv/cg", proc_root="/srv/proc")
    monkeypatch.setattr("ccgroupd.config.read_config", lambda path: SRV_CONFIG)
    out = io.StringIO()
    assert run_check(Path(CONFIG_PATH), out=out) == EXIT_OK, out.getvalue()
    assert "cgroup v2 is mounted unified at /srv/cg" in out.getvalue()
    assert f"read {CONFIG_PATH}" in out.getvalue()
    assert f"daemon.cgroup_root from {CONFIG_PATH}" in out.getvalue()


def test_more_cpus_than_the_host_has_is_a_config_failure(fs: FakeFilesystem) -> None:
    systemd_host(fs)
    fs.create_file(CONFIG_PATH, contents="[limits]\ncpus = 100000\n")
    out = io.StringIO()
    assert run_check(None, out=out) == EXIT_INVALID
    assert "FAIL  config       cpus = 100000.0: above the" in out.getvalue()
    assert "lower [limits] cpus" in out.getvalue()
    assert "The host is usable, but the configuration is not" in out.getvalue()


def test_config_only_validates_without_the_host(fs: FakeFilesystem) -> None:
    # No cgroup v2, no systemd: the host would fail (exit 6); the validator does not care.
    FakeKernel(fs, layout="hybrid", controllers=["hugetlb"], init_comm="process_api")
    fs.create_file(CONFIG_PATH, contents="[limits]\ncpus = 100000\nmemory = '1G'\n")
    fs.create_file("/etc/ccgroupd/config.d/50-fleet.toml", contents="[limits]\npids = 500\n")
    out = io.StringIO()
    assert run_check(Path(CONFIG_PATH), config_only=True, out=out) == EXIT_OK, out.getvalue()
    text = out.getvalue()
    assert f"read {CONFIG_PATH}, /etc/ccgroupd/config.d/50-fleet.toml" in text
    assert "limits.pids from /etc/ccgroupd/config.d/50-fleet.toml" in text
    assert "privileges" not in text and "cgroup v2" not in text
    assert text.endswith("The configuration is valid.\n")


def test_config_only_refuses_a_bad_file_with_exit_3(fs: FakeFilesystem,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    FakeKernel(fs, layout="hybrid", controllers=["hugetlb"], init_comm="process_api")
    fs.create_file("/tmp/candidate.toml", contents="[limits]\nmemory = 'banana'\n")
    assert main(["--config", "/tmp/candidate.toml", "check", "--config-only"]) == EXIT_INVALID
    out = capsys.readouterr().out
    assert "FAIL  config       /tmp/candidate.toml: limits.memory = 'banana'" in out
    assert out.endswith("The configuration is not valid: fix it first.\n")


def test_ccgroupd_check_command(fs: FakeFilesystem, capsys: pytest.CaptureFixture[str]) -> None:
    FakeKernel(fs, layout="hybrid", controllers=["hugetlb"], init_comm="process_api")
    assert main(["check"]) == EXIT_UNSUPPORTED
    captured = capsys.readouterr()
    assert "FAIL  cgroup v2" in captured.out
    assert captured.err == ""


DOCKER_INFO = ("docker", "info", "--format", "{{.CgroupDriver}} {{.CgroupVersion}}")


def test_check_refuses_dockers_systemd_cgroup_driver_with_the_fix() -> None:
    docker = ScriptedCommands({DOCKER_INFO: Completed(0, "systemd 2")})
    finding = engine_launch_finding(EngineSection(mode="docker"), docker)
    assert docker.ran == [DOCKER_INFO]
    assert finding.status is Status.FAIL
    assert "'systemd' cgroup driver" in finding.text
    assert "native.cgroupdriver=cgroupfs" in finding.text
    assert "/etc/docker/daemon.json" in finding.text


def test_check_accepts_docker_with_the_cgroupfs_driver() -> None:
    finding = engine_launch_finding(
        EngineSection(mode="docker"), ScriptedCommands({DOCKER_INFO: Completed(0, "cgroupfs 2")}))
    assert (finding.status, finding.text) == (
        Status.OK, "mode docker: docker uses the cgroupfs driver; image "
        "registry.dagger.io/engine:v0.19.4")


def test_the_kernel_log_is_a_warning_when_it_cannot_be_read(tmp_path: Path) -> None:
    readable = tmp_path / "kmsg"
    readable.write_text("")
    assert kernel_log_finding(readable).status is Status.OK
    missing = kernel_log_finding(tmp_path / "absent")
    assert missing.status is Status.WARN  # builds are still limited, only named less
    assert "absent" in missing.text and "while its group exists" in missing.text
