"""The limits model shared by the config file, the daemon and ``ccgroupctl``.

A :class:`Limits` is the desired state for the engine's group: every value is
already checked against what the kernel accepts, so writing ``cgroup_values()``
fails only for reasons the model cannot see (a missing controller, a write the
kernel refuses at run time). ``None`` always means "no limit" (``max``), or the
kernel default for ``cpu_weight``.

Sizes (``memory``, ``memory_high``, ``memory_swap``) are read the way the kernel
and systemd read them, so a value copied from ``memory.max`` or a unit file means
the same here:

- a whole number of bytes: ``8589934592`` (TOML integer or digit string);
- ``K``, ``M``, ``G``, ``T`` and ``KiB``, ``MiB``, ``GiB``, ``TiB``: powers of 1024.
  Lower-case ``k``/``m``/``g``/``t`` are accepted too and are binary as well:
  the kernel's own parser and docker's ``--memory 8g`` read them that way;
- a decimal fraction with a unit, as systemd allows (``1.5G``), when the result
  is a whole number of bytes (``0.3K`` is 307.2 bytes and is refused);
- ``max`` or ``infinity`` for no limit.

``KB``/``MB``/``GB``/``TB`` are refused rather than guessed: half the world reads
them as powers of 1000, and a limit that is 7% off is a bug nobody sees.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccgroupd.cgroupfs import (
    CPU_MAX,
    CPU_WEIGHT,
    MEMORY_HIGH,
    MEMORY_MAX,
    MEMORY_SWAP_MAX,
    PIDS_MAX,
)
from ccgroupd.errors import LimitsError

# The keys people write: config file [limits], `ccgroupctl set KEY=VALUE`, the API.
LIMIT_NAMES = ("cpus", "memory", "memory_high", "memory_swap", "pids", "cpu_weight")

CPU_PERIOD_USEC = 100_000
# The kernel refuses a cpu.max quota below 1 ms (EINVAL), and above its
# max_cfs_runtime, 2**44 - 1 µs (kernel/sched/core.c: MAX_BW in µs).
MIN_CPU_QUOTA_USEC = 1_000
MAX_CPU_QUOTA_USEC = 2**44 - 1
MIN_CPUS = MIN_CPU_QUOTA_USEC / CPU_PERIOD_USEC

# Sane floor: nothing useful runs below it, and a value this small is nearly
# always a missing unit (memory = 8 is 8 bytes); the group would only OOM-kill.
MIN_MEMORY_BYTES = 16 * 1024**2
# The kernel keeps memory.* limits in pages, clamped to PAGE_COUNTER_MAX
# (LONG_MAX / PAGE_SIZE), and shows the clamped value as "max". The largest size
# that still reads back as itself with any page size up to 64 KiB:
MAX_SIZE_BYTES = 2**63 - 2**16 - 1

# pids.max: the kernel refuses values above PID_MAX_LIMIT (4 Mi on 64-bit).
MAX_PIDS = 4 * 1024**2

# cpu.weight: range and default as the kernel defines them.
MIN_CPU_WEIGHT = 1
MAX_CPU_WEIGHT = 10_000
DEFAULT_CPU_WEIGHT = 100

_MAX = "max"
_UNLIMITED_WORDS = frozenset({"max", "infinity"})
_SIZE_HINT = "use bytes, K/M/G/T, KiB/MiB/GiB/TiB, or max"
_BINARY_UNITS = (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))
_UNIT_BYTES: dict[str, int] = {
    "": 1,
    "B": 1,
    **{name: size for name, size in _BINARY_UNITS},
    **{name[0]: size for name, size in _BINARY_UNITS},
    **{name[0].lower(): size for name, size in _BINARY_UNITS},
}
_DECIMAL_UNITS = frozenset({"KB", "MB", "GB", "TB"})
_SIZE_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)", re.ASCII)
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)

# Model attribute for each key; the model's names carry units, the keys stay short.
_FIELD_OF_NAME = {
    "cpus": "cpus",
    "memory": "memory_max_bytes",
    "memory_high": "memory_high_bytes",
    "memory_swap": "memory_swap_max_bytes",
    "pids": "pids_max",
    "cpu_weight": "cpu_weight",
}
_NAME_OF_FIELD = {field: name for name, field in _FIELD_OF_NAME.items()}


def _is_unlimited(text: str) -> bool:
    return text.lower() in _UNLIMITED_WORDS


def _why_not_a_number(text: str, what: str) -> str | None:
    """Why a string that is not a plain number was refused, if there is more to say."""
    if text.startswith("-"):
        return f"{what} cannot be negative (use max for no limit)"
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isnan(number):
        return f"NaN is not {what}"
    if math.isinf(number):
        return "write max (or infinity) for no limit"
    return None


def parse_size(value: object, field: str) -> int | None:
    """A size in bytes from a config/CLI/API value; None means no limit.

    ``field`` is the key the value came from (``memory``), for the error message.
    Raises LimitsError for anything the kernel would not read as the same number
    of bytes. See the module docstring for the accepted forms.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        if isinstance(value, float) and math.isnan(value):
            raise LimitsError(field, value, "NaN is not a size")
        raise LimitsError(field, value,
                          f"expected a whole number of bytes or a string like '8G' ({_SIZE_HINT})")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise LimitsError(field, value, f"empty ({_SIZE_HINT})")
        if _is_unlimited(text):
            return None
        match = _SIZE_RE.fullmatch(text)
        if match is None:
            reason = _why_not_a_number(text, "a size") or f"not a size ({_SIZE_HINT})"
            raise LimitsError(field, value, reason)
        number, unit = match["number"], match["unit"]
        if unit.upper() in _DECIMAL_UNITS:
            binary = f"{number}{unit[0].upper()}"
            raise LimitsError(field, value,
                              f"unit {unit!r} is ambiguous (1000 or 1024?): write {binary} or "
                              f"{binary}iB for powers of 1024")
        if unit not in _UNIT_BYTES:
            raise LimitsError(field, value, f"unknown unit {unit!r} ({_SIZE_HINT})")
        exact = Decimal(number) * _UNIT_BYTES[unit]
        if exact != exact.to_integral_value():
            raise LimitsError(field, value, f"is {exact} bytes; sizes are whole bytes")
        size = int(exact)
    else:
        size = value
    if size < 0:
        raise LimitsError(field, value, "a size cannot be negative (use max for no limit)")
    if size > MAX_SIZE_BYTES:
        raise LimitsError(field, value,
                          f"larger than the kernel keeps as a limit (at most {MAX_SIZE_BYTES} "
                          "bytes); use max for no limit")
    return size


