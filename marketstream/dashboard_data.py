"""What the dashboard shows, computed from what the sources hold: pure functions, no I/O.

The dashboard's pages only fetch (``dashboard/sources.py``) and draw; every number a user
reads comes from here so it can be tested without a browser, a broker or a database.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level


# ---------------------------------------------------------------- order book


@dataclass(frozen=True)
class LatestBooks:
    """The newest snapshot and its levels split by symbol.

    A symbol seen in an older snapshot but absent from the newest one has an empty list:
    its book emptied, which is news, not a reason to keep showing the old levels.
    """

    snapshot: SnapshotMessage
    books: dict[str, list[Level]]


def latest_books(messages: Iterable[SnapshotMessage]) -> LatestBooks | None:
    messages = list(messages)
    if not messages:
        return None
    # Sequence breaks ties: a restarted job may publish the same second twice.
    newest = max(messages, key=lambda m: (m.snapshot_time, m.sequence))
    books: dict[str, list[Level]] = {
        level.symbol: [] for message in messages if message is not newest for level in message.levels()
    }
    for level in newest.levels():
        books.setdefault(level.symbol, []).append(level)
    return LatestBooks(newest, dict(sorted(books.items())))


def _side_and_rank(level: Level) -> tuple[str, int]:
    side, _, rank = level.side.partition("_")
    return side, int(rank)


def depth_series(levels: Sequence[Level]) -> pd.DataFrame:
    """Cumulative amount per side for a depth chart: buys from the best bid down, sells
    from the best ask up. Columns: side, price, cumulative_amount (floats: chart only)."""
    rows = []
    for wanted, descending in (("buy", True), ("sell", False)):
        side_levels = sorted(
            (lv for lv in levels if _side_and_rank(lv)[0] == wanted),
            key=lambda lv: lv.price,
            reverse=descending,
        )
        cumulative = Decimal(0)
        for level in side_levels:
            cumulative += level.amount
            rows.append({"side": wanted, "price": float(level.price), "cumulative_amount": float(cumulative)})
    return pd.DataFrame(rows, columns=["side", "price", "cumulative_amount"])


def symbol_units(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") for "BTC-USDT"; the seed's headers name both units."""
    base, sep, quote = symbol.partition("-")
    return (base, quote) if sep else (symbol, "")


def format_number(value: Decimal) -> str:
    """Exact value with thousands separators, as the seed's book view prints it."""
    return f"{value:,}"


def level_table(symbol: str, levels: Sequence[Level]) -> pd.DataFrame:
    """The seed's book view: ``Buy n | Price | Amount | Total | Sum`` beside the same five
    for ``Sell n``, one row per rank. Columns are a two-level header (Buy Order / Sell
    Order); cells are exact numbers formatted as text so no float noise appears."""
    base, quote = symbol_units(symbol)
    unit = lambda name, u: f"{name} ({u})" if u else name  # noqa: E731
    fields = ["Side", unit("Price", quote), unit("Amount", base), unit("Total", quote), unit("Sum", quote)]
    by_rank: dict[int, dict[str, Level]] = {}
    for level in levels:
        side, rank = _side_and_rank(level)
        by_rank.setdefault(rank, {})[side] = level
    rows = []
    for rank in sorted(by_rank):
        row: list[str] = []
        for side in ("buy", "sell"):
            level = by_rank[rank].get(side)
            if level is None:
                row += [""] * 5
            else:
                row += [
                    f"{side.capitalize()} {rank}", format_number(level.price), format_number(level.amount),
                    format_number(level.total), format_number(level.cum_sum),
                ]
        rows.append(row)
    columns = pd.MultiIndex.from_tuples([("Buy Order", f) for f in fields] + [("Sell Order", f) for f in fields])
    return pd.DataFrame(rows, columns=columns)


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
        return Freshness(
            age, True,
            f"Stale: the newest snapshot is {age:.0f} s old (snapshots are due every second; "
            f"warning after {stale_after_seconds:g} s). Is the Spark job running?",
        )
    return Freshness(age, False, f"Live: snapshot {max(age, 0):.0f} s old.")


