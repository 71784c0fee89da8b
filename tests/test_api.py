from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import stat
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from ccgroupd import protocol
from ccgroupd.client import ctl
from ccgroupd.daemon.api import (
    RESERVED_FOR_OPERATORS,
    Access,
    ApiServer,
    Peer,
    PermissionDeniedError,
    RateLimit,
    peer_credentials,
)
from ccgroupd.errors import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_PERMISSION,
    EXIT_USAGE,
    CcgroupdError,
    LimitsError,
)
from ccgroupd.kernel.procfs import Procfs

T = TypeVar("T")

ROOT = Peer(pid=4242, uid=0, gid=0)
ALICE = Peer(pid=5000, uid=1000, gid=1000)  # in no ccgroupd group at all
STATUS_GID = 990
ADMIN_GID = 991
GROUPS = {
    "ccgroupd": grp.struct_group(("ccgroupd", "x", STATUS_GID, ["bob"])),
    "ccgroupd-admin": grp.struct_group(("ccgroupd-admin", "x", ADMIN_GID, [])),
}
USERS = {1000: "alice", 1001: "bob", 1002: "carol"}
TIMEOUT_S = 0.3
MAX_REQUEST_BYTES = 1024


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coroutine
    return asyncio.run(bounded())


def getgrnam(name: str) -> grp.struct_group:
    return GROUPS[name]


