"""Exports of the order-book topic for one data interval (the ``orderbook_export`` DAG).

For ``[start, end)`` the snapshots whose record timestamp (= snapshot time, set by the
job) lies in the interval are read and written to
``<export_dir>/orderbook/<YYYY-MM-DD>/<start>_<end>.json`` and ``.csv``:

- JSON: an array of ``{"snapshot_time", "sequence", "book"}``, one per line, ``book``
  being the published value verbatim (exact decimals, seed field order);
- CSV: one row per level with its snapshot time and sequence.

Files are written to a hidden temp file and renamed, so a reader never sees half a file;
the content depends only on the topic, so re-running an interval rewrites identical bytes.

An interval that ended before the job published anything (the topic holds no record
stamped before its end) is not exported at all: ``NothingPublishedYet`` is raised and no
file is written (the DAG turns it into a skipped task). An empty topic is recognised at
once, without waiting the grace period for a job that is not there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from marketstream.kafka_io import offsets_for_time, read_range, topic_end_offsets
from marketstream.orderbook.events import format_decimal
from marketstream.orderbook.message import SnapshotMessage, format_snapshot_time
from marketstream.settings import Settings

log = logging.getLogger(__name__)

CSV_COLUMNS = ("snapshot_time", "sequence", "symbol", "side", "price", "amount", "total", "cum_sum")


def interval_stamp(moment: datetime) -> str:
    return utc(moment).strftime("%Y%m%dT%H%M%SZ")


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: interval bounds must carry a time zone")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ExportPaths:
    json: Path
    csv: Path
    validation: Path


def export_paths(export_dir: Path, start: datetime, end: datetime) -> ExportPaths:
    stem = f"{interval_stamp(start)}_{interval_stamp(end)}"
    folder = Path(export_dir) / "orderbook" / f"{utc(start):%Y-%m-%d}"
    return ExportPaths(folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}.validation.json")


@dataclass
class IntervalSnapshots:
    """What the topic holds for an interval, in topic order."""

    snapshots: list[SnapshotMessage] = field(default_factory=list)
    # Records that are not snapshot messages: "partition:offset: reason".
    undecodable: list[str] = field(default_factory=list)
    # Identical copies of a snapshot (a replayed Spark batch republishes the same
    # message): collapsed into one, counted here.
    redelivered: int = 0


class NothingPublishedYet(Exception):
    """The output topic holds no snapshot stamped before the interval's end: the
    order-book job had not published anything yet, so there is nothing to export (and
    nothing is wrong). Not a failure: the DAG maps it to a skipped task."""

    def __init__(self, topic: str, end: datetime, detail: str = ""):
        self.topic, self.end, self.detail = topic, utc(end), detail
        super().__init__(
            f"no snapshot on {topic} up to {format_snapshot_time(int(self.end.timestamp()))}"
            f"{f' ({detail})' if detail else ''}: the order-book job was not running yet"
            " — trigger orderbook_pipeline"
        )


def published_before(first_offsets_at_end: dict[int, int]) -> bool:
    """Whether the topic holds a record stamped before the interval's end, given
    ``offsets_for_time(topic, end)``: the first offset per partition stamped at or after
    the end (timestamps never decrease within a partition), so any non-zero offset means
    a record before it."""
    return any(offset > 0 for offset in first_offsets_at_end.values())


def _wait_for_interval_end(settings: Settings, end: datetime, grace_s: float) -> None:
    """Wait up to ``grace_s`` until the topic holds a record stamped at or after the
    interval's end: timestamps only grow, so every snapshot of the interval is then in.

    Raises ``NothingPublishedYet`` at once when the topic does not exist or is empty:
    nothing was ever published, so waiting for the job would be waiting for nothing."""
    topic = settings.orderbook_topic
    end_ms = int(utc(end).timestamp() * 1000)
    deadline = time.monotonic() + grace_s
    while True:
        try:
            marks = topic_end_offsets(settings, topic)
        except LookupError:
            raise NothingPublishedYet(topic, end, "the topic does not exist") from None
        if not any(marks.values()):
            raise NothingPublishedYet(topic, end, "the topic is empty")
        last = {p: hw - 1 for p, hw in marks.items() if hw > 0}
        newest = [r.timestamp_ms for r in read_range(settings, topic, last, marks)]
        if (newest and min(newest) >= end_ms) or time.monotonic() >= deadline:
            if not newest or min(newest) < end_ms:
                log.warning("no snapshot after the interval end yet (waited %.0f s): exporting what there is", grace_s)
            return
        time.sleep(1.0)


def read_interval(settings: Settings, start: datetime, end: datetime, grace_s: float | None = None) -> IntervalSnapshots:
    """Snapshots with record timestamp in ``[start, end)``: located by binary search on
    record timestamps (``kafka_io.offsets_for_time``), read with ``read_range``.

    Raises ``NothingPublishedYet`` when the topic holds no record stamped before ``end``."""
    start_ms, end_ms = int(utc(start).timestamp() * 1000), int(utc(end).timestamp() * 1000)
    if end_ms <= start_ms:
        raise ValueError(f"empty data interval [{start}, {end})")
    grace = settings.export_grace_seconds if grace_s is None else grace_s
    _wait_for_interval_end(settings, end, grace)
    stop = offsets_for_time(settings, settings.orderbook_topic, end_ms)
    if not published_before(stop):
        raise NothingPublishedYet(settings.orderbook_topic, end, "its first snapshot is stamped after the interval")
    begin = offsets_for_time(settings, settings.orderbook_topic, start_ms)
    result = IntervalSnapshots()
    seen: dict[int, SnapshotMessage] = {}
    for record in read_range(settings, settings.orderbook_topic, begin, stop):
        if not start_ms <= record.timestamp_ms < end_ms:
            continue  # timestamps are monotonic per partition; this is only a guard
        try:
            if record.value is None:
                raise ValueError("record has no value")
            message = SnapshotMessage.from_record(record.key, record.value, record.headers)
        except (ValueError, UnicodeDecodeError) as exc:
            result.undecodable.append(f"{record.partition}:{record.offset}: {exc}")
            log.warning("skipping undecodable record %s:%s: %s", record.partition, record.offset, exc)
            continue
        if seen.get(message.sequence) == message:
            result.redelivered += 1
            continue
        seen[message.sequence] = message
        result.snapshots.append(message)
    return result


def render_json(snapshots: list[SnapshotMessage]) -> str:
    if not snapshots:
        return "[]\n"
    rows = [
        f'{{"snapshot_time":{json.dumps(format_snapshot_time(m.snapshot_time))},'
        f'"sequence":{m.sequence},"book":{m.value}}}'
        for m in snapshots
    ]
    return "[\n" + ",\n".join(rows) + "\n]\n"


def render_csv(snapshots: list[SnapshotMessage]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for message in snapshots:
        when = format_snapshot_time(message.snapshot_time)
        for level in message.levels():
            writer.writerow([
                when, message.sequence, level.symbol, level.side, format_decimal(level.price),
                format_decimal(level.amount), format_decimal(level.total), format_decimal(level.cum_sum),
            ])
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write to a hidden temp file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def export_interval(settings: Settings, start: datetime, end: datetime, grace_s: float | None = None) -> dict:
    """Write the interval's JSON and CSV; returns a summary (the task's XCom).

    Raises ``NothingPublishedYet`` (writing nothing) for an interval that ended before
    the job's first snapshot."""
    data = read_interval(settings, start, end, grace_s)
    paths = export_paths(settings.export_dir, start, end)
    write_atomic(paths.json, render_json(data.snapshots))
    write_atomic(paths.csv, render_csv(data.snapshots))
    summary = {
        "interval_start": utc(start).isoformat(),
        "interval_end": utc(end).isoformat(),
        "json": str(paths.json),
        "csv": str(paths.csv),
        "snapshots": len(data.snapshots),
        "undecodable": data.undecodable,
        "redelivered": data.redelivered,
    }
    log.info(
        "exported %d snapshot(s) of [%s, %s) to %s (+ .csv); %d redelivered copies collapsed, %d undecodable",
        len(data.snapshots), summary["interval_start"], summary["interval_end"], paths.json,
        data.redelivered, len(data.undecodable),
    )
    return summary
