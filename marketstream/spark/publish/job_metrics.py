"""The order-book job's own Prometheus figures, served by the driver on
``ORDERBOOK_METRICS_PORT`` next to Spark's built-in endpoints (``spark_conf``): what a
person on call asks first — is it publishing every second, did it have to fill in
seconds, what is it refusing, how far behind is it.

Fed once per micro-batch from the batch's metrics message (``marketstream.orderbook.
metrics``), so the endpoint and the metrics topic always say the same thing. Durations are
histograms: at one batch a second and a 15 s scrape, a last-value gauge shows one batch in
fifteen, a histogram every one of them.

Renamed figures (the old name is served too, for one release):
``marketstream_orderbook_last_snapshot_second`` is now
``marketstream_orderbook_last_snapshot_timestamp_seconds``. The batch time's gauge became
the histogram ``marketstream_orderbook_batch_duration_seconds`` (same name; query
``..._sum``/``..._count``/``..._bucket``); the last batch's value is
``marketstream_orderbook_last_batch_duration_seconds``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from marketstream.prometheus import LastEventClock

_PREFIX = "marketstream_orderbook"

# Seconds. A batch every second: its time and its latency matter around one second, and
# their tails (a backlog, a broker hiccup) up to a minute; a publish takes milliseconds.
SECOND_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OrderBookMetrics:
    def __init__(self, registry: CollectorRegistry):
        def counter(name, text, labels=()):
            return Counter(f"{_PREFIX}_{name}", text, labels, registry=registry)

        def gauge(name, text):
            return Gauge(f"{_PREFIX}_{name}", text, registry=registry)

        self.batches = counter("batches_total", "Micro-batches completed")
        self.events = counter("events_read_total", "Order events read from the input topic")
        self.snapshots = counter("snapshots_published_total", "Snapshots published (one per second)")
        self.recovered = counter("seconds_recovered_total", "Seconds published late, after an outage or an overrun")
        self.missed = counter("seconds_missed_total",
                              "Seconds never published: missed longer ago than SNAPSHOT_BACKFILL_MAX_SECONDS")
        self.dead_letters = counter("dead_letters_total", "Order events dead-lettered, by reason code", ["reason_code"])
        self.open_orders = gauge("open_orders", "Open orders in the newest published snapshot")
        self.lag = gauge("input_lag_events", "Order events on the input topic not read yet")
        self.last_batch_seconds = gauge("last_batch_duration_seconds", "How long the last micro-batch took")
        self.last_second = gauge("last_snapshot_timestamp_seconds", "The newest second published (Unix time)")
        self.last_second_alias = gauge("last_snapshot_second", "Deprecated name of "
                                       f"{_PREFIX}_last_snapshot_timestamp_seconds, served for one more release")
        self.batch_seconds = Histogram(f"{_PREFIX}_batch_duration_seconds", "How long each micro-batch took",
                                       buckets=SECOND_BUCKETS, registry=registry)
        self.snapshot_latency = Histogram(
            f"{_PREFIX}_snapshot_latency_seconds", "Per snapshot published on time: from the end of its second "
            "(the newest event it can hold) to the broker's acknowledgement", buckets=SECOND_BUCKETS,
            registry=registry)
        self.publish_seconds = Histogram(f"{_PREFIX}_publish_duration_seconds", "Per batch: from its first record "
                                         "sent to the last acknowledged by the broker", buckets=PUBLISH_BUCKETS,
                                         registry=registry)
        self.snapshot_clock = LastEventClock(f"{_PREFIX}_snapshot", "snapshot published", registry)

    def observe(self, metrics: dict) -> None:
        """One batch's metrics message."""
        self.batches.inc()
        self.events.inc(metrics.get("num_input_events") or 0)
        self.snapshots.inc(metrics.get("snapshots") or 0)
        self.recovered.inc(metrics.get("recovered") or 0)
        if metrics.get("gap_first") is not None and metrics.get("gap_last") is not None:
            self.missed.inc(metrics["gap_last"] - metrics["gap_first"] + 1)
        for code, count in (metrics.get("dead_letters_by_code") or {}).items():
            self.dead_letters.labels(reason_code=code).inc(count)
        if metrics.get("open_orders") is not None:
            self.open_orders.set(metrics["open_orders"])
        self.lag.set(metrics.get("lag") or 0)
        self.last_batch_seconds.set((metrics.get("batch_duration_ms") or 0) / 1000)
        self.batch_seconds.observe((metrics.get("batch_duration_ms") or 0) / 1000)
        for latency_ms in metrics.get("snapshot_latency_ms") or ():
            self.snapshot_latency.observe(latency_ms / 1000)
        if metrics.get("snapshots") or metrics.get("dead_letters"):  # a batch with nothing to send sent nothing
            self.publish_seconds.observe((metrics.get("publish_ms") or 0) / 1000)
        if metrics.get("last_second") is not None:
            self.last_second.set(metrics["last_second"])
            self.last_second_alias.set(metrics["last_second"])
            self.snapshot_clock.mark()
