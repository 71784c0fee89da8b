"""The daemon's configuration: a TOML file and its drop-ins, overridden by
CCGROUPD_<SECTION>__<KEY> variables.

Precedence, highest first: the environment, the drop-ins in ``config.d/*.toml``
beside the file (a later name wins), the file, the defaults below. A key set in
a later file replaces that key only: ``[limits] memory`` in a drop-in keeps the
file's ``[limits] cpus``. ``CCGROUPD_LIMITS__MEMORY=4G`` likewise replaces
``memory`` in ``[limits]``. List and table values (``engine.command``,
``engine.environment``) are replaced whole, and given as JSON in the environment.

Every section refuses keys it does not know, so a typo fails loudly instead of
silently leaving a default in force. Every problem becomes one ConfigError that
names the dotted key and where the value came from (the file or the variable).

config.toml.example at the top of the repository documents every key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ccgroupd.enginenames import is_engine_name
from ccgroupd.errors import ConfigError, LimitsError
from ccgroupd.limits.budget import check_engines
from ccgroupd.limits.builds import check_builds
from ccgroupd.limits.io import IoMax
from ccgroupd.limits.model import LIMIT_NAMES, Limits
from ccgroupd.protocol import DEFAULT_SOCKET_PATH

DEFAULT_CONFIG_PATH = Path("/etc/ccgroupd/config.toml")
# Beside the file: the place for what Ansible, cloud-init or an operator adds, so that
# the packaged file (a conffile) stays untouched and keeps receiving new defaults.
DROP_IN_DIR = "config.d"
# Below daemon.state_dir and daemon.runtime_dir: a directory per named engine.
ENGINES_DIRECTORY = "engines"
ENGINES_SECTION = "engines"
ENV_PREFIX = "CCGROUPD_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_METRICS_PORT = 9847

DEFAULT_ENGINE_OOM_SCORE_ADJ = -900
DEFAULT_ENGINES_PARENT = "engines"
# Where a named engine's own directories go by default; $STATE_DIRECTORY and
# $RUNTIME_DIRECTORY tell the engine, as systemd tells a service.
ENGINE_STATE_PARENT = Path("/var/lib/dagger")
ENGINE_RUNTIME_PARENT = Path("/run/dagger")
DEFAULT_BUILD_GROUPS = "**/buildkit/*"

OomScoreAdj = Annotated[int, Field(ge=-1000, le=1000)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _absolute(path: Path) -> Path:
    # A relative path would depend on the daemon's working directory, which
    # systemd sets to "/" but a person running it by hand does not.
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CgroupSection(_Section):
    # The engine's group: relative to the daemon's delegated subtree, or, with a
    # leading "/", a path under the cgroup root (hosts without systemd).
    name: str = "dagger-engine"
    # What to do with processes already in the group at start: kill them, or
    # refuse to start (someone else is using the group).
    leftover: Literal["kill", "refuse"] = "kill"
    # With [engines.NAME] tables: the group above them all, which holds [budget]; each
    # engine runs in <parent>/<NAME>. Relative or absolute as name is.
    parent: str = DEFAULT_ENGINES_PARENT

    @field_validator("name", "parent")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if any(part in ("", ".", "..") for part in name.strip("/").split("/")):
            raise ValueError("must be a group path like 'dagger-engine' or '/dagger/engine', "
                             "without empty, '.' or '..' components")
        return name


EngineMode = Literal["exec", "docker", "runc"]
RestartMode = Literal["always", "on-failure", "never"]
# Dagger's CLI removes containers whose names start with this (its own engines).
DAGGER_CLI_CONTAINER_PREFIX = "dagger-engine-"
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class EngineSection(_Section):
    # exec: `command` on this host; docker: the `image` in a container made by
    # dockerd; runc: the unpacked `rootfs` in a container made by runc. Docker
    # and runc always give the engine a private cgroup namespace in its group.
    mode: EngineMode = "exec"
    # exec: the argv; docker: arguments after the image (unset: the image's
    # default); runc: the argv inside the container (required).
    command: list[str] = Field(
        default=["/usr/local/bin/dagger-engine", "--config", "/etc/dagger/engine.toml"],
        min_length=1)
    environment: dict[str, str] = {}
    working_directory: AbsolutePath = Path("/")
    restart: RestartMode = "on-failure"
    restart_initial_delay_s: NonNegativeSeconds = 1.0
    restart_max_delay_s: NonNegativeSeconds = 60.0
    # More than restart_burst starts within restart_window_s: give up (engine_failed).
    restart_burst: int = Field(default=5, ge=1)
    restart_window_s: PositiveSeconds = 300.0
    # SIGTERM -> cgroup.kill; the engine loses its cache if killed before it is done.
    # The real engine waits up to 300 s for its sessions: 10 s more to exit.
    stop_grace_s: NonNegativeSeconds = 310.0
    # Run the engine in a cgroup namespace rooted at its group, so the groups
    # it creates for build containers land under the limits (dagger #10813).
    private_cgroup_namespace: bool = False
    image: str = Field(default="registry.dagger.io/engine:v0.19.4", min_length=1)
    rootfs: AbsolutePath = Path("/var/lib/ccgroupd/engine/rootfs")
    container_name: str = "ccgroupd-engine"
    # Host directories bind-mounted read-write at the same path in the container.
    bind_mounts: list[AbsolutePath] = [Path("/var/lib/dagger"), Path("/run/dagger")]
    docker_run_args: list[str] = []
    docker_command: str = Field(default="docker", min_length=1)
    runc_command: str = Field(default="runc", min_length=1)
    # READY=1 only once a connect() to this socket succeeds or the command exits 0.
    ready_socket: AbsolutePath | None = None
    ready_command: list[str] = []
    ready_timeout_s: PositiveSeconds = 120.0
    # The engine's own processes (the shim sets it before exec): under a group-level OOM
    # the kernel then picks a build, whose processes ccgroupd resets to builds.oom_score_adj.
    oom_score_adj: OomScoreAdj = DEFAULT_ENGINE_OOM_SCORE_ADJ
    # The engine's own directories, made before each start and named to it in
    # $STATE_DIRECTORY and $RUNTIME_DIRECTORY (as systemd names a service's).
    state_directory: AbsolutePath | None = None
    runtime_directory: AbsolutePath | None = None
    # Disk I/O limits ([[engine.io_max]] / [[engines.NAME.io_max]]), each on the whole disk
    # that holds its path: ccgroupd.limits.io.
    io_max: list[IoMax] = []

    @field_validator("restart_max_delay_s")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("restart_initial_delay_s")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least restart_initial_delay_s ({initial})")
        return value

    @field_validator("private_cgroup_namespace")
    @classmethod
    def _namespace_only_for_exec(cls, value: bool, info: ValidationInfo) -> bool:
        mode = info.data.get("mode")
        if value and mode not in (None, "exec"):
            raise ValueError(f"applies to mode = 'exec' only; mode = {mode!r} always runs the "
                             "engine in a private cgroup namespace")
        return value

    @field_validator("container_name")
    @classmethod
    def _check_container_name(cls, name: str) -> str:
        if not _CONTAINER_NAME.fullmatch(name):
            raise ValueError("must be 1-128 of A-Z a-z 0-9 _ . - and start with a letter or digit")
        if name.startswith(DAGGER_CLI_CONTAINER_PREFIX):
            raise ValueError(f"must not start with {DAGGER_CLI_CONTAINER_PREFIX!r}: the Dagger "
                             "CLI removes containers with such names")
        return name

    @field_validator("ready_command")
    @classmethod
    def _one_probe(cls, command: list[str], info: ValidationInfo) -> list[str]:
        if command and info.data.get("ready_socket") is not None:
            raise ValueError("set ready_socket or ready_command, not both")
        return command

    @model_validator(mode="after")
    def _runc_needs_a_command(self) -> EngineSection:
        if self.mode == "runc" and "command" not in self.model_fields_set:
            raise ValueError("engine.command is required with mode = 'runc' (the image's "
                             "entrypoint, e.g. ['/usr/local/bin/dagger-entrypoint.sh'])")
        return self

    def own_directories(self) -> dict[str, Path]:
        """$STATE_DIRECTORY / $RUNTIME_DIRECTORY -> the directory, for those that are set."""
        return {variable: directory for variable, directory in
                (("STATE_DIRECTORY", self.state_directory),
                 ("RUNTIME_DIRECTORY", self.runtime_directory)) if directory is not None}

    def container_command(self) -> list[str]:
        """The argv for docker/runc: docker falls back to the image's default when unset."""
        if self.mode == "docker" and "command" not in self.model_fields_set:
            return []
        return list(self.command)


