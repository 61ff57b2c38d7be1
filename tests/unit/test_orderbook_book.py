import itertools
import json
import random
import subprocess
import sys
from decimal import Decimal

from marketstream.orderbook import OrderBook, levels_from_json, levels_to_json, parse_event, render_book
from marketstream.orderbook.replay import replay_file
from tests.support import OFFICIAL_CSV, ROOT


def opened(order_id, symbol="BTC-USDT", side="BUY", size="1", price="100"):
    return parse_event(json.dumps({
        "order_id": order_id, "symbol": symbol, "order_side": side, "size": float(size) if "." in size else int(size),
        "price": float(price) if "." in price else int(price), "status": "OPEN",
    }))


def closed(order_id):
    return parse_event(json.dumps({"order_id": order_id, "status": "CLOSED"}))


def sides(rows):
    return [(r.symbol, r.side, str(r.price), str(r.amount)) for r in rows]


def test_open_and_close_aggregate_by_price_level():
    book = OrderBook().apply_all([opened(1, size="1.5"), opened(2, size="2.25"), opened(3, price="99"), closed(1)])
    assert book.open_count == 2
    assert book.levels[("BTC-USDT", "BUY")] == {Decimal(100): Decimal("2.25"), Decimal(99): Decimal(1)}


def test_closing_the_last_order_at_a_price_removes_the_level():
    book = OrderBook().apply_all([opened(1), closed(1)])
    assert render_book(book) == []


def test_close_before_open_is_remembered_and_the_late_open_ignored():
    book = OrderBook().apply_all([closed(5), opened(5), opened(6)])
    assert set(book.open_orders) == {6}
    assert book.stats.closes_before_open == 1 and book.stats.opens_after_close == 1


def test_duplicated_events_change_nothing():
    book = OrderBook().apply_all([opened(1), opened(1), closed(2), closed(2), opened(2)])
    assert book.levels[("BTC-USDT", "BUY")] == {Decimal(100): Decimal(1)}
    assert book.stats.duplicate_opens == 1 and book.stats.duplicate_closes == 1


def test_book_is_the_same_for_every_arrival_order_of_the_same_events():
    events = [opened(1), opened(2, side="SELL", price="101"), closed(1), opened(3, price="99.5"),
              opened(2, side="SELL", price="101"), closed(3), opened(4, side="SELL", price="102")]
    reference = levels_to_json(render_book(OrderBook().apply_all(events)))
    rng = random.Random(1)
    for _ in range(50):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert levels_to_json(render_book(OrderBook().apply_all(shuffled))) == reference


def test_render_interleaves_buy_and_sell_per_symbol_with_best_prices_first():
    book = OrderBook().apply_all([
        opened(1, "ETH-USDT", "BUY", "2", "10"), opened(2, "ETH-USDT", "BUY", "1", "11"),
        opened(3, "ETH-USDT", "SELL", "1", "13"), opened(4, "ETH-USDT", "SELL", "1", "12"),
        opened(5, "ETH-USDT", "SELL", "1", "14"),
        opened(6, "BTC-USDT", "SELL", "0.5", "100.1"),
    ])
    assert [(r.symbol, r.side, str(r.price)) for r in render_book(book)] == [
        ("BTC-USDT", "sell_1", "100.1"),
        ("ETH-USDT", "buy_1", "11"), ("ETH-USDT", "sell_1", "12"),
        ("ETH-USDT", "buy_2", "10"), ("ETH-USDT", "sell_2", "13"),
        ("ETH-USDT", "sell_3", "14"),
    ]


def test_totals_and_cumulative_sums_are_exact_decimals():
    # 0.1 + 0.2 style noise would show here with floats.
    book = OrderBook().apply_all([
        opened(1, side="SELL", size="0.1", price="1776"), opened(2, side="SELL", size="0.2", price="1776"),
        opened(3, side="SELL", size="0.00058", price="34045.23"),
    ])
    rows = render_book(book)
    text = levels_to_json(rows)
    assert '"amount":0.3,' in text and '"total":532.8,' in text
    assert rows[1].total == Decimal("19.7462334") and rows[1].cum_sum == Decimal("552.5462334")
    assert levels_from_json(text) == rows


def test_depth_limits_levels_per_side_and_zero_means_all():
    book = OrderBook().apply_all(opened(i, price=str(100 + i)) for i in range(1, 21))
    assert len(render_book(book)) == 15
    assert len(render_book(book, depth=3)) == 3
    assert len(render_book(book, depth=0)) == 20


def test_seed_layout_fields_in_order():
    book = OrderBook().apply_all([opened(1, size="6.5137", price="34045.24")])
    assert levels_to_json(render_book(book)) == (
        '[{"symbol":"BTC-USDT","side":"buy_1","price":34045.24,"amount":6.5137,'
        '"total":221760.479788,"cum_sum":221760.479788}]'
    )


def test_official_sample_gives_the_reference_book():
    book, rejected = replay_file(OFFICIAL_CSV)
    assert not rejected and book.open_count == 4174
    rows = {r.side: r for r in render_book(book)}
    assert (rows["buy_1"].price, rows["buy_1"].amount) == (Decimal(33990), Decimal("120.05"))
    assert (rows["sell_1"].price, rows["sell_1"].amount) == (Decimal(34010), Decimal("134.91"))
    assert rows["buy_9"].cum_sum == Decimal("38920218.85")
    assert rows["sell_9"].cum_sum == Decimal("39456449.65")


def test_replay_cli_prints_the_final_book(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "marketstream.orderbook", "replay", str(OFFICIAL_CSV), "--depth", "9", "--summary"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    rows = json.loads(result.stdout)
    assert len(rows) == 18 and rows[0]["side"] == "buy_1" and rows[-1]["cum_sum"] == 39456449.65
    assert "open orders: 4174" in result.stderr


def test_replay_cli_reads_json_lines_and_reports_rejections(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        '{"order_id":1,"symbol":"X","order_side":"BUY","size":1,"price":2,"status":"OPEN"}',
        "{broken", '{"order_id":2,"status":"CLOSED"}',
    ]))
    result = subprocess.run(
        [sys.executable, "-m", "marketstream.orderbook", "replay", str(path)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    assert json.loads(result.stdout)[0]["amount"] == 1
    assert "rejected 1" in result.stderr and "bad JSON" in result.stderr


def test_large_random_stream_matches_a_naive_recount():
    rng = random.Random(42)
    events, live, ids = [], [], itertools.count()
    for _ in range(5000):
        if live and rng.random() < 0.4:
            events.append(closed(live.pop(rng.randrange(len(live)))))
        else:
            order_id = next(ids)
            live.append(order_id)
            events.append(opened(order_id, rng.choice(["A", "B"]), rng.choice(["BUY", "SELL"]),
                                 f"{rng.randint(1, 999) / 100}", str(rng.randint(90, 110))))
    book = OrderBook().apply_all(events)
    expected: dict = {}
    for order_id in live:
        o = book.open_orders[order_id]
        key = (o.symbol, o.side)
        expected.setdefault(key, {})
        expected[key][o.price] = expected[key].get(o.price, Decimal(0)) + o.size
    assert {k: v for k, v in book.levels.items() if v} == expected
