from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ccgroupd.engine.oci import ALL_CAPABILITIES, DEFAULT_PATH, runtime_spec, write_bundle

ROOTFS = Path("/var/lib/ccgroupd/engine/rootfs")
BINDS = [Path("/var/lib/dagger"), Path("/run/dagger")]


def make_spec(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "rootfs": ROOTFS,
        "args": ["/usr/local/bin/dagger-entrypoint.sh", "--debug"],
        "env": {"_EXPERIMENTAL_DAGGER_CLOUD_TOKEN": "x"},
        "cwd": "/",
        "cgroups_path": "/container",
        "hostname": "ccgroupd-engine",
        "bind_mounts": BINDS,
    }
    arguments.update(overrides)
    return runtime_spec(**arguments)


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    [mount] = [m for m in spec["mounts"] if m["destination"] == destination]
    assert isinstance(mount, dict)
    return mount


def test_namespaces_are_private_except_the_network() -> None:
    namespaces = make_spec()["linux"]["namespaces"]

    assert sorted(ns["type"] for ns in namespaces) == ["cgroup", "ipc", "mount", "pid", "uts"]
    # A "path" would join an existing namespace instead of creating one.
    assert all(set(ns) == {"type"} for ns in namespaces)


def test_cgroups_path_root_and_hostname_are_as_given() -> None:
    spec = make_spec(cgroups_path="/container", hostname="engine-host")

    assert spec["linux"]["cgroupsPath"] == "/container"
    assert spec["root"] == {"path": "/var/lib/ccgroupd/engine/rootfs", "readonly": False}
    assert spec["hostname"] == "engine-host"
    assert spec["ociVersion"] == "1.0.2"


def test_process_runs_the_args_as_root_without_a_terminal() -> None:
    process = make_spec(cwd="/var/lib/dagger")["process"]

    assert process["args"] == ["/usr/local/bin/dagger-entrypoint.sh", "--debug"]
    assert process["cwd"] == "/var/lib/dagger"
    assert process["terminal"] is False
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["noNewPrivileges"] is False
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]


def test_environment_gets_a_path_unless_it_has_one() -> None:
    assert make_spec(env={"A": "1"})["process"]["env"] == ["A=1", f"PATH={DEFAULT_PATH}"]
    assert make_spec(env={"PATH": "/bin", "B": "x=y"})["process"]["env"] == ["PATH=/bin", "B=x=y"]


def test_every_capability_in_the_bounding_effective_and_permitted_sets() -> None:
    capabilities = make_spec()["process"]["capabilities"]

    # CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40): the kernel 6.1 set, no duplicates.
    assert len(ALL_CAPABILITIES) == len(set(ALL_CAPABILITIES)) == 41
    assert set(capabilities) == {"bounding", "effective", "permitted"}
    for name in ("bounding", "effective", "permitted"):
        assert capabilities[name] == list(ALL_CAPABILITIES)
    assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_MKNOD", "CAP_BPF"} <= set(
        capabilities["effective"])


def test_every_device_is_allowed_and_no_limit_is_set_on_the_container() -> None:
    # The limits are the engine group's; the container's own group gets none.
    assert make_spec()["linux"]["resources"] == {"devices": [{"allow": True, "access": "rwm"}]}


def test_no_confinement_of_a_privileged_container() -> None:
    spec = make_spec()

    for key in ("seccomp", "maskedPaths", "readonlyPaths", "mountLabel"):
        assert key not in spec["linux"]
    assert "apparmorProfile" not in spec["process"]
    assert "selinuxLabel" not in spec["process"]


def test_system_mounts_then_the_binds_in_order() -> None:
    destinations = [m["destination"] for m in make_spec()["mounts"]]

    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                            "/sys/fs/cgroup", "/var/lib/dagger", "/run/dagger"]


def test_cgroup_and_sysfs_are_mounted_writable() -> None:
    spec = make_spec()

    cgroup = mount_at(spec, "/sys/fs/cgroup")
    assert cgroup["type"] == "cgroup"
    assert "rw" in cgroup["options"]
    assert "ro" not in cgroup["options"]
    sysfs = mount_at(spec, "/sys")
    assert sysfs["type"] == "sysfs"
    assert "ro" not in sysfs["options"]
    assert not any("ro" in m.get("options", []) for m in spec["mounts"])


def test_dev_is_the_hosts_with_own_pts_and_shm() -> None:
    spec = make_spec()

    dev = mount_at(spec, "/dev")
    assert (dev["type"], dev["source"]) == ("bind", "/dev")
    assert "rbind" in dev["options"]
    pts = mount_at(spec, "/dev/pts")
    assert pts["type"] == "devpts"
    assert "newinstance" in pts["options"]
    assert mount_at(spec, "/dev/shm")["type"] == "tmpfs"


def test_bind_mounts_are_read_write_at_the_same_path() -> None:
    spec = make_spec(bind_mounts=[Path("/srv/state")])

    assert mount_at(spec, "/srv/state") == {"destination": "/srv/state", "type": "bind",
                                            "source": "/srv/state", "options": ["rbind", "rw"]}
    assert len(spec["mounts"]) == 8


def test_host_name_service_files_are_bound_read_only_after_the_binds() -> None:
    spec = make_spec(host_files=[Path("/etc/resolv.conf"), Path("/etc/hosts")])

    assert spec["mounts"][-3:] == [
        mount_at(spec, "/run/dagger"),
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
         "options": ["bind", "ro"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
         "options": ["bind", "ro"]}]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rootfs": Path("rootfs")}, "rootfs must be an absolute path"),
    ({"args": []}, "args must name the command"),
    ({"cwd": "var/lib"}, "cwd must be an absolute path"),
    ({"cgroups_path": "container"}, "cgroups_path must be an absolute path"),
    ({"bind_mounts": [Path("run/dagger")]}, "bind mounts must be absolute paths"),
    ({"host_files": [Path("etc/hosts")]}, "bind mounts must be absolute paths"),
    ({"env": {"A=B": "1"}}, "not an environment variable name"),
    ({"env": {"": "1"}}, "not an environment variable name"),
])
def test_refuses_what_runc_would_misread(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_spec(**overrides)


def test_write_bundle_writes_the_spec_as_json_in_a_private_directory(tmp_path: Path) -> None:
    spec = make_spec()
    bundle = tmp_path / "run" / "engine-bundle"

    path = write_bundle(bundle, spec)

    assert path == bundle / "config.json"
    assert json.loads(path.read_text()) == spec
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json"]


def test_write_bundle_replaces_the_previous_config(tmp_path: Path) -> None:
    write_bundle(tmp_path, make_spec(hostname="old"))
    write_bundle(tmp_path, make_spec(hostname="new"))

    assert json.loads((tmp_path / "config.json").read_text())["hostname"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_write_bundle_syncs_before_the_rename(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    def recording_replace(src: str, dst: str) -> None:
        steps.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    write_bundle(tmp_path, make_spec())

    assert steps == ["fsync", "replace"]


def test_failed_write_keeps_the_previous_config_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(tmp_path, make_spec(hostname="old"))

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left on device"):
        write_bundle(tmp_path, make_spec(hostname="new"))

    assert json.loads((tmp_path / "config.json").read_text())["hostname"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
