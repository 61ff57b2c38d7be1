"""Validation of one interval's export (the ``orderbook_export`` DAG's second task).

It reads the files the exporter wrote, not the topic, so a damaged export is caught:
- every snapshot: symbols in order and contiguous, levels interleaved ``buy_1, sell_1,
  buy_2, ...``, buy prices descending and sell prices ascending, positive prices and
  amounts, ``total = price x amount`` and ``cum_sum`` running sums, exact decimals, depth;
- cadence: exactly one snapshot per second of the interval (gaps and duplicates listed),
  sequence numbers increasing by one; when the export opens with the stream's very first
  snapshot (sequence 1), the seconds before it are not gaps: the stream did not exist yet
  (the report says when it started);
- every other format (CSV, Parquet) says the same as the JSON;
- reconciliation: the interval's last snapshot equals the reference replay (the core
  ``OrderBook``) of the input topic up to the input offsets in that snapshot's headers.

The report ``<start>_<end>.validation.json`` is written beside the export either way (it
also counts the snapshots the job published late, ``recovered_snapshots``);
``ValidationFailed`` is raised when anything is wrong, so the Airflow task fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from marketstream.exports.formats import FORMATS, JSON, ExportFormat
from marketstream.exports.layout import export_paths, utc, write_atomic
from marketstream.deadletter import DeadLetter
from marketstream.kafka_io import open_topic, read_range
from marketstream.orderbook import OrderBook, render_book
from marketstream.orderbook.book import EXACT as _EXACT
from marketstream.orderbook.events import ReasonCode
from marketstream.orderbook.reference import ReferenceReplay
from marketstream.orderbook.message import (
    SNAPSHOT_CADENCE_SECONDS,
    SnapshotMessage,
    format_snapshot_time,
    parse_snapshot_time,
)
from marketstream.orderbook.render import Level, levels_from_json, levels_to_json
from marketstream.settings import Settings
from marketstream.snapshots import count_per_second, read_seconds

log = logging.getLogger(__name__)

MAX_LISTED = 200  # violations kept in the report; the rest are counted


class ValidationFailed(Exception):
    def __init__(self, report: dict):
        self.report = report
        shown = report["violations"][:10]
        more = len(report["violations"]) - len(shown)
        super().__init__(
            f"export {report['interval_start']} .. {report['interval_end']} failed validation "
            f"({len(report['violations'])} violation(s)):\n  - " + "\n  - ".join(shown)
            + (f"\n  ... and {more} more in the report" if more else "")
        )


@dataclass(frozen=True)
class ExportedSnapshot:
    snapshot_time: int
    sequence: int
    levels: list[Level]
    recovered: bool = False

    def message(self) -> SnapshotMessage:
        """As the message it was exported from (offsets and open orders are not exported)."""
        return SnapshotMessage(self.snapshot_time, self.sequence, {}, -1, levels_to_json(self.levels), self.recovered)


# ------------------------------------------------------------------ one snapshot


def check_book(levels: list[Level], depth: int) -> list[str]:
    """Violations of the snapshot format in one snapshot's level list (empty: all fine)."""
    problems: list[str] = []
    symbols_seen: list[str] = []
    by_symbol: dict[str, list[Level]] = {}
    for level in levels:
        if not symbols_seen or symbols_seen[-1] != level.symbol:
            if level.symbol in by_symbol:
                problems.append(f"levels of {level.symbol} are not contiguous")
            symbols_seen.append(level.symbol)
        by_symbol.setdefault(level.symbol, []).append(level)
    if symbols_seen != sorted(set(symbols_seen)) and len(symbols_seen) == len(set(symbols_seen)):
        problems.append(f"symbols not in alphabetical order: {symbols_seen}")
    for symbol, rows in by_symbol.items():
        buys = [r for r in rows if r.side.startswith("buy_")]
        sells = [r for r in rows if r.side.startswith("sell_")]
        if len(buys) + len(sells) != len(rows):
            bad = sorted({r.side for r in rows} - {r.side for r in buys + sells})
            problems.append(f"{symbol}: unknown side label(s) {bad}")
            continue
        for name, side in (("buy", buys), ("sell", sells)):
            labels = [r.side for r in side]
            expected = [f"{name}_{rank}" for rank in range(1, len(side) + 1)]
            if labels != expected:
                problems.append(f"{symbol}: {name} levels are labelled {labels[:6]}..., expected {expected[:6]}...")
            if depth and len(side) > depth:
                problems.append(f"{symbol}: {len(side)} {name} levels, more than the depth {depth}")
        interleaved: list[Level] = []
        for rank in range(max(len(buys), len(sells))):
            interleaved += ([buys[rank]] if rank < len(buys) else []) + ([sells[rank]] if rank < len(sells) else [])
        if [r.side for r in rows] != [r.side for r in interleaved]:
            problems.append(f"{symbol}: levels are not interleaved buy_1, sell_1, buy_2, sell_2, ...")
        for name, side, descending in (("buy", buys, True), ("sell", sells, False)):
            for upper, lower in zip(side, side[1:]):
                ok = upper.price > lower.price if descending else upper.price < lower.price
                if not ok:
                    order = "descending" if descending else "ascending"
                    problems.append(
                        f"{symbol}: {name} prices not strictly {order} at {upper.side} {upper.price} -> {lower.side} {lower.price}"
                    )
            previous = Decimal(0)
            for row in side:
                if row.price <= 0 or row.amount <= 0:
                    problems.append(f"{symbol} {row.side}: price and amount must be positive (price {row.price}, amount {row.amount})")
                if row.total != _EXACT.multiply(row.price, row.amount):
                    problems.append(f"{symbol} {row.side}: total {row.total} != price {row.price} x amount {row.amount}")
                # Checked against the level above (not a recomputed running sum) so one bad
                # number is reported once, not again on every deeper level.
                if row.cum_sum != _EXACT.add(previous, row.total):
                    problems.append(f"{symbol} {row.side}: cum_sum {row.cum_sum} != previous cum_sum {previous} + total {row.total}")
                previous = row.cum_sum
    return problems


