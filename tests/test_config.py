"""Configuration: TOML file, environment overrides, and errors that name the key and the source."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ccgroupd import config as config_module
from ccgroupd.config import (
    BuildsSection,
    CgroupSection,
    Config,
    EngineTable,
    MonitorSection,
    load_config,
    read_config,
)
from ccgroupd.errors import EXIT_INVALID, ConfigError
from ccgroupd.limits.model import LIMIT_NAMES, Limits
from ccgroupd.values import HostSize, resolving_against

EXAMPLE = Path(__file__).resolve().parents[1] / "config.toml.example"
SECTIONS = ("cgroup", "limits", "engine", "builds", "monitor", "api", "metrics", "daemon")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CCGROUPD_* variables from the outside, no /etc/ccgroupd/config.toml from the host."""
    for name in list(os.environ):
        if name.upper().startswith("CCGROUPD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "config.toml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def load_error(path: Path | None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.exit_code == EXIT_INVALID
    return str(caught.value)


# -- defaults and files -------------------------------------------------------

@pytest.mark.parametrize(("key", "default"), [
    ("cgroup.name", "dagger-engine"),
    ("cgroup.leftover", "kill"),
    ("limits", Limits()),
    ("engine.command", ["/usr/local/bin/dagger-engine", "--config", "/etc/dagger/engine.toml"]),
    ("engine.environment", {}),
    ("engine.working_directory", Path("/")),
    ("engine.restart", "on-failure"),
    ("engine.restart_initial_delay_s", 1.0),
    ("engine.restart_max_delay_s", 60.0),
    ("engine.restart_burst", 5),
    ("engine.restart_window_s", 300.0),
    ("engine.stop_grace_s", 310.0),
    ("engine.private_cgroup_namespace", False),
    ("monitor.cpu_poll_interval_s", 5.0),
    ("monitor.throttle_threshold", 0.1),
    ("monitor.report_interval_s", 10.0),
    ("monitor.drift_check_interval_s", 30.0),
    ("api.socket", Path("/run/ccgroupd/ccgroupd.sock")),
    ("api.admin_group", None),
    ("api.status_group", "ccgroupd"),
    ("api.max_request_bytes", 65536),
    ("api.request_timeout_s", 5.0),
    ("daemon.state_dir", Path("/var/lib/ccgroupd")),
    ("daemon.cgroup_root", Path("/sys/fs/cgroup")),
    ("daemon.proc_root", Path("/proc")),
    ("daemon.log_format", "auto"),
])
def test_defaults_without_a_file(key: str, default: object) -> None:
    value: object = load_config(None)
    for part in key.split("."):
        value = getattr(value, part)
    assert value == default


def test_default_path_is_read_when_present(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    path = write(tmp_path, '[cgroup]\nname = "from-default-path"\n')
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", path)
    assert load_config(None).cgroup.name == "from-default-path"


def test_file_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[cgroup]
name = "/dagger/engine"
leftover = "refuse"

[limits]
cpus = 2.5
memory = "8G"
memory_high = "6GiB"
memory_swap = 0
pids = 4096
cpu_weight = 50

[engine]
command = ["/opt/engine", "--debug"]
environment = { HTTPS_PROXY = "http://proxy:3128" }
restart = "always"
private_cgroup_namespace = true
"""))
    assert config.cgroup == CgroupSection(name="/dagger/engine", leftover="refuse")
    assert config.limits == Limits.from_mapping({
        "cpus": 2.5, "memory": "8G", "memory_high": "6G", "memory_swap": 0, "pids": 4096,
        "cpu_weight": 50})
    assert config.engine.command == ["/opt/engine", "--debug"]
    assert config.engine.environment == {"HTTPS_PROXY": "http://proxy:3128"}
    assert config.engine.restart == "always"
    assert config.engine.private_cgroup_namespace is True
    assert config.monitor == MonitorSection()


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(None)
    with pytest.raises(ValueError, match="frozen"):
        config.cgroup.name = "other"


# -- unknown keys and bad values ------------------------------------------------

@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_each_section(tmp_path: Path, section: str) -> None:
    path = write(tmp_path, f"[{section}]\nbogus_key = 1\n")
    assert load_error(path).startswith(f"{path}: unknown key {section}.bogus_key (")


@pytest.mark.parametrize(("text", "message"), [
    ("[limit]\ncpus = 4\n", "unknown key limit (did you mean limits?)"),
    ("[limits]\nmemroy = '8G'\n", "unknown key limits.memroy (did you mean memory?)"),
    ("[engine]\ncomand = ['x']\n", "unknown key engine.comand (did you mean command?)"),
    ("[api]\nzzz = 1\n", "unknown key api.zzz (known: socket, admin_group, status_group, "
                         "max_request_bytes, request_timeout_s)"),
    ("top_level = 1\n", "unknown key top_level (known: cgroup, limits, engine, engines, budget, "
                        "builds, monitor, api, metrics, daemon)"),
    ("[builds]\nmemroy = '1G'\n", "unknown key builds.memroy (did you mean memory?)"),
])
def test_unknown_key_suggests(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}: {message}"


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nmemory = '12XB'\n",
     "limits.memory = '12XB': unknown unit 'XB' (use bytes, K/M/G/T, KiB/MiB/GiB/TiB, or max)"),
    ("[limits]\ncpus = 0\n", "limits.cpus = 0: must be more than 0"),
    ("[limits]\ncpus = nan\n", "limits.cpus = nan: NaN is not a number of CPUs"),
    ("[limits]\nmemory = '8G'\nmemory_high = '9G'\n",
     "limits.memory_high = '9 GiB': memory_high (9 GiB) is above memory (8 GiB): "),
    ("[limits]\npids = -1\n", "limits.pids = -1: out of range"),
    ("limits = 5\n", "limits = 5: Input should be a valid dictionary or instance of Limits"),
    ("[cgroup]\nname = '../escape'\n", "cgroup.name = '../escape': must be a group path"),
    ("[cgroup]\nname = '/'\n", "cgroup.name = '/': must be a group path"),
    ("[cgroup]\nleftover = 'ignore'\n", "cgroup.leftover = 'ignore': Input should be 'kill' or "
                                        "'refuse'"),
    ("[engine]\ncommand = []\n", "engine.command = []: List should have at least 1 item"),
    ("[engine]\ncommand = 'dagger-engine'\n", "engine.command = 'dagger-engine': Input should "
                                              "be a valid list"),
    ("[engine]\nenvironment = { A = 1 }\n", "engine.environment.A = 1: Input should be a valid "
                                            "string"),
    ("[engine]\nworking_directory = 'var'\n",
     "engine.working_directory = 'var': must be an absolute path"),
    ("[engine]\nrestart = 'sometimes'\n", "engine.restart = 'sometimes': Input should be "
                                          "'always', 'on-failure' or 'never'"),
    ("[engine]\nstop_grace_s = -1\n", "engine.stop_grace_s = -1: Input should be greater than "
                                      "or equal to 0"),
    ("[engine]\nrestart_burst = 0\n", "engine.restart_burst = 0: Input should be greater than "
                                      "or equal to 1"),
    ("[engine]\nrestart_initial_delay_s = 10.0\nrestart_max_delay_s = 5.0\n",
     "engine.restart_max_delay_s = 5.0: must be at least restart_initial_delay_s (10.0)"),
    ("[monitor]\nthrottle_threshold = 1.5\n", "monitor.throttle_threshold = 1.5: Input should "
                                              "be less than or equal to 1"),
    ("[monitor]\ncpu_poll_interval_s = 0\n", "monitor.cpu_poll_interval_s = 0: Input should be "
                                             "greater than 0"),
    ("[monitor]\nreport_interval_s = inf\n", "monitor.report_interval_s = inf: Input should be "
                                             "a finite number"),
    ("[api]\nsocket = 'ccgroupd.sock'\n", "api.socket = 'ccgroupd.sock': must be an absolute "
                                          "path"),
    ("[api]\nmax_request_bytes = 10\n", "api.max_request_bytes = 10: Input should be greater "
                                        "than or equal to 1024"),
    ("[daemon]\nlog_format = 'xml'\n", "daemon.log_format = 'xml': Input should be 'auto', "
                                       "'journal', 'console' or 'json'"),
    ("[daemon]\nstate_dir = 'state'\n", "daemon.state_dir = 'state': must be an absolute path"),
])
def test_bad_value_names_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).startswith(f"{path}: {message}")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nrestart = 'sometimes'\n[daemon]\nlog_format = 'xml'\n")
    problems = load_error(path).split("; ")
    assert [p.split(" = ")[0] for p in problems] == [f"{path}: engine.restart",
                                                      f"{path}: daemon.log_format"]


# -- files that cannot be read ----------------------------------------------------

def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert load_error(path) == f"{path}: configuration file not found"


def test_directory_is_an_error(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"{tmp_path}: not a regular file"


def test_unreadable_default_file_is_not_skipped(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("a file where a directory should be")
    path = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", path)
    assert load_error(None) == f"{path}: cannot read: Not a directory"


def test_settings_options_are_not_taken_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "_env_prefix = 'OTHER_'\n")
    assert load_error(path).startswith(f"{path}: unknown key _env_prefix (")


@pytest.mark.parametrize(("text", "line"), [
    ("[limits]\ncpus = \n", 2),
    ("[limits]\ncpus = 1\ncpus = 2\n", 3),
    ("[engine]\ncommand = ['a',\nrestart = 'always'\n", 3),
    ("[limits\n", 1),
])
def test_toml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert re.search(rf"\(at line {line}, column \d+\)", message), message


def test_toml_cut_short(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\ncommand = ['a',\n")
    assert load_error(path) == f"{path}: invalid TOML: Invalid value (at end of document)"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[limits]\ncpus = '\xff'\n")
    assert load_error(path) == f"{path}: not UTF-8 text (invalid start byte at byte 17)"


# -- environment ----------------------------------------------------------------

def test_environment_beats_file_and_keeps_other_keys(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\ncpus = 4\nmemory = '8G'\n[engine]\nrestart = 'always'\n")
    monkeypatch.setenv("CCGROUPD_LIMITS__MEMORY", "4G")
    monkeypatch.setenv("CCGROUPD_ENGINE__COMMAND", '["/opt/engine", "--debug"]')
    monkeypatch.setenv("CCGROUPD_ENGINE__ENVIRONMENT", '{"HTTPS_PROXY": "http://proxy"}')
    monkeypatch.setenv("CCGROUPD_MONITOR__THROTTLE_THRESHOLD", "0.5")
    monkeypatch.setenv("ccgroupd_daemon__log_format", "json")  # names are case-insensitive
    config = load_config(path)
    assert config.limits == Limits.from_mapping({"cpus": 4, "memory": "4G"})
    assert config.engine.restart == "always"
    assert config.engine.command == ["/opt/engine", "--debug"]
    assert config.engine.environment == {"HTTPS_PROXY": "http://proxy"}
    assert config.monitor.throttle_threshold == 0.5
    assert config.daemon.log_format == "json"


def test_environment_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCGROUPD_LIMITS__CPUS", "1.5")
    assert load_config(None).limits == Limits(cpus=1.5)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CCGROUPD_LIMITS__MEMORY", "12XB",
     "environment CCGROUPD_LIMITS__MEMORY: limits.memory = '12XB': unknown unit 'XB'"),
    ("CCGROUPD_LIMITS", '{"memory": "4X"}',
     "environment CCGROUPD_LIMITS: limits.memory = '4X': unknown unit 'X'"),
    ("CCGROUPD_ENGINE__RESTART", "sometimes",
     "environment CCGROUPD_ENGINE__RESTART: engine.restart = 'sometimes': Input should be"),
    ("CCGROUPD_LIMITS__CPUZ", "2",
     "environment CCGROUPD_LIMITS__CPUZ: unknown key limits.cpuz (did you mean cpus?)"),
    ("CCGROUPD_ENGINE__ZZZ", "2", "environment CCGROUPD_ENGINE__ZZZ: unknown key engine.zzz ("),
    # Deeper nesting would case-fold the variable name to "foo"; it is refused instead.
    ("CCGROUPD_ENGINE__ENVIRONMENT__FOO", "bar",
     "environment CCGROUPD_ENGINE__ENVIRONMENT__FOO: unknown key engine.environment__foo"),
    ("CCGROUPD_LIMIT__MEMORY", "4G",
     "environment CCGROUPD_LIMIT__MEMORY: unknown section limit (did you mean limits?)"),
    ("CCGROUPD_ENGINE__COMMAND", "not json",
     'environment: error parsing value for field "engine" from source "EnvSettingsSource": '
     "Expecting value: line 1 column 1 (char 0) (lists and tables are given as JSON)"),
])
def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            name: str, value: str, message: str) -> None:
    path = write(tmp_path, "[limits]\nmemory = '8G'\n")
    monkeypatch.setenv(name, value)
    assert load_error(path).startswith(message)


def test_unrelated_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCGROUPD_SOMETHING_ELSE", "1")
    assert load_config(None) == Config()


# -- drop-ins ----------------------------------------------------------------------

def drop_in(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "config.d" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_drop_ins_merge_key_by_key_in_name_order(tmp_path: Path) -> None:
    main = write(tmp_path, "[limits]\ncpus = 2\nmemory = '1G'\n[engine]\nrestart = 'always'\n")
    late = drop_in(tmp_path, "90-late.toml", "[limits]\nmemory = '3G'\n")
    early = drop_in(tmp_path, "10-early.toml", "[limits]\nmemory = '2G'\npids = 100\n")
    drop_in(tmp_path, ".hidden.toml", "[limits]\nmemory = 'banana'\n")
    drop_in(tmp_path, "50-old.toml.dpkg-dist", "[limits]\nmemory = 'banana'\n")
    loaded = read_config(main)
    assert loaded.files == (main, early, late)
    assert loaded.config.limits.to_mapping() == {
        "cpus": 2.0, "memory": 3 * 1024**3, "memory_high": None, "memory_swap": None,
        "pids": 100, "cpu_weight": None, "memory_min": None, "memory_low": None,
        "io_weight": None, "cpuset_cpus": None, "cpuset_mems": None}
    assert loaded.config.engine.restart == "always"  # a section no drop-in touches
    assert loaded.origins["limits.memory"] == str(late)
    assert loaded.origins["limits.pids"] == str(early)
    assert loaded.origins["limits.cpus"] == str(main)


def test_drop_ins_apply_without_the_default_file(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "config.toml")
    drop_in(tmp_path, "50-fleet.toml", "[limits]\ncpus = 3\n")
    assert load_config(None).limits.cpus == 3


def test_a_bad_drop_in_is_named(tmp_path: Path) -> None:
    main = write(tmp_path, "[limits]\nmemory = '1G'\n")
    bad = drop_in(tmp_path, "50-bad.toml", "[limits]\nmemory_high = '2G'\n")
    error = load_error(main)
    assert error.startswith(f"{bad}: limits")
    assert "memory" in error
    drop_in(tmp_path, "50-bad.toml", "[limts]\ncpus = 1\n")
    assert load_error(main) == f"{bad}: unknown key limts (did you mean limits?)"
    drop_in(tmp_path, "50-bad.toml", "[limits\n")
    assert load_error(main).startswith(f"{bad}: invalid TOML")


def test_the_environment_beats_the_drop_ins(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    main = write(tmp_path, "")
    drop_in(tmp_path, "50-x.toml", "[limits]\ncpus = 3\n")
    monkeypatch.setenv("CCGROUPD_LIMITS__CPUS", "1")
    loaded = read_config(main)
    assert loaded.config.limits.cpus == 1
    assert loaded.origins["limits.cpus"] == "environment CCGROUPD_LIMITS__CPUS"


# -- config.toml.example ----------------------------------------------------------

def example_keys() -> dict[str, set[str]]:
    """Section -> keys shown in the example, set or commented out ("# key = value")."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        # "#  [[builds.rules]]": an example table, indented so that uncommenting "# key ="
        # lines leaves it out.
        if header := re.fullmatch(r"\[(\w+)\]|#  \[\[?([\w.]+)\]\]?", line):
            section = header[1] or header[2]
            keys[section] = set()
        elif key := re.match(r"(?:# |#  )?(\w+) = ", line):
            keys[section].add(key[1])
    return keys


def test_example_sets_nothing() -> None:
    # A conffile that sets nothing passes new defaults on at every upgrade.
    assert load_config(EXAMPLE) == Config()
    assert not [line for line in EXAMPLE.read_text().splitlines()
                if line and not line.startswith(("#", "["))]


def single_engine_example() -> str:
    """The example up to [budget], which needs [engines.NAME] tables instead of [engine]."""
    return EXAMPLE.read_text().split("\n[budget]\n")[0]


def test_example_uncommented_is_the_real_engine_in_docker(tmp_path: Path) -> None:
    uncommented = re.sub(r"^# (\w+ = )", r"\1", single_engine_example(), flags=re.MULTILINE)
    engine = load_config(write(tmp_path, uncommented)).engine
    # The real Dagger engine in Docker, ready when its socket accepts connections.
    assert engine.mode == "docker"
    assert engine.ready_socket == Path("/run/dagger/engine.sock")
    assert engine.image == "registry.dagger.io/engine:v0.19.4"
    assert engine.container_name == "ccgroupd-engine"
    assert engine.bind_mounts == [Path("/var/lib/dagger"), Path("/run/dagger")]


def test_example_drop_in_in_the_header_is_valid(tmp_path: Path) -> None:
    header = EXAMPLE.read_text().split("\n[cgroup]\n")[0]
    lines = [line.removeprefix("#     ") for line in header.splitlines()
             if line.startswith("#     ")]
    assert lines[0] == "[limits]"
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert config.limits == Limits.from_mapping({"cpus": 4, "memory": "8G"})
    assert config.engine.mode == "docker"
    assert config.engine.ready_socket == Path("/run/dagger/engine.sock")
    assert "command" not in config.engine.model_fields_set  # the image's own entrypoint


def test_example_shows_every_key_of_every_section() -> None:
    shown = example_keys()
    assert tuple(shown) == (*SECTIONS[:4], "builds.rules", *SECTIONS[4:], "budget",
                            "engines.ci", "engines.web")
    assert shown["budget"] <= set(LIMIT_NAMES)
    assert shown["engines.ci"] | shown["engines.web"] <= (
        set(EngineTable.model_fields) | set(LIMIT_NAMES))
    assert shown["limits"] == set(LIMIT_NAMES)
    # Tables with limits take the limit keys themselves (memory = "2G"), beside their own.
    assert shown["builds"] | {"limits", "rules"} == (
        set(BuildsSection.model_fields) | set(LIMIT_NAMES))
    assert shown["builds.rules"] <= {"command", "command_regex", *LIMIT_NAMES}
    for section in SECTIONS:
        if section not in ("limits", "builds", "budget"):
            assert shown[section] == set(type(getattr(Config(), section)).model_fields), section


def test_example_stop_grace_fits_the_units_stop_timeout() -> None:
    # systemd SIGKILLs everything at TimeoutStopSec: the grace plus killing the group
    # and cleaning up must fit inside it.
    unit = (EXAMPLE.parent / "systemd" / "ccgroupd.service").read_text()
    timeout = re.search(r"^TimeoutStopSec=(\d+)s$", unit, flags=re.MULTILINE)
    assert timeout is not None
    assert load_config(EXAMPLE).engine.stop_grace_s + 15 <= int(timeout[1])


def example_alternatives() -> list[dict[str, str]]:
    """The commented-out [engine] alternatives ("#   key = value" blocks), key -> TOML line."""
    blocks: list[dict[str, str]] = []
    previous_was_alternative = False
    for line in EXAMPLE.read_text().splitlines():
        if alternative := re.fullmatch(r"#   ((\w+) = .*)", line):
            if not previous_was_alternative:
                blocks.append({})
            blocks[-1][alternative[2]] = alternative[1]
        previous_was_alternative = bool(alternative)
    return blocks


def test_example_alternatives_are_valid(tmp_path: Path) -> None:
    blocks = example_alternatives()
    assert [block["mode"] for block in blocks] == ['mode = "runc"', 'mode = "exec"']
    for block in blocks:
        # The block replaces the same keys in [engine].
        text = "\n".join(line for line in EXAMPLE.read_text().splitlines()
                         if not re.match(rf"({'|'.join(block)}) = ", line))
        text = re.sub(r"^\[engine\]\n", "[engine]\n" + "\n".join(block.values()) + "\n", text,
                      flags=re.MULTILINE)
        engine = load_config(write(tmp_path, text)).engine
        assert engine.mode in ("runc", "exec")
        if engine.mode == "runc":
            assert engine.command == ["/usr/local/bin/dagger-entrypoint.sh"]
            assert engine.rootfs == Path("/var/lib/ccgroupd/engine/rootfs")
        else:
            assert engine.private_cgroup_namespace is True


def test_example_comments_every_key() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"(?:# )?\w+ = ", line):
            assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment: {line}"


def test_example_commented_out_values_are_valid(tmp_path: Path) -> None:
    uncommented = re.sub(r"^# (\w+ = )", r"\1", single_engine_example(), flags=re.MULTILINE)
    config = load_config(write(tmp_path, uncommented))
    assert config.limits.to_mapping() == {
        "cpus": 4.0, "memory": 8 * 1024**3, "memory_high": 7 * 1024**3, "memory_swap": 0,
        "pids": 10000, "cpu_weight": 100, "memory_min": 0, "memory_low": 2 * 1024**3,
        "io_weight": 100, "cpuset_cpus": None, "cpuset_mems": None}
    assert config.api.admin_group == "ccgroupd-admin"


def test_example_build_rule_is_valid(tmp_path: Path) -> None:
    rule = [line.removeprefix("#  ") for line in single_engine_example().splitlines()
            if re.match(r"#  [\[\w]", line)]
    assert rule[0] == "[[builds.rules]]"
    # The example shows both match forms; a rule takes one.
    text = "[limits]\nmemory = '8G'\ncpus = 4\n" + "\n".join(
        line for line in rule if not line.startswith("command_regex"))
    config = load_config(write(tmp_path, text))
    (loaded,) = config.builds.rules
    assert loaded.command == "postgres*"
    assert loaded.limits.given() == {"memory": 4 * 1024**3, "cpus": 2.0}


def test_example_engines_are_valid(tmp_path: Path) -> None:
    several = EXAMPLE.read_text().split("\n[budget]\n")[1]
    text = "[budget]\n" + "\n".join(re.sub(r"^(?:# (?=\w+ = )|#  )", "", line)
                                     for line in several.splitlines())
    with resolving_against(HostSize(cpus=8, memory_bytes=32 * 1024**3)):
        config = load_config(write(tmp_path, text))
    assert config.budget.cpus == 6
    assert config.budget.memory_max_bytes == 24 * 1024**3
    engines = config.engine_configs()
    assert list(engines) == ["ci", "web"]
    assert engines["ci"].limits.given() == {"cpus": 4.0, "memory": 8 * 1024**3,
                                            "memory_low": 4 * 1024**3, "cpu_weight": 500}
    assert config.budget.relative() == {"memory": "75%"}
    assert engines["web"].engine.mode == "docker"


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nmemory = '1G'\n[builds]\nmemory = '2G'\n",
     "builds.memory = 2147483648: above the engine's memory (1 GiB)"),
    ("[limits]\npids = 100\n[[builds.rules]]\ncommand = 'x'\npids = 200\n",
     "builds.rules[0].pids = 200: above the engine's pids (100)"),
    ("[[builds.rules]]\nmemory = '1G'\n", "a rule needs exactly one of command"),
    ("[[builds.rules]]\ncommand = 'a'\ncommand_regex = 'b'\nmemory = '1G'\n",
     "a rule needs exactly one of command"),
    ("[[builds.rules]]\ncommand_regex = '('\n", "not a regular expression"),
    ("[builds]\ngroups = ['buildkit/**']\n", "not ending in '**'"),
    ("[builds]\ngroups = ['../x/*']\n", "without empty, '.' or '..' components"),
    ("[builds]\noom_score_adj = 2000\n", "builds.oom_score_adj = 2000"),
])
def test_bad_builds_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.startswith(f"{path}: ") and message in error


