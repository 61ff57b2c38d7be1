"""The four pages, drawn from data passed in: each page function takes the loader(s) it
calls, so tests drive it with Streamlit's AppTest and real data, and the page scripts in
``pages/`` only wire the process-wide ``Sources`` in.

Tables use ``st.table`` (HTML): exact text, a two-level header for the book view, and
cell colours from a pandas Styler. The numbers come from ``dashboard/model``.
"""

from __future__ import annotations

import functools
import time
from datetime import date, datetime, timezone
from typing import Callable

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.model import book as book_model
from dashboard.model import exports as exports_model
from dashboard.model import health as health_model
from dashboard.sources import HealthData, OrderBookData, SourceUnavailable
from marketstream.energy import pnl
from marketstream.exports.formats import FORMATS

GREEN_CSS, RED_CSS = "color: #1a7f37; font-weight: 600", "color: #cf222e; font-weight: 600"


def _utc(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def metric_row(*figures: tuple[str, str]) -> None:
    """Figures side by side, each as wide as its label and value: a row that does not fit
    the window wraps instead of cutting a figure short."""
    row = st.container(horizontal=True, gap="large")
    for label, value in figures:
        row.metric(label, value, width="content")


# Vega-Lite draws times in the browser's zone with a 12-hour clock and no AM/PM ("11:55"
# at 23:55): every time axis here is UTC, 24-hour, and says so.
TIME_FORMAT = "%H:%M:%S"


def utc_time(field: str = "time", title: str = "Time (UTC)") -> alt.X:
    return alt.X(f"{field}:T", title=title, scale=alt.Scale(type="utc"),
                 axis=alt.Axis(format=TIME_FORMAT, labelOverlap=True))


def utc_tooltip(field: str = "time") -> alt.Tooltip:
    # A UTC time unit makes the label a UTC one (a tooltip has no scale to say so).
    return alt.Tooltip(field, type="temporal", timeUnit="utcyearmonthdatehoursminutesseconds",
                       title="Time (UTC)", format=TIME_FORMAT)


def pipeline_notice(load: Callable[[], str | None], where=st) -> None:
    """Says when the pipeline is not running (never started, or stopped): the pages'
    empty or stale figures then have their reason."""
    sentence = load()
    if sentence:
        where.info(sentence[:1].upper() + sentence[1:] + ".", icon=":material/info:")


# ---------------------------------------------------------------- order book


def order_book_page(load: Callable[[], OrderBookData], stale_after_seconds: float,
                    refresh_seconds: float | None = 1.0, clock: Callable[[], float] = time.time) -> None:
    st.title("Order book")
    st.caption("The newest snapshot on the output topic, refreshed every second.")

    @st.fragment(run_every=refresh_seconds)
    def body() -> None:
        try:
            data = load()
        except SourceUnavailable as exc:
            st.error(str(exc))
            return
        render_order_book(data, clock(), stale_after_seconds)

    body()


def render_order_book(data: OrderBookData, now: float, stale_after_seconds: float) -> None:
    if data.undecodable:
        st.warning(f"{data.undecodable} record(s) on the output topic do not follow the snapshot contract "
                   f"and were skipped (last: {data.last_problem}).")
    if data.latest is None:
        st.info("No snapshot yet: the output topic is empty. Start the pipeline DAG in Airflow; "
                "the Spark job publishes one snapshot a second.")
        return
    snapshot = data.latest.snapshot
    fresh = health_model.freshness(snapshot.snapshot_time, now, stale_after_seconds)
    if fresh.stale:
        st.warning(fresh.message)
    else:
        st.success(fresh.message)
    metric_row(("Snapshot time (UTC)", _utc(snapshot.snapshot_time)), ("Sequence", f"{snapshot.sequence}"),
               ("Open orders", f"{snapshot.open_orders:,}" if snapshot.open_orders >= 0 else "n/a"))
    # One offset per input partition: a caption wraps where a metric would be cut.
    st.caption("Input offsets: " + (", ".join(f"p{p}: {o}" for p, o in sorted(snapshot.input_offsets.items())) or "none"))
    if not data.latest.books:
        st.info("The newest snapshot holds no levels: no open orders.")
        return
    symbols = list(data.latest.books)
    symbol = st.radio("Symbol", symbols, horizontal=True, key="orderbook_symbol")
    levels = data.latest.books[symbol or symbols[0]]
    if not levels:
        st.info(f"{symbol}: the book is empty in the newest snapshot (all its orders closed).")
        return
    depth_chart(symbol, levels)
    st.table(book_model.level_table(symbol, levels), hide_index=True)


def depth_chart(symbol: str, levels) -> None:
    series = book_model.depth_series(levels)
    colour = alt.Color("side:N", scale=alt.Scale(domain=["buy", "sell"], range=["#1a7f37", "#cf222e"]))
    layers = [
        # Bids: the amount at price p is what is bid at p or higher, so a step holds the
        # value of the next level up ("step-before"); asks mirror it.
        alt.Chart(series[series["side"] == side]).mark_area(interpolate=step, opacity=0.55).encode(
            x=alt.X("price:Q", title="Price", scale=alt.Scale(zero=False)),
            y=alt.Y("cumulative_amount:Q", title="Cumulative amount"),
            color=colour,
            tooltip=["side:N", "price:Q", "cumulative_amount:Q"],
        )
        for side, step in (("buy", "step-before"), ("sell", "step-after"))
    ]
    st.altair_chart(alt.layer(*layers).properties(height=260, title=f"{symbol} depth"), width="stretch")


# ---------------------------------------------------------------- pipeline health


def health_page(load: Callable[[], HealthData], window_seconds: int, airflow_url: str, spark_url: str,
                refresh_seconds: float | None = 5.0, clock: Callable[[], float] = time.time,
                stale_after_seconds: float = 5.0) -> None:
    st.title("Pipeline health")
    links = st.columns([1, 1, 4])
    links[0].link_button("Airflow UI", airflow_url)
    links[1].link_button("Spark UI", spark_url)

    @st.fragment(run_every=refresh_seconds)
    def body() -> None:
        render_health(load(), clock(), window_seconds, stale_after_seconds)

    body()


def render_health(data: HealthData, now: float, window_seconds: int, stale_after_seconds: float = 5.0) -> None:
    for problem in data.problems:
        st.error(problem)
    if data.snapshots:
        newest = max(m.snapshot_time for m in data.snapshots)
        fresh = health_model.freshness(newest, now, stale_after_seconds)
        (st.warning if fresh.stale else st.success)(fresh.message)
    # The current second may still be in flight: the chart ends two seconds back.
    end = int(now) - 2
    window_start = start = end - window_seconds + 1
    if not data.snapshots:
        start = end + 1  # nothing published yet: no seconds to judge
    else:
        # Seconds before the first snapshot ever kept are "not started yet", not gaps
        # (the kept tail reaches further back than the window once the job has run).
        start = max(start, min(m.snapshot_time for m in data.snapshots))
    per_second = health_model.snapshots_per_second(data.snapshots, start, end)
    gaps = int((per_second["status"] == "gap").sum())
    dups = int((per_second["status"] == "duplicate").sum())
    sequences = health_model.sequence_report(data.snapshots)
    minutes = window_seconds / 60

    st.subheader(f"Snapshots per second, last {minutes:g} min")
    metric_row(("Snapshots in window", f"{int(per_second['snapshots'].sum())}"),
               ("Seconds without a snapshot", f"{gaps}"), ("Seconds with duplicates", f"{dups}"),
               ("Missing sequence numbers", f"{len(sequences.missing)}"))
    if not data.snapshots:
        st.info("No snapshot yet on the output topic.")
    else:
        bars = alt.Chart(per_second).mark_bar().encode(
            x=utc_time(),
            y=alt.Y("snapshots:Q", title="Snapshots",
                    scale=alt.Scale(domain=[0, max(2, int(per_second["snapshots"].max()))])),
            color=alt.Color("status:N", scale=alt.Scale(domain=["ok", "gap", "duplicate"],
                                                        range=["#1a7f37", "#cf222e", "#bf8700"])),
            tooltip=[utc_tooltip(), "snapshots:Q", "status:N"],
        )
        # A missing second has no bar: draw a red line where it should have been.
        holes = alt.Chart(per_second[per_second["status"] == "gap"]).mark_rule(
            color="#cf222e", strokeWidth=2).encode(x=utc_time(), y=alt.datum(0), y2=alt.datum(1))
        st.altair_chart(alt.layer(bars, holes).properties(height=180), width="stretch")
        problems = per_second[per_second["status"] != "ok"].tail(20)
        if not problems.empty:
            with st.expander(f"Gaps and duplicates (latest {len(problems)})"):
                st.table(problems.assign(time=problems["time"].dt.strftime("%H:%M:%S")), hide_index=True)
        if sequences.missing or sequences.repeated:
            st.warning(f"Sequence numbers missing: {_short(sequences.missing)}; repeated: {_short(sequences.repeated)}")

    st.subheader("Spark micro-batches")
    frame = data.metrics.frame
    if data.metrics.bad_records:
        st.warning(f"{data.metrics.bad_records} metrics record(s) not following the contract were skipped "
                   f"(last: {data.metrics.last_error}).")
    if frame.empty:
        st.info("No batch metrics yet: the Spark job publishes one record per micro-batch.")
    else:
        last = frame.iloc[-1]
        metric_row(("Consumer lag (events)", f"{int(last['lag']):,}"),
                   ("Last batch duration", f"{int(last['batch_duration_ms']):,} ms"),
                   ("Input rate", f"{last['input_events_per_second']:,.1f} events/s"),
                   ("State rows", f"{int(last['state_rows']):,}"))
        recent = frame[frame["time"] >= pd.Timestamp(window_start, unit="s", tz="UTC")]
        if recent.empty:
            st.warning(f"No batch in the last {minutes:g} min (last batch {last['time']:%Y-%m-%d %H:%M:%S} UTC).")
        else:
            charts = st.columns(3)
            for column, (field, title) in zip(charts, [
                ("batch_duration_ms", "Batch duration (ms)"),
                ("input_events_per_second", "Input events / s"),
                ("lag", "Consumer lag (events)"),
            ]):
                # The chart's title, not the y axis's: a vertical title longer than the
                # chart is high would be cut.
                column.altair_chart(
                    alt.Chart(recent).mark_line(point=len(recent) < 30).encode(
                        x=utc_time(), y=alt.Y(f"{field}:Q", title=None),
                        tooltip=[utc_tooltip(), alt.Tooltip(f"{field}:Q", title=title)],
                    ).properties(height=180, title=title),
                    width="stretch",
                )

    st.subheader("Dead letters")
    if not data.dead_letters:
        st.info("Dead-letter topics could not be read.")
    for topic, (count, letters) in data.dead_letters.items():
        st.metric(f"Records in {topic}", f"{count:,}")
        if letters:
            st.table(pd.DataFrame([{
                "Time (UTC)": f"{d.time:%Y-%m-%d %H:%M:%S}", "Reason": d.reason,
                "Source": d.origin,
                "Original bytes": d.preview,
            } for d in letters]), hide_index=True)
        else:
            st.caption("Nothing rejected.")


def _short(values: list[int], limit: int = 10) -> str:
    if not values:
        return "none"
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f" … ({len(values)} in all)" if len(values) > limit else "")


