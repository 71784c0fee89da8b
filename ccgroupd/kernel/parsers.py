"""Pure parsers for cgroup v2 and /proc text. Text in, values out; no I/O here.

Malformed input raises ParseError (a ValueError) naming what was wrong;
:func:`parse_file` is how a reader says which file it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ccgroupd.errors import CgroupReadError
from ccgroupd.values import UNLIMITED

T = TypeVar("T")


class ParseError(ValueError):
    pass


def parse_file(path: os.PathLike[str] | str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``, with a ParseError turned into a CgroupReadError naming ``path``."""
    try:
        return parse(text)
    except ParseError as exc:
        raise CgroupReadError(path, detail=str(exc)) from exc


def _parse_uint(token: str, what: str) -> int:
    if not token.isascii() or not token.isdigit():
        raise ParseError(f"{what}: expected a non-negative integer, got {token!r}")
    return int(token)


def parse_uint_or_max(text: str) -> int | None:
    """``memory.max``, ``pids.max`` and friends: an integer, or ``max`` (returned as None)."""
    token = text.strip()
    if token == UNLIMITED:
        return None
    return _parse_uint(token, "value")


@dataclass(frozen=True)
class CpuMax:
    quota_usec: int | None  # None means "max": no quota
    period_usec: int


def parse_cpu_max(text: str) -> CpuMax:
    """``cpu.max``: ``"$QUOTA $PERIOD"``, QUOTA may be ``max``."""
    fields = text.split()
    if len(fields) != 2:
        raise ParseError(f"cpu.max: expected '$QUOTA $PERIOD', got {text.strip()!r}")
    quota = None if fields[0] == UNLIMITED else _parse_uint(fields[0], "cpu.max quota")
    return CpuMax(quota, _parse_uint(fields[1], "cpu.max period"))


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Flat-keyed files: one ``key value`` per line (``memory.events``, ``cpu.stat``, ...).

    Duplicate keys and lines that are not exactly two fields are errors.
    """
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ParseError(f"line {number}: expected 'key value', got {line!r}")
        key, raw = fields
        if key in values:
            raise ParseError(f"line {number}: duplicate key {key!r}")
        values[key] = _parse_uint(raw, key)
    return values


@dataclass(frozen=True)
class CpuStat:
    usage_usec: int
    user_usec: int
    system_usec: int
    # Present only once the cpu controller is enabled for the group.
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_usec: int | None = None


def parse_cpu_stat(text: str) -> CpuStat:
    values = parse_flat_keyed(text)
    try:
        return CpuStat(
            usage_usec=values["usage_usec"],
            user_usec=values["user_usec"],
            system_usec=values["system_usec"],
            nr_periods=values.get("nr_periods"),
            nr_throttled=values.get("nr_throttled"),
            throttled_usec=values.get("throttled_usec"),
        )
    except KeyError as missing:
        raise ParseError(f"cpu.stat: missing key {missing.args[0]!r}") from None


@dataclass(frozen=True)
class PsiLine:
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


@dataclass(frozen=True)
class Psi:
    some: PsiLine
    full: PsiLine | None  # cpu.pressure has no "full" line on older kernels


_PSI_AVERAGE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _parse_psi_line(line: str) -> tuple[str, PsiLine]:
    kind, *pairs = line.split()
    if kind not in ("some", "full"):
        raise ParseError(f"PSI: expected a 'some' or 'full' line, got {line!r}")
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ParseError(f"PSI: expected key=value, got {pair!r}")
        if key in values:
            raise ParseError(f"PSI {kind}: duplicate key {key!r}")
        values[key] = raw
    try:
        raw_averages = [values[key] for key in ("avg10", "avg60", "avg300")]
        total = _parse_uint(values["total"], "PSI total")
    except KeyError as missing:
        raise ParseError(f"PSI {kind}: missing {missing.args[0]!r}") from None
    # The kernel prints "12.34"; float() would also take "nan", "inf", "-1" and "1_0".
    for raw in raw_averages:
        if not _PSI_AVERAGE.fullmatch(raw):
            raise ParseError(f"PSI {kind}: bad average {raw!r}")
    averages = [float(raw) for raw in raw_averages]
    return kind, PsiLine(averages[0], averages[1], averages[2], total)


def parse_psi(text: str) -> Psi:
    """``{cpu,memory,io}.pressure``: a ``some`` line and usually a ``full`` line."""
    lines: dict[str, PsiLine] = {}
    for line in text.splitlines():
        if line.strip():
            kind, values = _parse_psi_line(line)
            if kind in lines:
                raise ParseError(f"PSI: more than one {kind!r} line")
            lines[kind] = values
    if "some" not in lines:
        raise ParseError("PSI: no 'some' line")
    return Psi(lines["some"], lines.get("full"))


def parse_proc_cgroup_v2(text: str) -> str:
    """The unified-hierarchy path from ``/proc/<pid>/cgroup`` (the ``0::/path`` line)."""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if hierarchy == "0" and sep and not controllers:
            if not path.startswith("/"):
                raise ParseError(f"/proc/<pid>/cgroup: bad v2 path {path!r}")
            return path
    raise ParseError("/proc/<pid>/cgroup: no cgroup v2 ('0::') line")


def parse_controllers(text: str) -> frozenset[str]:
    """``cgroup.controllers`` / ``cgroup.subtree_control``: space-separated names."""
    names = text.split()
    for name in names:
        if not name.isascii() or not name.replace("_", "").isalnum():
            raise ParseError(f"controllers: bad name {name!r}")
    return frozenset(names)


def parse_io_weight_default(text: str) -> int:
    """``io.weight``: its ``default N`` line (the lines after it are per-device overrides,
    ``MAJ:MIN N``)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "default":
            if len(fields) != 2:
                raise ParseError(f"io.weight: expected 'default N', got {line!r}")
            return _parse_uint(fields[1], "io.weight default")
    raise ParseError("io.weight: no 'default' line")


