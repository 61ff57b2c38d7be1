"""Seconds from the exports, for seconds the snapshot topic no longer holds: the daily
Parquet roll-up (validated intervals only) first, then the intervals' own Parquet files
(``marketstream.exports.layout``). Reads are filtered on ``snapshot_time``, so Parquet's
row-group statistics skip the rest of a day's file.

The exports keep each second's levels, sequence and ``recovered`` flag; the input offsets
and the open-order count are not exported (``SnapshotMessage.input_offsets`` is empty,
``open_orders`` is -1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from marketstream.exports.formats import JSON, PARQUET
from marketstream.exports.layout import daily_rollup_path, list_exports
from marketstream.exports.validation import load_export
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level, levels_to_json


@dataclass(frozen=True)
class ExportedSecond:
    message: SnapshotMessage
    path: Path


def _days(start: int, end: int) -> list[date]:
    first, last = (datetime.fromtimestamp(s, UTC).date() for s in (start, end - 1))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def candidate_files(export_dir: Path | str, start: int, end: int) -> list[Path]:
    """The Parquet files that may hold seconds of ``[start, end)``, roll-ups first."""
    rollups = [p for day in _days(start, end) if (p := daily_rollup_path(export_dir, day)).is_file()]
    lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    intervals = sorted((e for e in list_exports(export_dir) if e.start < hi and lo < e.end and PARQUET.name in e.files),
                       key=lambda e: e.start)
    return rollups + [e.files[PARQUET.name] for e in intervals]


def _read(path: Path, start: int, end: int) -> list[ExportedSecond]:
    import pyarrow.parquet as pq

    lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    table = pq.read_table(path, filters=[("snapshot_time", ">=", lo), ("snapshot_time", "<", hi)], use_threads=False)
    seconds: list[ExportedSecond] = []
    rows: dict[tuple[int, int], tuple[bool, list[Level]]] = {}
    for row in table.to_pylist():  # rows in file order: seconds in order, levels as rendered
        key = (int(row["snapshot_time"].timestamp()), row["sequence"])
        rows.setdefault(key, (row["recovered"], []))[1].append(
            Level(row["symbol"], row["side"], row["price"], row["amount"], row["total"], row["cum_sum"]))
    for (second, sequence), (recovered, levels) in rows.items():
        seconds.append(ExportedSecond(SnapshotMessage(second, sequence, {}, -1, levels_to_json(levels), recovered), path))
    return seconds


def read_exported(export_dir: Path | str, start: int, end: int) -> dict[int, ExportedSecond]:
    """Each second of ``[start, end)`` found in the exports, from the first file holding
    it. A second whose book was empty has no Parquet rows: it is looked up in its
    interval's JSON file, which has an entry for every second."""
    found: dict[int, ExportedSecond] = {}
    for path in candidate_files(export_dir, start, end):
        try:
            for second in _read(path, start, end):
                found.setdefault(second.message.snapshot_time, second)
        except (OSError, ValueError) as exc:
            raise ExportUnreadable(f"cannot read {path}: {exc}") from exc
        if len(found) == end - start:
            return found
    missing = set(range(start, end)) - found.keys()
    lo, hi = datetime.fromtimestamp(min(missing, default=start), UTC), datetime.fromtimestamp(end, UTC)
    for interval in list_exports(export_dir):
        if not (interval.start < hi and lo < interval.end and JSON.name in interval.files):
            continue
        snapshots, problems = load_export(interval.files[JSON.name])
        if problems:
            raise ExportUnreadable(f"cannot read {interval.files[JSON.name]}: {problems[0]}")
        for snapshot in snapshots:
            if snapshot.snapshot_time in missing:
                found.setdefault(snapshot.snapshot_time, ExportedSecond(snapshot.message(), interval.files[JSON.name]))
    return found


class ExportUnreadable(RuntimeError):
    """An export file exists but cannot be read as the exporter writes it."""
