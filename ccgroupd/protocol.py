"""The ccgroupd control protocol, shared by the server (api.py) and ccgroupctl (ctl.py).

Kept to the standard library's C parts so that ccgroupctl can import it without
paying for asyncio, pydantic or even the json package (see below) at start-up.

Wire format: one request per connection, one JSON object per line (UTF-8, ending
in "\\n"), answered by one reply line, after which the server closes.

    request  {"v": 1, "op": "status" | "builds" | "set" | "reset" | "reload"
              | "restart-engine", "args": {...}}
    reply    {"v": 1, "ok": true,  "result": {...}}
             {"v": 1, "ok": false, "error": {"code": <exit code>, "message": "one line"}}

`set` takes ``{"limits": {<LIMIT_NAMES key>: value, ...}, "builds": {<LIMIT_NAMES key>:
value, ...}, "running": bool, "runtime": bool, "force": bool}`` (``limits`` for the engine,
``builds`` for the default limits of each build, at least one of them; ``running``: apply
``builds`` to the running builds too); values are what the config file accepts ("8G", 4,
2.5, "max"). `builds` (read-only, like `status`) answers with the engine's and each running
build's usage and limits, for ``ccgroupctl top``.
`reset` takes ``{"force": bool}``, the other operations ``{}``. ``code`` is one of the
exit codes in ccgroupd.errors, so ccgroupctl exits with it unchanged.
"""

from __future__ import annotations

from ccgroupd.errors import EXIT_USAGE, CcgroupdError

TYPE_CHECKING = False  # typing costs start-up time; see ccgroupd.client.ctl
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_SOCKET_PATH = "/run/ccgroupd/ccgroupd.sock"

OP_STATUS = "status"
OP_BUILDS = "builds"
OP_SET = "set"
OP_RESET = "reset"
OP_RELOAD = "reload"
OP_RESTART_ENGINE = "restart-engine"
CHANGING_OPS = frozenset({OP_SET, OP_RESET, OP_RELOAD, OP_RESTART_ENGINE})
READ_OPS = frozenset({OP_STATUS, OP_BUILDS})
OPS = frozenset({*READ_OPS, *CHANGING_OPS})
# The operations for one engine, named by args "engine" (optional with one engine).
ENGINE_OPS = frozenset({OP_STATUS, OP_BUILDS, OP_SET, OP_RESET, OP_RESTART_ENGINE})

SET_ARGS = frozenset({"limits", "builds", "running", "runtime", "force"})
RESET_ARGS = frozenset({"force"})


class ProtocolError(CcgroupdError):
    """A request or reply that does not follow the protocol."""

    exit_code = EXIT_USAGE


# The json package is the C functions of _json plus Python around them that imports re,
# which was ~120 ms of ccgroupctl's start in the emulated guest (-X importtime): more
# than all the rest of the client. json.dumps(separators=(",", ":")) and json.loads run
# the same C code with the same settings (tests/test_protocol.py compares them).
_JSON_SPACE = " \t\n\r"
_JSON_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _DecoderSettings:
    """What _json.make_scanner reads from a json.JSONDecoder: json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _JSON_CONSTANTS.__getitem__


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _private_codec() -> tuple[Any, Any] | None:
    """The C scanner and encoder, or None where this Python has no such private _json
    (another implementation, or a CPython that changed it): then the public json."""
    try:
        import _json

        # typeshed's stub asks for a make_scanner; the C code reads the attributes above.
        scan = _json.make_scanner(_DecoderSettings())  # type: ignore[arg-type]
        # Arguments: circular-reference markers (none: messages are trees), default,
        # string encoder (ASCII, as ensure_ascii), indent, key and item separators,
        # sort_keys, skipkeys, allow_nan.
        encoder = _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii,
                                     None, ":", ",", False, False, True)
        if "".join(encoder({"v": [1]}, 0)) != '{"v":[1]}' or scan("[1]", 0) != ([1], 3):
            return None
    except (ImportError, AttributeError, TypeError, ValueError, StopIteration):
        return None
    return scan, encoder


_CODEC = _private_codec()


def encode(message: dict[str, Any]) -> bytes:
    if _CODEC is None:
        import json

        return json.dumps(message, separators=(",", ":")).encode() + b"\n"
    return "".join(_CODEC[1](message, 0)).encode() + b"\n"


def loads(text: str) -> object:
    """json.loads for a str; raises ValueError (JSONDecodeError is one) on anything else."""
    if _CODEC is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _CODEC[0](text, start)
    except StopIteration as exc:
        raise ValueError(f"expecting a value at character {exc.value}") from None
    rest = text[end:].lstrip(_JSON_SPACE)
    if rest:
        raise ValueError(f"extra data at character {len(text) - len(rest)}")
    return value


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
        message = loads(line.decode())
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise ProtocolError(f"malformed {what}: not JSON ({exc})") from None
    except RecursionError:
        raise ProtocolError(f"malformed {what}: nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"malformed {what}: expected a JSON object")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {shown(message.get('v'))} in {what}; "
                            f"this side speaks version {PROTOCOL_VERSION}")
    return message


def shown(value: object, limit: int = 40) -> str:
    """repr(value), cut short: an error reply must not echo a whole request back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
