"""Typed errors, and the exit codes both command-line tools turn them into.

Every error ccgroupd raises on purpose derives from CcgroupdError and carries an
exit code, so a CLI prints ``str(error)`` as one line and exits with that code.
"""

from __future__ import annotations

import os

# Exit codes, documented in `ccgroupd --help`, `ccgroupctl --help` and README.md.
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed (kernel refused a write, engine failed, ...)
EXIT_USAGE = 2  # bad command line (argparse uses 2 as well)
EXIT_INVALID = 3  # a value or combination was refused; nothing was changed
EXIT_PERMISSION = 4  # the caller may not do this
EXIT_UNREACHABLE = 5  # the daemon is not running or its socket cannot be reached
EXIT_UNSUPPORTED = 6  # this host cannot run ccgroupd (see `ccgroupd check`)
EXIT_ENGINE_FAILED = 7  # the engine kept failing; ccgroupd gave up restarting it


class CcgroupdError(Exception):
    """Base class; ``exit_code`` is what a CLI exits with when this escapes."""

    exit_code = EXIT_FAILURE


class CgroupError(CcgroupdError):
    """A cgroupfs operation failed. Names the file, the value and the errno."""

    action = "access"

    def __init__(self, path: os.PathLike[str] | str, value: str | None = None,
                 errno: int | None = None, detail: str | None = None) -> None:
        self.path = os.fspath(path)
        self.value = value
        self.errno = errno
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        what = f"cannot {self.action} {self.path}"
        if self.value is not None:
            what = f"cannot {self.action} {self.value!r} to {self.path}"
        if self.errno is not None:
            what += f": [Errno {self.errno}] {os.strerror(self.errno)}"
        if self.detail:
            what += f" ({self.detail})"
        return what

    @classmethod
    def from_oserror(cls, exc: OSError, path: os.PathLike[str] | str,
                     value: str | None = None, detail: str | None = None) -> CgroupError:
        return cls(path, value, exc.errno, detail)


class CgroupReadError(CgroupError):
    action = "read"


class CgroupWriteError(CgroupError):
    action = "write"


class CgroupCreateError(CgroupError):
    action = "create cgroup"


class CgroupRemoveError(CgroupError):
    action = "remove cgroup"


class CgroupVerifyError(CgroupError):
    """The kernel accepted a write but reads back something else."""

    action = "verify"

    def __init__(self, path: os.PathLike[str] | str, value: str, read_back: str) -> None:
        self.read_back = read_back
        super().__init__(path, value, None, f"read back {read_back!r}")


class CgroupPathError(CcgroupdError):
    """A group name that would leave the cgroup root ('..', a symlink, an absolute escape)."""

    exit_code = EXIT_INVALID


class LimitsError(CcgroupdError, ValueError):
    """A limit value or combination was refused. ``field`` names the setting."""

    exit_code = EXIT_INVALID

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} = {value!r}: {reason}")


class CtlError(CcgroupdError):
    """What ccgroupctl reports: a refusal with the daemon's exit code, or its own failure."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(CcgroupdError):
    """The configuration file or environment is unusable. Names the file and the key."""

    exit_code = EXIT_INVALID


class HostUnsupportedError(CcgroupdError):
    exit_code = EXIT_UNSUPPORTED


class EngineLaunchError(CcgroupdError):
    """A step before the engine's start failed: docker unreachable, a leftover container
    that cannot be removed, a missing rootfs. Transient causes are worth a restart."""