# ------------------------------------------------------------------ the interval


def _time_text(epoch: int) -> str:
    return format_snapshot_time(epoch)


def _ranges(seconds: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for second in seconds:
        if runs and second == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], second)
        else:
            runs.append((second, second))
    return runs


def stream_start(snapshots: list[ExportedSnapshot], start: int, end: int) -> int | None:
    """The second the snapshot stream began, when that lies in ``[start, end)``: the
    export opens with sequence 1, the first snapshot the job published for its checkpoint.
    A sequence 1 after other snapshots is not a start but a discontinuity (a job restarted
    on a fresh checkpoint): ``None`` then, and ``check_cadence`` reports the jump."""
    if snapshots and snapshots[0].sequence == 1 and start <= snapshots[0].snapshot_time < end:
        return snapshots[0].snapshot_time
    return None


def check_cadence(snapshots: list[ExportedSnapshot], start: int, end: int) -> list[str]:
    """One snapshot for every second in ``[start, end)`` (from the stream's start when it
    began in the interval, see ``stream_start``); gaps, duplicates, strays and sequence
    breaks listed."""
    problems: list[str] = []
    began = stream_start(snapshots, start, end)
    expected_from = start if began is None else began
    for snap in snapshots:
        if not start <= snap.snapshot_time < end:
            problems.append(f"snapshot {_time_text(snap.snapshot_time)} (seq {snap.sequence}) lies outside the interval")
    seconds = count_per_second((s.snapshot_time for s in snapshots), expected_from, end)
    for first, last in _ranges(seconds.gaps):
        span = last - first + 1
        where = _time_text(first) if span == 1 else f"{_time_text(first)} .. {_time_text(last)}"
        problems.append(f"gap: no snapshot for {span} second(s): {where}")
    for second in seconds.duplicates:
        problems.append(f"duplicate: {seconds.counts[second - expected_from]} different snapshots for {_time_text(second)}")
    for before, after in zip(snapshots, snapshots[1:]):
        if after.snapshot_time <= before.snapshot_time:
            problems.append(
                f"out of order: {_time_text(after.snapshot_time)} (seq {after.sequence}) after "
                f"{_time_text(before.snapshot_time)} (seq {before.sequence})"
            )
        if after.sequence != before.sequence + 1:
            problems.append(
                f"sequence jumps from {before.sequence} ({_time_text(before.snapshot_time)}) "
                f"to {after.sequence} ({_time_text(after.snapshot_time)})"
            )
    return problems


