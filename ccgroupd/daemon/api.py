"""The daemon's local control API: a Unix stream socket speaking ccgroupd.protocol.

Who may do what is decided per request from the peer's kernel credentials
(SO_PEERCRED), never from the socket file's mode:

- uid 0 may do everything;
- members of ``api.admin_group`` (when configured) may do everything too;
- members of ``api.status_group`` may ask for ``status``;
- everyone else is told "permission denied" (exit code 4).

The socket file is therefore mode 0666: anyone may connect and get a clear
answer, and group membership is checked live (primary gid, the supplementary
groups of the connecting process, and the group database), so adding someone
to the status group needs no daemon restart or chgrp of the socket. The price
of an open socket is that anyone can open connections; that is bounded by a
read timeout, a request size cap and connection caps (in total and per uid;
root is exempt from both caps so an unprivileged user can never lock root out).

Each connection is served in its own asyncio task and carries one request, so
a slow or hostile client costs one idle task and never blocks the event loop
that also runs the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ccgroupd import protocol
from ccgroupd.errors import EXIT_FAILURE, EXIT_PERMISSION, CcgroupdError, CgroupReadError
from ccgroupd.protocol import ProtocolError

if TYPE_CHECKING:
    from ccgroupd.config import ApiSection
    from ccgroupd.kernel.procfs import Procfs

log = structlog.get_logger("ccgroupd")

MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_UID = 8
# Of MAX_CONNECTIONS, this many only for root and members of the admin and status groups:
# users with many uids (a subuid range) must not lock the operators out.
RESERVED_FOR_OPERATORS = 16
# A request that raises where it should not: one traceback per this many seconds.
BUG_LOG_INTERVAL_S = 10.0
SHUTDOWN_GRACE_S = 5.0
SOCKET_MODE = 0o666
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """The connecting process as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int


class Controller(Protocol):
    """What the daemon offers the API; implemented by ccgroupd.daemon.engines.

    ``engine`` names the engine a request is for (None: the only one, or for status
    every engine). Results are JSON-able dicts sent back verbatim; errors are
    CcgroupdError subclasses whose ``exit_code`` and message become the error reply.
    """

    def status(self, engine: str | None = None) -> dict[str, Any]: ...

    def builds(self, engine: str | None = None) -> dict[str, Any]: ...

    async def set_limits(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                         peer: Peer, builds: Mapping[str, object] | None = None,
                         running: bool = False, engine: str | None = None) -> dict[str, Any]: ...

    async def reset(self, peer: Peer, *, force: bool = False,
                    engine: str | None = None) -> dict[str, Any]: ...

    async def reload(self, peer: Peer) -> dict[str, Any]: ...

    async def restart_engine(self, peer: Peer, engine: str | None = None) -> dict[str, Any]: ...


class PermissionDeniedError(CcgroupdError):
    exit_code = EXIT_PERMISSION


class ServerBusyError(CcgroupdError):
    """Too many open connections; the client may retry."""


def peer_credentials(sock: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid=pid, uid=uid, gid=gid)


class Access:
    """Decides from peer credentials whether an operation is allowed."""

    def __init__(self, procfs: Procfs, *, admin_group: str | None,
                 status_group: str | None,
                 getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam,
                 getpwuid: Callable[[int], pwd.struct_passwd] = pwd.getpwuid) -> None:
        self._procfs = procfs
        self.admin_group = admin_group
        self.status_group = status_group
        self._getgrnam = getgrnam
        self._getpwuid = getpwuid

    def needs_lookup(self, peer: Peer) -> bool:
        """Whether ``check`` may consult the group database (which can block on NSS)."""
        return peer.uid != 0

    def check(self, peer: Peer, op: str) -> None:
        if peer.uid == 0:
            return
        if self.admin_group is not None and self._is_member(peer, self.admin_group):
            return
        if op in protocol.READ_OPS:
            if self.status_group is not None and self._is_member(peer, self.status_group):
                return
            groups = [g for g in (self.status_group, self.admin_group) if g is not None]
        else:
            groups = [self.admin_group] if self.admin_group is not None else []
        needs = " or ".join(["root", *(f"membership in group {g!r}" for g in groups)])
        raise PermissionDeniedError(f"permission denied: {op!r} needs {needs} "
                                    f"(you are uid {peer.uid})")

    def is_operator(self, peer: Peer) -> bool:
        """Root, or a member of the admin or the status group."""
        return peer.uid == 0 or any(self._is_member(peer, group)
                                    for group in (self.admin_group, self.status_group)
                                    if group is not None)

    def _is_member(self, peer: Peer, group_name: str) -> bool:
        try:
            group = self._getgrnam(group_name)
        except KeyError:
            return False
        if peer.gid == group.gr_gid:
            return True
        try:
            ids = self._procfs.process_ids(peer.pid)
        except CgroupReadError:
            ids = None  # the client already exited; fall back to the group database
        # A different uid at that pid means the pid was reused: its groups say nothing.
        if ids is not None and ids.uid == peer.uid and group.gr_gid in ids.groups:
            return True
        try:
            user_name = self._getpwuid(peer.uid).pw_name
        except KeyError:
            return False
        return user_name in group.gr_mem


