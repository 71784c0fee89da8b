"""sd_notify: tell systemd about readiness, status, reloads, stops and liveness.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=VALUE`` lines to
``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``).
It is small enough to speak directly, which keeps libsystemd/python-systemd out
of the daemon's hard dependencies (the .deb and the guest need nothing extra)
and lets tests point the notifier at a socketpair. Without ``$NOTIFY_SOCKET``
(not started by systemd with Type=notify) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

# The variables systemd sets for the main process only; a child that inherits
# them would send notifications systemd rejects (NotifyAccess=main) or would
# believe it is the one being watched.
SYSTEMD_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self, socket_address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = socket_address
        self.watchdog_interval_s = watchdog_usec / 2 / 1_000_000 if watchdog_usec else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = None
        # WATCHDOG_PID names the process systemd watches; if it is not us the
        # variable was inherited and the watchdog is someone else's.
        watchdog_pid = environ.get("WATCHDOG_PID")
        if watchdog_pid in (None, str(os.getpid())):
            raw = environ.get("WATCHDOG_USEC", "")
            watchdog_usec = int(raw) if raw.isdigit() and int(raw) > 0 else None
        return cls(address, watchdog_usec)

    def send(self, **fields: str) -> None:
        """Send one notification; never raises."""
        if self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]
        # Not being able to reach systemd (it is gone, or we are shutting down) must
        # never stop the daemon; there is nobody to report it to either.
        with contextlib.suppress(OSError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC is what systemd >= 253 (Type=notify-reload) requires; 252 ignores it.
        self.send(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                                                     // 1000))

    def stopping(self, status: str) -> None:
        self.send(STOPPING="1", STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")


def child_environment(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: ours without systemd's notify variables, plus ``overrides``."""
    env = {key: value for key, value in base.items() if key not in SYSTEMD_NOTIFY_VARIABLES}
    env.update(overrides)
    return env