def load_export(json_path: Path) -> tuple[list[ExportedSnapshot], list[str]]:
    """The exported JSON as snapshots; a file that cannot be read is a violation, not a crash."""
    try:
        items = json.loads(json_path.read_text(encoding="utf-8"), parse_float=Decimal)
    except FileNotFoundError:
        return [], [f"export file missing: {json_path}"]
    except (ValueError, UnicodeDecodeError) as exc:
        return [], [f"export JSON unreadable: {exc}"]
    if not isinstance(items, list):
        return [], ["export JSON is not an array"]
    snapshots, problems = [], []
    for index, item in enumerate(items):
        try:
            levels = [
                Level(row["symbol"], row["side"], Decimal(str(row["price"])), Decimal(str(row["amount"])),
                      Decimal(str(row["total"])), Decimal(str(row["cum_sum"])))
                for row in item["book"]
            ]
            recovered = item.get("recovered", False)  # absent in exports written before the flag
            if not isinstance(recovered, bool):
                raise ValueError(f"recovered is not true or false: {recovered!r}")
            snapshots.append(ExportedSnapshot(parse_snapshot_time(item["snapshot_time"]), int(item["sequence"]),
                                              levels, recovered))
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            problems.append(f"export entry {index} is malformed: {type(exc).__name__} {exc}")
    return snapshots, problems


def check_file_matches(export_format: ExportFormat, path: Path, snapshots: list[ExportedSnapshot]) -> list[str]:
    """The file of another format holds exactly what the JSON export implies."""
    label = export_format.label
    try:
        actual = path.read_bytes()
    except FileNotFoundError:
        return [f"export file missing: {path}"]
    expected = export_format.render([s.message() for s in snapshots])
    if actual == expected:
        return []
    try:
        got_lines, want_lines = export_format.lines(actual), export_format.lines(expected)
    except ValueError as exc:
        return [f"export {label} unreadable: {exc}"]
    for number, (got, want) in enumerate(zip(got_lines, want_lines), start=1):
        if got != want:
            return [f"{label} differs from the JSON export at line {number}: {got!r}, expected {want!r}"]
    if len(got_lines) != len(want_lines):
        return [f"{label} has {len(got_lines)} lines, the JSON export implies {len(want_lines)}"]
    return [f"{label} holds what the JSON export implies but not as the exporter writes it"]


# ------------------------------------------------------------------ reconciliation


def fetch_snapshot(settings: Settings, snapshot_time: int, sequence: int) -> SnapshotMessage | None:
    """The published message for ``(snapshot_time, sequence)`` (headers carry the offsets)."""
    for message in read_seconds(settings, snapshot_time, snapshot_time + 1).snapshots:
        if message.sequence == sequence:
            return message
    return None


def _cache_path(settings: Settings) -> Path:
    return Path(settings.validation_cache_dir) / f"replay-{settings.orders_topic}.json"


def _marker(settings: Settings, offsets: dict[int, int]) -> dict[str, str]:
    """Fingerprint of the last record below each offset: tells a cache from a previous
    life of the topic (a recreated topic reuses the same offsets)."""
    stop = {p: o for p, o in offsets.items() if o > 0}
    start = {p: o - 1 for p, o in stop.items()}
    return {str(r.partition): f"{r.timestamp_ms}:{hashlib.sha256(r.value or b'').hexdigest()[:16]}"
            for r in read_range(settings, settings.orders_topic, start, stop)}


@dataclass
class _Cache:
    replay: ReferenceReplay
    deadletter_offsets: dict[int, int]  # how far the dead-letter topic has been read
    refused: set[tuple[int, int]]  # symbol-limit rejects not replayed yet


class _CacheAhead(Exception):
    """The saved state is past the snapshot asked about: usable neither to continue nor
    to be replaced by an older state (the validator's next run continues from it)."""


