"""The order-book page's time travel drawn by Streamlit's AppTest from known seconds: the
second the URL names, stepping, the recovered badge, the orders behind a level, and the
sentence shown for a second without a snapshot."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from streamlit.testing.v1 import AppTest

FIRST = 1_795_000_000  # 2026-11-18T11:06:40Z


def _script(first: int, seconds: int, recovered: tuple, missing: int):
    from decimal import Decimal

    from dashboard import time_travel
    from marketstream.book import BookError, BookSecond, Explanation
    from marketstream.orderbook.book import OpenOrder
    from marketstream.orderbook.message import SnapshotMessage
    from marketstream.orderbook.render import levels_to_json, render_levels

    def book(second: int) -> dict:
        n = Decimal(second - first + 1)
        return {("BTC-USDT", "BUY"): {Decimal(100): n, Decimal(99): Decimal(2)},
                ("BTC-USDT", "SELL"): {Decimal(101): Decimal(3)}}

    def at(second: int) -> BookSecond:
        if second == missing:
            raise BookError("no snapshot for that second: a gap")
        message = SnapshotMessage(second, second - first + 1, {0: second - first}, 3,
                                  levels_to_json(render_levels(book(second), 15)), second in recovered)
        return BookSecond(message, "topic", f"orderbook[0]@{second - first}")

    def explain(second: int, symbol: str, side: str) -> Explanation:
        found = at(second)
        level = next(lv for lv in found.levels(symbol) if lv.side == side)
        # Orders of one unit each, ids from 1: what the level's amount is made of.
        orders = [(i, OpenOrder(symbol, "BUY", level.price, Decimal(1), second)) for i in range(1, int(level.amount) + 1)]
        return Explanation(found, level, orders)

    loaders = time_travel.Loaders(lambda: time_travel.Span(first, first + seconds - 1), at, explain)
    time_travel.time_travel_page(loaders)


def page(url_time: str | None) -> AppTest:
    at = AppTest.from_function(_script, args=(FIRST, 60, (FIRST + 10, FIRST + 11), FIRST + 20), default_timeout=30)
    if url_time is not None:
        at.query_params["t"] = url_time
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_url_names_the_second_and_follows_the_controls():
    at = page("2026-11-18T11:06:49Z")
    assert metric(at, "Snapshot time (UTC)") == "2026-11-18 11:06:49"
    assert metric(at, "Sequence") == "10"
    next(b for b in at.button if b.label == "+1 s").click().run()
    assert metric(at, "Snapshot time (UTC)") == "2026-11-18 11:06:50"
    assert at.query_params["t"] == "2026-11-18T11:06:50Z"
    # A recovered second carries its badge.
    assert [m.value for m in at.markdown] == [":orange-badge[:material/restore: Recovered]"]
    next(b for b in at.button if b.label == "Newest").click().run()
    assert metric(at, "Snapshot time (UTC)") == "2026-11-18 11:07:39"
    assert next(b for b in at.button if b.label == "+1 s").disabled
    at.time_input[0].set_value(time(11, 7, 5)).run()  # typed in the picker, to the second
    assert metric(at, "Snapshot time (UTC)") == "2026-11-18 11:07:05"
    assert at.query_params["t"] == "2026-11-18T11:07:05Z"


def test_a_link_to_the_past_opens_at_that_second_with_offset_or_epoch():
    assert metric(page("2026-11-18T12:06:41+01:00"), "Snapshot time (UTC)") == "2026-11-18 11:06:41"
    assert metric(page(str(FIRST + 5)), "Snapshot time (UTC)") == "2026-11-18 11:06:45"
    # Out of the retained range: the nearest end.
    assert metric(page("2020-01-01T00:00:00Z"), "Snapshot time (UTC)") == "2026-11-18 11:06:40"
    unreadable = page("last tuesday")
    assert "not readable" in unreadable.warning[0].value
    assert metric(unreadable, "Snapshot time (UTC)") == "2026-11-18 11:07:39"


def test_a_gap_is_a_sentence_not_a_book():
    at = page("2026-11-18T11:07:00Z")
    assert at.warning[0].value == "no snapshot for that second: a gap"
    assert not at.table


def test_choosing_a_level_lists_its_orders_summing_to_its_amount():
    at = page("2026-11-18T11:06:44Z")  # buy_1 = 100 x 5
    assert at.get("pills")[0].options == ["Buy 1", "Sell 1", "Buy 2"]
    at.get("pills")[0].set_value("Buy 1").run()
    tables = at.table
    assert len(tables) == 2
    orders = tables[1].value
    assert list(orders["Order id"]) == ["1", "2", "3", "4", "5"]
    assert "their sizes sum to 5, the level's amount, exactly" in at.success[0].value
    assert Decimal(5) == sum(Decimal(s) for s in orders["Size"])