def getpwuid(uid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((USERS[uid], "x", uid, uid, "", "/", "/bin/sh"))


def write_proc_status(proc_root: Path, pid: int, uid: int, groups: list[int]) -> None:
    (proc_root / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc_root / str(pid) / "status").write_text(
        f"Name:\tccgroupctl\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
        f"Groups:\t{' '.join(map(str, groups))}\n")


def make_access(tmp_path: Path, *, admin_group: str | None = None,
                status_group: str | None = "ccgroupd") -> Access:
    procfs = Procfs(tmp_path / "proc", page_size=4096)
    return Access(procfs, admin_group=admin_group, status_group=status_group,
                  getgrnam=getgrnam, getpwuid=getpwuid)


class FakeController:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.error: Exception | None = None
        self.release: asyncio.Event | None = None

    def status(self, engine: str | None = None) -> dict[str, Any]:
        self.calls.append(("status",) + ((engine,) if engine else ()))
        if self.error is not None:
            raise self.error
        return {"cgroup": {"path": "/sys/fs/cgroup/engine"}}

    def builds(self, engine: str | None = None) -> dict[str, Any]:
        self.calls.append(("builds",) + ((engine,) if engine else ()))
        return {"read_at_s": 1.0, "engine": {}, "builds": []}

    async def set_limits(self, changes: Mapping[str, object], *, runtime: bool, force: bool,
                         peer: Peer, builds: Mapping[str, object] | None = None,
                         running: bool = False, engine: str | None = None) -> dict[str, Any]:
        self.calls.append(("set", dict(changes), runtime, force, peer)
                          + ((dict(builds), running) if builds else ())
                          + ((engine,) if engine else ()))
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return {"in_force": {"cpu.max": "200000 100000"}}

    async def reset(self, peer: Peer, *, force: bool = False,
                    engine: str | None = None) -> dict[str, Any]:
        self.calls.append(("reset --force" if force else "reset", peer)
                          + ((engine,) if engine else ()))
        return {"reset": True}

    async def reload(self, peer: Peer) -> dict[str, Any]:
        self.calls.append(("reload", peer))
        return {"reloaded": True}

    async def restart_engine(self, peer: Peer, engine: str | None = None) -> dict[str, Any]:
        self.calls.append(("restart-engine", peer) + ((engine,) if engine else ()))
        return {"engine": {"state": "running"}}


class Credentials:
    """Stands in for SO_PEERCRED: every connection is ``peer``."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def __call__(self, sock: socket.socket) -> Peer:
        return self.peer


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, controller: FakeController, peer: Peer = ROOT,
                  access: Access | None = None, **options: Any) -> AsyncIterator[ApiServer]:
    settings: dict[str, Any] = {"max_request_bytes": MAX_REQUEST_BYTES,
                                "request_timeout_s": TIMEOUT_S, **options}
    server = ApiServer(controller, access or make_access(tmp_path),
                       socket_path=tmp_path / "run" / "ccgroupd.sock",
                       credentials=Credentials(peer), **settings)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def exchange(path: Path, data: bytes, *, half_close: bool = True) -> dict[str, Any] | None:
    """Send ``data``, read one reply line; None if the server hung up without one."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        line = await reader.readline()
    finally:
        writer.close()
    return json.loads(line) if line else None


async def ask(path: Path, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await exchange(path, protocol.request(op, args))
    assert reply is not None
    return reply


def error_of(reply: dict[str, Any] | None) -> tuple[int, str]:
    assert reply is not None
    assert reply["v"] == protocol.PROTOCOL_VERSION
    assert reply["ok"] is False
    return reply["error"]["code"], reply["error"]["message"]


# -- permissions ---------------------------------------------------------------


@pytest.mark.parametrize(("peer", "proc_groups", "admin_group", "allowed_ops"), [
    # root may do everything, whatever the configuration says
    (ROOT, None, None, protocol.OPS),
    # a user in no group may do nothing
    (ALICE, [], "ccgroupd-admin", frozenset()),
    # status group by primary gid
    (Peer(5001, 1000, STATUS_GID), None, None, protocol.READ_OPS),
    # status group by supplementary group of the connecting process
    (ALICE, [STATUS_GID], None, protocol.READ_OPS),
    # status group by the group database (bob is listed in ccgroupd's members)
    (Peer(5002, 1001, 1001), None, None, protocol.READ_OPS),
    # admin group may change limits and read status
    (ALICE, [ADMIN_GID], "ccgroupd-admin", protocol.OPS),
    # admin group membership means nothing while no admin group is configured
    (ALICE, [ADMIN_GID], None, frozenset()),
])
def test_permission_matrix(tmp_path: Path, peer: Peer, proc_groups: list[int] | None,
                           admin_group: str | None, allowed_ops: frozenset[str]) -> None:
    if proc_groups is not None:
        write_proc_status(tmp_path / "proc", peer.pid, peer.uid, proc_groups)
    access = make_access(tmp_path, admin_group=admin_group)

    for op in sorted(protocol.OPS):
        if op in allowed_ops:
            access.check(peer, op)
        else:
            with pytest.raises(PermissionDeniedError, match=f"permission denied: '{op}'"):
                access.check(peer, op)


def test_reused_pid_does_not_lend_its_groups(tmp_path: Path) -> None:
    # The client exited and root's process with the status group now has its pid.
    write_proc_status(tmp_path / "proc", ALICE.pid, 0, [STATUS_GID])
    with pytest.raises(PermissionDeniedError):
        make_access(tmp_path).check(ALICE, "status")


def test_unreadable_proc_status_falls_back_to_the_group_database(tmp_path: Path) -> None:
    bob = Peer(pid=5002, uid=1001, gid=1001)
    (tmp_path / "proc" / "5002").mkdir(parents=True)
    (tmp_path / "proc" / "5002" / "status").write_text("Name:\tgarbage\n")
    make_access(tmp_path).check(bob, "status")  # bob is in ccgroupd's member list
    with pytest.raises(PermissionDeniedError):
        make_access(tmp_path).check(Peer(pid=5002, uid=1002, gid=1002), "status")


def test_missing_status_group_denies_everyone_but_root(tmp_path: Path) -> None:
    access = make_access(tmp_path, status_group="no-such-group")
    access.check(ROOT, "status")
    with pytest.raises(PermissionDeniedError, match="membership in group 'no-such-group'"):
        access.check(Peer(5002, 1001, 1001), "status")


def test_denied_change_over_the_socket_reaches_no_controller(tmp_path: Path) -> None:
    write_proc_status(tmp_path / "proc", ALICE.pid, ALICE.uid, [STATUS_GID])
    controller = FakeController()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(tmp_path, controller, peer=ALICE) as server:
            denied = await ask(server.socket_path, "set", {"limits": {"cpus": 2}})
            allowed = await ask(server.socket_path, "status")
        return denied, allowed

    denied, allowed = run(scenario())
    code, message = error_of(denied)
    assert code == EXIT_PERMISSION
    assert message.startswith("permission denied: 'set' needs root")
    assert allowed["ok"] is True
    assert controller.calls == [("status",)]


def test_real_peer_credentials_are_the_connecting_process(tmp_path: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == Peer(os.getpid(), os.geteuid(), os.getegid())


# -- operations ----------------------------------------------------------------


def test_each_operation_reaches_the_controller_with_the_peer(tmp_path: Path) -> None:
    controller = FakeController()

    async def scenario() -> list[dict[str, Any]]:
        async with serving(tmp_path, controller) as server:
            return [
                await ask(server.socket_path, "status"),
                await ask(server.socket_path, "set",
                          {"limits": {"cpus": "2", "memory": "512M"}, "runtime": True}),
                await ask(server.socket_path, "reset"),
                await ask(server.socket_path, "reload"),
                await ask(server.socket_path, "restart-engine"),
                await ask(server.socket_path, "builds"),
                await ask(server.socket_path, "set",
                          {"builds": {"memory": "2G"}, "running": True}),
            ]

    replies = run(scenario())
    assert [r["ok"] for r in replies] == [True] * 7
    assert replies[1] == {"v": 1, "ok": True, "result": {"in_force": {"cpu.max": "200000 100000"}}}
    assert controller.calls == [
        ("status",),
        ("set", {"cpus": "2", "memory": "512M"}, True, False, ROOT),
        ("reset", ROOT), ("reload", ROOT), ("restart-engine", ROOT), ("builds",),
        ("set", {}, False, False, ROOT, {"memory": "2G"}, True),
    ]


def test_the_engine_argument_names_the_engine_of_each_operation(tmp_path: Path) -> None:
    controller = FakeController()

    async def scenario() -> list[dict[str, Any]]:
        async with serving(tmp_path, controller) as server:
            return [await ask(server.socket_path, op, {"engine": "ci", **args})
                    for op, args in (("status", {}), ("builds", {}), ("reset", {}),
                                     ("set", {"limits": {"cpus": "2"}}), ("restart-engine", {}))]

    assert [reply["ok"] for reply in run(scenario())] == [True] * 5
    assert controller.calls == [
        ("status", "ci"), ("builds", "ci"), ("reset", ROOT, "ci"),
        ("set", {"cpus": "2"}, False, False, ROOT, "ci"), ("restart-engine", ROOT, "ci")]


def test_refusal_carries_the_error_exit_code_and_message(tmp_path: Path) -> None:
    controller = FakeController()
    controller.error = LimitsError("memory", "512 MiB", "at or below current usage 700 MiB")

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, controller) as server:
            return await ask(server.socket_path, "set", {"limits": {"memory": "512M"}})

    assert error_of(run(scenario())) == (
        EXIT_INVALID, "memory = '512 MiB': at or below current usage 700 MiB")


def test_bug_in_an_operation_costs_one_request_not_the_server(tmp_path: Path) -> None:
    controller = FakeController()
    controller.error = KeyError("oops")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(tmp_path, controller) as server:
            failed = await ask(server.socket_path, "status")
            controller.error = None
            return failed, await ask(server.socket_path, "status")

    with capture_logs() as logs:
        failed, after = run(scenario())
    code, message = error_of(failed)
    assert code == EXIT_FAILURE
    assert "internal error (KeyError" in message
    assert after["ok"] is True
    assert [entry["event"] for entry in logs] == ["api_request_failed"]


@pytest.mark.parametrize(("line", "message"), [
    (b"this is not json\n", "malformed request: not JSON"),
    (b"\xff\xfe\n", "malformed request: not JSON"),
    (b"[1]\n", "expected a JSON object"),
    (b'{"op": "status"}\n', "unsupported protocol version None"),
    (b'{"v": 2, "op": "status"}\n', "unsupported protocol version 2"),
    (b'{"v": 1, "op": "format-disk"}\n', "unknown operation 'format-disk'"),
    (b'{"v": 1, "op": []}\n', "unknown operation []"),
    (b'{"v": 1, "op": {"a": 1}}\n', "unknown operation {'a': 1}"),
    (b'{"v": "' + b"x" * 200 + b'", "op": "status"}\n', "unsupported protocol version 'xxx"),
    (b'{"v": 1, "op": "status", "args": []}\n', "'args' must be a JSON object"),
    (b'{"v": 1, "op": "status", "args": {"x": 1}}\n', "'status' takes no arguments"),
    (b'{"v": 1, "op": "set", "args": {}}\n', "needs a non-empty 'limits' or 'builds' object"),
    (b'{"v": 1, "op": "set", "args": {"limits": {"cpus": 1}, "running": true}}\n',
     "'running' applies 'builds' to the running builds"),
    (b'{"v": 1, "op": "set", "args": {"limits": {"cpus": 1}, "force": "yes"}}\n',
     "must be true or false"),
    (b'{"v": 1, "op": "set", "args": {"limits": {"cpus": 1}, "dry": true}}\n',
     "unknown 'set' arguments ['dry']"),
    (b'{"v": 1, "op": "reload", "args": {"engine": "ci"}}\n',
     "'reload' is for every engine; it takes no 'engine'"),
    (b'{"v": 1, "op": "status", "args": {"engine": 1}}\n', "'engine' must be an engine's name"),
])
def test_protocol_errors_get_a_usage_error_reply(tmp_path: Path, line: bytes,
                                                 message: str) -> None:
    controller = FakeController()

    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, controller) as server:
            return await exchange(server.socket_path, line)

    with capture_logs() as logs:
        code, text = error_of(run(scenario()))
    assert code == EXIT_USAGE
    assert message in text
    assert len(text) < 300  # no request echoed back whole
    assert controller.calls == []
    assert logs == []  # a client's mistake is not the daemon's news


def test_an_operation_the_server_does_not_serve_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A name added to the protocol before the server serves it once fell through to
    # restart-engine.
    monkeypatch.setattr(protocol, "OPS", protocol.OPS | {"future-op"})
    monkeypatch.setattr(protocol, "READ_OPS", protocol.READ_OPS | {"future-op"})
    controller = FakeController()

    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, controller) as server:
            return await exchange(server.socket_path, b'{"v": 1, "op": "future-op"}\n')

    code, text = error_of(run(scenario()))
    assert code == EXIT_USAGE and "'future-op' is not served" in text
    assert controller.calls == []