def _load_cache(settings: Settings, target: dict[int, int]) -> _Cache | None:
    """The saved state, or ``None`` to replay from the start; ``_CacheAhead`` when it is
    past ``target``."""
    path = _cache_path(settings)
    try:
        data = json.loads(path.read_text())
        replay = ReferenceReplay.from_json(data["replay"])
        if any(o > target.get(p, 0) for p, o in replay.position.items()):
            raise _CacheAhead
        if replay.closed_ttl_s != settings.closed_id_ttl_seconds:
            return None  # another TTL: the tombstones it kept are not the ones needed
        if data["marker"] != _marker(settings, replay.position):
            log.warning("replay cache %s is from another life of %s: ignored", path, settings.orders_topic)
            return None
        return _Cache(replay, {int(p): o for p, o in data["deadletter_offsets"].items()},
                      {(p, o) for p, o in data["refused"]})
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
        log.warning("unreadable replay cache %s (%s): replaying from the start", path, exc)
        return None


def _save_cache(settings: Settings, cache: _Cache) -> None:
    data = {"topic": settings.orders_topic, "marker": _marker(settings, cache.replay.position),
            "replay": cache.replay.to_json(),
            "deadletter_offsets": {str(p): o for p, o in cache.deadletter_offsets.items()},
            "refused": sorted(cache.refused)}
    write_atomic(_cache_path(settings), json.dumps(data, separators=(",", ":")))


# What the job's book refuses for one of its bounds (the replay skips them as the job did).
_REFUSED_BY_THE_BOOK = frozenset({ReasonCode.SYMBOL_LIMIT, ReasonCode.CLOSED_ID_LIMIT})


def _refused_by_job(settings: Settings, cache: _Cache) -> None:
    """Add the job's symbol-limit and closed-id-limit rejects published since the last run to ``cache``."""
    try:
        with open_topic(settings, settings.deadletter_topic) as reader:
            ends = reader.end_offsets()
            for partition, end in ends.items():
                for record in reader.read(partition, cache.deadletter_offsets.get(partition, 0), end):
                    letter = DeadLetter.from_record(record.value, record.headers)
                    if (letter.code in _REFUSED_BY_THE_BOOK and letter.source_topic == settings.orders_topic
                            and letter.source_partition is not None and letter.source_offset is not None):
                        cache.refused.add((letter.source_partition, letter.source_offset))
            cache.deadletter_offsets = ends
    except LookupError:
        pass  # no dead-letter topic: nothing was refused


def replay_book(settings: Settings, input_offsets: dict[int, int], use_cache: bool = True) -> tuple[OrderBook, int]:
    """The reference book (``ReferenceReplay``): the input below ``input_offsets``, without
    what breaks the input contract and the OPENs the job refused for the symbol limit.
    Returns the book and how many records were skipped.

    The replay continues from the state saved by the previous validation
    (``validation_cache_dir``) instead of reading the whole topic every interval; the
    saved state stays bounded (tombstones expire as in the job)."""
    try:
        cache = _load_cache(settings, input_offsets) if use_cache else None
    except _CacheAhead:
        # An older snapshot (one the book tool explains): replay it from the start and
        # leave the saved state, which is further on, to the validator.
        cache, use_cache = None, False
    if cache is None:
        cache = _Cache(ReferenceReplay(closed_ttl_s=settings.closed_id_ttl_seconds), {}, set())
    _refused_by_job(settings, cache)
    replay = cache.replay
    replay.apply_all(read_range(settings, settings.orders_topic, dict(replay.position), input_offsets),
                     cache.refused)
    replay.expire()
    cache.refused = {(p, o) for p, o in cache.refused if o >= replay.position.get(p, 0)}
    if use_cache:
        _save_cache(settings, cache)
    return replay.book, replay.invalid + replay.refused


def reconcile(settings: Settings, last: ExportedSnapshot) -> tuple[list[str], dict]:
    published = fetch_snapshot(settings, last.snapshot_time, last.sequence)
    where = f"{_time_text(last.snapshot_time)} (seq {last.sequence})"
    if published is None:
        return [f"reconciliation: snapshot {where} is not in topic {settings.orderbook_topic}"], {}
    book, skipped = replay_book(settings, published.input_offsets)
    expected = render_book(book, settings.book_depth)
    info = {
        "snapshot_time": _time_text(last.snapshot_time),
        "sequence": last.sequence,
        "input_offsets": {str(p): o for p, o in sorted(published.input_offsets.items())},
        "replayed_invalid_events_skipped": skipped,
        "open_orders_published": published.open_orders,
        "open_orders_replayed": len(book.open_orders),
    }
    problems = []
    if levels_to_json(expected) != published.value:
        problems.append(f"reconciliation: published snapshot {where} differs from the replay of {settings.orders_topic} "
                        f"up to {info['input_offsets']}")
    if last.levels != levels_from_json(levels_to_json(expected)):
        problems.append(f"reconciliation: exported book of {where} differs from the replay of the input topic")
    if published.open_orders >= 0 and published.open_orders != len(book.open_orders):
        problems.append(f"reconciliation: {where} reports {published.open_orders} open orders, the replay has {len(book.open_orders)}")
    info["matches"] = not problems
    return problems, info