class ApiServer:
    def __init__(self, controller: Controller, access: Access, *, socket_path: Path,
                 max_request_bytes: int, request_timeout_s: float,
                 credentials: Callable[[socket.socket], Peer] = peer_credentials,
                 max_connections: int = MAX_CONNECTIONS,
                 max_connections_per_uid: int = MAX_CONNECTIONS_PER_UID) -> None:
        self._controller = controller
        self._access = access
        self.socket_path = Path(socket_path)
        self._max_request_bytes = max_request_bytes
        self._request_timeout_s = request_timeout_s
        self._credentials = credentials
        self._max_connections = max_connections
        self._max_connections_per_uid = max_connections_per_uid
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._per_uid: Counter[int] = Counter()
        self._bug_log = RateLimit(BUG_LOG_INTERVAL_S)

    @classmethod
    def from_config(cls, controller: Controller, settings: ApiSection,
                    procfs: Procfs) -> ApiServer:
        access = Access(procfs, admin_group=settings.admin_group,
                        status_group=settings.status_group)
        return cls(controller, access, socket_path=settings.socket,
                   max_request_bytes=settings.max_request_bytes,
                   request_timeout_s=settings.request_timeout_s)

    async def start(self) -> None:
        """Bind and listen; raises CcgroupdError if the path is taken by a live daemon or a file."""
        sock = _bind_unix_socket(self.socket_path)
        self._server = await asyncio.start_unix_server(
            self._on_connection, sock=sock, limit=self._max_request_bytes)

    async def close(self) -> None:
        """Stop accepting, give running requests a moment to finish, then cancel them."""
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        if self._clients:
            _done, pending = await asyncio.wait(set(self._clients), timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_unix_server runs each callback in its own task
        try:
            peer = self._credentials(writer.get_extra_info("socket"))
        except OSError:
            writer.transport.abort()
            return
        self._clients.add(task)
        self._per_uid[peer.uid] += 1
        try:
            reply = await self._serve(peer, reader)
            if reply is not None:
                await self._send(writer, reply)
        finally:
            self._clients.discard(task)
            self._per_uid[peer.uid] -= 1
            if not self._per_uid[peer.uid]:
                del self._per_uid[peer.uid]
            writer.close()

    async def _serve(self, peer: Peer, reader: asyncio.StreamReader) -> bytes | None:
        """The reply for this connection, or None to hang up without one."""
        try:
            await self._check_capacity(peer)
            line = await self._read_request(reader)
            if not line.strip():
                return None  # connected and left without asking anything
            return protocol.ok_reply(await self._dispatch(peer, line))
        except CcgroupdError as exc:
            return protocol.error_reply(exc.exit_code, str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        except Exception as exc:
            # A bug in an operation must cost one request, not the daemon, nor flood the
            # journal when a client repeats it: one traceback per interval, the rest counted.
            if self._bug_log.allow(time.monotonic()):
                log.exception("api_request_failed", pid=peer.pid, uid=peer.uid,
                              delta=self._bug_log.take_suppressed())
            return protocol.error_reply(
                EXIT_FAILURE, f"internal error ({type(exc).__name__}: {exc}); "
                "see journalctl -u ccgroupd")

    async def _check_capacity(self, peer: Peer) -> None:
        if peer.uid == 0:
            return
        if len(self._clients) > self._max_connections:
            raise ServerBusyError("busy: too many open connections; try again")
        if self._per_uid[peer.uid] > self._max_connections_per_uid:
            raise ServerBusyError(f"busy: too many open connections from uid {peer.uid}")
        if (len(self._clients) > self._max_connections - RESERVED_FOR_OPERATORS
                and not await asyncio.to_thread(self._access.is_operator, peer)):
            raise ServerBusyError("busy: the remaining connections are kept for operators")

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self._request_timeout_s):
                return await reader.readuntil(b"\n")
        except TimeoutError:
            raise ProtocolError(f"no complete request within {self._request_timeout_s:g} s"
                                ) from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"request longer than {self._max_request_bytes} bytes"
                                ) from None
        except asyncio.IncompleteReadError as exc:
            # The client half-closed: a last line without "\n" is still a request.
            return exc.partial

    async def _dispatch(self, peer: Peer, line: bytes) -> dict[str, Any]:
        message = protocol.decode_object(line, "request")
        op = message.get("op")
        args = message.get("args", {})
        if not isinstance(op, str) or op not in protocol.OPS:
            raise ProtocolError(f"unknown operation {protocol.shown(op)}; expected one of "
                                f"{', '.join(sorted(protocol.OPS))}")
        if not isinstance(args, dict):
            raise ProtocolError("'args' must be a JSON object")
        if self._access.needs_lookup(peer):
            await asyncio.to_thread(self._access.check, peer, op)
        engine = _engine_arg(op, args)
        if op == protocol.OP_STATUS:
            _no_args(op, args)
            return self._controller.status(engine)
        if op == protocol.OP_BUILDS:
            _no_args(op, args)
            return self._controller.builds(engine)
        if op == protocol.OP_SET:
            changes, builds, running, runtime, force = _set_args(args)
            return await self._controller.set_limits(changes, runtime=runtime, force=force,
                                                     peer=peer, builds=builds, running=running,
                                                     engine=engine)
        if op == protocol.OP_RESET:
            return await self._controller.reset(peer, force=_reset_force(args), engine=engine)
        _no_args(op, args)
        if op == protocol.OP_RELOAD:
            return await self._controller.reload(peer)
        if op == protocol.OP_RESTART_ENGINE:
            return await self._controller.restart_engine(peer, engine)
        # An operation named in protocol.OPS that nothing here serves must not fall through
        # to another one (it once restarted the engine).
        raise ProtocolError(f"operation {op!r} is not served by this daemon")

    async def _send(self, writer: asyncio.StreamWriter, reply: bytes) -> None:
        writer.write(reply)
        try:
            async with asyncio.timeout(self._request_timeout_s):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            writer.transport.abort()  # the client is gone or does not read; drop the reply


