"""Time travel on the order-book page: the book of any retained second.

The chosen second lives in the URL (``?t=2026-12-06T14:03:27Z``), so a link shows the
same second to whoever opens it. The controls move it: a date-time picker (UTC, to the
second), -1 s / +1 s, the newest second, and play at 1x or 10x (one or ten seconds a
second, stopping at the newest). The book and depth chart are those of that second, from
the snapshot topic or the exports (``marketstream.book``), with a badge on a recovered
second; choosing a level shows the open orders behind it (``explain``).

The page function takes its loaders, so tests drive it with real data and the page script
only wires the settings in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable

import streamlit as st

from dashboard.model import book as book_model
from marketstream.book import BookError, BookSecond, Explanation, parse_time, show

QUERY_KEY = "t"
SPEEDS = {"Pause": 0, "Play 1×": 1, "Play 10×": 10}


@dataclass(frozen=True)
class Span:
    """The retained seconds: the topic's and the exports' together."""

    first: int
    last: int


@dataclass(frozen=True)
class Loaders:
    span: Callable[[], Span | None]
    at: Callable[[int], BookSecond]
    explain: Callable[[int, str, str], Explanation]


def loaders(settings) -> Loaders:
    """The real sources for ``settings``; a second's book is cached (it never changes once
    published), a missing one is not (it may be published or backfilled soon)."""
    from marketstream import book

    def span() -> Span | None:
        found = book.retained(settings)
        return None if found is None else Span(*found)

    @st.cache_data(max_entries=600, show_spinner=False)
    def at(second: int, where: tuple) -> BookSecond:  # where: the cache key part settings are
        return book.book_at(settings, second)

    where = (settings.kafka_bootstrap_servers, settings.orderbook_topic, str(settings.export_dir))
    return Loaders(span, lambda second: at(second, where),
                   lambda second, symbol, side: book.explain(settings, second, symbol, side))


def requested() -> bool:
    """Whether the URL asks for a past second (else the page shows the live book)."""
    return QUERY_KEY in st.query_params


def entry_button() -> None:
    """Under the live book: the way into time travel (at the newest second)."""
    if st.button("Time travel: look at a past second", icon=":material/history:"):
        st.query_params[QUERY_KEY] = "newest"
        st.rerun()


def _chosen(span: Span) -> int:
    text = st.query_params.get(QUERY_KEY, "newest")
    try:
        second = span.last if text == "newest" else parse_time(text)
    except ValueError as exc:
        st.warning(f"The link's time is not readable ({exc}); showing the newest second.")
        second = span.last
    return min(max(second, span.first), span.last)


def _picked(value) -> int:
    return int(value.replace(tzinfo=UTC).timestamp())


def _move(to: int) -> None:
    st.session_state["tt_second"] = to


def _naive_utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC).replace(tzinfo=None)  # the picker has no zones: UTC


def time_travel_page(load: Loaders) -> None:
    st.title("Order book: time travel")
    if st.button("Back to the live book", icon=":material/sensors:"):
        del st.query_params[QUERY_KEY]
        st.rerun()
    speed = SPEEDS[st.session_state.get("tt_play") or "Pause"]

    @st.fragment(run_every=1.0 if speed else None)
    def body() -> None:
        playing = SPEEDS[st.session_state.get("tt_play") or "Pause"]
        if playing != speed:
            st.rerun()  # the fragment's timer is set when the page runs
        try:
            span = load.span()  # in the fragment: "Newest" and play follow the job
        except Exception as exc:  # kafka-python raises many types; the page needs one sentence
            st.error(f"Cannot read the retained range: {exc}")
            return
        if span is None:
            st.info("Nothing retained yet: no snapshot on the topic and no export. Start the pipeline DAG in Airflow.")
            return
        st.caption(f"Retained: {show(span.first)} to {show(span.last)} (UTC), from the snapshot topic and the exports.")
        if st.session_state.get("tt_url") != st.query_params.get(QUERY_KEY):  # a link opened or edited
            _move(_chosen(span))
        second = st.session_state["tt_second"]
        if playing:
            if second >= span.last:
                st.session_state["tt_play"] = "Pause"
            else:
                _move(min(span.last, second + playing))
        _controls(span)
        second = st.session_state["tt_second"]
        st.session_state["tt_url"] = st.query_params[QUERY_KEY] = show(second)
        _book(load, second)

    body()


def _controls(span: Span) -> None:
    second = st.session_state["tt_second"]
    cols = st.columns([2, 2, 1, 1, 1, 3], vertical_alignment="bottom")
    # A date and a time to the second (Streamlit's one date-time widget stops at minutes).
    # No keys: they show whatever second the other controls chose (their values are part
    # of their identity), and a second picked in them moves every control.
    now = _naive_utc(second)
    day = cols[0].date_input("Day (UTC)", value=now.date(), min_value=_naive_utc(span.first).date(),
                             max_value=_naive_utc(span.last).date(), format="YYYY-MM-DD")
    clock_time = cols[1].time_input("Time (UTC)", value=now.time(), step=1)
    if day is not None and clock_time is not None:
        picked = datetime.combine(day, clock_time)
        if picked != now:
            _move(second := min(max(_picked(picked), span.first), span.last))
    cols[2].button("−1 s", on_click=_move, args=(max(span.first, second - 1),), disabled=second <= span.first,
                   width="stretch")
    cols[3].button("+1 s", on_click=_move, args=(min(span.last, second + 1),), disabled=second >= span.last,
                   width="stretch")
    cols[4].button("Newest", on_click=_move, args=(span.last,), width="stretch")
    cols[5].segmented_control("Play", list(SPEEDS), key="tt_play", default="Pause", label_visibility="collapsed")


def _book(load: Loaders, second: int) -> None:
    from dashboard import views

    try:
        found = load.at(second)
    except BookError as exc:
        st.warning(str(exc))
        return
    head = st.columns([3, 1, 1, 3], vertical_alignment="center")
    head[0].metric("Snapshot time (UTC)", show(found.second).replace("T", " ").rstrip("Z"))
    head[1].metric("Sequence", f"{found.message.sequence}")
    with head[2]:
        if found.recovered:
            st.badge("Recovered", icon=":material/restore:", color="orange",
                     help="Published late, after the job came back: the true book of that second.")
        else:
            st.badge("Live", icon=":material/check:", color="green")
    head[3].caption(f"From the {found.source}: {found.location}")
    symbols = found.symbols()
    if not symbols:
        st.info("The book was empty at that second: no open orders.")
        return
    symbol = st.radio("Symbol", symbols, horizontal=True, key="tt_symbol") or symbols[0]
    levels = found.levels(symbol)
    views.depth_chart(symbol, levels)
    st.table(book_model.level_table(symbol, levels), hide_index=True)
    names = [lv.side.replace("_", " ").capitalize() for lv in levels]
    chosen = st.pills("Orders behind a level", names, key="tt_level",
                      help="The open orders that make up the level, replayed from the input.")
    if chosen:
        _explain(load, second, symbol, chosen.lower().replace(" ", "_"))


def _explain(load: Loaders, second: int, symbol: str, side: str) -> None:
    import pandas as pd

    try:
        with st.spinner("Replaying the input up to this snapshot…"):
            result = load.explain(second, symbol, side)
    except BookError as exc:
        st.warning(str(exc))
        return
    level = result.level
    st.subheader(f"{symbol} {level.side.replace('_', ' ').capitalize()}: {book_model.format_number(level.price)}")
    rows = [{"Order id": str(order_id), "Size": book_model.format_number(order.size),
             "Opened (record time, UTC)": show(order.tau) if order.tau else "-"} for order_id, order in result.orders]
    st.table(pd.DataFrame(rows), hide_index=True)
    st.success(f"{len(result.orders)} open order(s); their sizes sum to {book_model.format_number(result.total_size)}, "
               f"the level's amount, exactly.")