# ------------------------------------------------------------------ the task


def validate_interval(settings: Settings, start: datetime, end: datetime, extra_violations: list[str] | None = None) -> dict:
    """Validate the interval's export files, write the report beside them, return it;
    raise ``ValidationFailed`` (after writing the report) on any violation."""
    paths = export_paths(settings.export_dir, start, end)
    json_path = paths.data(JSON.name)
    start_s, end_s = int(utc(start).timestamp()), int(utc(end).timestamp())
    snapshots, violations = load_export(json_path)
    violations += list(extra_violations or [])
    for snap in snapshots:
        violations += [f"{_time_text(snap.snapshot_time)} (seq {snap.sequence}): {p}" for p in check_book(snap.levels, settings.book_depth)]
    violations += check_cadence(snapshots, start_s, end_s)
    began = stream_start(snapshots, start_s, end_s)
    if json_path.exists():
        for export_format in FORMATS:
            if export_format is not JSON:
                violations += check_file_matches(export_format, paths.data(export_format.name), snapshots)
    reconciliation: dict = {}
    if snapshots:
        problems, reconciliation = reconcile(settings, snapshots[-1])
        violations += problems
    listed = violations[:MAX_LISTED]
    if len(violations) > MAX_LISTED:
        listed.append(f"... and {len(violations) - MAX_LISTED} more violation(s)")
    report = {
        "status": "failed" if violations else "passed",
        "interval_start": utc(start).isoformat(),
        "interval_end": utc(end).isoformat(),
        "snapshots": len(snapshots),
        # Published late by the job (backfilled after a restart or an overrun).
        "recovered_snapshots": sum(s.recovered for s in snapshots),
        # One a second from the interval start, or from the stream's start when the job
        # published its first snapshot within the interval (seconds before are no gaps).
        "expected_snapshots": (end_s - (start_s if began is None else began)) // SNAPSHOT_CADENCE_SECONDS,
        "stream_started": None if began is None else _time_text(began),
        "seconds_before_stream": 0 if began is None else began - start_s,
        "violation_count": len(violations),
        "violations": listed,
        "reconciliation": reconciliation,
        "files": {f.name: paths.data(f.name).name for f in FORMATS},
    }
    write_atomic(paths.validation, json.dumps(report, indent=2) + "\n")
    log.info("validation of %s: %s, %d snapshot(s) (%d recovered), %d violation(s)", json_path.name,
             report["status"], len(snapshots), report["recovered_snapshots"], len(violations))
    if began is not None:
        log.info("the snapshot stream started at %s (sequence 1): the %d second(s) before it are not gaps",
                 report["stream_started"], report["seconds_before_stream"])
    if violations:
        raise ValidationFailed(report)
    return report


# ------------------------------------------------------------------ reading a report


@dataclass(frozen=True)
class ReportSummary:
    """What a reader of the reports (the dashboard) needs of one."""

    status: str  # passed | failed
    snapshots: int | None
    recovered_snapshots: int | None
    violations: list[str]


def summarize_report(text: str) -> ReportSummary:
    """The summary of a report's text; ``ValueError`` when it is not a report."""
    report = json.loads(text)
    if not isinstance(report, dict):
        raise ValueError("not a JSON object")
    status = report.get("status")
    if status not in ("passed", "failed"):
        raise ValueError(f"unknown status {status!r}")
    violations = report.get("violations") or []
    counts = {name: report.get(name) for name in ("snapshots", "recovered_snapshots")}
    return ReportSummary(
        status=status,
        snapshots=counts["snapshots"] if isinstance(counts["snapshots"], int) else None,
        recovered_snapshots=counts["recovered_snapshots"] if isinstance(counts["recovered_snapshots"], int) else None,
        violations=[str(v) for v in violations] if isinstance(violations, list) else [str(violations)],
    )
