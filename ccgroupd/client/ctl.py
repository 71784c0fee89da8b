"""`ccgroupctl`: change and inspect the limits of a running ccgroupd.

Start-up cost matters (operators script it in loops, and it is measured
against `python3 -c pass`): at module level this imports only _socket and
ccgroupd modules that need nothing heavier (protocol, on the json package's C
half; values, the rules the daemon's pydantic model calls, without pydantic;
client.options, the command-line tables). argparse (see quick_parse), json and
anything heavier are imported inside the one command that needs them.
tests/bench/host-cli.py times this start against `python3 -I -S -c pass` and
reports a MISS when it grows.
"""

from __future__ import annotations

import os
import sys

from ccgroupd import protocol
from ccgroupd.client.options import (
    BUILD_SET_OPTIONS,
    COMMAND_FLAGS,
    DAEMON_UNIT,
    DEFAULT_TIMEOUT_S,
    ENGINE_COMMANDS,
    ENGINE_OPTION,
    SET_OPTIONS,
    START_HINT,
    default_socket_path,
)
from ccgroupd.enginenames import (
    ENGINE_JOURNAL_FIELD,
    ENGINE_NAME_PATTERN,
    MAX_ENGINE_NAME_LENGTH,
    is_engine_name,
)
from ccgroupd.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CcgroupdError,
    CtlError,
    LimitsError,
)
from ccgroupd.values import check_values, describe_limit_value, format_bytes

# `typing` is not free at start-up (about 20% of this module's import time in the
# guest): the names below are for annotations only, which are never evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

def _sockets() -> Any:
    """_socket, the C half of `socket` (see call()); `socket` where it is not usable."""
    try:
        import _socket

        for name in ("socket", "AF_UNIX", "SOCK_STREAM", "SHUT_WR"):
            getattr(_socket, name)
    except (ImportError, AttributeError):
        import socket

        return socket
    return _socket


_SOCKETS = _sockets()
MAX_REPLY_BYTES = 16 * 1024**2