# -- several engines ------------------------------------------------------------


TWO_ENGINES = """
[budget]
cpus = 3
memory = "6G"
[engines.ci]
command = ["/bin/ci-engine"]
cpus = 2
memory = "4G"
[engines.web]
mode = "docker"
memory = "2G"
"""


def test_each_engine_runs_as_if_alone_below_the_parent(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TWO_ENGINES))
    ci, web = config.engine_configs().values()
    assert (ci.cgroup.name, web.cgroup.name) == ("engines/ci", "engines/web")
    assert ci.limits.given() == {"cpus": 2.0, "memory": 4 * 1024**3}
    assert ci.daemon.state_dir == Path("/var/lib/ccgroupd/engines/ci")
    assert web.daemon.runtime_dir == Path("/run/ccgroupd/engines/web")
    # Directories of their own, named to the engine and mounted into its container.
    assert ci.engine.own_directories() == {"STATE_DIRECTORY": Path("/var/lib/dagger/ci"),
                                           "RUNTIME_DIRECTORY": Path("/run/dagger/ci")}
    assert web.engine.bind_mounts == [Path("/var/lib/dagger/web"), Path("/run/dagger/web")]
    assert web.engine.container_name == "ccgroupd-web"
    assert not ci.engines and ci.budget == Limits()


