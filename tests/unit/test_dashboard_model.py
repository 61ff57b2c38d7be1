"""The dashboard's view model (``dashboard/model``), on hand-computed cases."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from dashboard.model import book, health
from dashboard.sources import read_exports
from marketstream.deadletter import DeadLetter
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels

D = Decimal


def snapshot(second: int, sequence: int, book: dict) -> SnapshotMessage:
    return SnapshotMessage(second, sequence, {0: sequence}, 1, levels_to_json(render_levels(book, 15)))


SEED_BOOK = {
    ("BTC-USDT", "BUY"): {D("34045.24"): D("6.51370"), D("34045.23"): D("0.00058")},
    ("BTC-USDT", "SELL"): {D("34054.25"): D("7.52013"), D("34054.37"): D("0.10531"), D("34055"): D("1")},
}


def test_latest_books_takes_newest_time_then_sequence_and_marks_emptied_symbols():
    eth = {("ETH-USDT", "BUY"): {D("1800"): D("1")}}
    older = snapshot(100, 7, {**SEED_BOOK, **eth})
    newest_dup = snapshot(101, 9, SEED_BOOK)  # same second published twice: higher sequence wins
    first_dup = snapshot(101, 8, eth)
    latest = book.latest_books([older, newest_dup, first_dup])
    assert latest.snapshot.sequence == 9
    assert list(latest.books) == ["BTC-USDT", "ETH-USDT"]
    assert latest.books["ETH-USDT"] == []  # gone from the newest snapshot: shown as emptied
    assert [lv.side for lv in latest.books["BTC-USDT"]] == ["buy_1", "sell_1", "buy_2", "sell_2", "sell_3"]
    assert book.latest_books([]) is None


def test_depth_series_accumulates_amount_away_from_the_spread():
    levels = snapshot(1, 1, SEED_BOOK).levels()
    series = book.depth_series(levels)
    buys = series[series.side == "buy"]
    sells = series[series.side == "sell"]
    assert list(buys.price) == [34045.24, 34045.23]
    assert list(buys.cumulative_amount) == pytest.approx([6.5137, 6.51428])
    assert list(sells.price) == [34054.25, 34054.37, 34055.0]
    assert list(sells.cumulative_amount) == pytest.approx([7.52013, 7.62544, 8.62544])


def test_level_table_is_the_book_view_with_exact_numbers():
    table = book.level_table("BTC-USDT", snapshot(1, 1, SEED_BOOK).levels())
    assert list(table.columns) == [
        ("Buy Order", "Side"), ("Buy Order", "Price (USDT)"), ("Buy Order", "Amount (BTC)"),
        ("Buy Order", "Total (USDT)"), ("Buy Order", "Sum (USDT)"),
        ("Sell Order", "Side"), ("Sell Order", "Price (USDT)"), ("Sell Order", "Amount (BTC)"),
        ("Sell Order", "Total (USDT)"), ("Sell Order", "Sum (USDT)"),
    ]
    # The first row: 34045.24 x 6.5137 = 221760.479788 (exact, no float noise).
    assert list(table.iloc[0]) == [
        "Buy 1", "34,045.24", "6.5137", "221,760.479788", "221,760.479788",
        "Sell 1", "34,054.25", "7.52013", "256,092.3870525", "256,092.3870525",
    ]
    assert list(table.iloc[1])[4] == "221,780.2260214"  # 221760.479788 + 34045.23 x 0.00058
    # The deeper sell side gets its own row with the buy half blank.
    assert list(table.iloc[2])[:5] == [""] * 5 and table.iloc[2, 5] == "Sell 3"


@pytest.mark.parametrize(
    "snapshot_time, now, stale",
    [(None, 1000.0, True), (1000, 1000.4, False), (1000, 1005.0, False), (1000, 1005.1, True), (1000, 1600.0, True)],
)
def test_freshness_warns_after_the_threshold(snapshot_time, now, stale):
    fresh = health.freshness(snapshot_time, now, stale_after_seconds=5)
    assert fresh.stale is stale
    if stale and snapshot_time is not None:
        assert f"{now - snapshot_time:.0f} s old" in fresh.message


def test_snapshots_per_second_shows_gaps_and_duplicates():
    metas = [health.SnapshotMeta(t, i) for i, t in enumerate([10, 11, 13, 13, 14, 20], start=1)]
    frame = health.snapshots_per_second(metas, 10, 15)
    assert list(frame.snapshots) == [1, 1, 0, 2, 1, 0]
    assert list(frame.status) == ["ok", "ok", "gap", "duplicate", "ok", "gap"]
    assert frame.time[0] == datetime(1970, 1, 1, 0, 0, 10, tzinfo=timezone.utc)


def test_sequence_report_lists_missing_and_repeated_numbers():
    metas = [health.SnapshotMeta(t, s) for t, s in [(1, 5), (2, 6), (3, 6), (4, 9)]]
    report = health.sequence_report(metas)
    assert report.missing == [7, 8]
    assert report.repeated == [6]
    assert health.sequence_report([]) == health.SequenceReport([], [])


METRIC = {
    "query": "orderbook", "batch_id": 3, "timestamp": "2026-11-22T08:00:01.250Z", "num_input_events": 12,
    "input_events_per_second": 99.5, "processed_events_per_second": 120.0, "batch_duration_ms": 480,
    "state_rows": 4174, "start_offsets": {"0": 1}, "end_offsets": {"0": 13}, "latest_offsets": {"0": 20}, "lag": 7,
}


def test_metrics_view_counts_bad_records_and_sorts_by_time():
    later = {**METRIC, "batch_id": 4, "timestamp": "2026-11-22T08:00:02Z"}
    view = health.metrics_view([json.dumps(later), b"garbage", json.dumps(METRIC)])
    assert list(view.frame.batch_id) == [3, 4]
    assert view.bad_records == 1 and "not JSON" in view.last_error


def test_dead_letter_row_reads_the_headers_and_keeps_the_bytes_visible():
    letter = DeadLetter.from_record(
        b'{"order_id": 1, "size": -1}',
        [("reason", b"size must be positive"), ("source_topic", b"orders"), ("source_partition", b"2"),
         ("source_offset", b"41")],
    )
    row = health.dead_letter_row(letter, 1_700_000_000_000)
    assert row.reason == "size must be positive"
    assert row.origin == "orders[2]@41"
    assert row.preview == '{"order_id": 1, "size": -1}'
    assert row.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    bare = health.dead_letter_row(DeadLetter.from_record(b"\xff" * 300, []), 0)
    assert bare.reason == "(no reason header)" and bare.preview.endswith("...") and len(bare.preview) == 120
    assert bare.origin == ""
    websocket = DeadLetter.from_record(b"{", [("reason", b"deal is not JSON"), ("source", b"ws://exchange:5050")])
    assert health.dead_letter_row(websocket, 0).origin == "ws://exchange:5050"


def _write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_list_exports_groups_files_by_interval_newest_first(tmp_path):
    day = tmp_path / "orderbook" / "2026-11-22"
    a, b, c = "20261122T100000Z_20261122T100500Z", "20261122T100500Z_20261122T101000Z", "20261122T101000Z_20261122T101500Z"
    for stem in (a, b, c):
        _write(day / f"{stem}.json", "[]")
    _write(day / f"{a}.csv")
    _write(day / f"{a}.validation.json", json.dumps({"status": "passed", "snapshots": 300, "violations": []}))
    _write(day / f"{b}.validation.json", json.dumps({"status": "failed", "snapshots": 298, "violations": ["gap at 10:07:12"]}))
    _write(day / f"{c}.validation.json", "{truncated")
    _write(day / ".tmp-123.json")  # a writer's temp file
    _write(day / "notes.txt")
    entries = read_exports(tmp_path)
    assert [e.stem for e in entries] == [c, b, a]
    assert [e.status for e in entries] == ["unreadable report", "failed", "passed"]
    assert entries[1].violations == ["gap at 10:07:12"] and entries[1].snapshots == 298
    assert entries[2].file("csv") == day / f"{a}.csv" and entries[1].file("csv") is None
    assert entries[2].sizes == {"json": 2, "csv": 0} and entries[1].sizes == {"json": 2}
    assert entries[0].violations[0].startswith(f"{c}.validation.json")


def test_list_exports_without_a_directory_or_report(tmp_path):
    assert read_exports(tmp_path / "absent") == []
    _write(tmp_path / "orderbook" / "2026-11-22" / "20261122T100000Z_20261122T100500Z.csv")
    (entry,) = read_exports(tmp_path)
    assert entry.status == "not validated" and entry.file("json") is None


def test_counts_by_partition():
    assert health.counts_by_partition({0: 5, 1: 0}, {0: 12, 1: 3}) == 10