class Arguments:
    """The parsed command line: what argparse's Namespace would hold."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # as typeshed types argparse.Namespace
        def __getattr__(self, name: str) -> Any: ...


def quick_parse(argv: Sequence[str]) -> Arguments | None:
    """The command lines people script, parsed as argparse would, without importing it.

    argparse (with re, enum and gettext) was over half of ccgroupctl's start-up time
    in the emulated guest. This reads `[--socket P] [--timeout S] [--engine N] COMMAND
    [OPTION...]` for the commands in COMMAND_FLAGS (--engine after the command too, for
    those in ENGINE_COMMANDS) and returns None for anything else: help, --version,
    `events`, a mistake. ccgroupd.client.argparser's argparse parser then reads it and
    writes the help or the error. tests/test_ctl.py checks that both parsers agree on
    every command line this one accepts.
    """
    values: dict[str, Any] = {"socket": default_socket_path(), "timeout": None, "engine": None}
    value_options: dict[str, str] = {"--socket": "socket", "--timeout": "timeout",
                                     ENGINE_OPTION: "engine"}
    flags: dict[str, str] = {}
    tokens = iter(argv)
    for token in tokens:
        if "command" not in values and token in COMMAND_FLAGS:
            values["command"] = token
            value_options = ({**{option: name for name, (option, _) in SET_OPTIONS.items()},
                              **dict(BUILD_SET_OPTIONS.values())}
                             if token == protocol.OP_SET else {})
            flags = {option: option[2:] for option in ("--json", *COMMAND_FLAGS[token])}
            values.update(dict.fromkeys(value_options.values()))
            values.update(dict.fromkeys(flags.values(), False))
            if token in ENGINE_COMMANDS:  # after the command too; the last one given counts
                value_options[ENGINE_OPTION] = "engine"
            continue
        option, equals, value = token.partition("=")
        if token in flags:
            values[flags[token]] = True
            continue
        if option not in value_options:
            return None
        if not equals:
            value = next(tokens, "-")
            if value.startswith("-"):  # argparse reads some of these as values, some not
                return None
        if option == "--timeout":
            try:
                values["timeout"] = float(value)  # argparse's type=float
            except ValueError:
                return None
        else:
            values[value_options[option]] = value
    return Arguments(**values) if "command" in values else None


def parse_args(argv: Sequence[str]) -> Arguments:
    """The parsed command line; exits (code 2, or 0 for --help) as argparse does."""
    parsed = quick_parse(argv)
    if parsed is not None:
        return parsed
    from ccgroupd.client.argparser import build_parser, joined_time_values

    return Arguments(**vars(build_parser().parse_args(joined_time_values(argv))))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_engine_option(args)
        if args.command == "events":
            return show_events(args)
        op, request_args = _request_for(args)
        timeout_s = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT_S[op]
        if not 0 < timeout_s < float("inf"):  # NaN too; the socket would refuse it with a traceback
            raise CtlError(f"--timeout must be a positive number of seconds, not {timeout_s:g}",
                           EXIT_USAGE)
        if args.command == "top":  # imported here: the other commands' start stays as it was
            from ccgroupd.client import top

            return top.run(args, lambda: call(args.socket, op, request_args, timeout_s))
        result = call(args.socket, op, request_args, timeout_s)
        if args.json:
            import json

            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(render(op, result))
    except CcgroupdError as error:
        print(f"ccgroupctl: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head`: nothing left to say, and no traceback about it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def check_engine_option(args: Arguments) -> None:
    """Refuse --engine with a command that takes none, or a name no engine can have,
    before anything is asked (the name goes into requests and journal matches)."""
    if args.engine is None:
        return
    if args.command not in ENGINE_COMMANDS:
        raise CtlError(f"{args.command} acts on every engine on this host: "
                       f"leave out {ENGINE_OPTION}", EXIT_USAGE)
    if not is_engine_name(args.engine):
        raise CtlError(f"{ENGINE_OPTION} {protocol.shown(args.engine)}: not an engine name "
                       f"({ENGINE_NAME_PATTERN}: lower-case letters, digits, _ and -, "
                       f"at most {MAX_ENGINE_NAME_LENGTH})", EXIT_USAGE)


def _request_for(args: Arguments) -> tuple[str, dict[str, Any]]:
    """The operation and its arguments; ``engine`` only when named (a daemon that predates
    engine names refuses arguments it does not know)."""
    op, request = _command_request(args)
    if args.engine is not None:
        request["engine"] = args.engine
    return op, request


def _command_request(args: Arguments) -> tuple[str, dict[str, Any]]:
    if args.command == protocol.OP_RESET:
        return args.command, {"force": True} if args.force else {}
    if args.command == "top":
        return protocol.OP_BUILDS, {}
    if args.command != protocol.OP_SET:
        return args.command, {}
    changes = {name: getattr(args, name) for name in SET_OPTIONS
               if getattr(args, name) is not None}
    builds = {name: getattr(args, dest) for name, (_, dest) in BUILD_SET_OPTIONS.items()
              if getattr(args, dest) is not None}
    if args.running and not builds:
        raise CtlError("--running gives the --build-* limits to running builds: "
                       "name at least one, e.g. --build-memory 2G", EXIT_USAGE)
    if not changes and not builds:
        raise CtlError("set needs at least one limit, e.g. --cpus 4, --memory 8G or "
                       "--build-memory 2G", EXIT_USAGE)
    # Refuse bad values here, by the config file's rules (raises LimitsError, exit code 3,
    # naming the option); the daemon checks again, with the rest of the limits and the
    # host's CPU count, before anything is written.
    check_values(changes)
    try:
        check_values(builds)
    except LimitsError as error:  # named as the config file's [builds] key
        raise LimitsError(f"builds.{error.field}", error.value, error.reason) from None
    request: dict[str, Any] = {"runtime": args.runtime, "force": args.force}
    if changes:
        request["limits"] = changes
    if builds:  # only then: a daemon that predates them refuses arguments it does not know
        request.update(builds=builds, running=args.running)
    return protocol.OP_SET, request


# -- talking to the daemon -----------------------------------------------------


def call(socket_path: str, op: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one request and return the result; a refusal raises CtlError with its exit code.

    The socket is the C module's own object, which the `socket` module only wraps:
    importing `socket` (its IntEnum conversion of every constant, and selectors) took
    43 ms of ccgroupctl's start in the emulated guest (-X importtime), for nothing used here.
    The calls and the exceptions (OSError subclasses, TimeoutError) are the same; where the
    private module is missing or lacks them, the public one serves (_sockets()).
    """
    sock = _SOCKETS.socket(_SOCKETS.AF_UNIX, _SOCKETS.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise CtlError(f"cannot reach ccgroupd at {socket_path} ({exc.strerror}); "
                           f"{START_HINT}", EXIT_UNREACHABLE) from None
        except PermissionError:
            raise CtlError(f"permission denied: cannot connect to {socket_path}",
                           EXIT_PERMISSION) from None
        except OSError as exc:
            raise CtlError(f"cannot reach ccgroupd at {socket_path}: {exc.strerror or exc}",
                           EXIT_UNREACHABLE) from None
        try:
            sock.sendall(protocol.request(op, args))
            sock.shutdown(_SOCKETS.SHUT_WR)
            line = _read_line(sock)
        except TimeoutError:
            raise CtlError(f"ccgroupd did not answer within {timeout_s:g} s "
                           "(--timeout to wait longer)", EXIT_FAILURE) from None
        except OSError as exc:
            raise CtlError(f"connection to ccgroupd failed: {exc.strerror or exc}",
                           EXIT_FAILURE) from None
    finally:
        sock.close()
    if not line:
        raise CtlError("ccgroupd closed the connection without answering; "
                       "see journalctl -u ccgroupd", EXIT_FAILURE)
    reply = protocol.decode_object(line, "reply")
    result = reply.get("result")
    if reply.get("ok") is True and isinstance(result, dict):
        return result
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, dict):
        code = error.get("code")
        return_code = code if isinstance(code, int) and 0 < code < 126 else EXIT_FAILURE
        raise CtlError(str(error.get("message", "request failed")), return_code)
    raise protocol.ProtocolError("malformed reply: neither a result nor an error")


