"""The limits model shared by the config file, the daemon and ``ccgroupctl``.

A :class:`Limits` is the desired state for the engine's group: every value is
already checked against what the kernel accepts, so writing ``cgroup_values()``
fails only for reasons the model cannot see (a missing controller, a write the
kernel refuses at run time). ``None`` always means "no limit" (``max``), or the
kernel default for ``cpu_weight``.

The rules themselves (accepted forms, kernel bounds, the memory floor, the
memory_high <= memory check) live in :mod:`ccgroupd.values`, which
``ccgroupctl`` uses without loading pydantic; the model only calls them. This
module re-exports the names the rest of ccgroupd imports from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccgroupd.errors import LimitsError
from ccgroupd.kernel.files import (
    CPU_MAX,
    CPU_WEIGHT,
    MEMORY_HIGH,
    MEMORY_MAX,
    MEMORY_SWAP_MAX,
    PIDS_MAX,
)
from ccgroupd.kernel.parsers import CpuMax
from ccgroupd.values import (
    CPU_PERIOD_USEC,
    DEFAULT_CPU_WEIGHT,
    LIMIT_NAMES,
    MIN_MEMORY_BYTES,
    UNLIMITED,
    check_combination,
    check_names,
    format_bytes,
    host_cpu_count,
    parse_size,
    parse_value,
)

__all__ = [
    "CPU_PERIOD_USEC",
    "LIMIT_NAMES",
    "MIN_MEMORY_BYTES",
    "Limits",
    "format_bytes",
    "host_cpu_count",
    "parse_size",
]

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
# Limits an inner group may not set above its outer group's (cpu_weight is relative).
_BOUNDED_BY_OUTER = ("cpus", "memory", "memory_high", "memory_swap", "pids")


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

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, value: object, info: ValidationInfo) -> float | int | None:
        return parse_value(_NAME_OF_FIELD[str(info.field_name)], value)

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        check_combination(self.to_mapping())
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Limits:
        """Limits from user-facing keys (LIMIT_NAMES); missing keys mean no limit."""
        check_names(values)
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

    def given(self) -> dict[str, object]:
        """The keys that were set explicitly ("max" included), for laying over other limits."""
        return {name: value for name, value in self.to_mapping().items()
                if _FIELD_OF_NAME[name] in self.model_fields_set}

    def check_within(self, outer: Limits, where: str, *, outer_name: str = "the engine's") -> None:
        """Refuse a limit above ``outer``'s (a build's above the engine's): the kernel would
        hold the lower one anyway, and the number shown would be a lie."""
        for name in _BOUNDED_BY_OUTER:
            mine = getattr(self, _FIELD_OF_NAME[name])
            theirs = getattr(outer, _FIELD_OF_NAME[name])
            if mine is not None and theirs is not None and mine > theirs:
                shown = format_bytes(theirs) if name.startswith("memory") else theirs
                raise LimitsError(f"{where}.{name}", mine, f"above {outer_name} {name} ({shown})")

    def cpu_max(self) -> CpuMax | None:
        """The cpu.max these limits write, None for no quota."""
        quota_usec = self.cpu_quota_usec()
        return None if quota_usec is None else CpuMax(quota_usec, CPU_PERIOD_USEC)

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
            CPU_MAX: f"{UNLIMITED if quota_usec is None else quota_usec} {CPU_PERIOD_USEC}",
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
    return UNLIMITED if value is None else str(value)


def _limits_error(exc: ValidationError) -> LimitsError:
    """The first problem pydantic found, as a LimitsError naming the user-facing key."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, LimitsError):
        return cause
    field = str(error["loc"][0]) if error["loc"] else "limits"
    return LimitsError(_NAME_OF_FIELD.get(field, field), error["input"], error["msg"])