class _WithLimitKeys(_Section):
    """A table that takes limit keys (memory = "2G") beside its own, as [limits] does."""

    limits: Limits = Limits()

    @model_validator(mode="before")
    @classmethod
    def _limits_from_keys(cls, value: object) -> object:
        if not isinstance(value, Mapping) or "limits" in value:
            return value
        limits = {key: item for key, item in value.items() if key in LIMIT_NAMES}
        rest = {key: item for key, item in value.items() if key not in LIMIT_NAMES}
        return {**rest, "limits": Limits.from_mapping(limits)}


class BuildRule(_WithLimitKeys):
    """Other limits for the builds whose command matches; the first matching rule wins."""

    # A glob on the basename of the build's argv[0] ("postgres*") ...
    command: str | None = None
    # ... or a regular expression searched in the whole command line (argv joined by spaces).
    command_regex: str | None = None

    @field_validator("command_regex")
    @classmethod
    def _check_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _one_match(self) -> BuildRule:
        if (self.command is None) == (self.command_regex is None):
            raise ValueError("a rule needs exactly one of command (a glob on argv[0]'s "
                             "basename) or command_regex (a regex on the command line)")
        return self


class BuildsSection(_WithLimitKeys):
    """Build containers: the groups the engine's runtime makes below its own (BuildKit's
    runc executor: /buildkit/<id> in the engine's cgroup namespace)."""

    # Globs on a group's path relative to the engine group: "*" is one path component,
    # "**" any number of them.
    groups: list[str] = Field(default=[DEFAULT_BUILD_GROUPS], min_length=1)
    # limits: the default limits of every build, written as its group appears.
    # memory.oom.group = 1: the kernel kills a build whole, never half of it.
    oom_group: bool = True
    oom_score_adj: OomScoreAdj = 0
    rules: list[BuildRule] = []

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            parts = pattern.strip("/").split("/")
            if any(part in ("", ".", "..") for part in parts) or parts[-1] == "**":
                raise ValueError(f"{pattern!r}: a glob like '**/buildkit/*', without empty, "
                                 "'.' or '..' components, and not ending in '**'")
        return patterns