def _read_line(sock: Any) -> bytes:
    chunks = []
    size = 0
    while size <= MAX_REPLY_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


# -- human output --------------------------------------------------------------


def render(op: str, result: Mapping[str, Any]) -> str:
    if op == protocol.OP_STATUS:
        return render_status(result)
    lines = []
    if "in_force" in result:
        lines.append("in force now:")
        lines.extend(f"  {attribute:<16} {_kernel_value(attribute, value)}"
                     for attribute, value in sorted(result["in_force"].items()))
    if "limits" in result:
        where = result.get("cgroup", {}).get("path")
        lines.append(f"limits in force on {where}:" if where else "limits in force:")
        lines.extend(_limit_lines(result["limits"]))
    if "engine" in result:
        lines.append(f"engine: {_engine_line(result['engine'])}")
    if isinstance(result.get("builds"), dict):
        lines.extend(_builds_lines(result["builds"]))
    return "\n".join(lines) if lines else "done"


def render_status(status: Mapping[str, Any]) -> str:
    """One engine's status; from a daemon that runs several and was not told which, the
    overview (render_overview). The reply of a daemon with one engine has its fields at the
    top level too (for one more release): those are shown as they always were."""
    engines = status.get("engines")
    if isinstance(engines, list) and (len(engines) != 1 or "engine" not in status):
        return render_overview(status)
    cgroup = status.get("cgroup", {})
    usage = status.get("usage", {})
    limits = status.get("limits", {})
    name = status.get("name")
    if name is None and isinstance(engines, list) and isinstance(engines[0], dict):
        name = engines[0].get("name")
    lines = [
        *([] if name is None else [f"name:    {name}"]),
        f"cgroup:  {cgroup.get('path', '?')}",
        f"engine:  {_engine_line(status.get('engine', {}))}",
        "limits:",
        *_limit_lines(limits),
        *_io_lines(status.get("io_max", [])),
        "usage:",
        *_usage_lines(usage, limits),
    ]
    events = status.get("events", {})
    if events:
        lines.append("events since start:")
        lines.append("  " + ", ".join(f"{name} {count}" for name, count in events.items()))
    if isinstance(status.get("builds"), dict):  # absent from daemons that predate builds
        lines.extend(_builds_lines(status["builds"]))
    if isinstance(status.get("budget"), dict):
        lines.extend(_budget_lines(status["budget"]))
    return "\n".join(lines)


def _io_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """io_max: "  disk 254:0 (/var/lib/dagger): wbps 10 MiB/s, wiops 1000/s"."""
    lines = []
    for entry in entries:
        rates = [f"{key} {format_bytes(entry[key])}/s" if key.endswith("bps")
                 else f"{key} {entry[key]}/s"
                 for key in ("rbps", "wbps", "riops", "wiops") if entry.get(key) is not None]
        lines.append(f"  disk {entry.get('device', '?')} ({entry.get('path', '?')}): "
                     f"{', '.join(rates) or 'no limit'}")
    return ["io_max:", *lines] if lines else []


