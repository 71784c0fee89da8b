"""The ccgroupd control protocol, shared by the server (api.py) and ccgroupctl (ctl.py).

Kept to the standard library's json so that ccgroupctl can import it without
paying for asyncio or pydantic at start-up.

Wire format: one request per connection, one JSON object per line (UTF-8, ending
in "\\n"), answered by one reply line, after which the server closes.

    request  {"v": 1, "op": "status" | "set" | "reset" | "reload" | "restart-engine",
              "args": {...}}
    reply    {"v": 1, "ok": true,  "result": {...}}
             {"v": 1, "ok": false, "error": {"code": <exit code>, "message": "one line"}}

`set` takes ``{"limits": {<LIMIT_NAMES key>: value, ...}, "runtime": bool,
"force": bool}``; values are what the config file accepts ("8G", 4, 2.5, "max").
The other operations take ``{}``. ``code`` is one of the exit codes in
ccgroupd.errors, so ccgroupctl exits with it unchanged.
"""

from __future__ import annotations

import json

from ccgroupd.errors import EXIT_USAGE, CcgroupdError

TYPE_CHECKING = False  # typing costs start-up time; see ccgroupd.ctl
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_SOCKET_PATH = "/run/ccgroupd/ccgroupd.sock"

OP_STATUS = "status"
OP_SET = "set"
OP_RESET = "reset"
OP_RELOAD = "reload"
OP_RESTART_ENGINE = "restart-engine"
CHANGING_OPS = frozenset({OP_SET, OP_RESET, OP_RELOAD, OP_RESTART_ENGINE})
OPS = frozenset({OP_STATUS, *CHANGING_OPS})

SET_ARGS = frozenset({"limits", "runtime", "force"})


class ProtocolError(CcgroupdError):
    """A request or reply that does not follow the protocol."""

    exit_code = EXIT_USAGE


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "op": op, "args": args or {}})


def ok_reply(result: dict[str, Any]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "ok": True, "result": result})


def error_reply(code: int, message: str) -> bytes:
    # One line on the wire and on the operator's terminal, whatever the message held.
    line = " ".join(message.split())
    return encode({"v": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": line}})


def decode_object(line: bytes, what: str) -> dict[str, Any]:
    """Parse one line into a JSON object carrying our protocol version."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed {what}: not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"malformed {what}: expected a JSON object")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} in {what}; "
                            f"this side speaks version {PROTOCOL_VERSION}")
    return message
