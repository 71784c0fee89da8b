"""Which whole disk holds a path: the kernel boundary for /sys/dev/block.

io.max takes limits for whole disks only (the kernel answers ENODEV for a partition),
keyed by the disk's ``MAJ:MIN``. A path's ``st_dev`` is the device of its file system;
sysfs says whether that device is a partition and of which disk:
``/sys/dev/block/MAJ:MIN`` links to the device's directory, a partition's directory
(``.../block/vda/vda1``) has a ``partition`` file and sits in its disk's directory
(``.../block/vda``), whose ``dev`` file holds the disk's ``MAJ:MIN``.

A file system on no block device (tmpfs, overlay, proc, NFS; btrfs too, which gives
each subvolume an anonymous device) has a major-0 ``st_dev`` without a sysfs entry.
Device-mapper devices (LVM, dm-crypt: ``dm-N``) have no ``partition`` file: they are
whole disks here, and io.max takes them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from ccgroupd.errors import IoDeviceError
from ccgroupd.kernel.parsers import ParseError, parse_device

SYS_ROOT = Path("/sys")
# What to do about a path that cannot be looked at, beyond what strerror says.
_STAT_ADVICE = {
    errno.ENOENT: "the path does not exist; create it first or name its parent",
    errno.EACCES: "ccgroupd runs as root: is the path on a file system root cannot read?",
}


class BlockDevices:
    """Looks up disks under ``sys_root``; ``stat`` is os.stat, replaceable for tests (a
    fake file system cannot give a file the device numbers of a real disk)."""

    def __init__(self, sys_root: Path = SYS_ROOT,
                 stat: Callable[[str], os.stat_result] = os.stat) -> None:
        self.sys_root = Path(sys_root)
        self._stat = stat

    def disk_of(self, path: Path) -> str:
        """``MAJ:MIN`` of the whole disk that holds ``path``'s file system.

        Raises IoDeviceError naming the path (and the device, the errno) when there is
        none: the path is missing, on no block device, or sysfs cannot be read.
        """
        try:
            st_dev = self._stat(os.fspath(path)).st_dev
        except OSError as exc:
            advice = _STAT_ADVICE.get(exc.errno or 0)
            raise IoDeviceError(
                f"cannot stat {path}: [Errno {exc.errno}] {exc.strerror}"
                + (f" ({advice})" if advice else ""), path=path, errno=exc.errno) from exc
        device = f"{os.major(st_dev)}:{os.minor(st_dev)}"
        entry = self.sys_root / "dev" / "block" / device
        if not entry.is_dir():  # follows the link to the device's directory
            raise IoDeviceError(
                f"{path} is on no block device (device {device} has no {entry}: tmpfs, "
                "overlay, btrfs or a network file system?); name a path on a disk's file "
                "system", path=path, device=device)
        if not (entry / "partition").exists():
            return device
        # A partition's directory sits in its disk's: .../block/vda/vda1 -> .../block/vda.
        dev_file = Path(os.path.realpath(entry)).parent / "dev"
        try:
            return parse_device(dev_file.read_text(encoding="ascii"))
        except OSError as exc:
            raise IoDeviceError(
                f"cannot read {dev_file}, the disk of partition {device} that holds {path}: "
                f"[Errno {exc.errno}] {exc.strerror}", path=path, device=device,
                errno=exc.errno) from exc
        except (ParseError, UnicodeDecodeError) as exc:
            raise IoDeviceError(
                f"{dev_file}, the disk of partition {device} that holds {path}: {exc}",
                path=path, device=device) from exc
