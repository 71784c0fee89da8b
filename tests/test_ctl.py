from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccgroupd import protocol
from ccgroupd.client import argparser, ctl, humanize, options, top
from ccgroupd.config import load_config
from ccgroupd.errors import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from ccgroupd.eventnames import VIOLATION_EVENTS

STATUS = {
    "cgroup": {"path": "/sys/fs/cgroup/system.slice/ccgroupd.service/engine"},
    "limits": {
        "cpus": {"value": 2.0, "source": "persisted"},
        "memory": {"value": 536870912, "source": "runtime"},
        "memory_high": {"value": None, "source": "config"},
        "memory_swap": {"value": 0, "source": "config"},
        "pids": {"value": 4096, "source": "config"},
        "cpu_weight": {"value": None, "source": "config"},
    },
    "usage": {"cpu_percent": 150.0, "memory_bytes": 314572800, "memory_percent": 58.6,
              "swap_bytes": 0, "pids": 42},
    "events": {"oom_kill": 1, "oom": 1, "memory_max": 3, "memory_high": 0, "swap_max": 0,
               "pids_max": 0, "cpu_throttled": 7},
    "engine": {"state": "running", "pid": 1234, "uptime_s": 7385.2, "restarts": 1},
}


class FakeDaemon:
    """Answers a connection each with canned reply lines, in turn (None: hangs up), and keeps
    the requests."""

    def __init__(self, path: Path, reply: bytes | None, *later: bytes) -> None:
        self.path = path
        self.replies = [reply, *later]
        self.requests: list[dict[str, Any]] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(os.fspath(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for reply in self.replies:
            connection, _ = self._listener.accept()
            with connection:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(json.loads(data))
                if reply is not None:
                    connection.sendall(reply)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def daemon_path(tmp_path: Path) -> Path:
    return tmp_path / "ccgroupd.sock"


@pytest.fixture
def answering(daemon_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeDaemon]:
    replies = request.param if isinstance(request.param, tuple) else (request.param,)
    daemon = FakeDaemon(daemon_path, *replies)
    yield daemon
    daemon.close()


def ok(result: dict[str, Any]) -> bytes:
    return protocol.ok_reply(result)


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccgroupd.client.ctl", *args], capture_output=True,
                          text=True, timeout=60, check=False)


# -- arguments and client-side validation ----------------------------------------


@pytest.mark.parametrize(("argv", "args"), [
    (["set", "--build-cpus", "1", "--build-memory", "2G", "--build-memory-high", "1500M",
      "--build-swap", "0", "--build-pids", "500", "--build-cpu-weight", "50", "--running"],
     {"builds": {"cpus": "1", "memory": "2G", "memory_high": "1500M", "memory_swap": "0",
                 "pids": "500", "cpu_weight": "50"},
      "running": True, "runtime": False, "force": False}),
    (["set", "--memory", "8G", "--build-memory=1G", "--runtime"],
     {"limits": {"memory": "8G"}, "builds": {"memory": "1G"}, "running": False,
      "runtime": True, "force": False}),
])
def test_build_options_become_the_builds_argument(daemon_path: Path, argv: list[str],
                                                  args: dict[str, Any]) -> None:
    daemon = FakeDaemon(daemon_path, ok({"in_force": {}}))
    try:
        assert ctl.main(["--socket", str(daemon_path), *argv]) == EXIT_OK
    finally:
        daemon.close()
    assert daemon.requests == [{"v": 1, "op": "set", "args": args}]


def test_every_limit_has_a_build_option_named_after_its_own() -> None:
    assert {name: option for name, (option, _) in options.BUILD_SET_OPTIONS.items()} == {
        name: f"--build-{option[2:]}" for name, (option, _) in options.SET_OPTIONS.items()}
    assert options.BUILD_SET_OPTIONS["memory_swap"][0] == "--build-swap"


def test_set_options_become_one_set_request(daemon_path: Path) -> None:
    daemon = FakeDaemon(daemon_path, ok({"in_force": {"cpu.max": "200000 100000"}}))
    try:
        code = ctl.main(["--socket", str(daemon_path), "set", "--cpus", "2", "--memory", "512M",
                         "--memory-high", "400M", "--swap", "0", "--pids", "100",
                         "--cpu-weight", "50", "--runtime", "--force"])
    finally:
        daemon.close()
    assert code == EXIT_OK
    assert daemon.requests == [{
        "v": 1, "op": "set",
        "args": {"limits": {"cpus": "2", "memory": "512M", "memory_high": "400M",
                            "memory_swap": "0", "pids": "100", "cpu_weight": "50"},
                 "runtime": True, "force": True},
    }]


def test_new_limit_options_and_shares_go_to_the_daemon_as_written(daemon_path: Path) -> None:
    daemon = FakeDaemon(daemon_path, ok({"in_force": {}}))
    try:
        code = ctl.main(["--socket", str(daemon_path), "set", "--memory", "75%", "--cpus", "50%",
                         "--memory-min", "0", "--memory-low", "1%", "--io-weight", "300",
                         "--cpuset-cpus", "0", "--cpuset-mems=", "--build-memory-low", "64M",
                         "--build-cpuset-cpus", "0"])
    finally:
        daemon.close()
    assert code == EXIT_OK
    assert daemon.requests == [{
        "v": 1, "op": "set",
        "args": {"limits": {"cpus": "50%", "memory": "75%", "memory_min": "0",
                            "memory_low": "1%", "io_weight": "300", "cpuset_cpus": "0",
                            "cpuset_mems": ""},
                 "builds": {"memory_low": "64M", "cpuset_cpus": "0"},
                 "running": False, "runtime": False, "force": False},
    }]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["set"], EXIT_USAGE, "set needs at least one limit"),
    (["set", "--memory-min", "max"], EXIT_INVALID,
     "memory_min = 'max': a protection, not a limit: give a size, or 0 for none"),
    (["set", "--memory", "1G", "--memory-low", "2G"], EXIT_INVALID,
     "memory_low (2 GiB) is above memory (1 GiB)"),
    (["set", "--io-weight", "0"], EXIT_INVALID, "io_weight = '0': out of range"),
    (["set", "--cpuset-cpus", "3-1"], EXIT_INVALID, "cpuset_cpus = '3-1': range '3-1' runs"),
    (["set", "--memory", "150%"], EXIT_INVALID, "150% is over 100%"),
    (["set", "--pids", "50%"], EXIT_INVALID, "pids = '50%': takes no percentage"),
    (["set", "--cpus", "-1"], EXIT_INVALID, "cpus = '-1': a number of CPUs cannot be negative"),
    (["set", "--cpus", "0"], EXIT_INVALID, "cpus = '0': must be more than 0"),
    (["set", "--memory", "12XB"], EXIT_INVALID, "memory = '12XB': unknown unit 'XB'"),
    (["set", "--memory", "1G", "--memory-high", "2G"], EXIT_INVALID,
     "memory_high (2 GiB) is above memory (1 GiB)"),
    (["set", "--pids", "lots"], EXIT_INVALID, "pids = 'lots'"),
    (["sett"], EXIT_USAGE, "invalid choice: 'sett'"),
    (["set", "--cpu", "2"], EXIT_USAGE, "unrecognized arguments"),
    (["--timeout", "-1", "status"], EXIT_USAGE, "--timeout must be a positive number"),
    (["--timeout=nan", "status"], EXIT_USAGE, "not nan"),
    (["--timeout", "0", "set", "--cpus", "1"], EXIT_USAGE, "seconds, not 0"),
    (["set", "--running"], EXIT_USAGE, "--running gives the --build-* limits to running builds"),
    (["set", "--cpus", "2", "--running"], EXIT_USAGE, "name at least one, e.g. --build-memory"),
    (["set", "--runtime"], EXIT_USAGE, "set needs at least one limit"),
    (["set", "--build-cpus", "-1"], EXIT_INVALID,
     "builds.cpus = '-1': a number of CPUs cannot be negative"),
    (["set", "--cpus", "2", "--build-swap", "lots"], EXIT_INVALID, "builds.memory_swap = 'lots'"),
    (["set", "--build-memory", "1G", "--build-memory-high", "2G"], EXIT_INVALID,
     "builds.memory_high = '2 GiB': memory_high (2 GiB) is above memory (1 GiB)"),
    (["top", "--interval", "0"], EXIT_USAGE, "--interval must be a positive number"),
    (["--timeout", "-1", "top", "--once"], EXIT_USAGE, "--timeout must be a positive number"),
    (["top", "--once", "--interval=-1"], EXIT_USAGE, "seconds, not -1"),
    (["top", "--sort", "pids"], EXIT_USAGE, "invalid choice: 'pids'"),
    (["--engine", "ci", "reload"], EXIT_USAGE, "reload acts on every engine on this host: "
                                               "leave out --engine"),
    (["reload", "--engine", "ci"], EXIT_USAGE, "unrecognized arguments: --engine ci"),
    (["--engine", "CI", "status"], EXIT_USAGE,
     "--engine 'CI': not an engine name ([a-z0-9][a-z0-9_-]{0,31}: lower-case letters, "
     "digits, _ and -, at most 32)"),
    (["set", "--engine", "../x", "--cpus", "1"], EXIT_USAGE, "--engine '../x': not an engine"),
    (["--engine=", "restart-engine"], EXIT_USAGE, "--engine '': not an engine name"),
    (["reset", "--engine", "a" * 33], EXIT_USAGE, "not an engine name"),
    (["top", "--once", "--engine", "ci\nweb"], EXIT_USAGE, "--engine 'ci\\nweb': not an"),
    (["events", "--engine", "x y"], EXIT_USAGE, "--engine 'x y': not an engine name"),
])
def test_bad_input_is_one_line_and_never_reaches_the_daemon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int,
        message: str) -> None:
    # No daemon listens here: reaching it would exit 5 instead.
    assert exit_code_of(["--socket", str(tmp_path / "none.sock"), *args]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ccgroupctl: ")
    assert message in err


def exit_code_of(argv: list[str]) -> int:
    """main()'s result, or the code argparse exits with."""
    try:
        return ctl.main(argv)
    except SystemExit as exit_:
        assert isinstance(exit_.code, int)
        return exit_.code


def test_help_documents_exit_codes_and_the_status_schema() -> None:
    text = argparser.build_parser().format_help()
    for line in ("0  success", "2  usage error", "3  invalid value, configuration",
                 "4  permission denied", "5  the daemon is unreachable",
                 "limits.<name>.source", "engine                 state, pid, uptime_s"):
        assert line in text


@pytest.mark.parametrize("argv", [["status"], ["events"]])  # the quick parser and argparse
def test_socket_defaults_to_the_environment_override(monkeypatch: pytest.MonkeyPatch,
                                                     argv: list[str]) -> None:
    monkeypatch.setenv(options.SOCKET_ENV, "/tmp/other.sock")
    assert ctl.parse_args(argv).socket == "/tmp/other.sock"
    monkeypatch.delenv(options.SOCKET_ENV)
    assert ctl.parse_args(argv).socket == protocol.DEFAULT_SOCKET_PATH


def test_socket_default_and_variable_are_the_daemons(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    empty = tmp_path / "config.toml"
    empty.write_text("")
    monkeypatch.delenv(options.SOCKET_ENV, raising=False)
    assert load_config(empty).api.socket == Path(protocol.DEFAULT_SOCKET_PATH)
    monkeypatch.setenv(options.SOCKET_ENV, "/tmp/other.sock")
    assert load_config(empty).api.socket == Path("/tmp/other.sock")


# -- the quick parser and argparse ---------------------------------------------------

# Pieces of command lines: every command and option, values of each kind, mistakes.
TOKENS = [
    "set", "status", "reset", "reload", "restart-engine", "events", "bogus",
    "--socket", "--socket=/s", "/s", "--timeout", "--timeout=2.5", "--timeout=", "5", "nan",
    "--cpus", "--cpus=0.5", "4", "-1", "-0.5", "", "x y", "--memory", "--memory=8G", "8G",
    "--memory-high", "--swap", "--swap=0", "--pids", "--cpu-weight", "--json", "--json=1",
    "--runtime", "--force", "--force=", "--", "-", "-h", "--help", "--version", "--mem",
    "--since", "-f", "--lines=3", "--all", "--build-cpus", "--build-memory=2G",
    "--build-swap", "--build-cpu-weight=", "--running", "top", "--once", "--interval",
    "--sort", "memory", "--engine", "--engine=ci", "ci", "--engine=",
    "--memory-min", "--memory-low=1G", "--io-weight", "--cpuset-cpus",
    "--cpuset-mems=0", "0-3", "75%", "--build-io-weight",
]
COMMON_COMMAND_LINES = [
    ["status"], ["status", "--json"], ["reset"], ["reload", "--json"], ["restart-engine"],
    ["set", "--cpus", "4", "--memory", "8G"], ["set", "--memory=512M", "--runtime", "--force"],
    ["set", "--memory-high", "6G", "--swap", "0", "--pids", "4096", "--cpu-weight", "200"],
    ["--socket", "/run/x.sock", "--timeout", "30", "set", "--cpus", "max", "--json"],
    ["set", "--build-memory", "2G", "--build-cpus", "1", "--running"],
    ["set", "--build-memory-high=1G", "--build-pids", "500", "--build-swap", "0"],
    ["--engine", "ci", "set", "--cpus", "2"], ["set", "--engine", "ci", "--cpus", "2"],
    ["--engine=web", "status", "--json"], ["status", "--engine", "web"],
    ["--engine", "ci", "reset", "--force"], ["restart-engine", "--engine=ci"],
    ["set", "--memory", "75%", "--memory-low", "2G", "--io-weight", "200",
     "--cpuset-cpus", "0-3", "--cpuset-mems", ""],
]


def command_lines() -> Iterator[list[str]]:
    yield from ([token] for token in TOKENS)
    yield from ([first, second] for first in TOKENS for second in TOKENS)
    pick = random.Random(20261128)
    for _ in range(4000):
        yield pick.choices(TOKENS, k=pick.randint(3, 6))
    for _ in range(2000):  # real use with one token more, anywhere
        line = [*pick.choice(COMMON_COMMAND_LINES)]
        line.insert(pick.randint(0, len(line)), pick.choice(TOKENS))
        yield line
    before = [[], ["--socket", "/s"], ["--socket=/s"], ["--timeout", "5"], ["--timeout=.5"],
              ["--engine", "ci"], ["--engine=web"]]
    after = [["--json"], ["--runtime"], ["--force"], ["--cpus", "4"], ["--memory=8G"],
             ["--swap", "0"], ["--pids", "x y"], ["--cpu-weight="], ["--memory-high", ""],
             ["--running"], ["--build-cpus", "1"], ["--build-memory-high="],
             ["--engine", "web"], ["--engine=ci"]]
    for _ in range(3000):  # well-formed ones, most of them
        line = [*pick.choice(before), pick.choice(TOKENS[:6])]
        for _ in range(pick.randint(0, 4)):
            line += pick.choice(after)
        yield line


def same_values(left: dict[str, Any], right: dict[str, Any]) -> bool:
    """Equal, with NaN equal to itself: both parsers read --timeout nan alike."""
    return {key: repr(value) for key, value in left.items()} == {
        key: repr(value) for key, value in right.items()}


def test_quick_parser_agrees_with_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparser.build_parser()
    accepted = 0
    for argv in command_lines():
        quick = ctl.quick_parse(argv)
        if quick is None:
            continue
        try:
            expected = vars(parser.parse_args(argv))
        except SystemExit:
            pytest.fail(f"quick_parse accepts {argv!r}, argparse refuses it")
        assert same_values(vars(quick), expected), argv
        accepted += 1
    capsys.readouterr()
    assert accepted > 1000  # of about 12,000, with the seed above


@pytest.mark.parametrize("argv", COMMON_COMMAND_LINES)
def test_quick_parser_reads_what_people_script(argv: list[str]) -> None:
    assert ctl.quick_parse(argv) is not None


@pytest.mark.parametrize(("argv", "engine"), [
    (["status"], None),
    (["--engine", "ci", "set", "--cpus", "2"], "ci"),
    (["set", "--engine", "ci", "--cpus", "2"], "ci"),
    (["set", "--cpus", "2", "--engine=ci"], "ci"),
    (["--engine", "ci", "status", "--engine", "web"], "web"),  # the last one counts
    (["--engine", "ci", "--engine", "web", "reset"], "web"),
    (["--engine", "ci", "reload"], "ci"),  # parsed; main() refuses it
    (["--engine", "ci", "top", "--once"], "ci"),  # argparse's alone, these
    (["top", "--engine", "ci"], "ci"),
    (["--engine", "web", "events", "-f"], "web"),
    (["events", "--engine", "web", "--all"], "web"),
])
def test_engine_before_and_after_the_command(argv: list[str], engine: str | None) -> None:
    parsed = vars(argparser.build_parser().parse_args(argv))
    assert parsed["engine"] == engine
    quick = ctl.quick_parse(argv)
    if quick is not None:
        assert vars(quick) == parsed
    assert ctl.parse_args(argv).engine == engine


@pytest.mark.parametrize(("argv", "request_"), [
    (["status"], {"op": "status", "args": {}}),
    (["--engine", "ci", "status"], {"op": "status", "args": {"engine": "ci"}}),
    (["status", "--engine", "ci"], {"op": "status", "args": {"engine": "ci"}}),
    (["--engine", "ci", "set", "--cpus", "2"],
     {"op": "set", "args": {"limits": {"cpus": "2"}, "runtime": False, "force": False,
                            "engine": "ci"}}),
    (["set", "--engine", "web", "--build-pids", "50"],
     {"op": "set", "args": {"builds": {"pids": "50"}, "running": False, "runtime": False,
                            "force": False, "engine": "web"}}),
    (["reset", "--engine", "ci"], {"op": "reset", "args": {"engine": "ci"}}),
    (["--engine", "ci", "reset", "--force"],
     {"op": "reset", "args": {"force": True, "engine": "ci"}}),
    (["restart-engine", "--engine", "my_project-2"],
     {"op": "restart-engine", "args": {"engine": "my_project-2"}}),
])
def test_requests_name_the_engine_when_told(daemon_path: Path, argv: list[str],
                                            request_: dict[str, Any]) -> None:
    daemon = FakeDaemon(daemon_path, ok({"in_force": {}}))
    try:
        assert ctl.main(["--socket", str(daemon_path), *argv]) == EXIT_OK
    finally:
        daemon.close()
    assert daemon.requests == [{"v": 1, **request_}]


@pytest.mark.parametrize("answering", [protocol.error_reply(
    EXIT_USAGE, "several engines run here (ci, web): name one with --engine NAME")],
    indirect=True)
def test_a_missing_engine_name_is_the_daemons_usage_error(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "set", "--cpus", "2"]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "ccgroupctl: several engines run here (ci, web): name one with --engine NAME\n")


@pytest.mark.parametrize(("argv", "code", "output"), [
    (["--help"], EXIT_OK, "exit codes:"),
    (["set", "--help"], EXIT_OK, "--memory-high"),
    (["set", "--help"], EXIT_OK, "0.5 or 50% of the"),  # %% is argparse's percent sign
    (["--version"], EXIT_OK, "ccgroupctl "),
    (["set", "--mem", "1G"], EXIT_USAGE, "unrecognized arguments: --mem"),
    (["--timeout", "soon", "status"], EXIT_USAGE, "invalid float value: 'soon'"),
])
def test_what_the_quick_parser_leaves_is_argparses(argv: list[str], code: int, output: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.quick_parse(argv) is None
    assert exit_code_of(argv) == code
    captured = capsys.readouterr()
    assert output in captured.out + captured.err


# -- replies and exit codes ----------------------------------------------------------


@pytest.mark.parametrize("answering", [ok(STATUS)], indirect=True)
def test_status_json_prints_the_result(answering: FakeDaemon,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "status", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == STATUS
    assert answering.requests == [{"v": 1, "op": "status", "args": {}}]


@pytest.mark.parametrize("answering", [
    protocol.error_reply(EXIT_PERMISSION, "permission denied: 'set' needs root (you are uid 1000)"),
], indirect=True)
def test_refusal_exits_with_the_daemons_code(answering: FakeDaemon,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "set", "--cpus", "2"]) == EXIT_PERMISSION
    assert capsys.readouterr().err == (
        "ccgroupctl: permission denied: 'set' needs root (you are uid 1000)\n")


@pytest.mark.parametrize("answering", [None], indirect=True)
def test_daemon_hanging_up_without_answer_is_a_failure(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "reload"]) == EXIT_FAILURE
    assert "closed the connection without answering" in capsys.readouterr().err


@pytest.mark.parametrize("answering", [b"garbage\n"], indirect=True)
def test_garbage_reply_is_reported_not_a_traceback(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "reset"]) == EXIT_USAGE
    assert "malformed reply" in capsys.readouterr().err


