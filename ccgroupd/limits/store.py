"""Persisted limit changes (`ccgroupctl set` without --runtime) in the daemon's state directory.

The file holds only the changes, keyed like the config file (LIMIT_NAMES) and
with values exactly as the operator gave them ("8G", 2.5), so a later edit of
the config file still shows through for every limit nobody changed:

    {"version": 1, "limits": {"cpus": 2, "memory": "512M"}}

A state file that cannot be used must never keep the daemon from starting: it
is moved aside for a human to look at, logged as ``state_file_corrupt``, and
the daemon starts from the config file alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from ccgroupd.errors import CcgroupdError, LimitsError
from ccgroupd.limits.model import LIMIT_NAMES, Limits

STATE_FILE_NAME = "limits.json"
BUILD_STATE_FILE_NAME = "build-limits.json"  # the build defaults' changes, in the same format
BUDGET_STATE_FILE_NAME = "budget-limits.json"  # the [budget]'s, likewise
STATE_FORMAT_VERSION = 1

log = structlog.get_logger("ccgroupd")


class StateError(CcgroupdError):
    """The state file could not be written; the previous one is still in place."""


class _InvalidState(ValueError):
    pass


class StateStore:
    def __init__(self, state_dir: Path, *, name: str = STATE_FILE_NAME,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / name
        self._clock = clock

    def load(self, base: Limits | None = None,
             usable: Callable[[Limits], None] | None = None) -> dict[str, object]:
        """The persisted changes; {} when there are none or the file is unusable.

        With ``base`` (the config file's limits) changes that do not combine with
        it (memory_high above the config's memory, say) count as unusable too, so
        that the daemon can always start from the result. ``usable`` checks the
        combined limits against this host (raising LimitsError naming the key): a
        persisted value it refuses (cpus above a host that shrank, a swap limit
        where swap accounting went away) is set aside, logged, and the rest kept.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(f"unreadable: {exc}")
            return {}
        try:
            changes = _parse(text, base)
        except _InvalidState as exc:
            self._set_aside(str(exc))
            return {}
        if base is not None and usable is not None:
            self._drop_unusable(changes, base, usable)
        return changes

    def _drop_unusable(self, changes: dict[str, object], base: Limits,
                       usable: Callable[[Limits], None]) -> None:
        while changes:
            try:
                usable(base.with_changes(changes))
            except LimitsError as exc:
                if exc.field not in changes:
                    return  # the config file's own value: not the state file's to fix
                log.warning("state_value_set_aside", file=str(self.path), limit=exc.field,
                            value=str(changes.pop(exc.field)), reason=exc.reason)
            else:
                return

    def save(self, changes: Mapping[str, object]) -> None:
        """Replace the file atomically: a crash leaves either the old or the new file, whole."""
        unknown = set(changes) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"not limit names: {sorted(unknown)}")
        data = json.dumps({"version": STATE_FORMAT_VERSION, "limits": dict(changes)},
                          indent=2, sort_keys=True) + "\n"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.state_dir)
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, self.path)
            _fsync_directory(self.state_dir)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise StateError(f"cannot write {self.path}: {exc}") from exc

    def _set_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        suffix = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{suffix}")
            suffix += 1
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.warning("state_file_corrupt", file=str(self.path), reason=reason,
                      moved_to=None, move_error=str(exc))
            return
        log.warning("state_file_corrupt", file=str(self.path), reason=reason, moved_to=str(target))


def _parse(text: str, base: Limits | None) -> dict[str, object]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _InvalidState(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _InvalidState("not a JSON object")
    version = document.get("version")
    if version != STATE_FORMAT_VERSION:
        raise _InvalidState(f"format version {version!r}, expected {STATE_FORMAT_VERSION}")
    changes = document.get("limits")
    if not isinstance(changes, dict):
        raise _InvalidState("'limits' is not a JSON object")
    unknown = set(changes) - set(LIMIT_NAMES)
    if unknown:
        raise _InvalidState(f"unknown limit names {sorted(unknown)}")
    try:
        Limits.from_mapping(changes)
    except LimitsError as exc:
        raise _InvalidState(f"refused by the limits model: {exc}") from None
    if base is not None:
        try:
            base.with_changes(changes)
        except LimitsError as exc:
            raise _InvalidState(f"does not combine with the config file: {exc}") from None
    return changes


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, not only the file's contents."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