class EngineTable(EngineSection, _WithLimitKeys):
    """One of several engines: ``[engines.NAME]`` takes the keys of [engine] and of [limits].
    Its state_directory and runtime_directory default to /var/lib/dagger/NAME and
    /run/dagger/NAME, and are bind-mounted into a docker or runc engine."""

    def directories(self, name: str) -> tuple[Path, Path]:
        """(state, runtime) directories of the engine called ``name``."""
        return (self.state_directory or ENGINE_STATE_PARENT / name,
                self.runtime_directory or ENGINE_RUNTIME_PARENT / name)


class MonitorSection(_Section):
    cpu_poll_interval_s: PositiveSeconds = 5.0
    # Share of CPU periods throttled (0..1) above which cpu_throttled is reported.
    throttle_threshold: float = Field(default=0.1, ge=0, le=1)
    report_interval_s: PositiveSeconds = 10.0
    drift_check_interval_s: PositiveSeconds = 30.0


class ApiSection(_Section):
    socket: AbsolutePath = Path(DEFAULT_SOCKET_PATH)
    # Group whose members may change limits (root always may); None: root only.
    admin_group: str | None = None
    # Group whose members may read status.
    status_group: str = "ccgroupd"
    max_request_bytes: int = Field(default=65536, ge=1024)
    request_timeout_s: PositiveSeconds = 5.0


class MetricsSection(_Section):
    # Serve Prometheus metrics over HTTP (off unless enabled).
    enabled: bool = False
    # Loopback only by default: the endpoint has no authentication.
    listen_address: IPvAnyAddress = IPv4Address("127.0.0.1")
    # Outside the well-known ports of node_exporter (9100) and cAdvisor (8080).
    port: int = Field(default=DEFAULT_METRICS_PORT, ge=1, le=65535)