def _engine_arg(op: str, args: dict[str, Any]) -> str | None:
    """Take 'engine' out of ``args``: the name of the engine the request is for."""
    if "engine" not in args:
        return None
    if op not in protocol.ENGINE_OPS:
        raise ProtocolError(f"{op!r} is for every engine; it takes no 'engine'")
    engine = args.pop("engine")
    if not isinstance(engine, str):
        raise ProtocolError("'engine' must be an engine's name")
    return engine


def _no_args(op: str, args: dict[str, Any]) -> None:
    if args:
        raise ProtocolError(f"{op!r} takes no arguments, got {sorted(args)}")


def _set_args(args: dict[str, Any]
              ) -> tuple[dict[str, object], dict[str, object], bool, bool, bool]:
    unknown = set(args) - protocol.SET_ARGS
    if unknown:
        raise ProtocolError(f"unknown 'set' arguments {sorted(unknown)}")
    changes = args.get("limits", {})
    builds = args.get("builds", {})
    flags = [args.get(name, False) for name in ("running", "runtime", "force")]
    if not isinstance(changes, dict) or not isinstance(builds, dict) or not (changes or builds):
        raise ProtocolError("'set' needs a non-empty 'limits' or 'builds' object")
    if not all(isinstance(flag, bool) for flag in flags):
        raise ProtocolError("'running', 'runtime' and 'force' must be true or false")
    running, runtime, force = flags
    if running and not builds:
        raise ProtocolError("'running' applies 'builds' to the running builds: give 'builds'")
    return changes, builds, running, runtime, force


def _reset_force(args: dict[str, Any]) -> bool:
    unknown = set(args) - protocol.RESET_ARGS
    if unknown:
        raise ProtocolError(f"unknown 'reset' arguments {sorted(unknown)}")
    force = args.get("force", False)
    if not isinstance(force, bool):
        raise ProtocolError("'force' must be true or false")
    return force


def _bind_unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
    except OSError as exc:
        sock.close()
        raise CcgroupdError(f"cannot listen on {path}: {exc}") from exc
    return sock


def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket left by a daemon that died; refuse to take over a live one or a file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CcgroupdError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise CcgroupdError(f"cannot listen on {path}: {exc}") from exc
    else:
        raise CcgroupdError(f"cannot listen on {path}: another ccgroupd is serving it")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class RateLimit:
    """At most one go per interval; what was held back is counted for the next one."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_s = float("-inf")
        self._suppressed = 0

    def allow(self, now_s: float) -> bool:
        if now_s < self._next_s:
            self._suppressed += 1
            return False
        self._next_s = now_s + self._interval_s
        return True

    def take_suppressed(self) -> int:
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
