"""The metrics message: one per micro-batch of the order-book job, on the metrics topic.
The contract between the job's listener (writer) and the health check and the dashboard
(readers).

A JSON object:

  ``query``                        the streaming query's name (``orderbook``);
  ``batch_id``                     Spark's batch id;
  ``timestamp``                    when the batch started, ISO-8601 UTC;
  ``num_input_events``             order events the batch read (not Spark rows: the
                                   Python source packs thousands of events in a row);
  ``input_events_per_second``      arrival rate, ``processed_events_per_second``
                                   processing rate, both in events;
  ``batch_duration_ms``            how long the batch took;
  ``state_rows``                   rows in the job's state store;
  ``start_offsets``, ``end_offsets``, ``latest_offsets``
                                   ``{"<partition>": offset}`` of the input topic: where
                                   the batch started and ended, and the newest offsets;
  ``lag``                          events published but not yet read (latest - end);

and what the batch published (the job's publisher counts it on the batch's output):

  ``snapshots``                    snapshots published, ``recovered`` of them late
                                   (seconds missed during an outage or an overrun);
  ``last_second``                  the newest second published (epoch seconds; null
                                   when the batch published none), ``open_orders`` in it;
  ``dead_letters``                 dead letters published, ``dead_letters_by_code`` per
                                   reason code;
  ``gap_first``, ``gap_last``      seconds the job missed and could not backfill (more
                                   than SNAPSHOT_BACKFILL_MAX_SECONDS ago): the first and
                                   last of them, null when there is no gap;
  ``events_applied``               parsed events the state partitions applied;

and how its records reached the broker (the publisher times it):

  ``publish_ms``                   from the first record sent to the last acknowledged;
  ``snapshot_latency_ms``          per snapshot published on time (not recovered): from
                                   the end of its second, when the newest event it can
                                   hold arrived, to the broker's acknowledgement (older
                                   events of that second waited up to a second longer).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Iterable

from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS, SnapshotMessage


def _offsets(text: Any) -> dict[str, int]:
    """A source offset from the progress JSON as ``{"<partition>": offset}``: the Python
    source's tick and anything that is not a partition are left out."""
    if text is None:
        return {}
    value = json.loads(text) if isinstance(text, str) else text
    if not isinstance(value, dict):
        return {}
    if len(value) == 1 and isinstance(next(iter(value.values())), dict):
        value = next(iter(value.values()))  # the JVM source nests offsets under the topic
    return {str(p): int(o) for p, o in value.items() if str(p).lstrip("-").isdigit()}


# ---------------------------------------------------------------- writer side


