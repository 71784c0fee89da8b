"""`ccgroupd check`: can this host run ccgroupd? One plain line per fact, and what to do.

Every failure is a line of output, never a traceback: a host that cannot run the
daemon is the normal case this command exists for.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ccgroupd.daemon.layout import OPTIONAL_CONTROLLERS, REQUIRED_CONTROLLERS
from ccgroupd.errors import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    CcgroupdError,
    CgroupError,
    IoDeviceError,
    LimitsError,
)
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import CGROUP_KILL, CGROUP_SUBTREE_CONTROL, CPU_PRESSURE
from ccgroupd.kernel.kmsg import KMSG_PATH, open_kmsg
from ccgroupd.kernel.parsers import Mount, ParseError, parse_psi
from ccgroupd.kernel.procfs import Procfs

if TYPE_CHECKING:
    from ccgroupd.config import Config, EngineSection
    from ccgroupd.engine.process import CommandRunner
    from ccgroupd.limits.io import IoMax

SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
_WIDTH = 100

UNIFIED_BOOT_ADVICE = (
    "boot with the unified hierarchy: add systemd.unified_cgroup_hierarchy=1 to "
    "GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot; afterwards "
    "`stat -fc %T /sys/fs/cgroup` prints cgroup2fs"
)
NO_SYSTEMD_MOUNT_ADVICE = (
    "without systemd, whatever sets up this machine (init, container runtime) must "
    "mount only cgroup2 there: unmount the v1 hierarchies and "
    "`mount -t cgroup2 none {root}`"
)


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    topic: str
    text: str
    advice: tuple[str, ...] = ()


def run_check(config_path: Path | None, *, config_only: bool = False,
              out: TextIO | None = None, devices: BlockDevices | None = None) -> int:
    """Print the preflight; 0 if ccgroupd can run here, 6 if the host cannot, 3 for a bad config.

    ``config_only``: the configuration alone, for a validator (Ansible's ``validate:``)
    that must not depend on the host it runs on: 0 or 3. Otherwise each engine's io_max
    paths must be on disks of this host (a config failure, 3: the daemon would refuse
    them), looked up in ``devices`` (default: daemon.sys_root).
    """
    out = out or sys.stdout
    config_findings, (cgroupfs, procfs), config = _load_config(config_path,
                                                               check_host=not config_only)
    host_findings = [] if config_only else preflight(cgroupfs, procfs, euid=os.geteuid())
    if config is not None and not config_only:
        engines = config.engine_configs()
        io_entries = [(name, entry) for name, engine in engines.items()
                      for entry in engine.engine.io_max]
        config_findings += io_path_findings(
            io_entries, devices or BlockDevices(config.daemon.sys_root))
        host_findings += [engine_launch_finding(engine.engine,
                                                name=name if config.engines else None)
                          for name, engine in engines.items()]
        host_findings.append(kernel_log_finding())
    for finding in [*config_findings, *host_findings]:
        out.write(_format(finding))
    if any(f.status is Status.FAIL for f in host_findings):
        out.write("\nThis host cannot run ccgroupd yet: fix the FAIL lines above.\n")
        return EXIT_UNSUPPORTED
    if any(f.status is Status.FAIL for f in config_findings):
        out.write("\nThe configuration is not valid: fix it first.\n" if config_only else
                  "\nThe host is usable, but the configuration is not: fix it first.\n")
        return EXIT_INVALID
    out.write("\nThe configuration is valid.\n" if config_only else
              "\nThis host can run ccgroupd.\n")
    return EXIT_OK


def preflight(cgroupfs: Cgroupfs, procfs: Procfs, *, euid: int,
              systemd_runtime_dir: Path = SYSTEMD_RUNTIME_DIR) -> list[Finding]:
    """Everything `ccgroupd check` looks at, in the order a person would fix it."""
    findings = [_privileges(euid)]
    under_systemd, init_finding = _init_system(procfs, systemd_runtime_dir)
    mount_findings, unified = _hierarchy(cgroupfs, procfs, under_systemd)
    findings += mount_findings
    findings.append(init_finding)
    if not unified:
        findings.append(Finding(Status.WARN, "skipped", "controllers, delegation, cgroup.kill "
                                "and PSI were not checked: they need cgroup v2 at "
                                f"{cgroupfs.root}"))
        return findings
    findings.append(_guarded(_controllers, cgroupfs))
    findings += [_guarded(functools.partial(_optional_controller, controller=name), cgroupfs)
                 for name in OPTIONAL_CONTROLLERS]
    findings.append(_guarded(lambda fs: _cgroup_kill(fs, procfs.cgroup_of("self")), cgroupfs))
    findings.append(_guarded(_psi, cgroupfs))
    findings.append(_guarded(
        lambda fs: _delegation(fs, procfs.cgroup_of("self"), under_systemd), cgroupfs))
    return findings


def _format(finding: Finding) -> str:
    head = f"{finding.status.value:<5} {finding.topic:<12} "
    lines = textwrap.wrap(finding.text, _WIDTH, initial_indent=head,
                          subsequent_indent=" " * len(head))
    for advice in finding.advice:
        lines += textwrap.wrap(advice, _WIDTH, initial_indent=" " * len(head) + "-> ",
                               subsequent_indent=" " * (len(head) + 3))
    return "".join(f"{line}\n" for line in lines)


def engine_launch_finding(engine: EngineSection, runner: CommandRunner | None = None, *,
                          name: str | None = None) -> Finding:
    """What the daemon would refuse at start-up for this [engine] mode (docker's cgroup
    driver, a missing rootfs or runc); ``name``: which of several engines."""
    from ccgroupd.engine.launch import check_launch
    from ccgroupd.engine.process import AsyncioSpawner

    which = f"engine {name}: " if name is not None else ""
    try:
        asyncio.run(check_launch(engine, runner or AsyncioSpawner()))
    except CcgroupdError as error:
        return Finding(Status.FAIL, "engine", f"{which}mode {engine.mode}: {error}")
    detail = {"exec": f"runs {engine.command[0]} on this host",
              "docker": f"docker uses the cgroupfs driver; image {engine.image}",
              "runc": f"rootfs {engine.rootfs}"}[engine.mode]
    return Finding(Status.OK, "engine", f"{which}mode {engine.mode}: {detail}")


def kernel_log_finding(path: Path = KMSG_PATH) -> Finding:
    """Whether OOM and pids records can name a build after its group is gone."""
    try:
        open_kmsg(path).close()
    except CgroupError as error:
        return Finding(Status.WARN, "kernel log",
                       f"{error}: OOM and pids records name a build only while its group "
                       "exists (runc removes it as the build exits)",
                       ("run ccgroupd as root on the host, where /dev/kmsg is readable",))
    return Finding(Status.OK, "kernel log", f"{path} is readable: OOM and pids records name "
                   "the build even after the runtime removed its group")


def _load_config(config_path: Path | None, *, check_host: bool
                 ) -> tuple[list[Finding], tuple[Cgroupfs, Procfs], Config | None]:
    from ccgroupd.config import read_config
    from ccgroupd.limits.model import host_cpu_count

    try:
        loaded = read_config(config_path)
    except CcgroupdError as error:
        return ([Finding(Status.FAIL, "config", str(error),
                         ("fix the configuration; the host checks below use the default "
                          "roots /sys/fs/cgroup and /proc",))], (Cgroupfs(), Procfs()), None)
    config = loaded.config
    files = ", ".join(map(str, loaded.files)) or "no file: built-in defaults"
    findings = [Finding(Status.OK, "config", f"read {files}")]
    # Which file or variable set each value: what an operator of a fleet asks first.
    findings += [Finding(Status.OK, "config", f"{key} from {origin}")
                 for key, origin in sorted(loaded.origins.items())]
    if check_host:
        for name, limits in [*((name, engine.limits) for name, engine in
                               config.engine_configs().items()), ("budget", config.budget)]:
            try:
                limits.check_host(host_cpu_count())
            except CcgroupdError as error:
                where = "[limits]" if not config.engines else (
                    "[budget]" if name == "budget" else f"[engines.{name}]")
                findings.append(Finding(Status.FAIL, "config", str(error),
                                        (f"lower {where} cpus",)))
    kernel = Cgroupfs(config.daemon.cgroup_root), Procfs(config.daemon.proc_root)
    return findings, kernel, config


def _guarded(check: Callable[[Cgroupfs], Finding], cgroupfs: Cgroupfs) -> Finding:
    """Run one check; a file that cannot be read becomes a FAIL line naming it."""
    try:
        return check(cgroupfs)
    except CcgroupdError as error:
        return Finding(Status.FAIL, "cgroupfs", str(error))


def _privileges(euid: int) -> Finding:
    if euid == 0:
        return Finding(Status.OK, "privileges", "running as root")
    return Finding(Status.WARN, "privileges",
                   f"running as uid {euid}: the daemon needs root and some checks may be "
                   "incomplete", ("run `sudo ccgroupd check`",))


def _init_system(procfs: Procfs, systemd_runtime_dir: Path) -> tuple[bool, Finding]:
    try:
        init = procfs.comm(1)
    except CgroupError:
        init = None
    if init == "systemd" or systemd_runtime_dir.is_dir():
        return True, Finding(Status.OK, "systemd", "the host runs systemd")
    return False, Finding(
        Status.WARN, "systemd",
        f"no systemd here (PID 1 is {init or 'unknown'!r}, no {systemd_runtime_dir})",
        ("ccgroupd can run without systemd: start it as root from the init system and give "
         "[cgroup] name as an absolute path under the cgroup root",))


def _hierarchy(cgroupfs: Cgroupfs, procfs: Procfs,
               under_systemd: bool) -> tuple[list[Finding], bool]:
    """Is cgroup v2 mounted alone at the cgroup root? (findings, usable)."""
    root = cgroupfs.root
    try:
        mounts = procfs.mounts()
        fstype = procfs.mount_type(root)
    except CgroupError as error:
        return [Finding(Status.FAIL, "cgroup v2", str(error))], False
    if fstype == "cgroup2":
        return [Finding(Status.OK, "cgroup v2", f"cgroup v2 is mounted unified at {root}")], True
    v1 = sorted(_v1_controllers(mounts, root))
    unified = [m for m in mounts if m.fstype == "cgroup2"]
    advice = (UNIFIED_BOOT_ADVICE,) if under_systemd else (
        UNIFIED_BOOT_ADVICE, NO_SYSTEMD_MOUNT_ADVICE.format(root=root))
    if fstype is None and not v1 and not unified:
        return [Finding(Status.FAIL, "cgroup v2", f"nothing is mounted at {root}", advice)], False
    layout = "hybrid (cgroup v1 + v2)" if unified else "legacy (cgroup v1 only)"
    held = [c for c in REQUIRED_CONTROLLERS if any(c in name.split(",") for name in v1)]
    findings = [Finding(
        Status.FAIL, "cgroup v2",
        f"{root} is a {fstype or 'plain directory'} holding cgroup v1 hierarchies "
        f"({', '.join(v1) or 'none'}): the {layout} layout. A controller serves one "
        f"hierarchy only; here {', '.join(held) or 'the controllers'} belong to v1, so their "
        "limits (cpu.max, memory.max, pids.max) cannot be set on cgroup v2, and ccgroupd "
        "works on cgroup v2 alone.", advice)]
    for mount in unified:
        findings.append(_unified_elsewhere(mount))
    return findings, False


def _v1_controllers(mounts: list[Mount], root: Path) -> Iterator[str]:
    for mount in mounts:
        if mount.fstype == "cgroup" and Path(mount.target).parent == root:
            yield Path(mount.target).name


def _unified_elsewhere(mount: Mount) -> Finding:
    try:
        controllers = sorted(Cgroupfs(mount.target).controllers(""))
    except CgroupError as error:
        return Finding(Status.FAIL, "cgroup v2", f"cgroup v2 is at {mount.target}: {error}")
    return Finding(Status.FAIL, "cgroup v2",
                   f"cgroup v2 is mounted at {mount.target} with controllers: "
                   f"{' '.join(controllers) or 'none'}; ccgroupd needs "
                   f"{' '.join(REQUIRED_CONTROLLERS)} there")


def _controllers(cgroupfs: Cgroupfs) -> Finding:
    available = cgroupfs.controllers("")
    missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
    shown = " ".join(sorted(available)) or "none"
    if missing:
        return Finding(
            Status.FAIL, "controllers",
            f"{' '.join(missing)} missing from {cgroupfs.root}/cgroup.controllers (has: {shown})",
            ("a controller is missing when the kernel command line disables it "
             "(cgroup_disable=...) or a cgroup v1 hierarchy holds it; remove that and reboot",))
    optional = [c for c in OPTIONAL_CONTROLLERS if c not in available]
    if optional:
        topics = " and ".join(_OPTIONAL[controller][0] for controller in optional)
        return Finding(Status.OK, "controllers",
                       f"{shown} (optional {' '.join(optional)} missing: see {topics})")
    return Finding(Status.OK, "controllers", shown)


# An optional controller -> the topic of its finding, the keys it enforces, its v1 name.
_OPTIONAL = {"io": ("disk I/O", "io_max and io_weight", "blkio"),
             "cpuset": ("CPU pinning", "cpuset_cpus and cpuset_mems", "cpuset")}


def _optional_controller(cgroupfs: Cgroupfs, controller: str) -> Finding:
    """Whether the keys an optional controller enforces can be: ccgroupd runs without them."""
    topic, keys, v1_name = _OPTIONAL[controller]
    if controller in cgroupfs.controllers(""):
        return Finding(Status.OK, topic, f"the {controller} controller is offered: {keys} can "
                       "be enforced")
    return Finding(
        Status.WARN, topic,
        f"{controller} is missing from {cgroupfs.root}/cgroup.controllers: {keys} cannot "
        "be enforced; CPU, memory and pids limits work without it",
        (f"the kernel command line disables it (cgroup_disable={controller}) or a cgroup v1 "
         f"{v1_name} hierarchy holds it; remove that and reboot",))


def io_path_findings(io_entries: Sequence[tuple[str, IoMax]],
                     devices: BlockDevices) -> list[Finding]:
    """One line per io_max entry: the disk its path is on, or why it is on none; and a
    failure for an engine with two entries on one disk."""
    from ccgroupd.limits.io import io_max_lines

    findings = []
    entries: dict[str, list[IoMax]] = {}
    for engine, entry in io_entries:
        try:
            device = devices.disk_of(entry.path)
        except IoDeviceError as error:
            findings.append(Finding(Status.FAIL, "disk I/O", f"engine {engine}: io_max: {error}"))
            continue
        findings.append(Finding(Status.OK, "disk I/O", f"engine {engine}: {entry.path} is on "
                                f"disk {device}: {entry.describe_rates()}"))
        entries.setdefault(engine, []).append(entry)
    for engine, own in entries.items():
        try:
            io_max_lines(own, devices)
        except (IoDeviceError, LimitsError) as error:
            findings.append(Finding(Status.FAIL, "disk I/O", f"engine {engine}: {error}"))
    return findings


def _delegation(cgroupfs: Cgroupfs, own: str, under_systemd: bool) -> Finding:
    shown = f"/{own}"
    if under_systemd:
        parts = own.split("/") if own else []
        lineage = ["/".join(parts[:depth]) for depth in range(len(parts), 0, -1)]
        delegated = next((g for g in lineage if cgroupfs.delegated(g)), None)
        if delegated is not None:
            return Finding(Status.OK, "delegation",
                           f"this process runs in {shown}, delegated by systemd at /{delegated}")
        return Finding(
            Status.WARN, "delegation",
            f"this process runs in {shown}, which systemd did not delegate",
            ("that is expected from a shell; the daemon must run from its unit, which has "
             "Delegate=yes (`systemctl show -p Delegate ccgroupd` says yes)",))
    if cgroupfs.has_attribute(own, CGROUP_SUBTREE_CONTROL, writable=True):
        return Finding(Status.OK, "delegation",
                       f"this process may manage {shown} (its {CGROUP_SUBTREE_CONTROL} is "
                       "writable)")
    return Finding(Status.FAIL, "delegation",
                   f"{cgroupfs.path(own, CGROUP_SUBTREE_CONTROL)} is not writable: this "
                   "process cannot manage its cgroup", ("run ccgroupd as root",))


def _cgroup_kill(cgroupfs: Cgroupfs, own: str) -> Finding:
    # The root group has no cgroup.kill: look at our own group, or any child of the root.
    sample = own or next(iter(cgroupfs.children("")), None)
    if sample is None:
        return Finding(Status.WARN, "cgroup.kill", "cannot tell: no cgroup below the root")
    if cgroupfs.has_attribute(sample, CGROUP_KILL):
        return Finding(Status.OK, "cgroup.kill", "present: a group is killed as a whole")
    return Finding(Status.WARN, "cgroup.kill",
                   "missing (kernel older than 5.14): ccgroupd falls back to signalling each "
                   "process, which can miss processes forked meanwhile",
                   ("use a kernel >= 5.14",))


def _psi(cgroupfs: Cgroupfs) -> Finding:
    try:
        parse_psi(cgroupfs.read("", CPU_PRESSURE))
    except CgroupError as error:
        return Finding(Status.WARN, "PSI", f"pressure information unavailable: {error}",
                       ("build the kernel with CONFIG_PSI=y and boot without psi=0 "
                        "(pressure is reported, not needed for limits)",))
    except ParseError as error:
        return Finding(Status.WARN, "PSI", f"cannot parse {CPU_PRESSURE}: {error}")
    return Finding(Status.OK, "PSI", "pressure stall information is available")
