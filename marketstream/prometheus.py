"""Serving a process's Prometheus metrics (``prometheus_client``) at
``http://METRICS_ADDRESS:<port>/metrics``, the port from the process's own setting.

Every long-running process builds its metrics on a ``CollectorRegistry`` it is given: the
default registry when it runs as a process (which adds the client's ``process_*`` and
``python_*`` figures: CPU, memory, open files), a private one when a test or benchmark
builds several in one interpreter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from marketstream.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def serve_metrics(settings: Settings, port_setting: str, registry: CollectorRegistry):
    """Start the endpoint on the port named by ``port_setting`` (e.g. ``listener_metrics_port``)
    in a daemon thread; returns the HTTP server, or ``None`` when that port is 0. A port that
    cannot be bound stops startup with a message naming the setting."""
    port = getattr(settings, port_setting)
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=settings.metrics_address, registry=registry)
    except OSError as exc:
        raise SettingsError(
            f"{port_setting.upper()}={port}: cannot serve metrics on {settings.metrics_address}:{port} "
            f"({exc.strerror or exc}); choose a free port, or 0 for no endpoint") from None
    shown = "127.0.0.1" if settings.metrics_address in ("0.0.0.0", "::", "") else settings.metrics_address
    log.info("Prometheus metrics at http://%s:%d/metrics", shown, port)
    return server


def metrics_url(settings: Settings, port: int) -> str:
    """Where a user on this machine scrapes an endpoint on ``port``."""
    host = "127.0.0.1" if settings.metrics_address in ("0.0.0.0", "::", "") else settings.metrics_address
    return f"http://{host}:{port}/metrics"


class LastEventClock:
    """Two gauges for one kind of event: the Unix time of the last one, and the seconds since
    it (computed when scraped; since the process started while there was none yet), so a
    stalled stream shows as a growing number without any PromQL."""

    def __init__(self, name: str, what: str, registry: CollectorRegistry, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._started = clock()
        self.last: float | None = None
        self._timestamp = Gauge(f"{name}_last_timestamp_seconds", f"Unix time of the last {what} (0 before the first)",
                                registry=registry)
        since = Gauge(f"{name}_seconds_since_last", f"Seconds since the last {what} (since the process started "
                      "when there was none yet)", registry=registry)
        since.set_function(self.seconds_since)

    def mark(self) -> None:
        self.last = self._clock()
        self._timestamp.set(self.last)

    def seconds_since(self) -> float:
        return max(0.0, self._clock() - (self.last if self.last is not None else self._started))