# The overview's columns, and those whose cells are left-aligned (the rest are numbers).
OVERVIEW_HEADERS = ("NAME", "STATE", "PID", "CPU", "MEMORY", "LOW/MIN", "WEIGHT", "RESTARTS",
                    "LAST EXIT")
_TEXT_COLUMNS = frozenset({"NAME", "STATE", "LAST EXIT"})


def render_overview(status: Mapping[str, Any]) -> str:
    """Several engines: the budget of their parent group (if any), then a row each."""
    budget = status.get("budget")
    lines = [*_budget_lines(budget), ""] if isinstance(budget, dict) else []
    engines = [doc for doc in status.get("engines") or [] if isinstance(doc, dict)]
    if not engines:
        return "\n".join([*lines, "engines: none"])
    shares = (budget.get("shares") if isinstance(budget, dict) else None) or {}
    rows = [OVERVIEW_HEADERS, *(_engine_row(doc, shares.get(doc.get("name"))) for doc in engines)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(OVERVIEW_HEADERS))]
    for row in rows:
        cells = [cell.ljust(size) if header in _TEXT_COLUMNS else cell.rjust(size)
                 for cell, size, header in zip(row, widths, OVERVIEW_HEADERS, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _engine_row(doc: Mapping[str, Any], share: Any) -> tuple[str, ...]:
    """One engine's cells of the overview (OVERVIEW_HEADERS), from its status document and
    its entry in the budget's shares (None without one). Sizes are short ("1.5G")."""
    from ccgroupd.client.humanize import short_size

    engine = doc.get("engine") or {}
    usage = doc.get("usage") or {}
    limits = doc.get("limits") or {}

    def limit(name: str) -> Any:
        entry = limits.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    def known(value: Any, shown: str | None = None) -> str:
        return "?" if value is None else shown if shown is not None else str(value)

    cpu, memory = usage.get("cpu_percent"), usage.get("memory_bytes")
    cpu_text = known(cpu, None if cpu is None else f"{cpu / 100:.2f}")
    memory_text = known(memory, None if memory is None else short_size(memory))
    memory_limit = limit("memory")
    memory_limit_text = (describe_limit_value("memory", None) if memory_limit is None
                         else short_size(memory_limit))
    share = share if isinstance(share, dict) else {}
    weight = share.get("cpu_weight", limit("cpu_weight"))  # the share's: the one in force
    weight_text = describe_limit_value("cpu_weight", weight)
    if share.get("cpu_share") is not None:
        weight_text += f" ({share['cpu_share']:.0%})"
    return (
        str(doc.get("name", "?")),
        str(engine.get("state") or "?"),
        "-" if engine.get("pid") is None else str(engine["pid"]),
        f"{cpu_text}/{describe_limit_value('cpus', limit('cpus'))}",
        f"{memory_text}/{memory_limit_text}",
        "/".join("-" if value is None else short_size(value)  # unset: no protection
                 for value in (limit("memory_low"), limit("memory_min"))),
        weight_text,
        known(engine.get("restarts")),
        _last_exit(engine.get("last_exit")),
    )


def _last_exit(last_exit: Any) -> str:
    """How the engine last ended without being asked to: "exit 1", "SIGSEGV", "OOM kill"
    (its SIGKILL goes without saying), "no start" (it could not be started)."""
    if not isinstance(last_exit, dict):
        return "-"
    if last_exit.get("oom_killed"):
        return "OOM kill"
    if last_exit.get("signal"):
        return str(last_exit["signal"])
    if last_exit.get("exit_code") is not None:
        return f"exit {last_exit['exit_code']}"
    return "no start" if last_exit.get("error") else "?"


def _budget_lines(budget: Mapping[str, Any]) -> list[str]:
    """The engines' parent group: its limits, its usage against them, and the memory the
    engines' memory_low and memory_min guarantee them, against the budget's memory."""
    limits = budget.get("limits") or {}
    usage = budget.get("usage") or {}

    def limit(name: str) -> Any:
        entry = limits.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    lines = [f"budget:  {budget.get('cgroup') or '?'}"]
    lines += [f"  {name:<12} {describe_limit_value(name, entry.get('value'))}{_of_host(entry)}"
              for name, entry in limits.items() if isinstance(entry, dict)]
    cores, memory, pids = (usage.get(key) for key in ("cpu_cores", "memory_bytes", "pids"))
    memory_limit = limit("memory")
    used = [
        "cpu " + ("?" if cores is None else f"{cores:.2f}")
        + ("" if limit("cpus") is None else f" of {limit('cpus'):g}") + " CPUs",
        "memory " + ("?" if memory is None else format_bytes(memory))
        + ("" if memory_limit is None else f" of {format_bytes(memory_limit)}"),
        "pids " + ("?" if pids is None else str(pids))
        + ("" if limit("pids") is None else f" of {limit('pids')}"),
    ]
    lines.append(f"  {'in use':<12} {', '.join(used)}")
    guarantees = budget.get("guarantees")
    if isinstance(guarantees, dict):
        guaranteed = []
        for name in ("memory_low", "memory_min"):
            value = guarantees.get(f"{name}_bytes")
            text = f"{name} {'?' if value is None else format_bytes(value)}"
            if value is not None and memory_limit:
                text += f" ({value / memory_limit:.0%})"
            guaranteed.append(text)
        of = ("the budget has no memory limit" if memory_limit is None
              else f"of {format_bytes(memory_limit)}")
        lines.append(f"  {'guaranteed':<12} {', '.join(guaranteed)} {of}")
    return lines


def _of_host(entry: Mapping[str, Any]) -> str:
    """" (75% of host)" for a value written as a share of the host, else ""."""
    relative = entry.get("relative")
    return f" ({relative} of host)" if relative else ""


def _builds_lines(builds: Mapping[str, Any]) -> list[str]:
    """The status' builds part: how many, the largest by memory, the defaults in force."""
    def count(key: str) -> str:
        value = builds.get(key)
        return "?" if value is None else str(value)

    running = f"{count('running')} running"
    largest = builds.get("largest")
    if isinstance(largest, dict):
        who = " ".join(str(part) for part in (largest.get("id", "?"), largest.get("command"))
                       if part is not None)
        memory = largest.get("memory_current_bytes")
        running += f" (largest: {who}, {'?' if memory is None else format_bytes(memory)})"
    lines = [f"builds:  {running}, {count('started_total')} started, "
             f"{count('finished_total')} finished, "
             f"{count('unaccounted_total')} without accounting"]
    if "defaults" in builds:
        lines.append(f"  each new build: {describe_build_limits(builds['defaults'] or {})}")
    return lines


def describe_build_limits(limits: Mapping[str, Any]) -> str:
    """The limits set in a build's table ("cpus 1, memory 2 GiB"); unset ones are left out."""
    named = [f"{name} {describe_limit_value(name, value)}" for name, value in limits.items()
             if value is not None]
    return ", ".join(named) if named else "no limits of its own (the engine's apply)"


def _limit_lines(limits: Mapping[str, Any]) -> list[str]:
    return [f"  {name:<12} {_limit_value(name, entry):<12} ({_origin(entry)})"
            for name, entry in limits.items()]


def _limit_value(name: str, entry: Mapping[str, Any]) -> str:
    """The value, and the share of the host it was written as: "2.2 GiB (75% of host)"."""
    shown = describe_limit_value(name, entry.get("value"))
    return shown if entry.get("relative") is None else f"{shown} ({entry['relative']} of host)"


def _origin(entry: Mapping[str, Any]) -> str:
    """Where a value came from: "default", "config: FILE", "persisted: FILE", "runtime"."""
    source, set_by = entry.get("source", "?"), entry.get("set_by")
    if set_by is None or source == "runtime":  # a daemon before set_by, or nothing to edit
        return str(source)
    return "default" if set_by == "default" else f"{source}: {set_by}"


def _usage_lines(usage: Mapping[str, Any], limits: Mapping[str, Any]) -> list[str]:
    cpu = usage.get("cpu_percent")
    cpus = limits.get("cpus", {}).get("value")
    cpu_text = "?" if cpu is None else f"{cpu:.0f}% of one CPU"
    if cpu is not None and cpus:
        cpu_text += f" ({cpu / cpus:.0f}% of the {cpus:g}-CPU limit)"
    memory = usage.get("memory_bytes")
    memory_text = "?" if memory is None else format_bytes(memory)
    memory_limit = limits.get("memory", {}).get("value")
    if usage.get("memory_percent") is not None and memory_limit is not None:
        memory_text += f" ({usage['memory_percent']:.1f}% of {format_bytes(memory_limit)})"
    swap = usage.get("swap_bytes")
    pids = usage.get("pids")
    return [f"  cpu      {cpu_text}",
            f"  memory   {memory_text}",
            f"  swap     {'-' if swap is None else format_bytes(swap)}",
            f"  pids     {'?' if pids is None else pids}"]


def _engine_line(engine: Mapping[str, Any]) -> str:
    parts = [str(engine.get("state", "?"))]
    if engine.get("pid") is not None:
        parts.append(f"pid {engine['pid']}")
    if engine.get("uptime_s") is not None:
        from ccgroupd.client.humanize import duration

        parts.append(f"up {duration(engine['uptime_s'])}")
    if engine.get("restarts") is not None:
        parts.append(f"{engine['restarts']} restarts")
    return ", ".join(parts)


def _kernel_value(attribute: str, value: str) -> str:
    if attribute.startswith("memory.") and value.isdigit():
        return f"{value} ({format_bytes(int(value))})"
    return value


# -- events --------------------------------------------------------------------


def show_events(args: Arguments) -> int:
    """Stream journald records through `journalctl -o json`, one summary line each."""
    import json
    import subprocess

    from ccgroupd.eventnames import VIOLATION_EVENTS

    names = _all_event_names() if args.all else VIOLATION_EVENTS
    # SYSLOG_IDENTIFIER and CCGROUPD_EVENT are the sender's to set: any local process can
    # write them. _SYSTEMD_UNIT and _UID are journald's own: only the daemon's records.
    # journalctl ANDs matches of different fields and ORs those of one field: these read
    # "from the daemon, and one of the events, (and of this engine)".
    command = ["journalctl", "--no-pager", "-o", "json", "--lines", str(args.lines),
               "SYSLOG_IDENTIFIER=ccgroupd", f"_SYSTEMD_UNIT={DAEMON_UNIT}", "_UID=0",
               *(f"CCGROUPD_EVENT={name}" for name in names)]
    if args.engine is not None:
        command.append(f"{ENGINE_JOURNAL_FIELD}={args.engine}")
    if args.since:
        command += ["--since", args.since]
    if args.follow:
        command.append("--follow")
    try:
        journal = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise CtlError("journalctl not found: events are read from systemd's journal",
                       EXIT_FAILURE) from None
    assert journal.stdout is not None
    try:
        for line in journal.stdout:
            record = _parse_record(line)
            if (record is not None and _from_the_daemon(record)
                    and args.engine in (None, record.get(ENGINE_JOURNAL_FIELD))):
                print(json.dumps(record, sort_keys=True) if args.json else summarize(record),
                      flush=True)
    except KeyboardInterrupt:
        journal.terminate()
        return EXIT_OK  # Ctrl-C is how --follow ends
    finally:
        journal.stdout.close()
    code = journal.wait()
    return EXIT_OK if code == 0 else EXIT_FAILURE


def _all_event_names() -> list[str]:
    from ccgroupd.events import EVENTS

    return sorted(EVENTS)


def _from_the_daemon(record: Mapping[str, Any]) -> bool:
    """The trusted fields again, should journalctl have matched more than asked."""
    return record.get("_SYSTEMD_UNIT") == DAEMON_UNIT and record.get("_UID") == "0"


def _parse_record(line: str) -> dict[str, Any] | None:
    try:
        record = protocol.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def summarize(record: Mapping[str, Any]) -> str:
    """One line: local time, event name, the engine's name (when the record has one) and the
    record's human MESSAGE."""
    import time

    try:
        stamp_s = int(record["__REALTIME_TIMESTAMP"]) / 1e6
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp_s))
    except (KeyError, ValueError):
        when = "?"
    message = record.get("MESSAGE", "")
    if not isinstance(message, str):  # journald hands non-UTF-8 fields over as byte lists
        message = bytes(message).decode(errors="replace")
    engine = record.get(ENGINE_JOURNAL_FIELD)
    who = f"{engine}: " if isinstance(engine, str) else ""
    return f"{when} {record.get('CCGROUPD_EVENT', '?'):<14} {who}{' '.join(message.split())}"


if __name__ == "__main__":
    sys.exit(main())
