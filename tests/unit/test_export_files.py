"""Export file contents and naming, from snapshot messages built with the core renderer
(the exact contract the Spark job follows)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from marketstream.export import export_paths, render_csv, render_json, write_atomic
from marketstream.orderbook import levels_to_json, render_levels
from marketstream.orderbook.message import SnapshotMessage

T0 = int(datetime(2026, 11, 22, 8, 10, tzinfo=UTC).timestamp())


def snapshot(second: int, sequence: int, levels=None) -> SnapshotMessage:
    levels = levels or {
        ("BTC-USDT", "BUY"): {Decimal(33990): Decimal("120.05"), Decimal("33980.5"): Decimal("0.1")},
        ("BTC-USDT", "SELL"): {Decimal(34010): Decimal("134.91")},
    }
    value = levels_to_json(render_levels(levels, depth=15))
    return SnapshotMessage(T0 + second, sequence, {0: 10 + second}, 3, value)


def test_paths_follow_the_contract():
    start = datetime(2026, 11, 22, 8, 10, tzinfo=UTC)
    paths = export_paths("/x", start, start + timedelta(minutes=5))
    assert str(paths.json) == "/x/orderbook/2026-11-22/20261122T081000Z_20261122T081500Z.json"
    assert paths.csv.name == "20261122T081000Z_20261122T081500Z.csv"
    assert paths.validation.name == "20261122T081000Z_20261122T081500Z.validation.json"


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        export_paths("/x", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 5))


def test_json_is_an_array_of_snapshots_with_the_published_book_verbatim():
    messages = [snapshot(0, 7), snapshot(1, 8)]
    text = render_json(messages)
    items = json.loads(text)
    assert [i["snapshot_time"] for i in items] == ["2026-11-22T08:10:00Z", "2026-11-22T08:10:01Z"]
    assert [i["sequence"] for i in items] == [7, 8]
    assert items[0]["book"][0] == {"symbol": "BTC-USDT", "side": "buy_1", "price": 33990, "amount": 120.05,
                                   "total": 4080499.5, "cum_sum": 4080499.5}
    # exact decimals: the book text is the message value, byte for byte
    assert messages[0].value in text
    assert render_json([]) == "[]\n"


def test_csv_has_one_row_per_level_with_its_snapshot_time():
    rows = list(csv.DictReader(io.StringIO(render_csv([snapshot(0, 7), snapshot(1, 8)]))))
    assert len(rows) == 6
    assert rows[0] == {"snapshot_time": "2026-11-22T08:10:00Z", "sequence": "7", "symbol": "BTC-USDT",
                       "side": "buy_1", "price": "33990", "amount": "120.05", "total": "4080499.5",
                       "cum_sum": "4080499.5"}
    assert [r["side"] for r in rows[:3]] == ["buy_1", "sell_1", "buy_2"]
    assert rows[2]["cum_sum"] == "4083897.55"  # 4080499.5 + 33980.5 * 0.1, exactly
    assert render_csv([]) == "snapshot_time,sequence,symbol,side,price,amount,total,cum_sum\n"


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_rendering_is_deterministic():
    messages = [snapshot(s, s + 1) for s in range(5)]
    assert render_json(messages) == render_json(list(messages))
    assert render_csv(messages) == render_csv(list(messages))
