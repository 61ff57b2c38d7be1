"""The pipeline-health page: freshness, snapshots per second, sequence numbers, the
job's batch metrics and the dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

import pandas as pd

from marketstream.deadletter import DeadLetter
from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS, SnapshotMessage
from marketstream.orderbook.metrics import BadMetric, parse_metric
from marketstream.snapshots import count_per_second


@dataclass(frozen=True)
class Freshness:
    age_seconds: float | None
    stale: bool
    message: str


def freshness(snapshot_time: int | None, now: float, stale_after_seconds: float) -> Freshness:
    """Is the newest snapshot recent enough? ``snapshot_time`` and ``now`` in epoch seconds."""
    if snapshot_time is None:
        return Freshness(None, True, "No snapshot has been published yet.")
    age = now - snapshot_time
    if age > stale_after_seconds:
        due = "every second" if SNAPSHOT_CADENCE_SECONDS == 1 else f"every {SNAPSHOT_CADENCE_SECONDS} s"
        return Freshness(
            age, True,
            f"Stale: the newest snapshot is {age:.0f} s old (snapshots are due {due}; "
            f"warning after {stale_after_seconds:g} s). Is the Spark job running?",
        )
    return Freshness(age, False, f"Live: snapshot {max(age, 0):.0f} s old.")


# ---------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class SnapshotMeta:
    """What the health page needs of a snapshot record (not its levels)."""

    snapshot_time: int
    sequence: int
    partition: int = 0
    offset: int = 0


def snapshot_meta(message: SnapshotMessage, partition: int = 0, offset: int = 0) -> SnapshotMeta:
    return SnapshotMeta(message.snapshot_time, message.sequence, partition, offset)


def snapshots_per_second(metas: Iterable[SnapshotMeta], start: int, end: int) -> pd.DataFrame:
    """One row per second in ``[start, end]`` with how many snapshot records carry that
    second, as the health check counts them: 0 is a gap, more than 1 a duplicate.
    Columns: time (UTC datetime), snapshots, status."""
    counted = count_per_second((m.snapshot_time for m in metas), start, end + 1)
    status = ["gap" if v == 0 else "duplicate" if v > 1 else "ok" for v in counted.counts]
    return pd.DataFrame(
        {
            "time": pd.to_datetime(list(counted.seconds), unit="s", utc=True),
            "snapshots": counted.counts,
            "status": status,
        }
    )


@dataclass(frozen=True)
class SequenceReport:
    missing: list[int]  # sequence numbers never seen between the first and last seen
    repeated: list[int]  # sequence numbers seen more than once


def sequence_report(metas: Iterable[SnapshotMeta]) -> SequenceReport:
    seen: dict[int, int] = {}
    for meta in metas:
        seen[meta.sequence] = seen.get(meta.sequence, 0) + 1
    if not seen:
        return SequenceReport([], [])
    low, high = min(seen), max(seen)
    missing = [s for s in range(low, high + 1) if s not in seen]
    repeated = sorted(s for s, n in seen.items() if n > 1)
    return SequenceReport(missing, repeated)


# ---------------------------------------------------------------- batch metrics


@dataclass
class MetricsView:
    frame: pd.DataFrame  # one row per batch, oldest first
    bad_records: int = 0
    last_error: str | None = None


METRIC_COLUMNS = ["time", "batch_id", "num_input_events", "input_events_per_second",
                  "processed_events_per_second", "batch_duration_ms", "state_rows", "lag"]


def metrics_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Parsed metrics (``parse_metric`` dicts) as a frame, one row per batch, oldest first."""
    frame = pd.DataFrame(list(rows), columns=METRIC_COLUMNS + ["query"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if not frame.empty:
        frame = frame.sort_values(["time", "batch_id"]).reset_index(drop=True)
    return frame[METRIC_COLUMNS]


def metrics_view(values: Iterable[bytes | str]) -> MetricsView:
    """Parse metrics values; malformed ones are counted, never fatal."""
    rows, bad, last_error = [], 0, None
    for value in values:
        try:
            rows.append(parse_metric(value))
        except BadMetric as exc:
            bad, last_error = bad + 1, str(exc)
    return MetricsView(metrics_frame(rows), bad, last_error)


# ---------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class DeadLetterRow:
    time: datetime
    reason: str
    origin: str  # where the original is, see ``DeadLetter.origin``
    preview: str


def dead_letter_row(letter: DeadLetter, timestamp_ms: int) -> DeadLetterRow:
    """One dead letter as the page lists it: its reason, where it came from and the start
    of its original bytes."""
    raw = letter.value.decode("utf-8", "replace")
    preview = raw if len(raw) <= 120 else raw[:117] + "..."
    return DeadLetterRow(
        time=datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc),
        reason=letter.reason or "(no reason header)",
        origin=letter.origin,
        preview=preview,
    )


def counts_by_partition(low: Mapping[int, int], high: Mapping[int, int]) -> int:
    """Records held in a topic: high minus low watermark, summed over partitions."""
    return sum(max(0, high[p] - low.get(p, 0)) for p in high)
