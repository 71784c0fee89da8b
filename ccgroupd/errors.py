"""Typed errors, and the exit codes both command-line tools turn them into.

Every error ccgroupd raises on purpose derives from CcgroupdError and carries an
exit code, so a CLI prints ``str(error)`` as one line and exits with that code.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse uses 2 as well
EXIT_INVALID = 3
EXIT_PERMISSION = 4
EXIT_UNREACHABLE = 5
EXIT_UNSUPPORTED = 6
EXIT_ENGINE_FAILED = 7

# What each code means. The --help texts, the man pages' EXIT STATUS, the README's table
# and the unit's RestartPreventExitStatus= are rendered from these three tables
# (packaging/render-docs; tests/test_docs.py fails when a document no longer matches).
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the operation failed (the kernel refused a write, the daemon did not "
                  "answer, ...)",
    EXIT_USAGE: "usage error",
    EXIT_INVALID: "invalid value, configuration or combination, refused; nothing was changed",
    EXIT_PERMISSION: "permission denied",
    EXIT_UNREACHABLE: "the daemon is unreachable (`systemctl start ccgroupd`)",
    EXIT_UNSUPPORTED: "this host cannot run ccgroupd, or not the engine's mode "
                      "(see `ccgroupd check`)",
    EXIT_ENGINE_FAILED: "the engine kept failing and ccgroupd gave up restarting it",
}
EXIT_CODES_BY_COMMAND = {
    "ccgroupd": (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID, EXIT_UNSUPPORTED,
                 EXIT_ENGINE_FAILED),
    "ccgroupctl": (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID, EXIT_PERMISSION,
                   EXIT_UNREACHABLE),
}
# ccgroupd's exits that a restart cannot cure: systemd's RestartPreventExitStatus=.
EXIT_CODES_NOT_RESTARTED = (EXIT_INVALID, EXIT_UNSUPPORTED, EXIT_ENGINE_FAILED)


def exit_codes_help(command: str) -> str:
    """The "exit codes:" block of a command's --help."""
    return "exit codes:\n" + "".join(f"  {code}  {EXIT_MEANINGS[code]}\n"
                                     for code in EXIT_CODES_BY_COMMAND[command])


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


class IoDeviceError(CcgroupdError):
    """The whole disk behind an ``io_max`` path cannot be found: the path is missing, on no
    block device (tmpfs, overlay, btrfs), or sysfs does not say which disk. Names the path,
    the device numbers when known and the errno when a system call failed."""

    exit_code = EXIT_INVALID  # the configuration names a path this host cannot limit

    def __init__(self, message: str, *, path: os.PathLike[str] | str,
                 device: str | None = None, errno: int | None = None) -> None:
        self.path = os.fspath(path)
        self.device = device  # "MAJ:MIN"
        self.errno = errno
        super().__init__(message)


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
