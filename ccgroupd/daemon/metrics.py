"""The metrics endpoint: Prometheus metrics of every engine's group, read from its cgroup
files at scrape time (the collectors: ccgroupd.daemon.metrics_engines, one group's
readers: ccgroupd.daemon.metrics_group).

A scrape reads a dozen small files of each engine group (``cpu.{max,weight,stat}``,
``memory.{max,high,low,min,swap.max,current,swap.current,stat,events,swap.events}``,
``pids.{max,current,events}``, ``io.{weight,stat,max}``, ``cpuset.cpus.effective``,
``{cpu,memory,io}.pressure``) and a few of the budget group above them, and nothing per
process; it runs in the HTTP server's thread, so the monitoring loop never waits for it.
The daemon's own process metrics (``process_*``) come with it.

Naming follows Prometheus: base units (seconds, bytes), ``_total`` counters, every
engine's sample labelled ``engine`` (its name) and ``cgroup`` (its group's path), the
budget group's ``cgroup``. A limit that is ``max`` (unlimited) is left out rather than
exposed as +Inf, so that ``usage / limit`` has no series (and alerts on it stay silent)
for an unlimited resource; a protection (``memory.min``, ``memory.low``) of 0 is left out
likewise.

The kernel's counters restart from zero when the group is recreated (after a
daemon restart, or a leftover group being removed); MonotonicCounters
adds the last value seen before such a reset, so every ``_total`` is monotonic
while the daemon runs. A reset that happens entirely between two scrapes and
overtakes the old value is not seen (Prometheus' own ``rate()`` has the same
blind spot).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ccgroupd.config import MetricsSection


# A client that opens connections and never finishes a request must not hold threads (or
# the scrapes) for good: each connection gets this long to send its request, and only this
# many are served at once; more are closed at once and Prometheus retries on its next
# scrape.
READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16


class _QuietHandler(WSGIRequestHandler):

    def log_message(self, format: str, *args: object) -> None:
        """One line per scrape on stderr would flood the journal."""


class _BoundedWSGIServer(ThreadingWSGIServer):
    """A thread per connection, at most ``max_connections`` of them."""

    max_connections = MAX_CONNECTIONS
    request_queue_size = 64

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedWSGIServer6(_BoundedWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """prometheus_client's WSGI app in a threading HTTP server bound to one address."""

    def __init__(self, collector: Collector, address: IPv4Address | IPv6Address,
                 port: int, *, read_timeout_s: float = READ_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, more: Iterable[Collector] = ()) -> None:
        registry = CollectorRegistry(auto_describe=False)
        for each in (collector, *more):
            registry.register(each)
        # process_* of the daemon itself (RSS, CPU, open fds), as every exporter has.
        ProcessCollector(registry=registry)
        base = _BoundedWSGIServer if address.version == 4 else _BoundedWSGIServer6
        server_class: type[_BoundedWSGIServer] = type(
            "MetricsHTTPServer", (base,), {"max_connections": max_connections})
        handler_class: type[_QuietHandler] = type(
            "MetricsHandler", (_QuietHandler,), {"timeout": read_timeout_s})
        # Binds now: a port in use fails the caller, not a thread.
        self._server = make_server(str(address), port, make_wsgi_app(registry),
                                   server_class, handler_class=handler_class)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="ccgroupd-metrics", daemon=True)

    @classmethod
    def from_config(cls, collector: Collector, settings: MetricsSection,
                    more: Iterable[Collector] = ()) -> MetricsServer:
        return cls(collector, settings.listen_address, settings.port, more=more)

    @property
    def address(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving (waits up to serve_forever's 0.5 s poll) and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