def test_the_single_engine_config_is_one_engine_named_after_its_group() -> None:
    config = Config()
    assert config.engine_configs() == {"dagger-engine": config}


@pytest.mark.parametrize(("text", "message"), [
    (TWO_ENGINES.replace("cpus = 2", "cpus = 4"),
     "engines.ci.cpus = 4.0: above the budget's cpus (3.0)"),
    (TWO_ENGINES.replace('memory = "2G"', 'memory = "8G"'),
     "engines.web.memory = 8589934592: above the budget's memory (6 GiB)"),
    (TWO_ENGINES + "[engines.Bad]\ncommand = ['x']\n",
     "engines.Bad = 'Bad': an engine's name is 1-32 of a-z 0-9 _ - and starts with a letter or "
     "digit (it names its cgroup and journal records)"),
    ("[budget]\ncpus = 2\n", "budget = ['cpus']: a budget holds several engines together: define "
     "them as [engines.NAME] tables, or use [limits]"),
    (TWO_ENGINES + "[limits]\ncpus = 1\n", "limits = ['cpus']: [limits] configures the single "
     "engine; with [engines.NAME] tables give each engine its keys there"),
    (TWO_ENGINES + "[engines.web2]\nmode = 'docker'\ncontainer_name = 'ccgroupd-web'\n",
     "engines.web2.container_name = 'ccgroupd-web': engines.web has the same container_name; "
     "each engine needs its own"),
    (TWO_ENGINES + "[engines.ci2]\ncommand = ['x']\nstate_directory = '/var/lib/dagger/ci/x'\n",
     "engines.ci2.state_directory = '/var/lib/dagger/ci/x': shares /var/lib/dagger/ci with "
     "engines.ci.state_directory; each engine needs directories of its own"),
    (TWO_ENGINES.replace('command = ["/bin/ci-engine"]',
                         'command = ["x"]\nready_socket = "/run/e.sock"')
     + "ready_socket = '/run/e.sock'\n",
     "engines.web.ready_socket = '/run/e.sock': engines.ci has the same ready_socket; each "
     "engine needs its own"),
    (TWO_ENGINES + "[engines.ci3]\ncommand = ['x']\nmdoe = 'exec'\n",
     "unknown key engines.ci3.mdoe (did you mean mode?)"),
    ("[builds]\nmemory = '3G'\n" + TWO_ENGINES,
     "builds.memory = 3221225472: above the engine's memory (2 GiB) (engine web)"),
    (TWO_ENGINES.replace('cpus = 2\n', 'cpus = 2\nmemory_low = "4G"\n')
     .replace('"6G"', '"5G"')
     .replace('memory = "2G"', 'memory = "2G"\nmemory_min = "1G"\nmemory_low = "2G"'),
     "engines.web.memory_low = '2 GiB': the engines' memory_low add up to 6 GiB (ci 4 GiB, "
     "web 2 GiB), above the budget's memory (5 GiB)"),
    (TWO_ENGINES.replace('memory = "2G"', 'memory = "2G"\nmemory_low = "3G"'),
     "engines.web.memory_low = '3 GiB': memory_low (3 GiB) is above memory (2 GiB): the kernel "
     "cannot protect more than the group may hold"),
    (TWO_ENGINES.replace('memory = "6G"', 'memory = "150%"'),
     "budget.memory = '150%': 150% is over 100%: a share of the host cannot exceed it"),
])
def test_bad_engines_are_refused_naming_the_engine_and_key(tmp_path: Path, text: str,
                                                           message: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}: {message}"