def format_bytes(value: int | None) -> str:
    """A size for people: "8 GiB", "1.5 GiB", "512 B", "max" (None). Rounds to 2 decimals."""
    if value is None:
        return _MAX
    for unit, size in reversed(_BINARY_UNITS):
        if value >= size:
            amount = f"{value / size:.2f}".rstrip("0").rstrip(".")
            return f"{amount} {unit}"
    return f"{value} B"


def _describe_size(value: int) -> str:
    """format_bytes, plus the exact count when the rounded form would hide a difference."""
    shown = format_bytes(value)
    number, unit = shown.split()
    return shown if Decimal(number) * _UNIT_BYTES[unit] == value else f"{shown}, {value} bytes"


def host_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, not every CPU the machine has)."""
    return len(os.sched_getaffinity(0))


def _parse_cpus(value: object) -> float | None:
    field = "cpus"
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if _is_unlimited(text):
            return None
        if not _DECIMAL_RE.fullmatch(text):
            reason = _why_not_a_number(text, "a number of CPUs")
            raise LimitsError(field, value, reason or "not a number of CPUs (e.g. 4, 0.5 or max)")
        cpus = float(text)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            cpus = float(value)
        except OverflowError:  # an int too large for a float
            cpus = math.inf
    else:
        raise LimitsError(field, value, "expected a number of CPUs (e.g. 4, 0.5 or max)")
    if math.isnan(cpus):
        raise LimitsError(field, value, "NaN is not a number of CPUs")
    if cpus <= 0:
        raise LimitsError(field, value, "must be more than 0 (use max for no CPU limit)")
    if cpus * CPU_PERIOD_USEC > MAX_CPU_QUOTA_USEC:  # also inf, which round() cannot take
        raise LimitsError(field, value,
                          f"larger than the kernel accepts (at most "
                          f"{MAX_CPU_QUOTA_USEC // CPU_PERIOD_USEC}); use max for no CPU limit")
    if round(cpus * CPU_PERIOD_USEC) < MIN_CPU_QUOTA_USEC:
        raise LimitsError(field, value,
                          f"must be at least {MIN_CPUS}: the kernel refuses a CPU quota below "
                          f"{MIN_CPU_QUOTA_USEC} µs per {CPU_PERIOD_USEC} µs period")
    return cpus


def _parse_count(value: object, field: str, lowest: int, highest: int,
                 *, unlimited: bool) -> int | None:
    """A whole number in [lowest, highest]; ``max`` too when ``unlimited``."""
    hint = f"a whole number from {lowest} to {highest}" + (", or max" if unlimited else "")
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if unlimited and _is_unlimited(text):
            return None
        if not _COUNT_RE.fullmatch(text):
            raise LimitsError(field, value, f"expected {hint}")
        # More digits than `highest` is out of range, and may be more than int() converts.
        if len(text.lstrip("0")) > len(str(highest)):
            raise LimitsError(field, value, f"out of range: expected {hint}")
        count = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        count = value
    else:
        raise LimitsError(field, value, f"expected {hint}")
    if not lowest <= count <= highest:
        raise LimitsError(field, value, f"out of range: expected {hint}")
    return count


def _check_memory_floor(size: int | None, field: str, value: object) -> int | None:
    if size is not None and size < MIN_MEMORY_BYTES:
        raise LimitsError(field, value,
                          f"below the {format_bytes(MIN_MEMORY_BYTES)} floor: the engine could "
                          "not even start, it would only be OOM-killed (a missing unit? 8 is "
                          "8 bytes, 8G is 8 GiB)")
    return size


def _size_or_none(value: object, field: str) -> int | None:
    return None if value is None else parse_size(value, field)


class Limits(BaseModel):
    """Desired cgroup v2 limits for the engine's group. Immutable; None = no limit.

    Build it from user-facing keys with :meth:`from_mapping` (or overlay changes
    with :meth:`with_changes`); both raise LimitsError. Constructing it directly
    with attribute names validates the same way but raises pydantic's
    ValidationError.

    ``memory_swap`` (``memory_swap_max_bytes`` -> ``memory.swap.max``) is the swap
    the group may use *on top of* its memory, as cgroup v2 counts it. Docker's
    ``--memory-swap`` is memory plus swap instead. To carry over a docker setup
    of ``--memory M --memory-swap T``:

    - ``T`` larger than ``M``: ``memory_swap = T - M``
      (``--memory 8g --memory-swap 10g`` -> ``memory = "8G"``, ``memory_swap = "2G"``);
    - ``T`` equal to ``M`` (no swap): ``memory_swap = 0``;
    - ``T = -1`` (unlimited swap): ``memory_swap = "max"``;
    - ``--memory-swap`` not given: docker allows swap up to ``M`` again, so
      ``memory_swap = M``; leaving ``memory_swap`` unset here means no swap limit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpus: float | None = None  # -> cpu.max "quota period"
    memory_max_bytes: int | None = None  # key "memory" -> memory.max
    memory_high_bytes: int | None = None  # key "memory_high" -> memory.high
    memory_swap_max_bytes: int | None = None  # key "memory_swap" -> memory.swap.max
    pids_max: int | None = None  # key "pids" -> pids.max
    cpu_weight: int | None = None  # key "cpu_weight" -> cpu.weight (None = kernel default 100)

    @field_validator("cpus", mode="before")
    @classmethod
    def _validate_cpus(cls, value: object) -> float | None:
        return _parse_cpus(value)

    @field_validator("memory_max_bytes", "memory_high_bytes", mode="before")
    @classmethod
    def _validate_memory(cls, value: object, info: ValidationInfo) -> int | None:
        field = _NAME_OF_FIELD[str(info.field_name)]
        return _check_memory_floor(_size_or_none(value, field), field, value)

    @field_validator("memory_swap_max_bytes", mode="before")
    @classmethod
    def _validate_swap(cls, value: object) -> int | None:
        return _size_or_none(value, "memory_swap")

    @field_validator("pids_max", mode="before")
    @classmethod
    def _validate_pids(cls, value: object) -> int | None:
        return _parse_count(value, "pids", 1, MAX_PIDS, unlimited=True)

    @field_validator("cpu_weight", mode="before")
    @classmethod
    def _validate_cpu_weight(cls, value: object) -> int | None:
        return _parse_count(value, "cpu_weight", MIN_CPU_WEIGHT, MAX_CPU_WEIGHT, unlimited=False)

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        high, limit = self.memory_high_bytes, self.memory_max_bytes
        if high is not None and limit is not None and high > limit:
            raise LimitsError(
                "memory_high", format_bytes(high),
                f"memory_high ({_describe_size(high)}) is above memory ({_describe_size(limit)}): "
                "memory_high is where the kernel starts throttling and reclaiming, which must "
                "happen before memory OOM-kills; set it at most equal to memory, or unset it")
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Limits:
        """Limits from user-facing keys (LIMIT_NAMES); missing keys mean no limit."""
        for name, value in values.items():
            if name not in _FIELD_OF_NAME:
                raise LimitsError(name, value,
                                  f"unknown limit (known limits: {', '.join(LIMIT_NAMES)})")
        try:
            return cls.model_validate({_FIELD_OF_NAME[n]: v for n, v in values.items()})
        except ValidationError as exc:
            raise _limits_error(exc) from None

    def with_changes(self, changes: Mapping[str, object]) -> Limits:
        """These limits with ``changes`` (LIMIT_NAMES keys) laid over; None in changes unsets."""
        return self.from_mapping({**self.to_mapping(), **changes})

    def check_host(self, host_cpus: int) -> None:
        """Refuse a CPU limit above what this host can give (a quota that never throttles)."""
        if self.cpus is not None and self.cpus > host_cpus:
            raise LimitsError("cpus", self.cpus,
                              f"above the {host_cpus} CPUs this host gives ccgroupd; such a "
                              f"limit never throttles (use at most {host_cpus}, or max)")

    def cpu_quota_usec(self) -> int | None:
        """The cpu.max quota per CPU_PERIOD_USEC, None for no quota."""
        return None if self.cpus is None else round(self.cpus * CPU_PERIOD_USEC)

    def cgroup_values(self) -> dict[str, str]:
        """Every attribute this model controls -> the string to write, in a fixed order.

        Unset limits map to the kernel's "no limit"/default value, so applying the
        result also clears a limit that was set before.
        """
        quota_usec = self.cpu_quota_usec()
        weight = DEFAULT_CPU_WEIGHT if self.cpu_weight is None else self.cpu_weight
        return {
            CPU_MAX: f"{_MAX if quota_usec is None else quota_usec} {CPU_PERIOD_USEC}",
            CPU_WEIGHT: str(weight),
            MEMORY_MAX: _kernel_value(self.memory_max_bytes),
            MEMORY_HIGH: _kernel_value(self.memory_high_bytes),
            MEMORY_SWAP_MAX: _kernel_value(self.memory_swap_max_bytes),
            PIDS_MAX: _kernel_value(self.pids_max),
        }

    def to_mapping(self) -> dict[str, object]:
        """LIMIT_NAMES keys -> JSON-able values (float/int, None for no limit)."""
        return {name: getattr(self, field) for name, field in _FIELD_OF_NAME.items()}


def _kernel_value(value: int | None) -> str:
    return _MAX if value is None else str(value)


def _limits_error(exc: ValidationError) -> LimitsError:
    """The first problem pydantic found, as a LimitsError naming the user-facing key."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, LimitsError):
        return cause
    field = str(error["loc"][0]) if error["loc"] else "limits"
    return LimitsError(_NAME_OF_FIELD.get(field, field), error["input"], error["msg"])
