"""Batch health: a ``StreamingQueryListener`` that logs one line per micro-batch, updates
the Prometheus figures and leaves the batch's metrics message
(``marketstream.orderbook.metrics``) for the publisher, which sends it in the next batch's
transaction (``publisher.MetricsOutbox``).

The listener takes each batch's progress as the JVM's JSON text (``_ProgressAsJson``), not
as PySpark's ``QueryProgressEvent``: building that one walks the progress field by field
over py4j, and its observed metrics through a JVM class looked up by name (a search of
every jar on the classpath), ~50 ms of the driver JVM's CPU in every batch, the largest
share of an idle batch's JVM work; the metrics need the JSON only."""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import QueryStartedEvent, QueryTerminatedEvent

from marketstream.orderbook.metrics import encode_metric, metrics_from_progress
from marketstream.spark.publish.figures import FiguresByBatch
from marketstream.spark.publish.publisher import MetricsOutbox

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


class _ProgressAsJson:
    """The JVM's listener interface, implemented in Python (py4j): hands
    ``MetricsListener`` each batch's progress as JSON text."""

    def __init__(self, listener: "MetricsListener"):
        self.listener = listener

    def onQueryStarted(self, jevent) -> None:
        self.listener.onQueryStarted(QueryStartedEvent.fromJObject(jevent))

    def onQueryProgress(self, jevent) -> None:
        self.listener.on_progress_json(jevent.progress().json())

    def onQueryIdle(self, jevent) -> None:
        pass

    def onQueryTerminated(self, jevent) -> None:
        self.listener.onQueryTerminated(QueryTerminatedEvent.fromJObject(jevent))

    class Java:
        implements = ["org.apache.spark.sql.streaming.PythonStreamingQueryListener"]


class MetricsListener(StreamingQueryListener):
    """Never fails the query: an unreadable progress is logged and skipped (the snapshots
    matter more than their metrics)."""

    def __init__(self, outbox: MetricsOutbox, query_name: str = "orderbook", prometheus=None,
                 figures: FiguresByBatch | None = None):
        self.outbox, self.query_name = outbox, query_name
        self.prometheus = prometheus  # a job_metrics.OrderBookMetrics, or None
        # What each batch published, left by the query's publisher (``publisher``).
        self.figures = figures if figures is not None else FiguresByBatch()

    def onQueryStarted(self, event) -> None:
        log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

    @property
    def _jlistener(self):
        # What ``spark.streams.addListener`` registers (PySpark's default wraps the
        # listener in a bridge that converts every event object over py4j).
        if getattr(self, "_jlistenerobj", None) is None:
            from pyspark import SparkContext

            self._jlistenerobj = SparkContext._jvm.PythonStreamingQueryListenerWrapper(_ProgressAsJson(self))
        return self._jlistenerobj

    def onQueryProgress(self, event) -> None:
        self.on_progress_json(event.progress.json)

    def on_progress_json(self, text: str) -> None:
        try:
            raw = json.loads(text)
            if raw.get("name") and raw["name"] != self.query_name:
                return
            metrics = metrics_from_progress(raw, self.query_name, self.figures.take(int(raw["batchId"])))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("unreadable query progress: %s", exc)
            return
        log.info(log_line(metrics, raw.get("durationMs")))
        if self.prometheus is not None:
            self.prometheus.observe(metrics)
        self.outbox.put(encode_metric(metrics))

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s terminated with: %s", event.id, event.exception.splitlines()[0])
