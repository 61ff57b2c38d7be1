"""The order-book page: the newest snapshot, its depth chart and its table in the
snapshot format's book view (``Buy n | Price | Amount | Total | Sum`` beside ``Sell n``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Sequence

import pandas as pd

from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level


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
    """("BTC", "USDT") for "BTC-USDT": the table's headers name both units."""
    base, sep, quote = symbol.partition("-")
    return (base, quote) if sep else (symbol, "")


def format_number(value: Decimal) -> str:
    """Exact value with thousands separators."""
    return f"{value:,}"


def level_table(symbol: str, levels: Sequence[Level]) -> pd.DataFrame:
    """The book view: ``Buy n | Price | Amount | Total | Sum`` beside the same five for
    ``Sell n``, one row per rank. Columns are a two-level header (Buy Order / Sell Order);
    cells are exact numbers formatted as text so no float noise appears."""
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