# ---------------------------------------------------------------- pipeline health


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
    """One row per second in ``[start, end]`` with how many snapshots carry that second:
    0 is a gap, more than 1 a duplicate. Columns: time (UTC datetime), snapshots, status."""
    counts: dict[int, int] = {}
    for meta in metas:
        if start <= meta.snapshot_time <= end:
            counts[meta.snapshot_time] = counts.get(meta.snapshot_time, 0) + 1
    seconds = list(range(start, end + 1))
    values = [counts.get(s, 0) for s in seconds]
    status = ["gap" if v == 0 else "duplicate" if v > 1 else "ok" for v in values]
    return pd.DataFrame(
        {
            "time": pd.to_datetime(seconds, unit="s", utc=True),
            "snapshots": values,
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


class BadMetric(ValueError):
    """A metrics-topic record that does not follow the contract."""


def parse_metric(value: bytes | str) -> dict:
    """Decode one metrics-topic value (contract in the common brief) into a flat dict with
    ``time`` as a UTC datetime; raises ``BadMetric`` with the reason otherwise."""
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
    try:
        stamp = pd.Timestamp(out.pop("timestamp"))
    except ValueError as exc:
        raise BadMetric(f"bad timestamp: {exc}") from None
    if pd.isna(stamp):
        raise BadMetric("bad timestamp: empty")
    out["time"] = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    out["query"] = str(data.get("query", ""))
    return out


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


@dataclass(frozen=True)
class DeadLetter:
    time: datetime
    reason: str
    source_topic: str
    source_partition: str
    source_offset: str
    preview: str


def dead_letter(headers: Sequence[tuple[str, bytes]], value: bytes | None, timestamp_ms: int) -> DeadLetter:
    """One dead-letter record as the page lists it; missing headers show as empty."""
    items = {k: (v or b"").decode("utf-8", "replace") for k, v in headers}
    raw = (value or b"").decode("utf-8", "replace")
    preview = raw if len(raw) <= 120 else raw[:117] + "..."
    return DeadLetter(
        time=datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc),
        reason=items.get("reason", "") or "(no reason header)",
        source_topic=items.get("source_topic", ""),
        source_partition=items.get("source_partition", ""),
        source_offset=items.get("source_offset", ""),
        preview=preview,
    )


# ---------------------------------------------------------------- exports

_EXPORT_NAME = re.compile(r"^(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)\.(validation\.json|json|csv)$")


def _parse_interval_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


@dataclass
class ExportInterval:
    interval_start: datetime
    interval_end: datetime
    json_path: Path | None = None
    csv_path: Path | None = None
    validation_path: Path | None = None
    status: str = "not validated"  # passed | failed | not validated | unreadable report
    snapshots: int | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"{self.interval_start:%Y%m%dT%H%M%SZ}_{self.interval_end:%Y%m%dT%H%M%SZ}"


def _read_validation(entry: ExportInterval) -> None:
    try:
        report = json.loads(entry.validation_path.read_text())
        status = report["status"]
        if status not in ("passed", "failed"):
            raise ValueError(f"unknown status {status!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        entry.status = "unreadable report"
        entry.violations = [f"{entry.validation_path.name}: {exc}"]
        return
    entry.status = status
    snapshots = report.get("snapshots")
    entry.snapshots = snapshots if isinstance(snapshots, int) else None
    violations = report.get("violations") or []
    entry.violations = [str(v) for v in violations] if isinstance(violations, list) else [str(violations)]


def list_exports(export_dir: Path) -> list[ExportInterval]:
    """Export intervals under ``<export_dir>/orderbook/<YYYY-MM-DD>/``, newest first.

    Files that do not follow the naming contract (e.g. a writer's temp file) are ignored.
    """
    root = Path(export_dir) / "orderbook"
    if not root.is_dir():
        return []
    entries: dict[tuple[datetime, datetime], ExportInterval] = {}
    for path in root.glob("*/*"):
        match = _EXPORT_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            start, end = _parse_interval_time(match[1]), _parse_interval_time(match[2])
        except ValueError:
            continue
        entry = entries.setdefault((start, end), ExportInterval(start, end))
        kind = match[3]
        if kind == "json":
            entry.json_path = path
        elif kind == "csv":
            entry.csv_path = path
        else:
            entry.validation_path = path
    for entry in entries.values():
        if entry.validation_path is not None:
            _read_validation(entry)
    return sorted(entries.values(), key=lambda e: (e.interval_start, e.interval_end), reverse=True)


def file_size_text(path: Path | None) -> str:
    if path is None:
        return "missing"
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def counts_by_partition(low: Mapping[int, int], high: Mapping[int, int]) -> int:
    """Records held in a topic: high minus low watermark, summed over partitions."""
    return sum(max(0, high[p] - low.get(p, 0)) for p in high)
