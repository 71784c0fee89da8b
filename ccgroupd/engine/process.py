"""The one seam through which ccgroupd starts processes and signals the engine.

Two kinds of process, two protocols: the engine (a long-lived child that the supervisor
waits on and signals: :class:`ProcessSpawner`) and helper commands run to their end
(``docker info``, ``docker rm``, a readiness probe: :class:`CommandRunner`). Nothing
else in ccgroupd spawns a process or calls os.kill on the engine, so tests replace
either with a double and drive exits, signals, hangs and replies by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ProcessHandle(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or minus the signal number (as subprocess)."""

    async def wait(self) -> int: ...

    def send_signal(self, signum: int) -> None:
        """Signal the process; does nothing once it has exited."""


@dataclass(frozen=True)
class Completed:
    """A helper command's outcome (``docker info``, ``docker rm``, a readiness probe)."""

    returncode: int  # minus the signal number if killed, as subprocess
    output: str  # stdout and stderr together, stripped

    def tail(self, lines: int = 3) -> str:
        """The last lines of the output, on one line, for an error message."""
        return " / ".join(self.output.splitlines()[-lines:])


class ProcessSpawner(Protocol):
    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> ProcessHandle:
        """Start ``argv``; raises OSError when it cannot be started."""


class CommandRunner(Protocol):
    async def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        """Run a short helper command to its end; raises OSError when it cannot be started
        and TimeoutError (after killing it) when it takes longer than ``timeout_s``."""


class _AsyncioProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def send_signal(self, signum: int) -> None:
        # The pid is still ours until asyncio reaps it, so this cannot hit a reused pid;
        # ProcessLookupError only means it exited between our check and the kill.
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signum)


class AsyncioSpawner:
    """The real ProcessSpawner and CommandRunner: asyncio.create_subprocess_exec in a
    session of its own.

    A new session keeps a terminal's Ctrl-C (a signal to the whole foreground
    process group) from reaching the engine behind the daemon's back: the daemon
    decides how the engine is stopped. stdin is /dev/null; stdout and stderr are
    inherited, so under systemd the engine's output lands in the journal.
    """

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> ProcessHandle:
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)
        return _AsyncioProcess(process)

    async def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return Completed(process.returncode, output.decode(errors="replace").strip())
