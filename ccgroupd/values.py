"""The rules for limit values, without pydantic: the one place each rule lives.

``ccgroupd.limits.model`` builds its model on these functions; ``ccgroupctl`` calls
:func:`check_values` directly, because importing pydantic would multiply its
start-up time (it is measured against ``python3 -c pass``). So this module
imports only os and ccgroupd.errors: no pydantic, no typing, no decimal (sizes
are checked with integer arithmetic), no re (values are split with str methods;
re loads enum, functools and collections) and no math (a shared library to load).

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

import os

from ccgroupd.errors import LimitsError

TYPE_CHECKING = False  # typing costs start-up time; see ccgroupd.client.ctl
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# The keys people write: config file [limits], `ccgroupctl set --KEY VALUE`, the API.
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

UNLIMITED = "max"  # how the kernel writes "no limit"
_UNLIMITED_WORDS = frozenset({"max", "infinity"})
_SIZE_HINT = "use bytes, K/M/G/T, KiB/MiB/GiB/TiB, or max"
_TOO_LARGE = (f"larger than the kernel keeps as a limit (at most {MAX_SIZE_BYTES} bytes); "
              "use max for no limit")
_BINARY_UNITS = (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))
_UNIT_BYTES: dict[str, int] = {
    "": 1,
    "B": 1,
    **{name: size for name, size in _BINARY_UNITS},
    **{name[0]: size for name, size in _BINARY_UNITS},
    **{name[0].lower(): size for name, size in _BINARY_UNITS},
}
_DECIMAL_UNITS = frozenset({"KB", "MB", "GB", "TB"})
# What may stand between a size's number and its unit, and what a unit is made of.
# ASCII only: str.isspace() and str.isalpha() also take U+00A0, 'é', the Kelvin sign...
_ASCII_WHITESPACE = " \t\n\r\f\v"
_ASCII_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INFINITY = float("inf")


def _is_nan(number: float) -> bool:
    return number != number  # noqa: PLR0124 - NaN is the only float not equal to itself


def _is_digits(text: str) -> bool:
    """One or more of 0-9. (isdigit() alone also takes '²' and other scripts' digits.)"""
    return text.isascii() and text.isdigit()


def _is_decimal(text: str) -> bool:
    """Digits with an optional fraction: ``4``, ``0.5``, ``.5``, ``4.``."""
    whole, _, fraction = text.partition(".")
    return _is_digits(whole + fraction)


def _split_size(text: str) -> tuple[str, str] | None:
    """(number, unit) of ``1.5G``, ``8 KiB``, ``512``; None if ``text`` has another shape.

    The number is digits, maybe with a fraction (``1.5``, not ``.5`` or ``1.``); the unit is
    ASCII letters, maybe empty, and ASCII whitespace may come between them.
    """
    number = text.rstrip(_ASCII_LETTERS)
    unit = text[len(number):]
    number = number.rstrip(_ASCII_WHITESPACE)
    whole, dot, fraction = number.partition(".")
    if not _is_digits(whole) or (dot and not _is_digits(fraction)):
        return None
    return number, unit


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
    if _is_nan(number):
        return f"NaN is not {what}"
    if abs(number) == _INFINITY:
        return "write max (or infinity) for no limit"
    return None


def _scaled(number: str, factor: int) -> tuple[int, int, int]:
    """``number`` (digits, maybe with a fraction) times ``factor``, exactly, without floats.

    Returns (whole, remainder, decimals): the product is whole + remainder / 10**decimals.
    """
    whole, _, fraction = number.partition(".")
    whole, fraction = whole.lstrip("0"), fraction.rstrip("0")  # neither changes the value
    size, remainder = divmod(int(whole + fraction or "0") * factor, 10 ** len(fraction))
    return size, remainder, len(fraction)


def parse_size(value: object, field: str) -> int | None:
    """A size in bytes from a config/CLI/API value; None means no limit.

    ``field`` is the key the value came from (``memory``), for the error message.
    Raises LimitsError for anything the kernel would not read as the same number
    of bytes. See the module docstring for the accepted forms.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        if isinstance(value, float) and _is_nan(value):
            raise LimitsError(field, value, "NaN is not a size")
        raise LimitsError(field, value,
                          f"expected a whole number of bytes or a string like '8G' ({_SIZE_HINT})")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise LimitsError(field, value, f"empty ({_SIZE_HINT})")
        if _is_unlimited(text):
            return None
        parts = _split_size(text)
        if parts is None:
            reason = _why_not_a_number(text, "a size") or f"not a size ({_SIZE_HINT})"
            raise LimitsError(field, value, reason)
        number, unit = parts
        if unit.upper() in _DECIMAL_UNITS:
            binary = f"{number}{unit[0].upper()}"
            raise LimitsError(field, value,
                              f"unit {unit!r} is ambiguous (1000 or 1024?): write {binary} or "
                              f"{binary}iB for powers of 1024")
        if unit not in _UNIT_BYTES:
            raise LimitsError(field, value, f"unknown unit {unit!r} ({_SIZE_HINT})")
        whole, _, fraction = number.partition(".")
        # Past these lengths a size is too large, or not whole in any unit (TiB = 2**40
        # makes at most 40 decimals whole); int() would refuse a long enough string anyway.
        if len(whole.lstrip("0")) > len(str(MAX_SIZE_BYTES)):
            raise LimitsError(field, value, _TOO_LARGE)
        if len(fraction.rstrip("0")) > 40:
            raise LimitsError(field, value, "not a whole number of bytes; sizes are whole bytes")
        size, remainder, decimals = _scaled(number, _UNIT_BYTES[unit])
        if remainder:
            raise LimitsError(field, value,
                              f"is {size}.{remainder:0{decimals}d} bytes; sizes are whole bytes")
    else:
        size = value
    if size < 0:
        raise LimitsError(field, value, "a size cannot be negative (use max for no limit)")
    if size > MAX_SIZE_BYTES:
        raise LimitsError(field, value, _TOO_LARGE)
    return size


def format_bytes(value: int | None) -> str:
    """A size for people: "8 GiB", "1.5 GiB", "512 B", "max" (None). Rounds to 2 decimals."""
    if value is None:
        return UNLIMITED
    for unit, size in reversed(_BINARY_UNITS):
        if value >= size:
            amount = f"{value / size:.2f}".rstrip("0").rstrip(".")
            return f"{amount} {unit}"
    return f"{value} B"


def describe_limit_value(name: str, value: object) -> str:
    """A limit's value as the model keeps it (``name`` one of LIMIT_NAMES), for people:
    "512 MiB", "2", "max"; an unset cpu_weight is the kernel's "default", not unlimited."""
    if value is None:
        return "default" if name == "cpu_weight" else UNLIMITED
    if name.startswith("memory") and isinstance(value, int):
        return format_bytes(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe_size(value: int) -> str:
    """format_bytes, plus the exact count when the rounded form would hide a difference."""
    shown = format_bytes(value)
    number, unit = shown.split()
    size, remainder, _ = _scaled(number, _UNIT_BYTES[unit])
    return shown if (size, remainder) == (value, 0) else f"{shown}, {value} bytes"


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
        if not _is_decimal(text):
            reason = _why_not_a_number(text, "a number of CPUs")
            raise LimitsError(field, value, reason or "not a number of CPUs (e.g. 4, 0.5 or max)")
        cpus = float(text)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            cpus = float(value)
        except OverflowError:  # an int too large for a float
            cpus = _INFINITY
    else:
        raise LimitsError(field, value, "expected a number of CPUs (e.g. 4, 0.5 or max)")
    if _is_nan(cpus):
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
        if not _is_digits(text):
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


def _parse_pids(value: object) -> int | None:
    return _parse_count(value, "pids", 1, MAX_PIDS, unlimited=True)


def _parse_cpu_weight(value: object) -> int | None:
    """cpu.weight has no "no limit": None only leaves the kernel default."""
    return _parse_count(value, "cpu_weight", MIN_CPU_WEIGHT, MAX_CPU_WEIGHT, unlimited=False)


def _memory_parser(field: str) -> Callable[[object], int | None]:
    """A parser for a memory limit (``memory``, ``memory_high``): a size above the floor."""
    def parse(value: object) -> int | None:
        size = None if value is None else parse_size(value, field)
        if size is not None and size < MIN_MEMORY_BYTES:
            raise LimitsError(field, value,
                              f"below the {format_bytes(MIN_MEMORY_BYTES)} floor: the engine could "
                              "not even start, it would only be OOM-killed (a missing unit? 8 is "
                              "8 bytes, 8G is 8 GiB)")
        return size
    return parse


def _parse_swap(value: object) -> int | None:
    """Swap has no floor: 0 means no swap at all."""
    return None if value is None else parse_size(value, "memory_swap")


_PARSERS: dict[str, Callable[[object], float | int | None]] = {
    "cpus": _parse_cpus,
    "memory": _memory_parser("memory"),
    "memory_high": _memory_parser("memory_high"),
    "memory_swap": _parse_swap,
    "pids": _parse_pids,
    "cpu_weight": _parse_cpu_weight,
}


def check_names(values: Mapping[str, object]) -> None:
    """Refuse a key that is not one of LIMIT_NAMES."""
    for name, value in values.items():
        if name not in _PARSERS:
            raise LimitsError(name, value,
                              f"unknown limit (known limits: {', '.join(LIMIT_NAMES)})")


def parse_value(name: str, value: object) -> float | int | None:
    """The value of limit ``name`` (one of LIMIT_NAMES) as the model keeps it; None = no limit."""
    return _PARSERS[name](value)


def check_combination(parsed: Mapping[str, object]) -> None:
    """The rules between limits, on values :func:`parse_value` returned (LIMIT_NAMES keys)."""
    high_bytes, limit_bytes = parsed.get("memory_high"), parsed.get("memory")
    # memory_high (where reclaim starts) must not be above memory (where OOM kills).
    if isinstance(high_bytes, int) and isinstance(limit_bytes, int) and high_bytes > limit_bytes:
        raise LimitsError(
            "memory_high", format_bytes(high_bytes),
            f"memory_high ({_describe_size(high_bytes)}) is above memory "
            f"({_describe_size(limit_bytes)}): memory_high is where the kernel starts throttling "
            "and reclaiming, which must happen before memory OOM-kills; set it at most equal to "
            "memory, or unset it")


def check_values(values: Mapping[str, object]) -> None:
    """Refuse what Limits.from_mapping(values) would refuse, naming the same key first.

    Keys are LIMIT_NAMES; missing keys mean no limit. Raises LimitsError.
    """
    check_names(values)
    # In LIMIT_NAMES order, the model's field order, so both report the same problem first.
    check_combination({name: parse_value(name, values[name])
                       for name in LIMIT_NAMES if name in values})