def parse_cpu_list_count(text: str) -> int:
    """How many CPUs a cpu list names (``cpuset.cpus.effective``: ``0-3,8,10-11`` is 7)."""
    count = 0
    for item in text.strip().split(","):
        if not item:
            continue
        first, dash, last = item.partition("-")
        low = _parse_uint(first, "cpu list")
        high = _parse_uint(last, "cpu list") if dash else low
        if high < low:
            raise ParseError(f"cpu list: range {item!r} runs backwards")
        count += high - low + 1
    return count


def parse_pids(text: str) -> list[int]:
    """``cgroup.procs``: one pid per line."""
    return [_parse_uint(line.strip(), "pid") for line in text.splitlines() if line.strip()]


# io.max: the keys of a device's line, in the kernel's order; each a number or "max".
IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")
# io.stat: the counters every kernel since 4.19 prints for a device that did I/O.
IO_STAT_KEYS = ("rbytes", "wbytes", "rios", "wios", "dbytes", "dios")


def parse_device(text: str) -> str:
    """A block device number ``MAJ:MIN`` (a sysfs ``dev`` file, an io.max or io.stat line)."""
    major, sep, minor = text.strip().partition(":")
    if not sep:
        raise ParseError(f"expected a device number MAJ:MIN, got {text.strip()!r}")
    return f"{_parse_uint(major, 'device major')}:{_parse_uint(minor, 'device minor')}"


def _parse_device_lines(text: str, what: str) -> dict[str, dict[str, str]]:
    """``MAJ:MIN key=value ...`` lines: device -> raw values. A device may have no values."""
    devices: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        first, *pairs = line.split()
        try:
            device = parse_device(first)
        except ParseError as exc:
            raise ParseError(f"{what} line {number}: {exc}") from None
        if device in devices:
            raise ParseError(f"{what} line {number}: device {device} listed twice")
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ParseError(f"{what} line {number}: expected key=value, got {pair!r}")
            if key in values:
                raise ParseError(f"{what} line {number}: duplicate key {key!r}")
            values[key] = raw
        devices[device] = values
    return devices


def parse_io_max(text: str) -> dict[str, dict[str, int | None]]:
    """``io.max``: device -> {rbps, wbps, riops, wiops}, None for ``max``.

    The kernel lists only devices with at least one limit, so an empty file is {}.
    """
    limits: dict[str, dict[str, int | None]] = {}
    for device, raw in _parse_device_lines(text, "io.max").items():
        missing = [key for key in IO_MAX_KEYS if key not in raw]
        if missing:
            raise ParseError(f"io.max {device}: missing {', '.join(missing)}")
        limits[device] = {key: None if value == UNLIMITED
                          else _parse_uint(value, f"io.max {device} {key}")
                          for key, value in raw.items()}
    return limits


def parse_io_stat(text: str) -> dict[str, dict[str, int]]:
    """``io.stat``: device -> counters (rbytes, wbytes, rios, wios, dbytes, dios).

    A device may show no counters at all (6.1 prints a bare ``MAJ:MIN`` for one that did
    no I/O yet), and the io.cost and io.latency policies append their own keys, some of
    them not whole numbers (``cost.vrate=100.00``, ``depth=max``): those are left out.
    """
    stats: dict[str, dict[str, int]] = {}
    for device, raw in _parse_device_lines(text, "io.stat").items():
        stats[device] = {key: _parse_uint(value, f"io.stat {device} {key}")
                         for key, value in raw.items()
                         if key in IO_STAT_KEYS or (value.isascii() and value.isdigit())}
    return stats


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str
    options: frozenset[str]


_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mount_field(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return _MOUNT_ESCAPE.sub(lambda match: chr(int(match[1], 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """``/proc/<pid>/mounts``: one mount per line, in mount order (later lines cover earlier)."""
    mounts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4:
            raise ParseError(f"mounts line {number}: expected 'source target type options', "
                             f"got {line!r}")
        source, target, fstype, options = (_unescape_mount_field(f) for f in fields[:4])
        mounts.append(Mount(source, target, fstype, frozenset(options.split(","))))
    return mounts


@dataclass(frozen=True)
class ProcessIds:
    uid: int  # effective, as SO_PEERCRED reports it
    gid: int
    groups: frozenset[int]  # supplementary groups


def parse_proc_status_ids(text: str) -> ProcessIds:
    """The ``Uid:``, ``Gid:`` and ``Groups:`` lines of /proc/PID/status."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = value.split()
    try:
        return ProcessIds(uid=int(fields["Uid"][1]), gid=int(fields["Gid"][1]),
                          groups=frozenset(int(g) for g in fields.get("Groups", [])))
    except (KeyError, IndexError, ValueError) as exc:
        raise ParseError(f"no usable Uid/Gid/Groups lines: {exc!r}") from None