def test_oversized_request_is_refused(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, FakeController()) as server:
            return await exchange(server.socket_path, b"x" * (MAX_REQUEST_BYTES * 4) + b"\n")

    code, message = error_of(run(scenario()))
    assert (code, message) == (EXIT_USAGE, f"request longer than {MAX_REQUEST_BYTES} bytes")


def test_silent_client_is_answered_with_a_timeout_and_dropped(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, Any] | None, float]:
        async with serving(tmp_path, FakeController()) as server:
            started = time.monotonic()
            reply = await exchange(server.socket_path, b"", half_close=False)
            return reply, time.monotonic() - started

    reply, elapsed_s = run(scenario())
    assert error_of(reply) == (EXIT_USAGE, f"no complete request within {TIMEOUT_S:g} s")
    assert TIMEOUT_S <= elapsed_s < TIMEOUT_S + 1


def test_half_closed_request_without_newline_is_still_answered(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, FakeController()) as server:
            return await exchange(server.socket_path, protocol.request("status").rstrip(b"\n"))

    assert run(scenario()) == {"v": 1, "ok": True,
                               "result": {"cgroup": {"path": "/sys/fs/cgroup/engine"}}}


def test_client_that_half_closes_without_asking_is_dropped_without_reply(
        tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, FakeController()) as server:
            return await exchange(server.socket_path, b"")

    assert run(scenario()) is None


