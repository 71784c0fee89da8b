"""The kernel boundary for cgroupfs: the only module that opens files under the cgroup root.

The root is a constructor parameter, so tests point it at a fake tree and nothing
else in ccgroupd needs to know where the kernel lives (kernel.procfs does the same
for /proc). Group names are paths relative to the cgroup root
("system.slice/ccgroupd.service/engine"; a leading "/" is accepted); the root itself
is "".
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ccgroupd.errors import (
    CgroupCreateError,
    CgroupError,
    CgroupPathError,
    CgroupReadError,
    CgroupRemoveError,
    CgroupVerifyError,
    CgroupWriteError,
)
from ccgroupd.kernel.files import (
    CGROUP_CONTROLLERS,
    CGROUP_EVENTS,
    CGROUP_KILL,
    CGROUP_PROCS,
    CGROUP_SUBTREE_CONTROL,
    CPU_MAX,
    DELEGATE_XATTR,
    ID_LISTS,
    IO_WEIGHT,
    PAGE_ROUNDED,
)
from ccgroupd.kernel.inotify import Inotify
from ccgroupd.kernel.parsers import parse_controllers, parse_file, parse_flat_keyed, parse_pids
from ccgroupd.values import id_list

CGROUP_ROOT = Path("/sys/fs/cgroup")
T = TypeVar("T")
_RMDIR_FIRST_BACKOFF_S = 0.01
_RMDIR_MAX_BACKOFF_S = 0.5


def _is_symlink(path: str) -> bool:
    """Path.is_symlink() for a str: False for a path that does not exist."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