def test_guarantees_without_a_budget_memory_are_held_to_the_host(tmp_path: Path) -> None:
    host = HostSize(cpus=4, memory_bytes=8 * 1024**3)
    text = TWO_ENGINES.replace('memory = "6G"\n', "").replace(
        'cpus = 2\n', 'cpus = 2\nmemory_min = "6G"\n').replace(
        'memory = "2G"', 'memory = "3G"\nmemory_min = "3G"').replace('"4G"', '"7G"')
    with resolving_against(host):
        assert load_error(write(tmp_path, text)).endswith(
            "engines.web.memory_min = '3 GiB': the engines' memory_min add up to 9 GiB (ci 6 GiB,"
            " web 3 GiB), above the host's memory (8 GiB)")
        budget = load_config(write(tmp_path, text.replace('"6G"', '"5G"'))).budget
    assert budget.memory_max_bytes is None


def test_an_engine_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_ENGINES)
    (tmp_path / "config.d").mkdir()
    drop_in = tmp_path / "config.d" / "ci.toml"
    drop_in.write_text("[engines.ci]\ncommand = ['other']\n")
    assert load_error(path) == (f"{drop_in}: engines.ci: an engine of this name is already "
                                f"defined in {path}; engine names must be unique")


def test_an_engine_per_drop_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[budget]\ncpus = 2\n")
    (tmp_path / "config.d").mkdir()
    for name in ("alpha", "beta"):
        (tmp_path / "config.d" / f"{name}.toml").write_text(
            f"[engines.{name}]\ncommand = ['/bin/{name}']\ncpus = 1\n")
    assert list(load_config(path).engine_configs()) == ["alpha", "beta"]
