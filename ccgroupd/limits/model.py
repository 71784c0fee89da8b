"""The limits model shared by the config file, the daemon and ``ccgroupctl``.

A :class:`Limits` is the desired state for the engine's group: every value is
already checked against what the kernel accepts, so writing ``cgroup_values()``
fails only for reasons the model cannot see (a missing controller, a write the
kernel refuses at run time). ``None`` always means "no limit" (``max``), or the
kernel default for ``cpu_weight`` and ``io_weight``, no protection for ``memory_min``
and ``memory_low``, the parent's CPUs and memory nodes for the cpusets.

A value written as a share of the host ("75%") is kept resolved, like any other,
and :meth:`Limits.relative` remembers the share: status shows both, and
:meth:`Limits.with_changes` and :meth:`Limits.given` hand the share on, so layering
or a reload resolves it again against the host as it is then.

The rules themselves (accepted forms, kernel bounds, the memory floor, the
memory_high <= memory check, shares of the host) live in :mod:`ccgroupd.values`, which
``ccgroupctl`` uses without loading pydantic; the model only calls them. This
module re-exports the names the rest of ccgroupd imports from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccgroupd.errors import LimitsError
from ccgroupd.kernel.files import (
    CPU_MAX,
    CPU_WEIGHT,
    CPUSET_CPUS,
    CPUSET_MEMS,
    IO_WEIGHT,
    MEMORY_HIGH,
    MEMORY_LOW,
    MEMORY_MAX,
    MEMORY_MIN,
    MEMORY_SWAP_MAX,
    PIDS_MAX,
)
from ccgroupd.kernel.parsers import CpuMax
from ccgroupd.values import (
    CPU_PERIOD_USEC,
    DEFAULT_WEIGHT,
    LIMIT_NAMES,
    MIN_MEMORY_BYTES,
    UNLIMITED,
    check_combination,
    check_names,
    format_bytes,
    host_cpu_count,
    id_list,
    parse_size,
    parse_value,
    percentage,
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
    "memory_min": "memory_min_bytes",
    "memory_low": "memory_low_bytes",
    "io_weight": "io_weight",
    "cpuset_cpus": "cpuset_cpus",
    "cpuset_mems": "cpuset_mems",
}
_NAME_OF_FIELD = {field: name for name, field in _FIELD_OF_NAME.items()}
# Limits an inner group may not set above its outer group's (weights are relative,
# protections are what the inner group asks for, not what it may take).
_BOUNDED_BY_OUTER = ("cpus", "memory", "memory_high", "memory_swap", "pids")
# Lists an inner group may only narrow: the kernel would use the intersection.
_CPUSETS = ("cpuset_cpus", "cpuset_mems")


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
    memory_min_bytes: int | None = None  # key "memory_min" -> memory.min (None = 0, none)
    memory_low_bytes: int | None = None  # key "memory_low" -> memory.low (None = 0, none)
    io_weight: int | None = None  # key "io_weight" -> io.weight "default N" (None = 100)
    cpuset_cpus: str | None = None  # key "cpuset_cpus" -> cpuset.cpus (None = the parent's)
    cpuset_mems: str | None = None  # key "cpuset_mems" -> cpuset.mems (None = the parent's)

    # LIMIT_NAMES key -> the share of the host it was written as ("75%"). Private, so
    # JSON and to_mapping() carry only numbers; pydantic's == compares it too.
    _relative: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, value: object, info: ValidationInfo) -> float | int | str | None:
        return parse_value(_NAME_OF_FIELD[str(info.field_name)], value)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_shares(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        limits = handler(data)
        if isinstance(data, Mapping):  # not an instance passed through as it is
            shares = {_NAME_OF_FIELD[field]: percentage(_NAME_OF_FIELD[field], value)
                      for field, value in data.items() if field in _NAME_OF_FIELD}
            limits._relative = {name: share for name in LIMIT_NAMES
                                if (share := shares.get(name)) is not None}
        return limits

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
        """These limits with ``changes`` (LIMIT_NAMES keys) laid over; None in changes unsets.
        Shares of the host among the others are resolved again, against the host now."""
        return self.from_mapping({**self.to_mapping(), **self._relative, **changes})

    def relative(self) -> dict[str, str]:
        """The keys written as a share of the host -> that share as written ("75%")."""
        return dict(self._relative)

    def check_host(self, host_cpus: int) -> None:
        """Refuse a CPU limit above what this host can give (a quota that never throttles)."""
        if self.cpus is not None and self.cpus > host_cpus:
            raise LimitsError("cpus", self.cpus,
                              f"above the {host_cpus} CPUs this host gives ccgroupd; such a "
                              f"limit never throttles (use at most {host_cpus}, or max)")

    def given(self) -> dict[str, object]:
        """The keys that were set explicitly ("max" included), for laying over other limits;
        a share of the host as its share ("75%"), to be resolved where it is laid."""
        values = {**self.to_mapping(), **self._relative}
        return {name: value for name, value in values.items()
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
        for name in _CPUSETS:
            mine_ids, their_ids = (id_list(getattr(limits, name) or "") for limits in (self, outer))
            if mine_ids and their_ids and not mine_ids <= their_ids:
                raise LimitsError(f"{where}.{name}", getattr(self, name),
                                  f"not within {outer_name} {name} ({getattr(outer, name)}): "
                                  "the kernel would use only the ids both have")

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
        return {
            CPU_MAX: f"{UNLIMITED if quota_usec is None else quota_usec} {CPU_PERIOD_USEC}",
            CPU_WEIGHT: str(_weight(self.cpu_weight)),
            MEMORY_MAX: _kernel_value(self.memory_max_bytes),
            MEMORY_HIGH: _kernel_value(self.memory_high_bytes),
            MEMORY_SWAP_MAX: _kernel_value(self.memory_swap_max_bytes),
            PIDS_MAX: _kernel_value(self.pids_max),
            MEMORY_MIN: str(self.memory_min_bytes or 0),
            MEMORY_LOW: str(self.memory_low_bytes or 0),
            IO_WEIGHT: f"default {_weight(self.io_weight)}",
            CPUSET_CPUS: self.cpuset_cpus or "",  # "": the parent's
            CPUSET_MEMS: self.cpuset_mems or "",
        }

    def to_mapping(self) -> dict[str, object]:
        """LIMIT_NAMES keys -> JSON-able values (float/int, None for no limit)."""
        return {name: getattr(self, field) for name, field in _FIELD_OF_NAME.items()}


def _kernel_value(value: int | None) -> str:
    return UNLIMITED if value is None else str(value)


def _weight(value: int | None) -> int:
    return DEFAULT_WEIGHT if value is None else value


def _limits_error(exc: ValidationError) -> LimitsError:
    """The first problem pydantic found, as a LimitsError naming the user-facing key."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, LimitsError):
        return cause
    field = str(error["loc"][0]) if error["loc"] else "limits"
    return LimitsError(_NAME_OF_FIELD.get(field, field), error["input"], error["msg"])