# ---------------------------------------------------------------- exports


def exports_page(load: Callable[[], list[exports_model.ExportEntry]], export_dir: str, limit: int = 100,
                 retention_days: int = 0) -> None:
    st.title("Exports")
    st.caption(f"Scheduled exports of the order-book topic in `{export_dir}`, newest first.")
    try:
        entries = load()
    except OSError as exc:
        st.error(f"Cannot list the exports directory: {exc}")
        return
    if not entries:
        names = ", ".join(f.label for f in FORMATS)
        st.info(f"No exports yet. The export DAG writes one file per format ({names}) per data interval, "
                "then validates them; they appear here after its first run.")
        return
    kept = (f"interval files are kept {retention_days} days (EXPORT_RETENTION_DAYS)" if retention_days
            else "interval files are kept for ever (EXPORT_RETENTION_DAYS=0)")
    st.caption(f"On disk: {min(e.start for e in entries):%Y-%m-%d %H:%M} → {max(e.end for e in entries):%Y-%m-%d %H:%M} "
               f"UTC; {kept}.")
    days = sorted({e.start.date() for e in entries}, reverse=True)
    choice = st.selectbox("Day", ["All days"] + [d.isoformat() for d in days], key="exports_day")
    if choice != "All days":
        entries = [e for e in entries if e.start.date().isoformat() == choice]
    passed = sum(e.status == "passed" for e in entries)
    failed = sum(e.status == "failed" for e in entries)
    metric_row(("Intervals", f"{len(entries)}"), ("Validation passed", f"{passed}"), ("Validation failed", f"{failed}"))
    if len(entries) > limit:
        st.caption(f"Showing the newest {limit} of {len(entries)}; pick a day to see others.")
        entries = entries[:limit]
    # Each download column as wide as its button ("Parquet · 456.7 KB") needs at 1280 px.
    widths = [2.2, 1, 0.8] + [0.6 + 0.12 * len(f.label) for f in FORMATS]
    header = st.columns(widths)
    for col, text in zip(header, ["Interval (UTC)", "Validation", "Snapshots"] + [f.label for f in FORMATS]):
        col.markdown(f"**{text}**")
    for entry in entries:
        row = st.columns(widths)
        row[0].write(f"{entry.start:%Y-%m-%d %H:%M:%S} → {entry.end:%H:%M:%S}")
        badge = {"passed": ":green[passed]", "failed": ":red[failed]"}.get(entry.status, f":orange[{entry.status}]")
        row[1].markdown(badge)
        row[2].write("" if entry.snapshots is None else f"{entry.snapshots:,}")
        for col, export_format in zip(row[3:], FORMATS):
            path = entry.file(export_format.name)
            if path is None:
                col.write("missing")
            else:
                # A callable: the file is read when clicked, not on every rerun.
                size = exports_model.file_size_text(entry.sizes.get(export_format.name))
                col.download_button(
                    f"{export_format.label} · {size}", functools.partial(path.read_bytes),
                    file_name=path.name, mime=export_format.media_type, key=f"dl-{entry.stem}-{export_format.name}",
                    on_click="ignore",
                )
        if entry.violations:
            with st.expander(f"{len(entry.violations)} violation(s) in {entry.stem}"):
                for violation in entry.violations[:200]:
                    st.text(violation)


