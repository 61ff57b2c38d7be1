"""Each page drawn by Streamlit's own test harness (AppTest) from known data: what a user
reads — numbers, warnings, empty states — and never a stack trace."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.model import book, health
from marketstream.deadletter import DeadLetter
from marketstream.exports.layout import list_exports
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels

D = Decimal
BOOK = {
    ("BTC-USDT", "BUY"): {D("34045.24"): D("6.5137"), D("34045.23"): D("0.00058")},
    ("BTC-USDT", "SELL"): {D("34054.25"): D("7.52013")},
    ("ETH-USDT", "SELL"): {D("1801"): D("2.5")},
}
NOW = 1_795_000_000


def book_data(seconds_old: int):
    from dashboard.sources import OrderBookData

    value = levels_to_json(render_levels(BOOK, 15))
    messages = [SnapshotMessage(NOW - seconds_old - 1, 41, {0: 10}, 4, value),
                SnapshotMessage(NOW - seconds_old, 42, {0: 12, 1: 7}, 4, value)]
    return OrderBookData(book.latest_books(messages))


def _order_book_script(data, now, stale_after):
    from dashboard import views

    views.order_book_page(lambda: data, stale_after, refresh_seconds=None, clock=lambda: now)


def run(script, *args) -> AppTest:
    at = AppTest.from_function(script, args=args, default_timeout=30)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def fresh_process_state() -> None:
    """Settings and the dashboard's process-wide Sources are cached per process, as in
    production; a test that changes the environment starts them afresh."""
    import streamlit as st

    from marketstream.settings import get_settings

    get_settings.cache_clear()
    st.cache_resource.clear()


def metric(at: AppTest, label: str) -> str:
    (found,) = [m.value for m in at.metric if m.label == label]
    return found


def test_order_book_shows_the_newest_snapshot_in_the_book_view():
    at = run(_order_book_script, book_data(seconds_old=1), NOW, 5.0)
    assert metric(at, "Sequence") == "42"
    assert metric(at, "Snapshot time (UTC)") == datetime.fromtimestamp(NOW - 1, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert "Input offsets: p0: 12, p1: 7" in [c.value for c in at.caption]
    assert at.success[0].value.startswith("Live")
    assert not at.warning
    assert at.radio[0].options == ["BTC-USDT", "ETH-USDT"]
    table = at.table[0].value
    assert list(table.iloc[0]) == ["Buy 1", "34,045.24", "6.5137", "221,760.479788", "221,760.479788",
                                   "Sell 1", "34,054.25", "7.52013", "256,092.3870525", "256,092.3870525"]
    at.radio[0].set_value("ETH-USDT").run()
    assert list(at.table[0].value.iloc[0])[5:7] == ["Sell 1", "1,801"]


def test_order_book_warns_when_stale():
    at = run(_order_book_script, book_data(seconds_old=42), NOW, 5.0)
    assert "Stale" in at.warning[0].value and "42 s old" in at.warning[0].value
    assert metric(at, "Sequence") == "42"  # still shows the last book it has


def test_order_book_empty_topic_and_unreachable_broker():
    from dashboard.sources import OrderBookData

    at = run(_order_book_script, OrderBookData(None), NOW, 5.0)
    assert "No snapshot yet" in at.info[0].value
    assert not at.table

    def _unreachable():
        from dashboard import views
        from dashboard.sources import SourceUnavailable

        def load():
            raise SourceUnavailable("Cannot read topic 'orderbook' from the broker at 127.0.0.1:1: NoBrokersAvailable")

        views.order_book_page(load, 5.0, refresh_seconds=None)

    at = run(_unreachable)
    assert "Cannot read topic 'orderbook'" in at.error[0].value


def _health_script(data, now):
    from dashboard import views

    views.health_page(lambda: data, 60, "http://airflow:8080", "http://spark:4040", refresh_seconds=None, clock=lambda: now)


def health_data(with_data: bool = True):
    from dashboard.sources import HealthData

    if not with_data:
        return HealthData([], health.metrics_view([]), {"orders.deadletter": (0, [])}, [])
    # 60 s window ending at NOW-2: snapshots every second but one gap and one duplicate.
    seconds = [s for s in range(NOW - 61, NOW - 1) if s != NOW - 30] + [NOW - 20]
    metas = [health.SnapshotMeta(s, i) for i, s in enumerate(sorted(seconds), start=1)]
    metrics = health.metrics_view([json.dumps({
        "query": "orderbook", "batch_id": b, "timestamp": datetime.fromtimestamp(NOW - 10 + b, tz=timezone.utc).isoformat(),
        "num_input_events": 10, "input_events_per_second": 95.5, "processed_events_per_second": 100.0,
        "batch_duration_ms": 400 + b, "state_rows": 4174, "start_offsets": {}, "end_offsets": {},
        "latest_offsets": {}, "lag": 30 + b}) for b in range(5)] + [b"{broken"])
    letters = [health.dead_letter_row(DeadLetter.from_record(
        b'{"status":"WEIRD"}', [("reason", b"unknown status 'WEIRD'"), ("source_topic", b"orders"),
                                ("source_partition", b"1"), ("source_offset", b"11")]), NOW * 1000)]
    return HealthData(metas, metrics, {"orders.deadletter": (3, letters), "energy.deals.deadletter": (0, [])},
                      ["Topic 'x' does not exist on the broker yet."])


def test_health_page_shows_cadence_batches_lag_and_dead_letters():
    at = run(_health_script, health_data(), NOW)
    assert metric(at, "Seconds without a snapshot") == "1"
    assert metric(at, "Seconds with duplicates") == "1"
    assert at.success[0].value == "Live: snapshot 2 s old."
    assert metric(at, "Consumer lag (events)") == "34"
    assert metric(at, "Last batch duration") == "404 ms"
    assert metric(at, "Input rate") == "95.5 events/s"
    assert metric(at, "Records in orders.deadletter") == "3"
    assert metric(at, "Records in energy.deals.deadletter") == "0"
    reasons = [t.value for t in at.table if "Reason" in t.value.columns]
    assert list(reasons[0]["Reason"]) == ["unknown status 'WEIRD'"]
    assert list(reasons[0]["Source"]) == ["orders[1]@11"]
    assert any("1 metrics record(s) not following the contract" in w.value for w in at.warning)
    assert at.error[0].value == "Topic 'x' does not exist on the broker yet."
    links = {b.proto.label: b.proto.url for b in at.get("link_button")}
    assert links == {"Airflow UI": "http://airflow:8080", "Spark UI": "http://spark:4040"}


def test_health_page_empty_sources():
    at = run(_health_script, health_data(with_data=False), NOW)
    infos = [i.value for i in at.info]
    assert any("No snapshot yet" in i for i in infos)
    assert any("No batch metrics yet" in i for i in infos)
    assert metric(at, "Seconds without a snapshot") == "0"  # nothing started: no gaps claimed


def _exports_script(export_dir):
    from pathlib import Path

    from dashboard import views
    from dashboard.sources import read_exports

    views.exports_page(lambda: read_exports(Path(export_dir)), export_dir, retention_days=30)


def test_exports_page_lists_intervals_newest_first_with_downloads(tmp_path):
    from tests.integration.dashboard_seed import seed_exports

    seeded = seed_exports(tmp_path, date(2026, 11, 22))
    at = run(_exports_script, str(tmp_path))
    assert metric(at, "Intervals") == "3"
    # The range kept on disk, oldest start to newest end, and for how long.
    newest, *_, oldest = list_exports(tmp_path)
    assert (f"On disk: {oldest.start:%Y-%m-%d %H:%M} → {newest.end:%Y-%m-%d %H:%M} UTC; interval files are kept "
            "30 days (EXPORT_RETENTION_DAYS).") in [c.value for c in at.caption]
    assert metric(at, "Validation passed") == "1" and metric(at, "Validation failed") == "1"
    badges = [m.value for m in at.markdown if m.value.startswith(":")]
    assert badges == [":orange[not validated]", ":red[failed]", ":green[passed]"]
    assert [s for s, _ in seeded.intervals] == [e.stem for e in list_exports(tmp_path)]
    downloads = at.get("download_button")
    assert len(downloads) == 9
    assert [d.proto.label.split(" ·")[0] for d in downloads] == ["JSON", "CSV", "Parquet"] * 3
    assert at.expander[0].label.startswith("2 violation(s)")


def test_exports_page_empty_directory(tmp_path):
    at = run(_exports_script, str(tmp_path / "nothing"))
    assert "No exports yet" in at.info[0].value


def _desk_script(trade_rows, reference_rows, today):
    from datetime import datetime, timezone

    import pandas as pd

    from dashboard import views

    trades = pd.DataFrame(trade_rows)
    refs = pd.DataFrame(reference_rows, columns=["delivery_day", "delivery_hour", "value", "unit", "last_update",
                                                 "fetched_at"])
    days = sorted({r["delivery_day"] for r in trade_rows}, reverse=True)
    views.desk_page(
        lambda: days,
        lambda day: (trades[trades["delivery_day"] == day], refs[refs["delivery_day"] == day]),
        refresh_seconds=None,
        clock=lambda: datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc).replace(hour=9),
    )


def test_desk_page_figures_and_colours():
    from tests.integration.dashboard_seed import reference_rows, trade_rows

    day = date(2026, 11, 22)
    now = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    at = run(_desk_script, trade_rows(day, now), reference_rows(day, now), day)
    assert metric(at, "Trades") == "6"
    # Cash: -41 +37.5 -23 +63 +24 -76 = -15.5
    assert metric(at, "Cash PnL (EUR)") == "-15.50"
    assert metric(at, "Net position (MW)") == "+1.500"  # bought 7, sold 5.5
    # Edge: t1 10-11 buy (22-20.5)*2=3, sell (25-22)*1.5=4.5; t1 11-12 buy (22.5-23)*1=-0.5;
    # t2 10-11 sell (21-22)*3=-3; 11-12 sell (24-22.5)*1=1.5; 12-13 no reference.
    assert metric(at, "Edge vs reference (EUR)") == "+5.50"
    rows = at.table[0].value
    t1 = rows[(rows["Trader"] == "flex_trader_1") & (rows["Hour"] == "10-11")].iloc[0]
    assert (t1["VWAP buy"], t1["VWAP sell"], t1["Reference"]) == ("20.50", "25.00", "22.00")
    assert (t1["Buy − ref"], t1["Sell − ref"], t1["Cash PnL (EUR)"]) == ("-1.50", "+3.00", "-3.50")
    assert t1["Ref age"] == "12 min"
    no_ref = rows[rows["Hour"] == "12-13"].iloc[0]
    assert no_ref["Reference"] == "no reference" and no_ref["Edge vs ref (EUR)"] == ""
    per_trader = at.table[1].value.set_index("Trader")
    assert per_trader.loc["flex_trader_2", "Cash PnL (EUR)"] == "+11.00"  # 63 + 24 - 76
    assert any("bought below" in c.value for c in at.caption)
    # Filter by trader.
    at.multiselect[0].set_value(["flex_trader_2"]).run()
    assert metric(at, "Trades") == "3"
    assert set(at.table[0].value["Trader"]) == {"flex_trader_2"}


def test_desk_colours_green_for_better_red_for_worse(monkeypatch):
    """The colour is in the table's Styler: read the CSS each cell was given."""
    from dashboard import views
    from tests.integration.dashboard_seed import reference_rows, trade_rows

    captured = {}
    monkeypatch.setattr(views.st, "table", lambda data, **_: captured.setdefault("tables", []).append(data))
    day = date(2026, 11, 22)
    now = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    views.render_desk(pd.DataFrame(trade_rows(day, now)), pd.DataFrame(reference_rows(day, now)), now, day)
    styler = captured["tables"][0]
    styler._compute()
    shown = styler.data
    css = {(r, c): "; ".join(f"{k}: {v}" for k, v in props) for (r, c), props in styler.ctx.items()}

    def cell(trader, hour, column):
        row = shown.index[(shown["Trader"] == trader) & (shown["Hour"] == hour)][0]
        return css.get((row, shown.columns.get_loc(column)), "")

    assert "#1a7f37" in cell("flex_trader_1", "10-11", "Buy − ref")   # bought 1.50 below: green
    assert "#1a7f37" in cell("flex_trader_1", "10-11", "Sell − ref")  # sold 3.00 above: green
    assert "#cf222e" in cell("flex_trader_1", "11-12", "Buy − ref")   # bought 0.50 above: red
    assert "#cf222e" in cell("flex_trader_2", "10-11", "Sell − ref")  # sold 1.00 below: red
    assert cell("flex_trader_2", "12-13", "Buy − ref") == ""          # no reference: no colour