class Cgroupfs:
    def __init__(self, root: Path | str = CGROUP_ROOT, page_size: int | None = None) -> None:
        self.root = Path(root)
        self._root_text = str(self.root).rstrip("/")  # "" for "/"
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")

    # -- paths ---------------------------------------------------------------

    def path(self, group: str, attribute: str | None = None) -> Path:
        """The directory of ``group`` (or one of its files); refuses anything outside the root."""
        parts = [part for part in group.split("/") if part not in ("", ".")]
        if attribute is not None:
            if "/" in attribute or attribute in ("", ".", ".."):
                raise CgroupPathError(f"bad cgroup attribute name {attribute!r}")
            parts.append(attribute)
        if ".." in parts:
            raise CgroupPathError(f"cgroup path {group!r} leaves the cgroup root {self.root}")
        if not parts:
            return self.root
        # Joined as text, not Path / part: the control socket's set and status build
        # dozens of these per request, and pathlib's joins cost more than the lstat calls.
        current = self._root_text
        for part in parts:
            current = f"{current}/{part}"
            if _is_symlink(current):
                raise CgroupPathError(f"cgroup path {current} is a symlink; refusing to follow it")
        return Path(current)

    def exists(self, group: str) -> bool:
        return self.path(group).is_dir()

    def has_attribute(self, group: str, attribute: str, *, writable: bool = False) -> bool:
        """Whether ``group`` has the interface file (and, if asked, whether we may write it)."""
        return os.access(self.path(group, attribute), os.W_OK if writable else os.F_OK)

    def delegated(self, group: str) -> bool:
        """True if systemd delegated ``group``: Delegate=yes sets trusted.delegate=1 on it."""
        path = self.path(group)
        try:
            return os.getxattr(path, DELEGATE_XATTR) == b"1"
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP):
                return False
            raise CgroupReadError.from_oserror(exc, path, detail=f"xattr {DELEGATE_XATTR}") from exc

    # -- attributes ----------------------------------------------------------

    def read(self, group: str, attribute: str) -> str:
        return _read_path(self.path(group, attribute))

    def directory(self, group: str) -> GroupDirectory:
        """The group's directory checked now, for reading its files again and again
        without checking every component each time (a build's end races the runtime's
        rmdir: every syscall saved counts)."""
        return GroupDirectory(self.path(group))

    def attribute_file(self, group: str, attribute: str) -> AttributeFile:
        """The file's path checked now, for reading it again and again."""
        return AttributeFile(self.path(group, attribute))

    def read_flat_keyed(self, group: str, attribute: str) -> dict[str, int]:
        return self._parse(group, attribute, parse_flat_keyed)

    def _parse(self, group: str, attribute: str, parse: Callable[[str], T]) -> T:
        return parse_file(self.path(group, attribute), parse, self.read(group, attribute))

    def write(self, group: str, attribute: str, value: str) -> None:
        """One write(2) of ``value``; never creates a file (a misspelled attribute is ENOENT)."""
        _write_path(self.path(group, attribute), value)

    def expected_read_back(self, attribute: str, value: str) -> str:
        """What the kernel shows after ``value`` is written: memory numbers page-rounded down."""
        tokens = value.split()
        if attribute in PAGE_ROUNDED:
            tokens = [str(int(t) // self.page_size * self.page_size) if t.isdigit() else t
                      for t in tokens]
        if attribute == CPU_MAX and len(tokens) == 1:
            return tokens[0]  # writing only the quota leaves the period as it was
        return " ".join(tokens)

    def write_verified(self, group: str, attribute: str, value: str) -> str:
        """Write, read back, compare (page-aligned for memory); returns what is in force."""
        self.write(group, attribute, value)
        read_back = self.read(group, attribute).strip()
        if not self.holds(attribute, read_back, value):
            raise CgroupVerifyError(self.path(group, attribute), value, read_back)
        return read_back

    def holds(self, attribute: str, read_back: str, value: str) -> bool:
        """Whether a file that reads ``read_back`` (stripped) shows ``value`` in force."""
        expected = self.expected_read_back(attribute, value)
        if attribute in ID_LISTS:  # the same ids, however the list is spelled
            found = id_list(read_back)
            return found is not None and found == id_list(expected)
        if attribute == IO_WEIGHT:  # per-device weights may follow; ours is the default
            return read_back.partition("\n")[0].strip() == expected
        quota_only = attribute == CPU_MAX and " " not in expected
        return (read_back.split(maxsplit=1)[0] if quota_only else read_back) == expected

    # -- groups --------------------------------------------------------------

    def create(self, group: str) -> bool:
        """mkdir -p; True if the leaf was created now, False if it already existed."""
        target = self.path(group)
        if target == self.root:
            return False
        created = False
        for parent in reversed([target, *target.parents]):
            if len(parent.parts) <= len(self.root.parts):
                continue
            try:
                os.mkdir(parent)
                created = parent == target
            except FileExistsError:
                if not parent.is_dir():
                    raise CgroupCreateError(parent, detail="not a directory") from None
            except OSError as exc:
                raise CgroupCreateError.from_oserror(exc, parent) from exc
        return created

    def children(self, group: str) -> list[str]:
        return [name for name, _path in _children_at(group.strip("/"), self.path(group))]

    def controllers(self, group: str) -> frozenset[str]:
        return self._read_controllers(group, CGROUP_CONTROLLERS)

    def subtree_controllers(self, group: str) -> frozenset[str]:
        return self._read_controllers(group, CGROUP_SUBTREE_CONTROL)

    def _read_controllers(self, group: str, attribute: str) -> frozenset[str]:
        return self._parse(group, attribute, parse_controllers)

    def enable_controllers(self, group: str, controllers: Iterable[str], *, top: str = "") -> None:
        """Enable ``controllers`` for the children of ``group``, top-down from ``top``.

        Every group from ``top`` down to ``group`` gets them in its
        ``cgroup.subtree_control``; ``top`` must be a group we own (our delegated
        subtree), never one systemd manages. A group holding processes refuses
        (EBUSY: no internal processes), as on the kernel.
        """
        wanted = frozenset(controllers)
        top_parts = [p for p in top.split("/") if p]
        parts = [p for p in group.split("/") if p]
        if parts[: len(top_parts)] != top_parts:
            raise CgroupPathError(f"{group!r} is not inside {top!r}")
        for depth in range(len(top_parts), len(parts) + 1):
            current = "/".join(parts[:depth])
            available = self.controllers(current)
            missing = wanted - available
            if missing:
                raise CgroupWriteError(
                    self.path(current, CGROUP_SUBTREE_CONTROL),
                    " ".join(f"+{c}" for c in sorted(missing)), errno.ENOENT,
                    f"not available here; {CGROUP_CONTROLLERS} has {' '.join(sorted(available))}",
                )
            to_enable = wanted - self.subtree_controllers(current)
            if to_enable:
                self.write(current, CGROUP_SUBTREE_CONTROL,
                           " ".join(f"+{c}" for c in sorted(to_enable)))

    def attach(self, group: str, pid: int) -> None:
        """Move ``pid`` (0: the calling process) into ``group``."""
        self.write(group, CGROUP_PROCS, str(pid))

    def procs(self, group: str) -> list[int]:
        return self._parse(group, CGROUP_PROCS, parse_pids)

    def walk(self, group: str, *, max_depth: int | None = None
             ) -> list[tuple[str, GroupDirectory]]:
        """The group and its descendants, parents first, each with its checked directory
        (reading a file there needs no check of every path component again)."""
        return [(group.strip("/"), self.directory(group)),
                *((name, GroupDirectory(path)) for name, path in self._descendants(group,
                                                                                    max_depth))]

    def descendants(self, group: str, *, max_depth: int | None = None) -> list[str]:
        """Every group below ``group`` (down to ``max_depth`` levels), parents first; one
        removed while the walk goes on is left out with its children."""
        return [name for name, _path in self._descendants(group, max_depth)]

    def _descendants(self, group: str, max_depth: int | None = None) -> list[tuple[str, Path]]:
        """(name, directory) of the groups below ``group``, parents before their children.
        A loop, not recursion, and no per-component check of each path (children are
        found by scanning checked directories): a tree thousands of levels deep is walked
        whole, in time that grows with its size, not with size times depth."""
        found: list[tuple[str, Path]] = []
        pending = [(*child, 1) for child in _children_at(group.strip("/"), self.path(group))]
        while pending:
            name, path, depth = pending.pop()
            found.append((name, path))
            if max_depth is None or depth < max_depth:
                pending.extend((*child, depth + 1)
                               for child in _children_at(name, path, gone_ok=True))
        return found

    def subtree_procs(self, group: str) -> list[int]:
        pids = self.procs(group)
        for _name, path in self._descendants(group):
            procs = path / CGROUP_PROCS
            pids.extend(parse_file(procs, parse_pids, _read_path(procs)))
        return pids

    def populated(self, group: str) -> bool:
        return self.read_flat_keyed(group, CGROUP_EVENTS).get("populated", 0) == 1

    def kill(self, group: str) -> None:
        """SIGKILL every process in the subtree; race-free against forks via cgroup.kill."""
        try:
            self.write(group, CGROUP_KILL, "1")
            return
        except CgroupWriteError as exc:
            if exc.errno != errno.ENOENT or not self.exists(group):
                raise
        # Kernels before 5.14 have no cgroup.kill: signal until nothing is left to signal.
        for _ in range(100):
            pids = self.subtree_procs(group)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self, group: str, *, timeout_s: float = 10.0,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> None:
        """rmdir the group and its descendants, bottom-up, retrying EBUSY while processes exit."""
        path = self.path(group)
        if path == self.root:
            raise CgroupPathError("refusing to remove the cgroup root")
        if not path.is_dir():
            return
        for _name, descendant in reversed(self._descendants(group)):  # children first
            _rmdir(descendant, timeout_s, sleep, clock)
        _rmdir(path, timeout_s, sleep, clock)


    # -- change notification -------------------------------------------------

    def watch(self, group: str, attributes: Iterable[str]) -> Inotify:
        """inotify IN_MODIFY on interface files; the kernel raises it when their values change."""
        watcher = Inotify()
        try:
            for attribute in attributes:
                path = self.path(group, attribute)
                if path.exists():
                    watcher.add(path, attribute)
        except CgroupError:
            watcher.close()
            raise
        return watcher


def _write_path(path: os.PathLike[str] | str, value: str) -> None:
    if not value.isascii():
        # Every value the kernel takes is ASCII; say so instead of leaking UnicodeEncodeError.
        raise CgroupWriteError(path, value, errno.EINVAL, "not ASCII text")
    data = value.encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise CgroupWriteError.from_oserror(exc, path, value) from exc
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise CgroupWriteError.from_oserror(exc, path, value) from exc
    finally:
        os.close(fd)
    if written != len(data):
        raise CgroupWriteError(path, value, errno.EIO, f"short write of {written} bytes")


def _read_path(path: os.PathLike[str] | str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except OSError as exc:
        raise CgroupReadError.from_oserror(exc, path) from exc
    except UnicodeDecodeError as exc:
        raise CgroupReadError(path, detail="not ASCII text") from exc


def _children_at(group: str, base: Path, *, gone_ok: bool = False) -> list[tuple[str, Path]]:
    """(name, directory) of each child of ``group`` at the checked path ``base``; a symlink
    is no child (not followed), so the paths need no check of their own. With ``gone_ok``
    a group removed meanwhile has no children (build groups come and go during a walk)."""
    try:
        entries = sorted((entry.name, Path(entry.path)) for entry in os.scandir(base)
                         if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError as exc:
        if gone_ok:
            return []
        raise CgroupReadError.from_oserror(exc, base) from exc
    except OSError as exc:
        raise CgroupReadError.from_oserror(exc, base) from exc
    return [(f"{group}/{name}" if group else name, path) for name, path in entries]


def _rmdir(path: Path, timeout_s: float, sleep: Callable[[float], None],
           clock: Callable[[], float]) -> None:
    """rmdir, retrying EBUSY (processes still exiting) with back-off until ``timeout_s``."""
    deadline = clock() + timeout_s
    backoff = _RMDIR_FIRST_BACKOFF_S
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or clock() >= deadline:
                raise CgroupRemoveError.from_oserror(exc, path) from exc
        sleep(backoff)
        backoff = min(backoff * 2, _RMDIR_MAX_BACKOFF_S)


class AttributeFile:
    """One interface file, its path checked once, read with bare open/read/close.

    For the files the monitor reads on every inotify event: in an event storm the
    path walk with its symlink checks and Python's buffered text I/O in
    :meth:`Cgroupfs.read` were most of what an event cost.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_flat_keyed(self) -> dict[str, int]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                chunks = []
                while chunk := os.read(fd, 4096):
                    chunks.append(chunk)
            finally:
                os.close(fd)
            text = b"".join(chunks).decode("ascii")
        except OSError as exc:
            raise CgroupReadError.from_oserror(exc, self.path) from exc
        except UnicodeDecodeError as exc:
            raise CgroupReadError(self.path, detail="not ASCII text") from exc
        return parse_file(self.path, parse_flat_keyed, text)


class GroupDirectory:
    """A checked group directory (see :meth:`Cgroupfs.directory`). Its path is text: a
    build's files are read and written by the thousand, and pathlib's parsing costs more
    than the syscalls."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)

    def read(self, attribute: str) -> str:
        return _read_path(f"{self.path}/{attribute}")

    def read_flat_keyed(self, attribute: str) -> dict[str, int]:
        path = f"{self.path}/{attribute}"
        return parse_file(path, parse_flat_keyed, _read_path(path))

    def write(self, attribute: str, value: str) -> None:
        _write_path(f"{self.path}/{attribute}", value)

    def procs(self) -> list[int]:
        path = f"{self.path}/{CGROUP_PROCS}"
        return parse_file(path, parse_pids, _read_path(path))

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def identity(self) -> tuple[int, int] | None:
        """(device, inode): a group removed and made again at the same path has another."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino
