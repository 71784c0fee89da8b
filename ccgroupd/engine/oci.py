"""The OCI runtime bundle for engine mode "runc": the engine as a privileged container.

runc (1.1, as Debian 12 ships it) runs the engine from its image unpacked on
disk. The container is as privileged as ``docker run --privileged`` would make
it, because the Dagger engine runs build containers itself: all capabilities,
every device, /sys and the cgroup mount writable, no seccomp, AppArmor, masked
or read-only paths. It gets private pid, mount, ipc, uts and cgroup namespaces
and the host's network (as the engine has with ``--network host``).

``linux.cgroupsPath`` is resolved by runc against the cgroup2 mount it sees.
ccgroupd's shim runs runc in a cgroup and mount namespace rooted at the engine
group, so "/container" means ``<engine group>/container`` and every cgroup file
runc writes lies inside the engine group.

Pure data and one file write; nothing here touches cgroupfs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OCI_VERSION = "1.0.2"
CONFIG_FILE_NAME = "config.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What docker gives its containers (dockerd runs with LimitNOFILE=infinity); the
# engine and its builds hold many files open. Without an entry runc would pass on
# whatever limit its caller had.
NOFILE_LIMIT = 1048576

# Every capability of Linux 6.1 (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40),
# as docker --privileged grants them.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# No "network": the engine uses the host's network.
NAMESPACES = ("pid", "mount", "ipc", "uts", "cgroup")

_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


def runtime_spec(*, rootfs: Path, args: Sequence[str], env: Mapping[str, str], cwd: str,
                 cgroups_path: str, hostname: str, bind_mounts: Sequence[Path],
                 host_files: Sequence[Path] = ()) -> dict[str, Any]:
    """The config.json content for the engine container.

    ``env`` is the whole environment, plus PATH when it has none (runc looks the
    command up with the container's PATH). ``bind_mounts`` are host directories
    mounted read-write at the same path, after the system mounts; ``host_files``
    (the host's /etc/resolv.conf and /etc/hosts: the container shares the host's
    network, so it needs the host's name service) are bound read-only.
    """
    if not rootfs.is_absolute():
        raise ValueError(f"rootfs must be an absolute path: {rootfs}")
    if not args:
        raise ValueError("args must name the command to run in the container")
    if not cwd.startswith("/"):
        raise ValueError(f"cwd must be an absolute path: {cwd!r}")
    if not cgroups_path.startswith("/"):
        raise ValueError(f"cgroups_path must be an absolute path: {cgroups_path!r}")
    for bind in (*bind_mounts, *host_files):
        if not bind.is_absolute():
            raise ValueError(f"bind mounts must be absolute paths: {bind}")
    for name in env:
        if not name or "=" in name:
            raise ValueError(f"not an environment variable name: {name!r}")

    environment = dict(env)
    environment.setdefault("PATH", DEFAULT_PATH)
    capabilities = list(ALL_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [f"{name}={value}" for name, value in environment.items()],
            "cwd": cwd,
            # No inheritable or ambient set, as docker since 20.10.14 (CVE-2022-24769).
            "capabilities": {
                "bounding": capabilities,
                "effective": list(capabilities),
                "permitted": list(capabilities),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": NOFILE_LIMIT, "soft": NOFILE_LIMIT}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(bind_mounts, host_files),
        "linux": {
            "namespaces": [{"type": kind} for kind in NAMESPACES],
            "cgroupsPath": cgroups_path,
            # cgroup v2 device filter: one rule that allows every device, as --privileged.
            "resources": {"devices": [{"allow": True, "access": "rwm"}]},
        },
    }


def _mounts(bind_mounts: Sequence[Path], host_files: Sequence[Path]) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": _NOSUID_NOEXEC_NODEV},
        # The host's /dev, so the engine sees every device (loop, fuse, tun) as it does
        # under --privileged, also devices that appear later. runc makes no device
        # nodes of its own when /dev is a bind mount.
        {"destination": "/dev", "type": "bind", "source": "/dev",
         "options": ["rbind", "nosuid", "rw"]},
        # Own instances over the host's: the container's ptys and shared memory must not
        # be the host's.
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": _NOSUID_NOEXEC_NODEV},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": [*_NOSUID_NOEXEC_NODEV, "rw"]},
        # In the container's cgroup namespace: rooted at the container's own group. rw,
        # because the engine moves itself to /init and creates /buildkit/<id> there.
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*_NOSUID_NOEXEC_NODEV, "relatime", "rw"]},
        *({"destination": str(path), "type": "bind", "source": str(path),
           "options": ["rbind", "rw"]} for path in bind_mounts),
        *({"destination": str(path), "type": "bind", "source": str(path),
           "options": ["bind", "ro"]} for path in host_files),
    ]


def write_bundle(bundle_dir: Path, spec: dict[str, Any]) -> Path:
    """Write ``bundle_dir/config.json`` atomically, creating ``bundle_dir`` (0700).

    A runc started at any moment reads either the previous file or this one,
    whole. Raises OSError when the directory or the file cannot be written.
    """
    bundle_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = bundle_dir / CONFIG_FILE_NAME
    fd, temp_name = tempfile.mkstemp(prefix=f".{CONFIG_FILE_NAME}.", dir=bundle_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(spec, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return path
