"""Disk I/O limits (cgroup v2 ``io.max``) for an engine, keyed by a path on the disk.

An ``[[engines.NAME.io_max]]`` entry names a path; the limits apply to the whole disk
that holds it (io.max takes whole disks only, see ccgroupd.kernel.blockdev), and so to
all the engine's I/O on that disk, whatever file it touches:

- ``rbps``, ``wbps``: read and write bytes per second, written like memory sizes
  (``50M`` is 50 MiB per second, ``52428800``, ``max``);
- ``riops``, ``wiops``: read and write I/O operations per second (a whole number, or max).

A limit not given is ``max``. io.max has one line per device and the kernel takes one
line per write; a line names all four keys, so a changed entry also lifts the limits
it no longer sets.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ccgroupd.errors import CgroupError, CgroupReadError, CgroupVerifyError, LimitsError
from ccgroupd.kernel.blockdev import BlockDevices
from ccgroupd.kernel.cgroupfs import Cgroupfs
from ccgroupd.kernel.files import IO_MAX
from ccgroupd.kernel.parsers import IO_MAX_KEYS, ParseError, parse_file, parse_io_max
from ccgroupd.values import UNLIMITED, format_bytes, parse_size

# The kernel refuses 0 (ERANGE) and, from 4.18 up to 6.9 at least, 1 (EINVAL): a rate of 1
# stalled blk-throttle's low limit. The iops counters are 32 bits: UINT_MAX shows as max.
MIN_IO_RATE = 2
MAX_IOPS = 2**32 - 2

# The key people write -> the model's attribute (whose name carries the unit).
_FIELD_OF_KEY = {"rbps": "rbps_bytes", "wbps": "wbps_bytes", "riops": "riops", "wiops": "wiops"}


class IoMax(BaseModel):
    """One ``io_max`` entry: limits for the whole disk that holds ``path``. None = max.

    Built from the keys people write (``rbps``, ``wbps``, ``riops``, ``wiops``, the
    aliases); a bad value raises pydantic's ValidationError whose location names the key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    rbps_bytes: int | None = Field(default=None, alias="rbps")  # read bytes per second
    wbps_bytes: int | None = Field(default=None, alias="wbps")  # write bytes per second
    riops: int | None = None  # read I/O operations per second
    wiops: int | None = None  # write I/O operations per second

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        if not path.is_absolute():
            raise ValueError("must be an absolute path")
        return path

    @field_validator("rbps_bytes", "wbps_bytes", mode="before")
    @classmethod
    def _parse_rate_bytes(cls, value: object, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        key = _key_of(str(info.field_name))
        try:
            size = parse_size(value, key)
        except LimitsError as exc:
            # A plain ValueError: pydantic's location already names the key.
            raise ValueError(exc.reason) from None
        return None if size is None else _check_rate(size)

    @field_validator("riops", "wiops", mode="before")
    @classmethod
    def _parse_iops(cls, value: object) -> int | None:
        hint = f"expected a whole number from {MIN_IO_RATE} to {MAX_IOPS}, or max"
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.lower() == UNLIMITED:
                return None
            if not (text.isascii() and text.isdigit()):
                raise ValueError(hint)
            if len(text.lstrip("0")) > len(str(MAX_IOPS)):  # before int() of a huge string
                raise ValueError(f"out of range: {hint}")
            count = int(text)
        elif isinstance(value, int) and not isinstance(value, bool):
            count = value
        else:
            raise ValueError(hint)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
        if count > MAX_IOPS:
            raise ValueError(f"out of range: {hint}")
        return _check_rate(count)

    @model_validator(mode="after")
    def _limits_something(self) -> Self:
        if all(value is None for value in self.kernel_values().values()):
            raise ValueError("an io_max entry without rbps, wbps, riops or wiops limits "
                             "nothing")
        return self

    def kernel_values(self) -> dict[str, int | None]:
        """io.max key -> value (None = max), as ccgroupd.kernel.parsers.parse_io_max gives."""
        return {key: getattr(self, field) for key, field in _FIELD_OF_KEY.items()}

    def kernel_line(self, device: str) -> str:
        """The io.max line for ``device`` (MAJ:MIN), always with all four keys."""
        return _line(device, self.kernel_values())

    def describe_rates(self) -> str:
        """The limits it sets, for people: "wbps 50 MiB/s, wiops 1000/s"."""
        return ", ".join(
            f"{key} {format_bytes(value) if key.endswith('bps') else value}/s"
            for key, value in self.kernel_values().items() if value is not None)

    def to_mapping(self) -> dict[str, object]:
        """The keys people write -> JSON-able values (rates as numbers, None = max)."""
        return {"path": str(self.path), **self.kernel_values()}


def _key_of(field: str) -> str:
    return next(key for key, name in _FIELD_OF_KEY.items() if name == field)


def _check_rate(rate: int) -> int:
    if rate == 0:
        raise ValueError("0 would stop all I/O; use max for no limit")
    if rate < MIN_IO_RATE:
        raise ValueError(f"the kernel refuses a rate below {MIN_IO_RATE} (use max for no limit)")
    return rate


def _line(device: str, values: Mapping[str, int | None]) -> str:
    return f"{device} " + " ".join(
        f"{key}={UNLIMITED if values.get(key) is None else values[key]}" for key in IO_MAX_KEYS)


def _unlimited_line(device: str) -> str:
    return _line(device, {})


def describe(entry: IoMax, device: str) -> dict[str, object]:
    """An entry for status JSON: path, the disk's MAJ:MIN, and the four rates (None = max;
    rbps and wbps in bytes per second, riops and wiops in operations per second)."""
    mapping = entry.to_mapping()
    return {"path": mapping.pop("path"), "device": device, **mapping}


def io_max_lines(entries: Sequence[IoMax], devices: BlockDevices) -> dict[str, str]:
    """Device (MAJ:MIN) -> io.max line, for an engine's entries.

    Raises IoDeviceError for a path on no disk, and LimitsError for two entries on one
    disk: io.max has one line per disk, so one of them would silently lose.
    """
    lines: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for entry in entries:
        device = devices.disk_of(entry.path)
        if device in paths:
            raise LimitsError("io_max", str(entry.path),
                              f"{paths[device]} and {entry.path} are both on disk {device}; "
                              "io.max limits a whole disk, so give one entry per disk")
        paths[device] = entry.path
        lines[device] = entry.kernel_line(device)
    return lines


def read_io_max(cgroupfs: Cgroupfs, group: str,
                wanted: Mapping[str, str]) -> dict[str, dict[str, int | None]] | None:
    """The group's io.max, parsed; None when the group has none (no io controller) and
    nothing is wanted. Wanting limits there is refused (LimitsError)."""
    try:
        text = cgroupfs.read(group, IO_MAX)
    except CgroupReadError as exc:
        if exc.errno != errno.ENOENT:
            raise
        if not wanted:
            return None
        raise LimitsError("io_max", sorted(wanted.values()),
                          f"{exc.path} does not exist: the io controller is not enabled for "
                          f"the group {group!r}") from exc
    return parse_file(cgroupfs.path(group, IO_MAX), parse_io_max, text)


def apply_io_max(cgroupfs: Cgroupfs, group: str, wanted: Mapping[str, str], *,
                 managed: Collection[str] = ()) -> dict[str, str]:
    """Write each wanted device's io.max line, lift the limits of the devices in
    ``managed`` that are no longer wanted, and verify what the kernel shows.

    Returns device -> the line in force. A device already as wanted is not written
    again. On a failed write or check the devices already written get back their
    previous line, and the error (CgroupWriteError, CgroupVerifyError) is re-raised.
    """
    current = read_io_max(cgroupfs, group, wanted)
    if current is None:
        return {}
    expected = {device: _values_of(device, line) for device, line in wanted.items()}
    lines = {device: _unlimited_line(device) for device in managed
             if device not in wanted and device in current}  # lifting limits first
    lines.update((device, line) for device, line in wanted.items()
                 if _shown(current, device) != expected[device])
    expected.update((device, _shown({}, device)) for device in managed if device not in wanted)
    written: list[str] = []
    try:
        for device, line in lines.items():
            cgroupfs.write(group, IO_MAX, line)
            written.append(device)
        path = cgroupfs.path(group, IO_MAX)
        read_back = parse_file(path, parse_io_max, cgroupfs.read(group, IO_MAX))
        for device, line in lines.items():
            if _shown(read_back, device) != expected[device]:
                raise CgroupVerifyError(path, line, _line(device, _shown(read_back, device)))
    except CgroupError as exc:
        _roll_back(cgroupfs, group, written, current, exc)
        raise
    return {device: _line(device, _shown(read_back, device)) for device in wanted}


def _values_of(device: str, line: str) -> dict[str, int | None]:
    """The four values of a wanted io.max line (as IoMax.kernel_line writes them)."""
    try:
        parsed = parse_io_max(line)
    except ParseError as exc:
        raise LimitsError("io_max", line, f"not an io.max line: {exc}") from None
    if list(parsed) != [device]:
        raise LimitsError("io_max", line, f"not an io.max line for device {device}")
    return _shown(parsed, device)


def _shown(limits: Mapping[str, Mapping[str, int | None]], device: str) -> dict[str, int | None]:
    """A device's four values in a parsed io.max; the kernel leaves out a device at max."""
    values = limits.get(device, {})
    return {key: values.get(key) for key in IO_MAX_KEYS}


def _roll_back(cgroupfs: Cgroupfs, group: str, written: list[str],
               previous: Mapping[str, Mapping[str, int | None]], cause: Exception) -> None:
    for device in reversed(written):
        line = _line(device, _shown(previous, device))
        try:
            cgroupfs.write(group, IO_MAX, line)
        except CgroupError as exc:
            cause.add_note(f"rollback of {IO_MAX} to {line!r} failed: {exc}")


def find_io_drift(cgroupfs: Cgroupfs, group: str,
                  wanted: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Devices whose io.max line differs from ``wanted``: device -> (found, expected).

    A device limited in the group but not wanted is drift too (expected: all max):
    ccgroupd alone sets the limits of its groups.
    """
    current = read_io_max(cgroupfs, group, wanted)
    if current is None:
        return {}
    drift = {}
    for device in [*wanted, *(d for d in current if d not in wanted)]:
        expected = _values_of(device, wanted[device]) if device in wanted else _shown({}, device)
        found = _shown(current, device)
        if found != expected:
            drift[device] = (_line(device, found), _line(device, expected))
    return drift