def test_desk_page_empty_and_unavailable():
    def _empty():
        from dashboard import views

        views.desk_page(lambda: [], lambda day: None, refresh_seconds=None)

    at = run(_empty)
    assert "No trades yet" in at.info[0].value

    def _down():
        from dashboard import views
        from dashboard.sources import SourceUnavailable

        def days():
            raise SourceUnavailable("Cannot read the energy database (postgresql://u:***@db/x): OperationalError")

        views.desk_page(days, lambda day: None, refresh_seconds=None)

    at = run(_down)
    assert at.error[0].value.startswith("Cannot read the energy database")


def test_the_app_wires_pages_to_settings(tmp_path, monkeypatch):
    """The real entry script: navigation, settings from the environment, exports page
    reading the directory named by EXPORT_DIR."""
    from marketstream.settings import get_settings
    from tests.integration.dashboard_seed import seed_exports

    seed_exports(tmp_path, date(2026, 11, 22))
    monkeypatch.setenv("EXPORT_DIR", str(tmp_path))
    fresh_process_state()
    try:
        from tests.support import ROOT

        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=30)
        at.switch_page("pages/exports.py").run()
        assert not at.exception
        assert at.title[0].value == "Exports"
        assert metric(at, "Intervals") == "3"
        assert str(tmp_path) in at.caption[0].value
    finally:
        fresh_process_state()


def test_the_app_reads_the_desk_from_sqlite(tmp_path, monkeypatch):
    """The embedded run's database: the real desk page on a migrated SQLite file."""
    import sqlalchemy as sa

    from marketstream.energy.db import make_engine, migrate, reference_prices, trades
    from marketstream.settings import get_settings
    from tests.integration.dashboard_seed import reference_rows, trade_rows
    from tests.support import ROOT

    url = f"sqlite:///{tmp_path / 'energy.db'}"
    migrate(url)
    now = datetime.now(timezone.utc)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(trades.insert(), trade_rows(now.date(), now))
        connection.execute(reference_prices.insert(), reference_rows(now.date(), now))
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    fresh_process_state()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=30)
        at.switch_page("pages/desk.py").run()
        assert not at.exception, [e.message for e in at.exception]
        assert metric(at, "Trades") == "6"
        assert metric(at, "Cash PnL (EUR)") == "-15.50"
        assert metric(at, "Edge vs reference (EUR)") == "+5.50"  # the newest reference, not the older 99
        assert at.selectbox[0].value == now.date()
    finally:
        fresh_process_state()