def test_hostile_clients_do_not_delay_status(tmp_path: Path) -> None:
    """Garbage, a 10 MB line and silent clients at once; status still answers at once."""
    async def flood(path: Path) -> None:
        with contextlib.suppress(ConnectionError):
            await exchange(path, b"\x00garbage" * 1000 + b"\n")

    async def huge(path: Path) -> None:
        with contextlib.suppress(ConnectionError):
            await exchange(path, b"{" * (10 * 1024**2))

    async def scenario() -> tuple[dict[str, Any], float]:
        async with serving(tmp_path, FakeController(), request_timeout_s=5.0) as server:
            path = server.socket_path
            silent = [await asyncio.open_unix_connection(os.fspath(path)) for _ in range(10)]
            hostile = [asyncio.create_task(flood(path)), asyncio.create_task(huge(path))]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            reply = await ask(path, "status")
            elapsed_s = time.monotonic() - started
            await asyncio.gather(*hostile)
            for _reader, writer in silent:
                writer.close()
            return reply, elapsed_s

    reply, elapsed_s = run(scenario())
    assert reply["ok"] is True
    assert elapsed_s < 1.0


def test_slow_operation_does_not_block_status(tmp_path: Path) -> None:
    controller = FakeController()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        controller.release = asyncio.Event()
        async with serving(tmp_path, controller) as server:
            pending = asyncio.create_task(ask(server.socket_path, "set",
                                              {"limits": {"memory": "1G"}}))
            status = await ask(server.socket_path, "status")
            controller.release.set()
            return status, await pending

    status, changed = run(scenario())
    assert status["ok"] is True
    assert changed["ok"] is True


