"""The rules for limit values, without pydantic: the one place each rule lives.

``ccgroupd.limits.model`` builds its model on these functions; ``ccgroupctl`` calls
:func:`check_values` directly, because importing pydantic would multiply its
start-up time (it is measured against ``python3 -c pass``). So this module
imports only os, contextvars and ccgroupd.errors: no pydantic, no typing, no
dataclasses (it loads inspect), no decimal (sizes are checked with integer
arithmetic), no re (values are split with str methods; re loads enum, functools
and collections) and no math (a shared library to load).

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

``memory_min`` and ``memory_low`` are protections, not limits: sizes too, but 0 is
none and ``max`` is refused.

Like systemd's ``MemoryMax=75%``, ``cpus`` and every size take a share of the host:
``"50%"`` or ``"12.5%"`` (more than 0, at most 100) of :class:`HostSize`'s CPUs or
physical memory, resolved against :func:`resolution_host` (sizes rounded down to
4 KiB), then checked like any other value.

``KB``/``MB``/``GB``/``TB`` are refused rather than guessed: half the world reads
them as powers of 1000, and a limit that is 7% off is a bug nobody sees.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

from ccgroupd.errors import LimitsError

TYPE_CHECKING = False  # typing costs start-up time; see ccgroupd.client.ctl
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from contextvars import Token

# The keys people write: config file [limits], `ccgroupctl set --KEY VALUE`, the API.
LIMIT_NAMES = ("cpus", "memory", "memory_high", "memory_swap", "pids", "cpu_weight",
               "memory_min", "memory_low", "io_weight", "cpuset_cpus", "cpuset_mems")
# The keys that take a share of the host ("75%"): CPUs and every size.
RELATIVE_NAMES = ("cpus", "memory", "memory_high", "memory_swap", "memory_min", "memory_low")

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

# cpu.weight and io.weight: range and default as the kernel defines them (CGROUP_WEIGHT_*).
MIN_WEIGHT = 1
MAX_WEIGHT = 10_000
DEFAULT_WEIGHT = 100

# cpuset.cpus and cpuset.mems ids: bounded by NR_CPUS and MAX_NUMNODES, at most 4096 on
# the kernels distributions build; a larger id is a typo, not a CPU.
CPUSET_ID_LIMIT = 4096
_ID_LIST_HINT = 'a list of ids like 0-3,6, or "" for the parent\'s'

# A share of the host's memory is rounded down to this: a page on most hosts, so the
# size reads back from the kernel as it was resolved.
_SHARE_ROUNDING_BYTES = 4096
# Nobody means a share more precise than this; the bound also keeps int() away from
# strings too long for it.
_MAX_SHARE_DECIMALS = 9

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


# How an unset value reads: no limit, except where None is a kernel default or inherits.
_UNSET_SHOWN = {"cpu_weight": "default", "io_weight": "default", "memory_min": "none",
                "memory_low": "none", "cpuset_cpus": "all", "cpuset_mems": "all"}


def describe_limit_value(name: str, value: object) -> str:
    """A limit's value as the model keeps it (``name`` one of LIMIT_NAMES), for people:
    "512 MiB", "2", "0-3", "max"; an unset cpu_weight is the kernel's "default", an unset
    cpuset "all" (the parent's), an unset protection "none"."""
    if value is None:
        return _UNSET_SHOWN.get(name, UNLIMITED)
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


class HostSize:
    """What a share of the host ("75%") is a share of. Immutable. A plain class with
    slots: dataclasses would cost ccgroupctl's start-up more than this whole module."""

    __slots__ = ("cpus", "memory_bytes")
    cpus: int
    memory_bytes: int

    def __init__(self, cpus: int, memory_bytes: int) -> None:
        object.__setattr__(self, "cpus", cpus)
        object.__setattr__(self, "memory_bytes", memory_bytes)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"HostSize is immutable; cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostSize):
            return NotImplemented
        return (self.cpus, self.memory_bytes) == (other.cpus, other.memory_bytes)

    def __hash__(self) -> int:
        return hash((self.cpus, self.memory_bytes))

    def __repr__(self) -> str:
        return f"HostSize(cpus={self.cpus}, memory_bytes={self.memory_bytes})"

    @classmethod
    def measure(cls) -> HostSize:
        """This host now: the CPUs of our affinity mask (as cpus is checked against), and
        physical memory as the kernel's MemTotal counts it."""
        return cls(host_cpu_count(), os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


_RESOLVING_AGAINST: ContextVar[HostSize | None] = ContextVar("resolving_against", default=None)


def resolution_host() -> HostSize:
    """The host shares are resolved against: the one :func:`resolving_against` fixed,
    else this host, measured now (its CPUs or memory may have changed since start-up)."""
    return _RESOLVING_AGAINST.get() or HostSize.measure()


class _Resolving:
    """The context manager :func:`resolving_against` returns (contextlib costs start-up)."""

    __slots__ = ("_host", "_token")

    def __init__(self, host: HostSize) -> None:
        self._host = host
        self._token: Token[HostSize | None] | None = None

    def __enter__(self) -> HostSize:
        self._token = _RESOLVING_AGAINST.set(self._host)
        return self._host

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _RESOLVING_AGAINST.reset(self._token)
            self._token = None


def resolving_against(host: HostSize) -> _Resolving:
    """``with resolving_against(host):`` resolves shares ("75%") against ``host`` instead
    of this host measured at each use: for tests, and to resolve a whole set of limits
    against one measurement."""
    return _Resolving(host)


def percentage(name: str, value: object) -> str | None:
    """``value`` as the share of the host it gives for limit ``name`` ("75%", stripped);
    None if it is not a percentage. Raises LimitsError for a malformed share, one out of
    (0, 100], or one ``name`` does not take."""
    if not isinstance(value, str) or not value.rstrip(_ASCII_WHITESPACE).endswith("%"):
        return None
    text = value.strip(_ASCII_WHITESPACE)
    if name not in RELATIVE_NAMES:
        raise LimitsError(name, value,
                          f"takes no percentage: only cpus and sizes "
                          f"({', '.join(RELATIVE_NAMES[1:])}) are shares of the host")
    number = text[:-1]
    if number.startswith("-"):
        raise LimitsError(name, value, "a percentage cannot be negative")
    whole, dot, fraction = number.partition(".")
    if not _is_digits(whole) or (dot and not _is_digits(fraction)):
        raise LimitsError(name, value, "not a percentage (write a share like 50% or 12.5%)")
    if len(fraction.rstrip("0")) > _MAX_SHARE_DECIMALS:
        raise LimitsError(name, value,
                          f"more than {_MAX_SHARE_DECIMALS} decimals in a percentage")
    share, remainder, _ = (101, 0, 0) if len(whole.lstrip("0")) > 3 else _scaled(number, 1)
    if share > 100 or (share == 100 and remainder):
        raise LimitsError(name, value,
                          f"{text} is over 100%: a share of the host cannot exceed it")
    if not share and not remainder:
        raise LimitsError(name, value, "must be more than 0% (leave the key out for no limit)")
    return text


def _resolve_share(name: str, share: str, host: HostSize) -> float | int:
    """What ``share`` (a :func:`percentage`) of ``host`` is for limit ``name``."""
    number = share[:-1]
    if name == "cpus":
        return host.cpus * float(number) / 100
    # Exact: floor(memory * number / 100), whatever decimals number has.
    product, _, _ = _scaled(number, host.memory_bytes)
    return product // 100 // _SHARE_ROUNDING_BYTES * _SHARE_ROUNDING_BYTES


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
    return _parse_count(value, "cpu_weight", MIN_WEIGHT, MAX_WEIGHT, unlimited=False)


def _parse_io_weight(value: object) -> int | None:
    """io.weight's default weight, as cpu.weight: None leaves the kernel default."""
    return _parse_count(value, "io_weight", MIN_WEIGHT, MAX_WEIGHT, unlimited=False)


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


def _protection_parser(field: str) -> Callable[[object], int | None]:
    """A parser for a memory protection (``memory_min``, ``memory_low``): any size, 0 for
    none; the kernel default (None) is 0 as well."""
    def parse(value: object) -> int | None:
        size = None if value is None else parse_size(value, field)
        if value is not None and size is None:
            raise LimitsError(field, value,
                              "a protection, not a limit: give a size, or 0 for none")
        return size
    return parse


def _parse_swap(value: object) -> int | None:
    """Swap has no floor: 0 means no swap at all."""
    return None if value is None else parse_size(value, "memory_swap")


def _id(text: str) -> int:
    """An id's digits as a number; one too long to be an id is CPUSET_ID_LIMIT."""
    return int(text) if len(text.lstrip("0")) <= len(str(CPUSET_ID_LIMIT)) else CPUSET_ID_LIMIT


def _read_ids(text: str, field: str, value: object) -> set[int]:
    """The ids of a non-empty list in the kernel's syntax: "0-3,6" (no spaces)."""
    ids: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not _is_digits(first) or (dash and not _is_digits(last)):
            raise LimitsError(field, value, f"{part!r} is not an id or a range (expected "
                                            f"{_ID_LIST_HINT})")
        low, high = _id(first), _id(last) if dash else _id(first)
        if high >= CPUSET_ID_LIMIT:
            raise LimitsError(field, value, f"{part!r}: ids are below {CPUSET_ID_LIMIT}")
        if low > high:
            raise LimitsError(field, value, f"range {part!r} runs backwards (write {high}-{low})")
        ids.update(range(low, high + 1))
    return ids


def format_id_list(ids: Iterable[int]) -> str:
    """Ids in the kernel's normal form: ranges of consecutive ids, ascending ("0-3,6")."""
    ranges: list[list[int]] = []
    for number in sorted(set(ids)):
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def id_list(text: str) -> frozenset[int] | None:
    """The ids a cpuset file lists ("0-3,6"; "" is none); None if ``text`` is no such list."""
    stripped = text.strip(_ASCII_WHITESPACE)
    try:
        return frozenset(_read_ids(stripped, "", text) if stripped else ())
    except LimitsError:
        return None


def _cpuset_ids(value: object, field: str) -> set[int] | None:
    """The ids of a cpuset value (a list string, or one id as a number); None to inherit."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise LimitsError(field, value, f"expected {_ID_LIST_HINT}")
    return _read_ids(text, field, value) if text else None


def _parse_cpuset_cpus(value: object) -> str | None:
    """A CPU list, normalized as the kernel shows it; every CPU must exist on this host."""
    ids = _cpuset_ids(value, "cpuset_cpus")
    host_cpus = os.cpu_count()
    if ids and host_cpus is not None and max(ids) >= host_cpus:
        missing = min(cpu for cpu in ids if cpu >= host_cpus)
        raise LimitsError("cpuset_cpus", value,
                          f"CPU {missing} does not exist: this host has CPUs "
                          f"{format_id_list(range(host_cpus))}")
    return None if ids is None else format_id_list(ids)


def _parse_cpuset_mems(value: object) -> str | None:
    """A memory node list, normalized as the kernel shows it."""
    ids = _cpuset_ids(value, "cpuset_mems")
    return None if ids is None else format_id_list(ids)


_PARSERS: dict[str, Callable[[object], float | int | str | None]] = {
    "cpus": _parse_cpus,
    "memory": _memory_parser("memory"),
    "memory_high": _memory_parser("memory_high"),
    "memory_swap": _parse_swap,
    "pids": _parse_pids,
    "cpu_weight": _parse_cpu_weight,
    "memory_min": _protection_parser("memory_min"),
    "memory_low": _protection_parser("memory_low"),
    "io_weight": _parse_io_weight,
    "cpuset_cpus": _parse_cpuset_cpus,
    "cpuset_mems": _parse_cpuset_mems,
}


def check_names(values: Mapping[str, object]) -> None:
    """Refuse a key that is not one of LIMIT_NAMES."""
    for name, value in values.items():
        if name not in _PARSERS:
            raise LimitsError(name, value,
                              f"unknown limit (known limits: {', '.join(LIMIT_NAMES)})")


def parse_value(name: str, value: object) -> float | int | str | None:
    """The value of limit ``name`` (one of LIMIT_NAMES) as the model keeps it; None = no
    limit (or the kernel default). A share ("75%") is resolved against
    :func:`resolution_host` first, and the result checked like any other value."""
    share = percentage(name, value)
    if share is None:
        return _PARSERS[name](value)
    host = resolution_host()
    resolved = _resolve_share(name, share, host)
    try:
        return _PARSERS[name](resolved)
    except LimitsError as error:
        whole = f"{host.cpus} CPUs" if name == "cpus" else format_bytes(host.memory_bytes)
        raise LimitsError(name, value, f"{share} of this host's {whole} is "
                                       f"{describe_limit_value(name, resolved)}: "
                                       f"{error.reason}") from None


# A protection above these is pointless: why, for each.
_PROTECTION_BOUNDS = (
    ("memory_high", "above memory_high the group is throttled, so it never gets to use "
                    "the protection"),
    ("memory", "the kernel cannot protect more than the group may hold"),
)


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
    for name in ("memory_min", "memory_low"):
        protected = parsed.get(name)
        for bound, why in _PROTECTION_BOUNDS:
            bound_bytes = parsed.get(bound)
            if isinstance(protected, int) and isinstance(bound_bytes, int) \
                    and protected > bound_bytes:
                raise LimitsError(name, format_bytes(protected),
                                  f"{name} ({_describe_size(protected)}) is above {bound} "
                                  f"({_describe_size(bound_bytes)}): {why}")


def check_values(values: Mapping[str, object]) -> None:
    """Refuse what Limits.from_mapping(values) would refuse, naming the same key first.

    Keys are LIMIT_NAMES; missing keys mean no limit. Raises LimitsError.
    """
    check_names(values)
    # In LIMIT_NAMES order, the model's field order, so both report the same problem first.
    check_combination({name: parse_value(name, values[name])
                       for name in LIMIT_NAMES if name in values})
