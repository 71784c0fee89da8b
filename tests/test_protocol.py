from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ccgroupd import protocol
from ccgroupd.errors import EXIT_UNREACHABLE

# Values of every JSON kind, with the awkward cases: escapes, non-ASCII, surrogates,
# big and negative numbers, floats that print in exponent form, NaN and infinities
# (json.dumps writes them by default), nesting, empty containers.
MESSAGES: list[dict[str, object]] = [
    {},
    {"v": 1, "op": "set", "args": {"limits": {"memory": "8G", "cpus": 2.5}, "runtime": False,
                                   "force": True}},
    {"text": "quote \" backslash \\ newline \n tab \t nul \0 bell \a", "é": "ünïcødé ☃ 𝄞"},
    {"surrogate": "\ud800", "numbers": [0, -1, 2**63, -(2**70), 1e-7, 1.5e300, -0.0, 0.1]},
    {"special": [math.inf, -math.inf], "none": None, "nested": [[{"a": []}], {}]},
]


@pytest.mark.parametrize("message", MESSAGES)
def test_encode_is_json_dumps_compact(message: dict[str, object]) -> None:
    assert protocol.encode(message) == (
        json.dumps(message, separators=(",", ":")).encode() + b"\n")


@pytest.mark.parametrize("message", MESSAGES)
def test_loads_reads_back_what_json_loads_reads(message: dict[str, object]) -> None:
    for text in (json.dumps(message), json.dumps(message, indent=2, ensure_ascii=False),
                 f" \t\r\n{json.dumps(message)}\r\n "):
        assert repr(protocol.loads(text)) == repr(json.loads(text))


def test_nan_round_trips_as_json_does() -> None:
    assert math.isnan(protocol.loads(protocol.encode({"x": math.nan}).decode())["x"])  # type: ignore[index]


def test_encode_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        protocol.encode({"x": {1}})


@pytest.mark.parametrize("text", [
    "", "   ", "{", '{"a": 1} {"b": 2}', '{"a": 1}x', "[1,]", '{"a": tru}', "'single'",
    '{"a": "\x01"}', '{"a": 01}', "NaNa",
])
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        protocol.loads(text)


@pytest.mark.parametrize(("line", "message"), [
    (b"\xff\xfe{}", "malformed reply: not JSON"),
    (b"[1, 2]", "malformed reply: expected a JSON object"),
    (b'{"v": 1} trailing', "malformed reply: not JSON (extra data at character 9)"),
    (b"", "malformed reply: not JSON (expecting a value at character 0)"),
    (b'{"v": 2}', "unsupported protocol version 2 in reply"),
])
def test_decode_object_names_what_is_wrong(line: bytes, message: str) -> None:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode_object(line, "reply")
    assert str(caught.value).startswith(message)


def test_request_round_trip() -> None:
    line = protocol.request(protocol.OP_SET, {"limits": {"cpus": "4"}, "runtime": True})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode_object(line.rstrip(b"\n"), "request") == {
        "v": 1, "op": "set", "args": {"limits": {"cpus": "4"}, "runtime": True}}


FALLBACK_CHECK = """
import socket, sys, types
sys.modules["_json"] = None  # this Python has no private _json
sys.modules["_socket"] = types.ModuleType("_socket")  # or one without what ctl uses
from ccgroupd import protocol
from ccgroupd.client import ctl
assert protocol._CODEC is None, "the private codec was used"
assert ctl._SOCKETS is socket, "the private socket module was used"
message = {"v": 1, "op": "status", "args": {"x": [1.5, None, "é"]}}
line = protocol.encode(message)
assert line == __import__("json").dumps(message, separators=(",", ":")).encode() + b"\\n", line
assert protocol.decode_object(line, "request") == message
sys.exit(ctl.main(["--socket", "/nonexistent/ccgroupd.sock", "status"]))
"""


def test_without_the_private_modules_the_public_ones_serve() -> None:
    result = subprocess.run([sys.executable, "-c", FALLBACK_CHECK],
                            capture_output=True, text=True, check=False)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert "cannot reach ccgroupd at /nonexistent/ccgroupd.sock" in result.stderr


def test_with_the_private_modules_they_are_used() -> None:
    assert protocol._CODEC is not None
    from ccgroupd.client import ctl

    assert ctl._SOCKETS.__name__ == "_socket"
