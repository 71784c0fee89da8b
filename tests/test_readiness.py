"""The readiness probe: a unix socket that accepts a connection, or a command that exits 0,
retried until its timeout. The clock and sleep are fakes; the socket is a real one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccgroupd.engine.process import Completed
from ccgroupd.engine.readiness import (
    PROBE_COMMAND_TIMEOUT_S,
    PROBE_INTERVAL_S,
    NotReadyError,
    ReadinessProbe,
    probe_from,
)
from doubles import FakeTime, ScriptedCommands

PROBE = ("probe-engine", "--quiet")


def wait(probe: ReadinessProbe, runner: ScriptedCommands | None = None,
         time: FakeTime | None = None) -> float:
    time = time or FakeTime(500.0)
    return asyncio.run(probe.wait(runner or ScriptedCommands(), clock=time.clock,
                                  sleep=time.sleep))


def socket_probe(path: Path, timeout_s: float = 1.0) -> ReadinessProbe:
    return ReadinessProbe(path, (), timeout_s)


def command_probe(timeout_s: float = 1.0) -> ReadinessProbe:
    return ReadinessProbe(None, PROBE, timeout_s)


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "engine.sock"


@pytest.fixture
def listening(socket_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(socket_path))
        server.listen(1)
        yield server


# -- socket ----------------------------------------------------------------------------


def test_a_listening_unix_socket_is_ready_at_the_first_try(
        socket_path: Path, listening: socket.socket) -> None:
    time = FakeTime(500.0)
    assert wait(socket_probe(socket_path), time=time) == 0
    assert time.sleeps == []
    listening.settimeout(5)
    connection, _ = listening.accept()  # the probe really connected
    connection.close()


def test_a_path_with_no_socket_is_not_ready_after_the_timeout(socket_path: Path) -> None:
    time = FakeTime(500.0)
    with pytest.raises(NotReadyError) as raised:
        wait(socket_probe(socket_path, timeout_s=1.0), time=time)
    assert str(socket_path) in str(raised.value)
    assert "No such file" in str(raised.value)
    # Tried at 0, 0.25, 0.5, 0.75 and 1.0 s: gave up at the timeout, not before.
    assert time.sleeps == [PROBE_INTERVAL_S] * 4
    assert time.now - 500.0 == pytest.approx(1.0)


def test_a_socket_file_nobody_listens_on_is_not_ready(socket_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(socket_path))  # the file exists, but nobody called listen()
        with pytest.raises(NotReadyError, match="refused") as raised:
            wait(socket_probe(socket_path, timeout_s=0.5))
    assert f"connect {socket_path}" in str(raised.value)


# -- command ---------------------------------------------------------------------------


def test_a_command_that_exits_0_is_ready() -> None:
    runner = ScriptedCommands(otherwise=[Completed(0, "ok")])
    assert wait(command_probe(), runner) == 0
    assert runner.calls == [(PROBE, PROBE_COMMAND_TIMEOUT_S)]


def test_a_command_that_fails_once_is_ready_at_the_second_try() -> None:
    runner = ScriptedCommands(otherwise=[Completed(1, "not yet"), Completed(0, "")])
    time = FakeTime(500.0)
    assert wait(command_probe(), runner, time) == PROBE_INTERVAL_S
    assert len(runner.calls) == 2
    assert time.sleeps == [PROBE_INTERVAL_S]


@pytest.mark.parametrize(("reply", "expected"), [
    (Completed(3, "a\nb\nc\nd: connection refused"),
     "probe-engine exited 3: b / c / d: connection refused"),
    (TimeoutError(), f"probe-engine did not finish within {PROBE_COMMAND_TIMEOUT_S:g} s"),
    (FileNotFoundError(2, "No such file or directory", "probe-engine"),
     "cannot run probe-engine: [Errno 2] No such file or directory"),
])
def test_a_command_that_never_succeeds_says_why_in_the_error(
        reply: Completed | Exception, expected: str) -> None:
    runner = ScriptedCommands(otherwise=[reply])
    with pytest.raises(NotReadyError) as raised:
        wait(command_probe(timeout_s=0.5), runner)
    assert expected in str(raised.value)
    assert len(runner.calls) == 3  # at 0, 0.25 and 0.5 s


def test_an_error_before_a_success_is_forgotten() -> None:
    runner = ScriptedCommands(otherwise=[TimeoutError(), OSError(8, "Exec format error"),
                                         Completed(0, "")])
    assert wait(command_probe(), runner) == 2 * PROBE_INTERVAL_S


# -- configuration -----------------------------------------------------------------------


def test_probe_from_needs_a_socket_or_a_command() -> None:
    assert probe_from(None, [], 120) is None


def test_probe_from_describes_what_it_probes(socket_path: Path) -> None:
    by_socket = probe_from(socket_path, [], 30)
    assert by_socket == ReadinessProbe(socket_path, (), 30)
    assert by_socket.description == f"socket {socket_path}"
    by_command = probe_from(None, list(PROBE), 30)
    assert by_command == ReadinessProbe(None, PROBE, 30)
    assert by_command.description == "command probe-engine --quiet"