def test_deeply_nested_args_get_a_usage_error_and_no_log(tmp_path: Path) -> None:
    depth = 20_000
    line = b'{"v": 1, "op": "status", "args": ' + b"[" * depth + b"]" * depth + b"}\n"

    async def scenario() -> dict[str, Any] | None:
        async with serving(tmp_path, FakeController(), max_request_bytes=65536) as server:
            return await exchange(server.socket_path, line)

    with capture_logs() as logs:
        code, text = error_of(run(scenario()))
    assert (code, text) == (EXIT_USAGE, "malformed request: nested too deeply")
    assert logs == []


def test_a_repeated_bug_is_logged_once_per_interval(tmp_path: Path) -> None:
    controller = FakeController()
    controller.error = KeyError("oops")

    async def scenario() -> list[dict[str, Any]]:
        async with serving(tmp_path, controller) as server:
            return [await ask(server.socket_path, "status") for _ in range(20)]

    with capture_logs() as logs:
        replies = run(scenario())
    assert all(reply["ok"] is False for reply in replies)
    assert [entry["event"] for entry in logs] == ["api_request_failed"]


def test_rate_limit_counts_what_it_held_back() -> None:
    limit = RateLimit(10.0)
    assert limit.allow(100.0) is True
    assert [limit.allow(t) for t in (101.0, 105.0, 109.9)] == [False, False, False]
    assert limit.allow(110.0) is True
    assert limit.take_suppressed() == 3
    assert limit.take_suppressed() == 0


class Peers:
    """Stands in for SO_PEERCRED: each connection is the next peer of a list."""

    def __init__(self, peers: list[Peer]) -> None:
        self._peers = iter(peers)

    def __call__(self, sock: socket.socket) -> Peer:
        return next(self._peers)


def test_many_uids_cannot_take_the_connections_kept_for_operators(tmp_path: Path) -> None:
    controller = FakeController()
    write_proc_status(tmp_path / "proc", ALICE.pid, ALICE.uid, [STATUS_GID])
    subuids = [Peer(pid=6000 + n, uid=100000 + n, gid=100000 + n) for n in range(4)]
    max_connections = RESERVED_FOR_OPERATORS + 2

    async def scenario() -> tuple[list[dict[str, Any] | None], dict[str, Any] | None]:
        server = ApiServer(controller, make_access(tmp_path),
                           socket_path=tmp_path / "run" / "ccgroupd.sock",
                           max_request_bytes=MAX_REQUEST_BYTES, request_timeout_s=TIMEOUT_S,
                           credentials=Peers([*subuids, ALICE]),
                           max_connections=max_connections)
        await server.start()
        try:
            held = []
            for _ in subuids:
                held.append(await asyncio.open_unix_connection(os.fspath(server.socket_path)))
                await asyncio.sleep(0.05)
            refused = [await _reply_or_none(reader) for reader, _ in held[2:]]
            operator = await exchange(server.socket_path, protocol.request("status"))
            for _reader, writer in held:
                writer.close()
            return refused, operator
        finally:
            await server.close()

    refused, operator = run(scenario())
    assert [error_of(reply)[1] for reply in refused] == [
        "busy: the remaining connections are kept for operators"] * 2
    assert operator is not None and operator["ok"] is True  # a member of the status group


