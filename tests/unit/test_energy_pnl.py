"""Trader-desk figures on hand-computed cases."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest

from marketstream.energy import pnl

DAY = date(2026, 11, 22)
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)


def trades(*rows) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"deal_id": f"d{i}", "trader_id": t, "direction": d, "price": p, "quantity": q,
             "delivery_day": DAY, "delivery_hour": h}
            for i, (t, d, p, q, h) in enumerate(rows)
        ]
    )


def references(*rows) -> pd.DataFrame:
    return pd.DataFrame(
        [{"delivery_day": DAY, "delivery_hour": h, "value": v, "unit": "euro/mwh", "last_update": u} for h, v, u in rows],
        columns=["delivery_day", "delivery_hour", "value", "unit", "last_update"],
    )


CASE = trades(
    ("t1", "buy", 20.0, 2.0, "10-11"),   # -40
    ("t1", "buy", 23.0, 1.0, "10-11"),   # -23
    ("t1", "sell", 25.0, 1.5, "10-11"),  # +37.5
    ("t2", "sell", 21.0, 3.0, "10-11"),  # +63
    ("t2", "buy", 19.0, 4.0, "12-13"),   # -76, no reference for 12-13
)
REFS = references(("10-11", 99.0, "2026-11-22T07:00:00Z"), ("10-11", 22.0, "2026-11-22T08:48:00Z"))


def test_rows_pnl_vwap_and_reference_differences_by_hand():
    rows = pnl.desk_rows(CASE, REFS, NOW).set_index(["trader_id", "delivery_hour"])
    t1 = rows.loc[("t1", "10-11")]
    assert t1.trades == 3
    assert (t1.mw_bought, t1.mw_sold, t1.net_mw) == (3.0, 1.5, 1.5)
    assert t1.cash_pnl == pytest.approx(-40 - 23 + 37.5)  # -25.5
    assert t1.vwap_buy == pytest.approx(63 / 3)  # 21.0
    assert t1.vwap_sell == pytest.approx(25.0)
    assert t1.vwap == pytest.approx((40 + 23 + 37.5) / 4.5)
    assert t1.reference_price == 22.0  # the newest value, not the older 99
    assert t1.reference_age_seconds == 12 * 60
    assert t1.buy_vs_reference == pytest.approx(-1.0)  # bought 1 below the reference: better
    assert t1.sell_vs_reference == pytest.approx(3.0)  # sold 3 above: better
    # edge: buys (22-20)*2 + (22-23)*1 = 3; sell (25-22)*1.5 = 4.5
    assert t1.edge_vs_reference == pytest.approx(7.5)

    t2 = rows.loc[("t2", "10-11")]
    assert t2.cash_pnl == pytest.approx(63.0) and t2.net_mw == -3.0
    assert pd.isna(t2.vwap_buy) and t2.sell_vs_reference == pytest.approx(-1.0)  # sold below: worse
    assert t2.edge_vs_reference == pytest.approx(-3.0)

    no_ref = rows.loc[("t2", "12-13")]
    assert pd.isna(no_ref.reference_price) and pd.isna(no_ref.edge_vs_reference)
    assert no_ref.cash_pnl == pytest.approx(-76.0)


def test_totals_per_trader_and_per_day():
    per_trader = pnl.trader_totals(CASE, REFS).set_index("trader_id")
    assert per_trader.loc["t1", "cash_pnl"] == pytest.approx(-25.5)
    assert per_trader.loc["t2", "cash_pnl"] == pytest.approx(63 - 76)
    assert per_trader.loc["t2", "net_mw"] == pytest.approx(4 - 3)
    assert per_trader.loc["t2", "vwap_buy"] == pytest.approx(19.0)
    assert per_trader.loc["t2", "edge_vs_reference"] == pytest.approx(-3.0)  # hours without reference add nothing
    (day,) = pnl.day_totals(CASE, REFS).itertuples()
    assert day.trades == 5
    assert day.cash_pnl == pytest.approx(-40 - 23 + 37.5 + 63 - 76)
    assert day.mw_bought == 7.0 and day.mw_sold == 4.5
    assert day.vwap == pytest.approx((40 + 23 + 37.5 + 63 + 76) / 11.5)
    assert day.edge_vs_reference == pytest.approx(4.5)


@pytest.mark.parametrize(
    "direction, price, reference, better",
    [("sell", 25, 22, True), ("sell", 20, 22, False), ("buy", 20, 22, True), ("buy", 25, 22, False),
     ("buy", 22, 22, None), ("sell", 22, None, None)],
)
def test_better_than_reference_depends_on_direction(direction, price, reference, better):
    assert pnl.better_than_reference(direction, price, reference) is better


@pytest.mark.parametrize(
    "direction, difference, colour",
    [("sell", 3.0, "green"), ("sell", -0.5, "red"), ("buy", -1.0, "green"), ("buy", 0.25, "red"),
     ("buy", 0.0, None), ("sell", float("nan"), None)],
)
def test_difference_colour_rule(direction, difference, colour):
    assert pnl.difference_colour(direction, difference) == colour


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="direction"):
        pnl.difference_colour("hold", 1.0)
    with pytest.raises(ValueError, match=r"unknown direction\(s\) \['hold'\]"):
        pnl.desk_rows(trades(("t1", "hold", 1.0, 1.0, "10-11")), REFS, NOW)
    with pytest.raises(ValueError, match="trades lack column"):
        pnl.desk_rows(CASE.drop(columns=["price"]), REFS, NOW)


def test_no_trades_gives_empty_frames():
    empty = trades()
    assert pnl.desk_rows(empty, REFS, NOW).empty
    assert pnl.day_totals(empty, REFS).empty


def test_format_age():
    assert [pnl.format_age(s) for s in (5, 125, 3 * 3600 + 5 * 60, None)] == ["5 s", "2 min", "3 h 5 min", ""]