def test_silent_daemon_times_out(daemon_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(os.fspath(daemon_path))
        listener.listen()  # accepted by the kernel, never answered
        code = ctl.main(["--socket", str(daemon_path), "--timeout", "0.2", "status"])
    assert code == EXIT_FAILURE
    assert "did not answer within 0.2 s" in capsys.readouterr().err


def test_stale_socket_is_unreachable(daemon_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(os.fspath(daemon_path))  # a daemon that died: the file stays, nobody listens
        assert ctl.main(["--socket", str(daemon_path), "status"]) == EXIT_UNREACHABLE
    assert "systemctl start ccgroupd" in capsys.readouterr().err


def test_unreachable_daemon_as_a_real_process(tmp_path: Path) -> None:
    result = run_ctl("--socket", str(tmp_path / "missing.sock"), "set", "--cpus", "2")
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stdout == ""
    assert result.stderr == (
        f"ccgroupctl: cannot reach ccgroupd at {tmp_path / 'missing.sock'} "
        "(No such file or directory); is it running? systemctl start ccgroupd\n")


def test_invalid_value_as_a_real_process(tmp_path: Path) -> None:
    result = run_ctl("--socket", str(tmp_path / "missing.sock"), "set", "--memory", "12XB")
    assert result.returncode == EXIT_INVALID
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_version_as_a_real_process() -> None:
    result = run_ctl("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout.startswith("ccgroupctl ")


# -- top ---------------------------------------------------------------------------


def builds_sample(read_at_s: float, engine_usec: int, hog_usec: int | None) -> dict[str, Any]:
    """A builds reply as the contract of issue 13 has it: the engine, and one build."""
    no_limits = dict.fromkeys(("memory_high", "memory_swap", "pids", "cpu_weight"))
    return {"read_at_s": read_at_s,
            "engine": {"cgroup": "/sys/fs/cgroup/system.slice/ccgroupd.service/dagger-engine",
                       "usage_usec": engine_usec, "memory_current_bytes": 1073741824,
                       "memory_peak_bytes": 2147483648, "pids_current": 30,
                       "limits": {"cpus": 4.0, "memory": 8589934592, **no_limits}},
            "builds": [{"id": "abc123", "cgroup": "container/buildkit/abc123",
                        "command": "python3 hog.py 400", "age_s": 3.2 + read_at_s - 100,
                        "usage_usec": hog_usec, "memory_current_bytes": 222298112,
                        "memory_peak_bytes": 268435456, "pids_current": 1,
                        "limits": {"cpus": 1.0, "memory": 268435456, **no_limits}}]}


@pytest.mark.parametrize("answering", [
    (ok(builds_sample(100.0, 2_000_000, 1_000_000)),
     ok(builds_sample(100.5, 3_000_000, 1_250_000))),
], indirect=True)
def test_top_json_prints_the_second_sample_with_cpu_percent(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--socket", str(answering.path), "top", "--json", "--interval", "0.05"]
    assert ctl.main(argv) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert answering.requests == [{"v": 1, "op": "builds", "args": {}}] * 2
    assert printed["read_at_s"] == 100.5
    assert printed["engine"]["cpu_percent"] == 200.0
    assert [(b["id"], b["cpu_percent"], b["command"]) for b in printed["builds"]] == [
        ("abc123", 50.0, "python3 hog.py 400")]


@pytest.mark.parametrize("answering", [
    (ok(builds_sample(100.0, 0, None)), ok(builds_sample(101.0, 1_000_000, 500_000))),
], indirect=True)
def test_top_without_a_terminal_prints_one_table(answering: FakeDaemon,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # No --once: stdout is captured, not a terminal.
    assert ctl.main(["--socket", str(answering.path), "top", "--interval", "0.01"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "ID      CPU %      MEM     PEAK  PIDS  AGE  CPUS  MEM MAX  COMMAND",
        f"engine  100.0    1 GiB    2 GiB    30    -     4    8 GiB  {top.ENGINE_COMMAND}",
        "abc123      -  212 MiB  256 MiB     1   4s     1  256 MiB  python3 hog.py 400",
    ]


@pytest.mark.parametrize("answering", [
    (ok(builds_sample(100.0, 0, None)), ok(builds_sample(101.0, 1_000_000, 500_000))),
], indirect=True)
@pytest.mark.parametrize("where", [["--engine", "ci", "top"], ["top", "--engine", "ci"]])
def test_top_asks_for_the_named_engines_builds_and_names_it(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), *where, "--once",
                     "--interval", "0.01"]) == EXIT_OK
    assert answering.requests == [{"v": 1, "op": "builds", "args": {"engine": "ci"}}] * 2
    assert capsys.readouterr().out.splitlines()[1] == (
        "engine  100.0    1 GiB    2 GiB    30    -     4    8 GiB  "
        "(engine ci's group, its builds included)")


def test_top_from_a_daemon_without_builds_is_its_refusal(
        daemon_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refusal = ("unknown operation 'builds'; expected one of reload, reset, restart-engine, "
               "set, status")  # what api.py answers before issue 13
    daemon = FakeDaemon(daemon_path, protocol.error_reply(EXIT_USAGE, refusal))
    try:
        assert ctl.main(["--socket", str(daemon_path), "top", "--once"]) == EXIT_USAGE
    finally:
        daemon.close()
    assert capsys.readouterr().err == f"ccgroupctl: {refusal}\n"


# -- human output --------------------------------------------------------------


def test_status_shows_a_share_of_the_host_beside_its_value() -> None:
    limits = {
        "memory": {"value": 2362232012, "source": "config", "relative": "75%"},
        "cpus": {"value": 2.0, "source": "persisted", "relative": "50%"},
        "memory_low": {"value": None, "source": "config"},
        "io_weight": {"value": None, "source": "config"},
        "cpuset_cpus": {"value": "0-3", "source": "runtime"},
        "cpuset_mems": {"value": None, "source": "config"},
    }
    text = ctl.render_status({**STATUS, "limits": limits})
    assert "\n".join([
        "  memory       2.2 GiB (75% of host) (config)",
        "  cpus         2 (50% of host) (persisted)",
        "  memory_low   none         (config)",
        "  io_weight    default      (config)",
        "  cpuset_cpus  0-3          (runtime)",
        "  cpuset_mems  all          (config)",
    ]) in text


def test_status_shows_the_disk_io_limits() -> None:
    entries = [{"path": "/var/lib/dagger", "device": "254:0", "rbps": None,
                "wbps": 10 * 1024**2, "riops": None, "wiops": 1000}]
    lines = ctl.render_status({**STATUS, "io_max": entries}).splitlines()
    at = lines.index("io_max:")
    assert lines[at + 1] == "  disk 254:0 (/var/lib/dagger): wbps 10 MiB/s, wiops 1000/s"
    assert lines[at + 2] == "usage:"
    assert "io_max:" not in ctl.render_status(STATUS)


def test_status_for_people() -> None:
    assert ctl.render_status(STATUS) == "\n".join([
        "cgroup:  /sys/fs/cgroup/system.slice/ccgroupd.service/engine",
        "engine:  running, pid 1234, up 2h 3m, 1 restarts",
        "limits:",
        "  cpus         2            (persisted)",
        "  memory       512 MiB      (runtime)",
        "  memory_high  max          (config)",
        "  memory_swap  0 B          (config)",
        "  pids         4096         (config)",
        "  cpu_weight   default      (config)",
        "usage:",
        "  cpu      150% of one CPU (75% of the 2-CPU limit)",
        "  memory   300 MiB (58.6% of 512 MiB)",
        "  swap     0 B",
        "  pids     42",
        "events since start:",
        "  oom_kill 1, oom 1, memory_max 3, memory_high 0, swap_max 0, pids_max 0, "
        "cpu_throttled 7",
    ])


GiB = 1024**3
CI = {**STATUS, "name": "ci",
      "limits": {**STATUS["limits"], "memory_low": {"value": GiB, "source": "config"},
                 "memory_min": {"value": None, "source": "config"}}}
WEB = {**STATUS, "name": "web",
       "engine": {"state": "backoff", "pid": None, "uptime_s": None, "restarts": 4,
                  "last_exit": {"exit_code": None, "signal": "SIGKILL", "oom_killed": True}},
       "usage": {**STATUS["usage"], "cpu_percent": None, "memory_bytes": 12 * 1024**2}}
BUDGET = {
    "cgroup": "/sys/fs/cgroup/ccgroupd.slice/engines",
    "limits": {"cpus": {"value": 2.0, "source": "config"},
               "memory": {"value": 6 * GiB, "source": "config", "relative": "75%"},
               "pids": {"value": None, "source": "config"}},
    "usage": {"cpu_cores": 1.93, "memory_bytes": 1610612736, "pids": 40},
    "guarantees": {"memory_min_bytes": 0, "memory_low_bytes": 2 * GiB},
    "shares": {"ci": {"cpu_weight": 100, "cpu_share": 0.125, "memory_low_bytes": GiB},
               "web": {"cpu_weight": 700, "cpu_share": 0.875, "memory_low_bytes": GiB}},
}


def test_status_of_several_engines_is_the_budget_and_a_row_each() -> None:
    text = ctl.render_status({"engines": [CI, WEB], "budget": BUDGET})
    assert text.splitlines() == [
        "budget:  /sys/fs/cgroup/ccgroupd.slice/engines",
        "  cpus         2",
        "  memory       6 GiB (75% of host)",
        "  pids         max",
        "  in use       cpu 1.93 of 2 CPUs, memory 1.5 GiB of 6 GiB, pids 40",
        "  guaranteed   memory_low 2 GiB (33%), memory_min 0 B (0%) of 6 GiB",
        "",
        "NAME  STATE     PID     CPU     MEMORY  LOW/MIN     WEIGHT  RESTARTS  LAST EXIT",
        "ci    running  1234  1.50/2  300M/512M     1G/-  100 (12%)         1  -",
        "web   backoff     -     ?/2   12M/512M      -/-  700 (88%)         4  OOM kill",
    ]


@pytest.mark.parametrize(("name", "width"), [("backend-apis", 100), ("a" * 32, 120)])
def test_the_engines_table_stays_aligned_and_within_100_columns(name: str, width: int) -> None:
    # The widest cells but the name: a name of 12 characters still fits in 100 columns.
    busy = {**CI, "name": name,
            "engine": {"state": "stopping", "pid": 4194304, "restarts": 12,
                       "last_exit": {"exit_code": None, "signal": "SIGSEGV", "oom_killed": False,
                                     "error": None}},
            "usage": {"cpu_percent": 12345.6, "memory_bytes": 987654321},
            "limits": {"cpus": {"value": 128.0}, "memory": {"value": 1024**4},
                       "memory_low": {"value": 1342177280}, "memory_min": {"value": 256 * 1024**2},
                       "cpu_weight": {"value": 10000}}}
    budget = {"shares": {name: {"cpu_weight": 10000, "cpu_share": 0.99}}}
    quiet = {**WEB, "engine": {"state": "exited", "pid": None, "restarts": None,
                               "last_exit": {"exit_code": 1, "signal": None, "oom_killed": False}}}
    without_budget = ctl.render_status({"engines": [busy, WEB, quiet], "budget": None})
    assert without_budget.startswith("NAME ")  # no budget, no block
    lines = ctl.render_status({"engines": [busy, WEB, quiet], "budget": budget}).splitlines()[-4:]
    assert max(len(line) for line in lines) <= width
    assert lines[1].split()[:2] == [name, "stopping"]
    assert lines[1].endswith("4194304  123.46/128   942M/1T  1.25G/256M  10000 (99%)        12  "
                             "SIGSEGV")
    assert lines[2].endswith("-         ?/2  12M/512M         -/-      default         4  "
                             "OOM kill")
    assert lines[3].endswith("-         ?/2  12M/512M         -/-      default         ?  "
                             "exit 1")
    # Each column (but the last) ends where its header does, or starts where it does.
    for header in ("PID", "CPU", "MEMORY", "LOW/MIN", "WEIGHT", "RESTARTS"):
        end = lines[0].index(header) + len(header)
        assert all(line[end - 1] != " " and line[end:end + 2] == "  " for line in lines)
    for header in ("STATE", "LAST EXIT"):
        start = lines[0].index(header)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines)


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0"), (512, "512"), (1024, "1K"), (1536, "1.5K"), (512 * 1024**2, "512M"),
    (1610612736, "1.5G"), (1342177280, "1.25G"), (987654321, "942M"),
    (1023 * 1024**2 + 1000000, "1024M"), (6 * GiB, "6G"), (1024**4, "1T"),
    (1000 * 1024**4, "1000T"),
])
def test_short_sizes_read_as_set_takes_them(size: int, shown: str) -> None:
    assert humanize.short_size(size) == shown


def test_status_of_no_engine_and_of_a_daemon_without_a_budget() -> None:
    assert ctl.render_status({"engines": [], "budget": BUDGET}).splitlines()[-2:] == [
        "", "engines: none"]
    assert ctl.render_status({"engines": []}) == "engines: none"


def test_status_of_one_engine_is_as_it_was_with_its_name() -> None:
    # The reply without --engine where one runs: its fields at the top level too.
    named = {**STATUS, "name": "ci"}
    assert ctl.render_status({**named, "engines": [named], "budget": None}).splitlines() == [
        "name:    ci", *ctl.render_status(STATUS).splitlines()]
    # --engine ci: that engine's document, with its name.
    assert ctl.render_status(WEB).splitlines()[:3] == [
        "name:    web", f"cgroup:  {STATUS['cgroup']['path']}",
        "engine:  backoff, 4 restarts"]
    # A budget, where there is one, after the rest.
    lines = ctl.render_status({**STATUS, "engines": [CI], "budget": BUDGET}).splitlines()
    assert lines[0] == "name:    ci"
    assert lines[-6:] == ctl.render_status({"engines": [CI, WEB], "budget": BUDGET}
                                           ).splitlines()[:6]


def test_status_of_one_engine_without_its_top_level_fields_is_the_overview() -> None:
    assert ctl.render_status({"engines": [CI], "budget": None}).splitlines()[1].startswith(
        "ci    running  1234")


@pytest.mark.parametrize("answering", [ok({"engines": [CI, WEB], "budget": BUDGET})],
                         indirect=True)
def test_status_json_prints_the_overview_as_it_came(
        answering: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(answering.path), "status", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"engines": [CI, WEB], "budget": BUDGET}


BUILDS_STATUS = {
    "running": 2, "started_total": 10, "finished_total": 8, "unaccounted_total": 1,
    "largest": {"id": "abc123", "cgroup": "container/buildkit/abc123",
                "command": "python3 hog.py", "memory_current_bytes": 222298112},
    "defaults": {"cpus": 1.0, "memory": 2147483648, "memory_high": None, "memory_swap": None,
                 "pids": 500, "cpu_weight": None},
}


def test_status_shows_the_builds_after_the_events() -> None:
    lines = ctl.render_status({**STATUS, "builds": BUILDS_STATUS}).splitlines()
    assert lines[:-2] == ctl.render_status(STATUS).splitlines()  # a daemon without builds
    assert lines[-2:] == [
        "builds:  2 running (largest: abc123 python3 hog.py, 212 MiB), 10 started, "
        "8 finished, 1 without accounting",
        "  each new build: cpus 1, memory 2 GiB, pids 500",
    ]


@pytest.mark.parametrize(("builds", "lines"), [
    ({"running": 0, "started_total": 0, "finished_total": 0, "unaccounted_total": 0,
      "largest": None, "defaults": {"cpus": None, "memory": None}},
     ["builds:  0 running, 0 started, 0 finished, 0 without accounting",
      "  each new build: no limits of its own (the engine's apply)"]),
    ({"running": 1, "largest": {"id": "new", "command": None, "memory_current_bytes": None}},
     ["builds:  1 running (largest: new, ?), ? started, ? finished, ? without accounting"]),
])
def test_status_builds_with_little_to_say(builds: dict[str, Any], lines: list[str]) -> None:
    status = {"cgroup": {"path": "/x"}, "engine": {}, "limits": {}, "usage": {}, "events": {},
              "builds": builds}
    assert ctl.render_status(status).splitlines()[-len(lines):] == lines


def test_set_reply_with_builds_shows_their_defaults() -> None:
    text = ctl.render("set", {**STATUS, "builds": BUILDS_STATUS})
    assert text.endswith("\n  each new build: cpus 1, memory 2 GiB, pids 500")


def test_status_with_unknown_values_still_renders() -> None:
    text = ctl.render_status({"cgroup": {"path": "/x"}, "engine": {"state": "backoff"},
                              "limits": {}, "usage": {}, "events": {}})
    assert "engine:  backoff" in text
    assert "  cpu      ?" in text
    assert "  swap     -" in text


def test_status_names_the_file_that_set_each_limit() -> None:
    limits = {
        "cpus": {"value": 2, "source": "persisted", "set_by": "/var/lib/ccgroupd/limits.json"},
        "memory": {"value": 8 * 1024**3, "source": "config",
                   "set_by": "/etc/ccgroupd/config.d/50-local.toml"},
        "memory_high": {"value": None, "source": "config", "set_by": "default"},
        "pids": {"value": 100, "source": "config", "set_by": "environment CCGROUPD_LIMITS__PIDS"},
        "cpu_weight": {"value": None, "source": "runtime", "set_by": "ccgroupctl set --runtime"},
    }
    text = ctl.render_status({**STATUS, "limits": limits})
    assert "  cpus         2            (persisted: /var/lib/ccgroupd/limits.json)" in text
    assert "  memory       8 GiB        (config: /etc/ccgroupd/config.d/50-local.toml)" in text
    assert "  memory_high  max          (default)" in text
    assert "  pids         100          (config: environment CCGROUPD_LIMITS__PIDS)" in text
    assert "  cpu_weight   default      (runtime)" in text


def test_set_reply_with_the_status_document_shows_the_limits_in_force() -> None:
    lines = ctl.render("set", STATUS).splitlines()
    assert lines[0] == ("limits in force on "
                        "/sys/fs/cgroup/system.slice/ccgroupd.service/engine:")
    assert lines[1] == "  cpus         2            (persisted)"
    assert lines[-1] == "engine: running, pid 1234, up 2h 3m, 1 restarts"


def test_set_reply_shows_what_is_in_force() -> None:
    text = ctl.render("set", {"in_force": {"cpu.max": "200000 100000",
                                           "memory.max": "536870912"}})
    assert text == ("in force now:\n"
                    "  cpu.max          200000 100000\n"
                    "  memory.max       536870912 (512 MiB)")


# -- events --------------------------------------------------------------------


DAEMON_RECORD = {"_SYSTEMD_UNIT": "ccgroupd.service", "_UID": "0"}


@pytest.fixture
def fake_journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journalctl on PATH that records its arguments and prints three JSON records, one
    of them forged by an unprivileged process (a journalctl that ignored the matches)."""
    daemon = DAEMON_RECORD
    return journalctl_printing(tmp_path, monkeypatch, [
        {**daemon, "__REALTIME_TIMESTAMP": "1795835045000000", "CCGROUPD_EVENT": "oom_kill",
         "MESSAGE": "OOM killer killed 1 process in /sys/fs/cgroup/engine (3 since start)"},
        {"_SYSTEMD_UNIT": "user@1000.service", "_UID": "1000",
         "__REALTIME_TIMESTAMP": "1795835045500000", "CCGROUPD_EVENT": "oom_kill",
         "SYSLOG_IDENTIFIER": "ccgroupd", "MESSAGE": "forged"},
        {**daemon, "__REALTIME_TIMESTAMP": "1795835046000000", "CCGROUPD_EVENT": "pids_max",
         "MESSAGE": [102, 111, 114, 107]},  # journald's form for a non-UTF-8 field
    ])


def journalctl_printing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        records: list[dict[str, Any]]) -> Path:
    """A journalctl on PATH that prints ``records`` (and a line that is not JSON), whatever
    it is asked; returns the file that receives its arguments."""
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    lines = "\n".join(json.dumps(r) for r in records)
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args'}\ncat <<'EOF'\n{lines}\n"
                      "not json\nEOF\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("TZ", "UTC")
    return tmp_path / "args"


def test_events_summarizes_one_line_per_record(fake_journalctl: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["events", "--since", "1 hour ago", "-n", "10"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "2026-11-28 03:04:05 oom_kill       OOM killer killed 1 process in /sys/fs/cgroup/engine "
        "(3 since start)",
        "2026-11-28 03:04:06 pids_max       fork",
    ]
    args = fake_journalctl.read_text()
    events = " ".join(f"CCGROUPD_EVENT={name}" for name in VIOLATION_EVENTS)
    assert args == ("--no-pager -o json --lines 10 SYSLOG_IDENTIFIER=ccgroupd "
                    f"_SYSTEMD_UNIT=ccgroupd.service _UID=0 {events} --since 1 hour ago\n")


def test_events_of_one_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    args = journalctl_printing(tmp_path, monkeypatch, [
        {**DAEMON_RECORD, "__REALTIME_TIMESTAMP": "1795835045000000", "CCGROUPD_EVENT": "oom_kill",
         "CCGROUPD_ENGINE": "ci", "MESSAGE": "OOM killer killed 1 process"},
        # What a journalctl that ignored the engine match would add: another engine's record,
        # and one of a daemon that predates engine names.
        {**DAEMON_RECORD, "__REALTIME_TIMESTAMP": "1795835046000000", "CCGROUPD_EVENT": "oom_kill",
         "CCGROUPD_ENGINE": "web", "MESSAGE": "not this engine"},
        {**DAEMON_RECORD, "__REALTIME_TIMESTAMP": "1795835047000000", "CCGROUPD_EVENT": "oom_kill",
         "MESSAGE": "no engine named"},
    ])
    assert ctl.main(["--engine", "ci", "events", "-n", "5"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-28 03:04:05 oom_kill       ci: OOM killer killed 1 process"]
    # Matches of different fields are ANDed, of one field ORed: daemon AND (an event) AND ci.
    events = " ".join(f"CCGROUPD_EVENT={name}" for name in VIOLATION_EVENTS)
    assert args.read_text() == ("--no-pager -o json --lines 5 SYSLOG_IDENTIFIER=ccgroupd "
                                f"_SYSTEMD_UNIT=ccgroupd.service _UID=0 {events} "
                                "CCGROUPD_ENGINE=ci\n")
    assert ctl.main(["events", "--engine", "web", "--all", "--json"]) == EXIT_OK
    assert [json.loads(line)["MESSAGE"] for line in capsys.readouterr().out.splitlines()] == [
        "not this engine"]
    assert args.read_text().split()[-1] == "CCGROUPD_ENGINE=web"


def test_events_name_the_engine_of_each_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    journalctl_printing(tmp_path, monkeypatch, [
        {**DAEMON_RECORD, "__REALTIME_TIMESTAMP": "1795835045000000", "CCGROUPD_EVENT": "pids_max",
         "CCGROUPD_ENGINE": name, "MESSAGE": "pids.max reached"} for name in ("ci", "web")])
    assert ctl.main(["events"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-28 03:04:05 pids_max       ci: pids.max reached",
        "2026-11-28 03:04:05 pids_max       web: pids.max reached"]


def test_events_json_passes_records_through(fake_journalctl: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["events", "--json", "--all"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[0])["CCGROUPD_EVENT"] == "oom_kill"
    assert "CCGROUPD_EVENT=limits_changed" in fake_journalctl.read_text()


def test_events_without_journalctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ctl.main(["events"]) == EXIT_FAILURE
    assert "journalctl not found" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "since"), [
    (["events", "--since", "-1h"], "-1h"),  # the README's own example
    (["events", "--since", "-30min", "-n", "5"], "-30min"),
    (["events", "--since", "today"], "today"),
    (["events", "--since=-2d"], "-2d"),
])
def test_since_takes_journalctls_relative_times(argv: list[str], since: str) -> None:
    assert ctl.parse_args(argv).since == since


def test_since_without_a_value_is_still_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        ctl.parse_args(["events", "--since", "--follow"])
    assert caught.value.code == 2