async def _reply_or_none(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
    return json.loads(line) if line else None


def test_connection_cap_per_uid_spares_root(tmp_path: Path) -> None:
    controller = FakeController()
    write_proc_status(tmp_path / "proc", ALICE.pid, ALICE.uid, [STATUS_GID])

    async def scenario(peer: Peer) -> dict[str, Any] | None:
        async with serving(tmp_path, controller, peer=peer, max_connections_per_uid=2) as server:
            held = [await asyncio.open_unix_connection(os.fspath(server.socket_path))
                    for _ in range(2)]
            await asyncio.sleep(0.05)
            reply = await exchange(server.socket_path, protocol.request("status"))
            for _reader, writer in held:
                writer.close()
            return reply

    code, message = error_of(run(scenario(ALICE)))
    assert code == EXIT_FAILURE
    assert message == "busy: too many open connections from uid 1000"
    assert run(scenario(ROOT)) == {"v": 1, "ok": True,
                                   "result": {"cgroup": {"path": "/sys/fs/cgroup/engine"}}}


# -- the socket file -----------------------------------------------------------


def test_socket_is_world_connectable_and_removed_on_close(tmp_path: Path) -> None:
    async def scenario() -> int:
        async with serving(tmp_path, FakeController()) as server:
            return stat.S_IMODE(os.stat(server.socket_path).st_mode)

    assert run(scenario()) == 0o666
    assert not (tmp_path / "run" / "ccgroupd.sock").exists()


def test_stale_socket_from_a_dead_daemon_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ccgroupd.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(os.fspath(path))  # bound, never listening: connect is refused

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, FakeController()) as server:
            return await ask(server.socket_path, "status")

    assert run(scenario())["ok"] is True


def test_live_daemon_socket_is_not_taken_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, FakeController()):
            second = ApiServer(FakeController(), make_access(tmp_path),
                               socket_path=tmp_path / "run" / "ccgroupd.sock",
                               max_request_bytes=MAX_REQUEST_BYTES, request_timeout_s=TIMEOUT_S)
            with pytest.raises(CcgroupdError, match="another ccgroupd is serving it"):
                await second.start()

    run(scenario())


def test_regular_file_at_the_socket_path_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ccgroupd.sock"
    path.parent.mkdir()
    path.write_text("precious")

    async def scenario() -> None:
        async with serving(tmp_path, FakeController()):
            pass

    with pytest.raises(CcgroupdError, match="exists and is not a socket"):
        run(scenario())
    assert path.read_text() == "precious"


# -- ccgroupctl against the real server ---------------------------------------------


def test_ccgroupctl_and_the_server_speak_the_same_protocol(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    controller = FakeController()

    async def scenario() -> list[int]:
        async with serving(tmp_path, controller) as server:
            socket_option = ["--socket", str(server.socket_path)]
            return [
                await asyncio.to_thread(ctl.main, [*socket_option, "set", "--cpus", "2",
                                                   "--runtime"]),
                await asyncio.to_thread(ctl.main, [*socket_option, "status", "--json"]),
            ]

    assert run(scenario()) == [0, 0]
    assert controller.calls == [("set", {"cpus": "2"}, True, False, ROOT), ("status",)]
    assert capsys.readouterr().out.endswith(
        '{\n  "cgroup": {\n    "path": "/sys/fs/cgroup/engine"\n  }\n}\n')
