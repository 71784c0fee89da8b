"""When is the engine ready: its socket accepts a connection, or a probe command exits 0.

The daemon sends READY=1 (and the supervisor calls the engine running) only
after the probe succeeds, so `systemctl start ccgroupd` returning means Dagger
clients can connect. A probe that has not succeeded within its timeout is an
engine that failed to start (``engine_not_ready``), never a silent wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ccgroupd.engine.process import CommandRunner

PROBE_INTERVAL_S = 0.25
# One probe command that hangs must not eat the whole timeout.
PROBE_COMMAND_TIMEOUT_S = 10.0


class NotReadyError(Exception):
    """The probe did not succeed within the timeout; the message says what it saw last."""


@dataclass(frozen=True)
class ReadinessProbe:
    socket_path: Path | None
    command: tuple[str, ...]
    timeout_s: float

    @property
    def description(self) -> str:
        if self.socket_path is not None:
            return f"socket {self.socket_path}"
        return f"command {' '.join(self.command)}"

    async def wait(self, runner: CommandRunner, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
        """Probe until it succeeds; returns the seconds it took, raises NotReadyError."""
        started = clock()
        last_error = "no probe finished"
        while True:
            last_error = await self._probe_once(runner)
            if not last_error:
                return clock() - started
            if clock() - started >= self.timeout_s:
                raise NotReadyError(last_error)
            await sleep(PROBE_INTERVAL_S)

    async def _probe_once(self, runner: CommandRunner) -> str:
        """One attempt: an empty string if ready, else why not."""
        if self.socket_path is not None:
            return await connect_unix(self.socket_path)
        try:
            completed = await runner.run(self.command, PROBE_COMMAND_TIMEOUT_S)
        except TimeoutError:
            return f"{self.command[0]} did not finish within {PROBE_COMMAND_TIMEOUT_S:g} s"
        except OSError as error:
            return f"cannot run {self.command[0]}: {error}"
        if completed.returncode == 0:
            return ""
        return f"{self.command[0]} exited {completed.returncode}: {completed.tail()}"


async def connect_unix(path: Path) -> str:
    """Connect to a unix stream socket and hang up; an empty string, or the error."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, str(path))
    except OSError as error:
        return f"connect {path}: {error.strerror or error}"
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return ""


def probe_from(socket_path: Path | None, command: Sequence[str],
               timeout_s: float) -> ReadinessProbe | None:
    """The configured probe, or None when neither a socket nor a command is set."""
    if socket_path is None and not command:
        return None
    return ReadinessProbe(socket_path, tuple(command), timeout_s)
