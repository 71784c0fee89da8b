"""The one place structlog is configured.

Everyone logs with ``structlog.get_logger("ccgroupd").warning("oom_kill",
cgroup=..., delta=1, total=3)``: the first argument is a registered event name
(ccgroupd.events), the keywords are its fields. Where the records go:

- journal: natively through python-systemd's ``journal.send``, one call per
  record with MESSAGE (a sentence from ccgroupd.events), PRIORITY (from the log
  level), MESSAGE_ID, CCGROUPD_EVENT and every field as CCGROUPD_<FIELD>.
  JournalHandler is not used: it drops extra fields.
- console: coloured key=value lines for a human at a terminal.
- json: one JSON object per line, for anything else reading stderr.

"auto" picks journal when stderr is the journal's stream (``$JOURNAL_STREAM``
names its device and inode, as systemd.exec(5) documents), console on a TTY,
json otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import structlog
from structlog.processors import CallsiteParameter
from structlog.typing import EventDict, Processor, WrappedLogger

from ccgroupd.errors import ConfigError
from ccgroupd.events import EVENTS, PRIORITIES, fallback_message

LOG_FORMATS = ("auto", "journal", "console", "json")
SYSLOG_IDENTIFIER = "ccgroupd"
FIELD_PREFIX = "CCGROUPD_"

JournalSend = Callable[..., None]

# Keys the processors add for their own use; they never become CCGROUPD_ fields.
_INTERNAL_KEYS = frozenset({"event", "level", "exception", "pathname", "lineno", "func_name"})
_NOT_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")


def journal_stream_is(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True if ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM=dev:ino``)."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False  # no real fd (a test's StringIO) or a garbled variable


def journal_field_name(key: str) -> str:
    return FIELD_PREFIX + _NOT_FIELD_CHARS.sub("_", key.upper())


def _journal_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def human_message(event: str, fields: Mapping[str, object]) -> str:
    registered = EVENTS.get(event)
    return registered.message(fields) if registered else fallback_message(event, fields)


def journal_fields(event_dict: Mapping[str, Any]) -> dict[str, str | int]:
    """The journald fields of one record: the keyword arguments of ``journal.send``."""
    event = str(event_dict["event"])
    fields = {key: value for key, value in event_dict.items() if key not in _INTERNAL_KEYS}
    message = human_message(event, fields)
    if "exception" in event_dict:
        message += "\n" + str(event_dict["exception"])
    sent: dict[str, str | int] = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITIES.get(str(event_dict.get("level")), PRIORITIES["info"])),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "CCGROUPD_EVENT": event,
    }
    registered = EVENTS.get(event)
    if registered:
        sent["MESSAGE_ID"] = registered.message_id
    if "pathname" in event_dict:
        # journal.send formats CODE_LINE with {:d}; without these it would name logsetup.py.
        sent["CODE_FILE"] = str(event_dict["pathname"])
        sent["CODE_LINE"] = int(event_dict["lineno"])
        sent["CODE_FUNC"] = str(event_dict["func_name"])
    for key, value in fields.items():
        if value is not None:  # an absent value is an absent field, not the text "null"
            sent[journal_field_name(key)] = _journal_value(value)
    return sent


def _to_journal_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    return journal_fields(event_dict)


def _add_human_message(_logger: WrappedLogger, _method: str,
                       event_dict: EventDict) -> EventDict:
    event = str(event_dict["event"])
    fields = {key: value for key, value in event_dict.items() if key not in _INTERNAL_KEYS}
    event_dict["message"] = human_message(event, fields)
    registered = EVENTS.get(event)
    if registered:
        event_dict["message_id"] = registered.message_id
    return event_dict


class JournalLogger:
    """structlog's wrapped logger for journald: every level method sends one record."""

    def __init__(self, send: JournalSend, fallback: TextIO) -> None:
        self._send = send
        self._fallback = fallback

    def msg(self, **fields: str | int) -> None:
        try:
            self._send(**fields)
        except OSError as exc:
            # journald away (restarting, socket full): a lost record must not take the
            # caller down; stderr usually reaches the journal by another way.
            line = json.dumps({**fields, "JOURNAL_SEND_ERROR": str(exc)}, sort_keys=True)
            print(line, file=self._fallback, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _load_journal_send() -> JournalSend:
    import systemd.journal  # python3-systemd; optional off journald

    send: JournalSend = systemd.journal.send
    return send


def _resolve_format(log_format: str, stream: TextIO, environ: Mapping[str, str]) -> str:
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format = {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if log_format != "auto":
        return log_format
    if journal_stream_is(stream, environ):
        return "journal"
    return "console" if stream.isatty() else "json"


def configure_logging(log_format: str, *, journal_send: JournalSend | None = None,
                      stream: TextIO | None = None,
                      environ: Mapping[str, str] | None = None) -> str:
    """Configure structlog for ``log_format`` (auto/journal/console/json); returns the format used.

    ``journal_send`` replaces ``systemd.journal.send`` (tests capture what would be
    sent); ``stream`` (default stderr) is where console and json lines go.
    """
    stream = stream or sys.stderr
    environ = os.environ if environ is None else environ
    chosen = _resolve_format(log_format, stream, environ)
    fallback_error = None
    if chosen == "journal" and journal_send is None:
        try:
            journal_send = _load_journal_send()
        except ImportError as exc:
            if log_format == "journal":
                raise ConfigError(f"log_format = 'journal' needs python3-systemd: {exc}") from exc
            chosen, fallback_error = "json", str(exc)

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    logger_factory: Callable[..., WrappedLogger]
    if chosen == "journal":
        assert journal_send is not None
        send = journal_send
        processors += [
            structlog.processors.CallsiteParameterAdder(
                {CallsiteParameter.PATHNAME, CallsiteParameter.LINENO,
                 CallsiteParameter.FUNC_NAME}),
            structlog.processors.format_exc_info,
            _to_journal_fields,
        ]
        logger_factory = lambda *_args: JournalLogger(send, stream)  # noqa: E731
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_human_message,
        ]
        if chosen == "console":
            processors.append(structlog.dev.ConsoleRenderer(event_key="message"))
        else:
            processors += [structlog.processors.format_exc_info,
                           structlog.processors.JSONRenderer(default=str, sort_keys=True)]
        logger_factory = structlog.PrintLoggerFactory(stream)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        context_class=dict,
        logger_factory=logger_factory,
        # Not cached: structlog.testing.capture_logs must still see loggers created earlier.
        cache_logger_on_first_use=False,
    )
    if fallback_error is not None:
        structlog.get_logger("ccgroupd").warning("journald_unavailable", error=fallback_error)
    return chosen