# ---------------------------------------------------------------- trader desk

DESK_NOTE = (
    "Green means the desk did better than the reference price: **sold above** it or **bought below** it; "
    "red means worse. *Buy − ref* and *Sell − ref* are each direction's VWAP minus the reference; "
    "*Edge vs ref* is Σ sells (price − ref) × MW + Σ buys (ref − price) × MW in EUR. "
    "Cash PnL: a sell earns +price × MW, a buy costs −price × MW. Net = MW bought − MW sold."
)


def desk_page(load_days: Callable[[], list[date]], load_day: Callable[[date], tuple[pd.DataFrame, pd.DataFrame]],
              refresh_seconds: float | None = 10.0, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
    st.title("Trader desk")
    st.caption(DESK_NOTE)

    @st.fragment(run_every=refresh_seconds)
    def body() -> None:
        try:
            days = load_days()
        except SourceUnavailable as exc:
            st.error(str(exc))
            return
        if not days:
            st.info("No trades yet. The trade listener and loader write deals from the exchange into the "
                    "database; they appear here as they arrive.")
            return
        today = clock().date()
        default = days.index(today) if today in days else 0
        filters = st.columns([1, 3])
        day = filters[0].selectbox("Delivery day", days, index=default, key="desk_day",
                                   format_func=lambda d: d.isoformat())
        try:
            trades, references = load_day(day)
        except SourceUnavailable as exc:
            st.error(str(exc))
            return
        traders = sorted(trades["trader_id"].unique()) if not trades.empty else []
        chosen = filters[1].multiselect("Traders", traders, key="desk_traders", placeholder="All traders")
        if chosen:
            trades = trades[trades["trader_id"].isin(chosen)]
        render_desk(trades, references, clock(), day)

    body()


def _fmt(value, pattern: str) -> str:
    return "" if value is None or pd.isna(value) else pattern.format(value)


def _signed(value) -> str:
    return _fmt(value, "{:+,.2f}")


def render_desk(trades: pd.DataFrame, references: pd.DataFrame, now: datetime, day: date) -> None:
    if trades.empty:
        st.info(f"No trades for delivery day {day.isoformat()} with these filters.")
        return
    try:
        rows = pnl.desk_rows(trades, references, now)
        by_trader = pnl.trader_totals(trades, references)
        by_day = pnl.day_totals(trades, references)
    except ValueError as exc:
        st.error(f"The trades cannot be summarised: {exc}")
        return
    total = by_day.iloc[0]
    st.subheader(f"Delivery day {day.isoformat()}: totals")
    metric_row(("Trades", f"{int(total['trades'])}"),
               ("MW bought / sold", f"{total['mw_bought']:,.3f} / {total['mw_sold']:,.3f}"),
               ("Net position (MW)", f"{total['net_mw']:+,.3f}"), ("Cash PnL (EUR)", f"{total['cash_pnl']:+,.2f}"),
               ("Edge vs reference (EUR)", _signed(total["edge_vs_reference"]) or "no reference"))
    if references.empty:
        st.warning("No reference price stored for this day yet: the reference-price DAG fetches them every 10 minutes.")

    st.subheader("Per trader and delivery hour")
    shown = pd.DataFrame({
        "Trader": rows["trader_id"],
        "Hour": rows["delivery_hour"],
        "Trades": rows["trades"].astype(int).astype(str),
        "MW bought": rows["mw_bought"].map(lambda v: _fmt(v, "{:,.3f}")),
        "MW sold": rows["mw_sold"].map(lambda v: _fmt(v, "{:,.3f}")),
        "Net MW": rows["net_mw"].map(lambda v: _fmt(v, "{:+,.3f}")),
        "VWAP": rows["vwap"].map(lambda v: _fmt(v, "{:,.2f}")),
        "VWAP buy": rows["vwap_buy"].map(lambda v: _fmt(v, "{:,.2f}")),
        "VWAP sell": rows["vwap_sell"].map(lambda v: _fmt(v, "{:,.2f}")),
        "Reference": rows["reference_price"].map(lambda v: _fmt(v, "{:,.2f}")).where(
            rows["reference_price"].notna(), "no reference"),
        "Ref age": rows["reference_age_seconds"].map(pnl.format_age),
        "Buy − ref": rows["buy_vs_reference"].map(_signed),
        "Sell − ref": rows["sell_vs_reference"].map(_signed),
        "Edge vs ref (EUR)": rows["edge_vs_reference"].map(_signed),
        "Cash PnL (EUR)": rows["cash_pnl"].map(lambda v: _fmt(v, "{:+,.2f}")),
    })
    colours = pd.DataFrame("", index=shown.index, columns=shown.columns)
    css = {pnl.GREEN: GREEN_CSS, pnl.RED: RED_CSS, None: ""}
    colours["Buy − ref"] = [css[pnl.difference_colour("buy", v)] for v in rows["buy_vs_reference"]]
    colours["Sell − ref"] = [css[pnl.difference_colour("sell", v)] for v in rows["sell_vs_reference"]]
    colours["Edge vs ref (EUR)"] = [css[pnl.edge_colour(v)] for v in rows["edge_vs_reference"]]
    st.table(shown.style.apply(lambda _: colours, axis=None).hide(axis="index"))

    st.subheader("Per trader, all hours")
    trader_shown = pd.DataFrame({
        "Trader": by_trader["trader_id"],
        "Trades": by_trader["trades"].astype(int).astype(str),
        "MW bought": by_trader["mw_bought"].map(lambda v: _fmt(v, "{:,.3f}")),
        "MW sold": by_trader["mw_sold"].map(lambda v: _fmt(v, "{:,.3f}")),
        "Net MW": by_trader["net_mw"].map(lambda v: _fmt(v, "{:+,.3f}")),
        "VWAP": by_trader["vwap"].map(lambda v: _fmt(v, "{:,.2f}")),
        "Edge vs ref (EUR)": by_trader["edge_vs_reference"].map(_signed),
        "Cash PnL (EUR)": by_trader["cash_pnl"].map(lambda v: _fmt(v, "{:+,.2f}")),
    })
    trader_colours = pd.DataFrame("", index=trader_shown.index, columns=trader_shown.columns)
    trader_colours["Edge vs ref (EUR)"] = [css[pnl.edge_colour(v)] for v in by_trader["edge_vs_reference"]]
    st.table(trader_shown.style.apply(lambda _: trader_colours, axis=None).hide(axis="index"))
