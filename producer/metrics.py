"""The order emulator's Prometheus figures, served at
``http://METRICS_ADDRESS:PRODUCER_METRICS_PORT/metrics`` while it sends to Kafka."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from marketstream.prometheus import LastEventClock


class ProducerMetrics:
    """Names as exposed:

    - ``marketstream_producer_events_handed_total``: events handed to the Kafka producer;
    - ``marketstream_producer_events_sent_total``: events the broker acknowledged;
    - ``marketstream_producer_events_failed_total``: events the producer gave up on;
    - ``marketstream_producer_late_ticks_total``: ticks that started over one interval late
      (the emulator could not keep its pace);
    - ``marketstream_producer_target_events_per_second``: the pace it aims at (0 = unpaced);
    - ``marketstream_producer_live_orders``: open orders it holds (generated flow only);
    - ``marketstream_producer_event_last_timestamp_seconds`` and
      ``marketstream_producer_event_seconds_since_last``: the last acknowledged event.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.handed = Counter("marketstream_producer_events_handed", "Events handed to the Kafka producer",
                              registry=r)
        self.sent = Counter("marketstream_producer_events_sent", "Events acknowledged by the broker", registry=r)
        self.failed = Counter("marketstream_producer_events_failed", "Events the Kafka producer gave up on",
                              registry=r)
        self.late_ticks = Counter("marketstream_producer_late_ticks", "Ticks that started more than one interval "
                                  "late", registry=r)
        self.target_rate = Gauge("marketstream_producer_target_events_per_second", "The pace aimed at "
                                 "(0 = unpaced)", registry=r)
        self.live_orders = Gauge("marketstream_producer_live_orders", "Open orders the emulator holds "
                                 "(generated flow)", registry=r)
        self.last_event = LastEventClock("marketstream_producer_event", "event acknowledged by the broker", r)
        self._lock = threading.Lock()
        self.first_error: BaseException | None = None

    def acknowledged(self, _metadata=None) -> None:
        """A Kafka future's callback (runs on the producer's I/O thread)."""
        self.sent.inc()
        self.last_event.mark()

    def gave_up(self, error: BaseException) -> None:
        """A Kafka future's errback: counted; only the first error is kept (bounded)."""
        self.failed.inc()
        with self._lock:
            if self.first_error is None:
                self.first_error = error

    def follow_live_orders(self, count: Callable[[], int]) -> None:
        self.live_orders.set_function(lambda: float(count()))

    def value(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0