class DaemonSection(_Section):
    state_dir: AbsolutePath = Path("/var/lib/ccgroupd")
    # runc's state and the engine's OCI bundle (mode = "runc"); the unit's RuntimeDirectory=.
    runtime_dir: AbsolutePath = Path("/run/ccgroupd")
    cgroup_root: AbsolutePath = Path("/sys/fs/cgroup")
    proc_root: AbsolutePath = Path("/proc")
    # Where io_max paths are looked up as disks (/sys/dev/block).
    sys_root: AbsolutePath = Path("/sys")
    log_format: Literal["auto", "journal", "console", "json"] = "auto"


class Config(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`.

    ``Config(**values)`` takes the file's values as keyword arguments; the
    environment still wins over them (that is how the file layer is passed in).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        # Sections hold keys, not deeper tables: CCGROUPD_ENGINE__ENVIRONMENT__FOO would
        # otherwise become the variable "foo" (names are case-folded); now it is refused.
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    cgroup: CgroupSection = CgroupSection()
    limits: Limits = Limits()
    engine: EngineSection = EngineSection()
    # Several engines, one per table; without any, [engine] and [limits] are the one engine.
    engines: dict[str, EngineTable] = {}
    # Limits on the parent of all [engines]: what they may use together.
    budget: Limits = Limits()
    builds: BuildsSection = BuildsSection()
    monitor: MonitorSection = MonitorSection()
    api: ApiSection = ApiSection()
    metrics: MetricsSection = MetricsSection()
    daemon: DaemonSection = DaemonSection()

    @field_validator("limits", "budget", mode="before")
    @classmethod
    def _limits_from_keys(cls, value: object) -> object:
        # [limits] uses the short keys (memory = "8G"), the model the unit-named fields.
        if isinstance(value, Mapping):
            return Limits.from_mapping(value)
        return value

    @field_validator("engines")
    @classmethod
    def _check_engine_names(cls, engines: dict[str, EngineTable]) -> dict[str, EngineTable]:
        for name in engines:
            if not is_engine_name(name):
                raise LimitsError(f"engines.{name}", name,
                                  "an engine's name is 1-32 of a-z 0-9 _ - and starts with a "
                                  "letter or digit (it names its cgroup and journal records)")
        return engines

    @model_validator(mode="after")
    def _check_engines(self) -> Config:
        if not self.engines:
            if self.budget.given():
                raise LimitsError("budget", sorted(self.budget.given()),
                                  "a budget holds several engines together: define them as "
                                  "[engines.NAME] tables, or use [limits]")
            check_builds(self.builds.rules, self.builds.limits, self.limits)
            return self
        for section in ("engine", "limits"):
            if section in self.model_fields_set:
                given = getattr(self, section)
                raise LimitsError(section, sorted(given.model_fields_set),
                                  f"[{section}] configures the single engine; with "
                                  "[engines.NAME] tables give each engine its keys there")
        check_engines({name: table.limits for name, table in self.engines.items()}, self.budget,
                      self.builds.rules, self.builds.limits)
        _check_nothing_shared(self.engines)
        return self

    def engine_configs(self) -> dict[str, Config]:
        """Each engine's name -> the configuration it runs with, as if it were the only one:
        its [engine] and [limits], its group below cgroup.parent, and state and runtime
        directories of its own. Without [engines] tables: the one engine, named after its
        group."""
        if not self.engines:
            return {self.cgroup.name.strip("/").rpartition("/")[2]: self}
        return {name: self._engine_config(name, table) for name, table in self.engines.items()}

    def _engine_config(self, name: str, table: EngineTable) -> Config:
        state, runtime = table.directories(name)
        engine = table.model_copy(update={
            "state_directory": state, "runtime_directory": runtime,
            "bind_mounts": (table.bind_mounts if "bind_mounts" in table.model_fields_set
                            else [state, runtime]),
            "container_name": (table.container_name if "container_name" in table.model_fields_set
                               else f"ccgroupd-{name}")})
        daemon = self.daemon.model_copy(update={
            "state_dir": self.daemon.state_dir / ENGINES_DIRECTORY / name,
            "runtime_dir": self.daemon.runtime_dir / ENGINES_DIRECTORY / name})
        cgroup = self.cgroup.model_copy(update={"name": f"{self.cgroup.parent.rstrip('/')}/{name}"})
        return self.model_copy(update={"engine": engine, "limits": table.limits, "cgroup": cgroup,
                                       "daemon": daemon, "engines": {}, "budget": Limits()})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init values (load_config); the environment beats it.
        # No .env file, no secrets directory: one file, one environment.
        return env_settings, init_settings


def _check_nothing_shared(engines: Mapping[str, EngineTable]) -> None:
    """Refuse two engines with one state or runtime directory (or one inside the other's),
    one readiness socket or one container name: each would break the other."""
    claimed: dict[tuple[str, object], str] = {}
    directories: list[tuple[Path, str, str]] = []
    for name, table in engines.items():
        state, runtime = table.directories(name)
        for key, directory in (("state_directory", state), ("runtime_directory", runtime)):
            for other_directory, other, other_key in directories:
                if directory.is_relative_to(other_directory) or \
                        other_directory.is_relative_to(directory):
                    raise LimitsError(f"engines.{name}.{key}", str(directory),
                                      f"shares {other_directory} with engines.{other}.{other_key}"
                                      "; each engine needs directories of its own")
            directories.append((directory, name, key))
        container = (table.container_name if "container_name" in table.model_fields_set
                     else f"ccgroupd-{name}")
        for key, value in (("ready_socket", table.ready_socket),
                           ("container_name", container if table.mode != "exec" else None)):
            if value is None:
                continue
            other = claimed.setdefault((key, value), name)
            if other != name:
                raise LimitsError(f"engines.{name}.{key}", str(value),
                                  f"engines.{other} has the same {key}; each engine needs "
                                  "its own")


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    files: tuple[Path, ...]  # the files read, in the order they were merged
    # "section.key" -> what set it: a file's path or "environment CCGROUPD_...".
    origins: Mapping[str, str]


def load_config(path: Path | None = None) -> Config:
    """Read ``path`` (or DEFAULT_CONFIG_PATH), its drop-ins, and the environment.

    An explicitly given file that does not exist is an error; the default file
    may be absent (defaults, drop-ins and environment only). Raises ConfigError.
    """
    return read_config(path).config


def read_config(path: Path | None = None) -> LoadedConfig:
    """:func:`load_config`, and which file or variable set each key."""
    file_path = DEFAULT_CONFIG_PATH if path is None else path
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    files = []

    def merge(candidate: Path, *, required: bool) -> None:
        file_values = _read_toml(candidate, required=required)
        if file_values is None:
            return
        files.append(candidate)
        _check_sections(file_values, candidate)
        for section, table in file_values.items():
            if section == ENGINES_SECTION and isinstance(table, dict):
                _refuse_defined_twice(table, values.get(section, {}), origins, candidate)
            if isinstance(table, dict):
                values.setdefault(section, {}).update(table)
                origins.update({f"{section}.{key}": str(candidate) for key in table})
            else:  # refused by the model, which names the section
                values[section] = table
                origins[section] = str(candidate)

    merge(file_path, required=path is not None)
    for drop_in in drop_ins(file_path):
        merge(drop_in, required=True)
    _check_env_sections()
    origins.update(_environment_origins())
    try:
        config = Config(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None
    except SettingsError as exc:
        # A list or table value in the environment that is not valid JSON.
        raise ConfigError(f"environment: {exc}: {exc.__cause__} "
                          "(lists and tables are given as JSON)") from None
    return LoadedConfig(config, tuple(files), origins)


def _refuse_defined_twice(engines: Mapping[str, object], earlier: Mapping[str, object],
                          origins: Mapping[str, str], path: Path) -> None:
    # A later file's table would replace the whole engine, not extend it: surely a mistake.
    for name in engines:
        if name in earlier:
            raise ConfigError(f"{path}: engines.{name}: an engine of this name is already "
                              f"defined in {origins[f'{ENGINES_SECTION}.{name}']}; engine "
                              "names must be unique")


def drop_ins(path: Path) -> list[Path]:
    """The ``*.toml`` files of ``config.d`` beside ``path``, in name order."""
    directory = path.parent / DROP_IN_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot read: {exc.strerror}") from None
    # Hidden files are editors' and tools' leftovers, as are *.dpkg-dist and *.toml~.
    return [directory / name for name in names
            if name.endswith(".toml") and not name.startswith(".")]


def _environment_origins() -> dict[str, str]:
    origins = {}
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and ENV_NESTED_DELIMITER in upper:
            section, _, key = upper.removeprefix(ENV_PREFIX).partition(ENV_NESTED_DELIMITER)
            origins[f"{section.lower()}.{key.lower()}"] = f"environment {name}"
    return origins


def _check_sections(file_values: Mapping[str, object], path: Path | None) -> None:
    # Checked before the values become keyword arguments, where a top-level key
    # like _env_file would be taken as an option of BaseSettings itself.
    for key in file_values:
        if key not in Config.model_fields:
            raise ConfigError(f"{path}: unknown key {key}{_suggestion([key])}")


def _check_env_sections() -> None:
    """Refuse CCGROUPD_<SECTION>__<KEY> for a section that does not exist.

    pydantic-settings only looks up the names it knows, so a misspelled section
    would otherwise be ignored and its value silently not applied.
    """
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_NESTED_DELIMITER not in upper:
            continue
        section = upper.removeprefix(ENV_PREFIX).split(ENV_NESTED_DELIMITER)[0].lower()
        if section not in Config.model_fields:
            raise ConfigError(f"environment {name}: unknown section {section}"
                              f"{_suggestion([section])}")


def _read_toml(path: Path, *, required: bool) -> dict[str, Any] | None:
    """The file's values; None if it is absent and not ``required``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: configuration file not found") from None
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        # TomlConfigSettingsSource would silently skip it.
        raise ConfigError(f"{path}: not a regular file")
    try:
        return TomlConfigSettingsSource(Config, toml_file=path).toml_data
    except tomllib.TOMLDecodeError as exc:
        # tomllib says where: "... (at line 3, column 9)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _describe(exc: ValidationError, origins: Mapping[str, str]) -> str:
    """One line naming every bad key, its value and where it came from."""
    return "; ".join(_describe_one(error, origins) for error in exc.errors())


def _describe_one(error: ErrorDetails, origins: Mapping[str, str]) -> str:
    loc = [str(part) for part in error["loc"]]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, LimitsError):
        if "." in cause.field or not loc:  # a check across sections named the whole key
            loc = cause.field.split(".")
        else:  # Limits.from_mapping named the key inside its table
            loc = [*loc, cause.field]
            if cause.field not in LIMIT_NAMES:
                return f"{_origin(loc, origins)}: unknown key {'.'.join(loc)}{_suggestion(loc)}"
        value, reason = cause.value, cause.reason
    else:
        value, reason = error["input"], error["msg"].removeprefix("Value error, ")
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        return f"{_origin(loc, origins)}: unknown key {key}{_suggestion(loc)}"
    return f"{_origin(loc, origins)}: {key} = {value!r}: {reason}"


def _origin(loc: list[str], origins: Mapping[str, str]) -> str:
    """The variable that set this key, if one did, else the file that did; for a whole
    section, the last file to set any of its keys."""
    environment = {name.upper() for name in os.environ}
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(loc[:depth]).upper()
        if name in environment:
            return f"environment {name}"
    for key in (".".join(loc[:2]), loc[0]):
        if key in origins:
            return origins[key]
    in_section = [origin for name, origin in origins.items()
                  if name.startswith(f"{loc[0]}.")]
    return in_section[-1] if in_section else "configuration"


def _section_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    if loc[:1] == [ENGINES_SECTION] and len(loc) >= 2:
        model, loc = EngineTable, loc[2:]  # engines.NAME.KEY: NAME is the user's
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _suggestion(loc: list[str]) -> str:
    """" (did you mean X?)" for a misspelled key or section."""
    import difflib

    if loc[:-1] == ["limits"]:
        known = list(LIMIT_NAMES)
    else:  # a section with a "limits" field takes the limit keys themselves
        known = _section_keys(loc[:-1])
        if loc[:-1] and "limits" in known:
            known = [key for key in known if key != "limits"] + list(LIMIT_NAMES)
    close = difflib.get_close_matches(loc[-1], known, n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known: {', '.join(known)})"
