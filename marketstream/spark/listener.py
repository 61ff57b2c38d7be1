"""Batch health: a ``StreamingQueryListener`` that logs one line per micro-batch and
publishes the batch's progress to the metrics topic (``marketstream.orderbook.metrics``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

from marketstream.orderbook.metrics import encode_metric, metrics_from_progress

log = logging.getLogger("marketstream.spark.progress")


def log_line(metrics: dict[str, Any], durations: dict[str, int] | None = None) -> str:
    phases = ", ".join(f"{k} {v}" for k, v in sorted((durations or {}).items()) if k != "triggerExecution")
    return (
        f"batch {metrics['batch_id']}: {metrics['num_input_events']} events in {metrics['batch_duration_ms']} ms, "
        f"{metrics['processed_events_per_second']:.0f} events/s, state rows {metrics['state_rows']}, "
        f"lag {metrics['lag']}, end offsets {metrics['end_offsets']}, {metrics['snapshots']} snapshot(s)"
        + (f" ({metrics['recovered']} recovered)" if metrics["recovered"] else "")
        + (f", {metrics['dead_letters']} dead letter(s)" if metrics["dead_letters"] else "")
        + (f", GAP {metrics['gap_first']}..{metrics['gap_last']} beyond the backfill bound" if metrics["gap_first"] else "")
        + (f" (ms: {phases})" if phases else "")
    )


class MetricsListener(StreamingQueryListener):
    """Publishes with kafka-python from the driver; a broker hiccup is logged, never
    allowed to fail the query (the snapshots matter more than their metrics)."""

    def __init__(self, bootstrap_servers: str, topic: str, query_name: str = "orderbook", prometheus=None):
        self.bootstrap_servers, self.topic, self.query_name = bootstrap_servers, topic, query_name
        self.prometheus = prometheus  # a job_metrics.OrderBookMetrics, or None
        self._producer = None

    def _send(self, metrics: dict[str, Any]) -> None:
        from kafka import KafkaProducer

        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers.split(","), acks=1, linger_ms=0)
        self._producer.send(self.topic, encode_metric(metrics))

    def onQueryStarted(self, event) -> None:
        log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        if progress.name and progress.name != self.query_name:
            return
        try:
            raw = json.loads(progress.json)
            metrics = metrics_from_progress(raw, self.query_name)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("unreadable query progress: %s", exc)
            return
        log.info(log_line(metrics, raw.get("durationMs")))
        if self.prometheus is not None:
            self.prometheus.observe(metrics)
        try:
            self._send(metrics)
        except Exception as exc:  # noqa: BLE001 - any client error: log and keep the query running
            log.warning("could not publish metrics to %s: %s", self.topic, exc)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s terminated with: %s", event.id, event.exception.splitlines()[0])
        if self._producer is not None:
            self._producer.flush(timeout=5)