def metrics_from_progress(progress: dict[str, Any], query: str = "orderbook",
                          published: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics message for one ``StreamingQueryProgress`` (as its JSON dict) and what
    the batch published (``BATCH_FIGURES``, counted by the job's publisher; None: nothing)."""
    source = (progress.get("sources") or [{}])[0]
    start, end = _offsets(source.get("startOffset")), _offsets(source.get("endOffset"))
    latest = _offsets(source.get("latestOffset")) or dict(end)
    state_rows = sum(int(op.get("numRowsTotal") or 0) for op in progress.get("stateOperators") or [])
    # Spark counts rows; the Python source packs thousands of events in a row (plus a
    # heartbeat row), the JVM source has one per event. The offsets count the events.
    rows = int(progress.get("numInputRows") or 0)
    events = sum(max(0, offset - start.get(p, 0)) for p, offset in end.items())
    per_row = events / rows if rows else 0.0
    published = published or {}
    return {
        "query": query,
        "batch_id": int(progress["batchId"]),
        "timestamp": progress["timestamp"],
        "num_input_events": events,
        "input_events_per_second": float(progress.get("inputRowsPerSecond") or 0.0) * per_row,
        "processed_events_per_second": float(progress.get("processedRowsPerSecond") or 0.0) * per_row,
        "batch_duration_ms": int(progress.get("batchDuration") or 0),
        "state_rows": state_rows,
        "start_offsets": start,
        "end_offsets": end,
        "latest_offsets": latest,
        "lag": sum(max(0, latest.get(p, 0) - end.get(p, 0)) for p in latest),
        "snapshots": int(published.get("snapshots") or 0),
        "recovered": int(published.get("recovered") or 0),
        "last_second": _int_or_none(published.get("last_second")),
        "open_orders": _int_or_none(published.get("open_orders")),
        "dead_letters": int(published.get("dead_letters") or 0),
        "dead_letters_by_code": {str(code): int(n) for code, n in (published.get("dead_letters_by_code") or {}).items()
                                 if n},
        "gap_first": _int_or_none(published.get("gap_first")),
        "gap_last": _int_or_none(published.get("gap_last")),
        "events_applied": int(published.get("events_applied") or 0),
        "publish_ms": int(published.get("publish_ms") or 0),
        "snapshot_latency_ms": [int(ms) for ms in published.get("snapshot_latency_ms") or ()],
    }


# What a batch published, as the job's publisher counts it (the keys of
# ``metrics_from_progress``'s ``published``).
BATCH_FIGURES = ("snapshots", "recovered", "last_second", "open_orders", "dead_letters", "dead_letters_by_code",
                 "gap_first", "gap_last", "events_applied")


# How a batch's records reached the broker, as the publisher times it (``delivery_figures``).
DELIVERY_FIGURES = ("publish_ms", "snapshot_latency_ms")


def delivery_figures(snapshots: Iterable[SnapshotMessage], sent_at: float, acked_at: float) -> dict[str, Any]:
    """``DELIVERY_FIGURES`` of a batch whose records were sent from ``sent_at`` and all
    acknowledged at ``acked_at`` (Unix times). Recovered seconds are left out of the
    latency: their delay is the outage's length, counted by ``recovered``."""
    return {
        "publish_ms": max(0, round((acked_at - sent_at) * 1000)),
        "snapshot_latency_ms": [max(0, round((acked_at - (m.snapshot_time + SNAPSHOT_CADENCE_SECONDS)) * 1000))
                                for m in snapshots if not m.recovered],
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def encode_metric(metrics: dict[str, Any]) -> bytes:
    """The record value for a ``metrics_from_progress`` message."""
    return json.dumps(metrics, separators=(",", ":")).encode()


# ---------------------------------------------------------------- reader side

# Fields every metrics message has (older messages may lack the output figures: readers
# take ``OPTIONAL_FIELDS`` as absent then).
METRIC_FIELDS = {
    "batch_id": int,
    "timestamp": str,
    "num_input_events": int,
    "input_events_per_second": float,
    "processed_events_per_second": float,
    "batch_duration_ms": int,
    "state_rows": int,
    "lag": int,
}


OPTIONAL_FIELDS = {"snapshots": int, "recovered": int, "last_second": int, "open_orders": int,
                   "dead_letters": int, "gap_first": int, "gap_last": int, "events_applied": int}


class BadMetric(ValueError):
    """A metrics-topic record that does not follow the contract."""


def parse_metric(value: bytes | str) -> dict:
    """Decode one metrics-topic value into a flat dict of the fields above, with ``time``
    (a UTC ``datetime``) for ``timestamp``; raises ``BadMetric`` with the reason otherwise."""
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMetric(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMetric("not a JSON object")
    out: dict = {}
    for name, kind in METRIC_FIELDS.items():
        raw = data.get(name)
        if raw is None or isinstance(raw, bool):
            raise BadMetric(f"missing or null field {name!r}")
        try:
            out[name] = kind(raw)
        except (TypeError, ValueError):
            raise BadMetric(f"field {name!r} is not {kind.__name__}: {raw!r}") from None
        if kind is float and not math.isfinite(out[name]):
            out[name] = float("nan")
    for name, kind in OPTIONAL_FIELDS.items():
        raw = data.get(name)
        try:
            out[name] = None if raw is None or isinstance(raw, bool) else kind(raw)
        except (TypeError, ValueError):
            raise BadMetric(f"field {name!r} is not {kind.__name__}: {raw!r}") from None
    codes = data.get("dead_letters_by_code") or {}
    out["dead_letters_by_code"] = {str(k): int(v) for k, v in codes.items()} if isinstance(codes, dict) else {}
    text = out.pop("timestamp")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadMetric(f"bad timestamp: {exc}") from None
    out["time"] = stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)
    out["query"] = str(data.get("query", ""))
    return out
