"""The book tool's outputs: the seed's book view as text (``Buy n`` beside ``Sell n``),
JSON and CSV of one second, the export formats for a range, and an explained level."""

from __future__ import annotations

import json
from typing import Sequence

from marketstream.book.core import BookSecond, Explanation
from marketstream.book.times import show
from marketstream.exports.formats import render_csv
from marketstream.orderbook.events import format_decimal
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level, levels_to_json


def _units(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.partition("-")
    return (base, quote) if sep else (symbol, "")


def _number(value) -> str:
    """Exact, with thousands separators, no trailing zeros: ``34,045.24``."""
    text = format_decimal(value)
    whole, dot, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-')):,}{dot}{fraction}"


def book_view(symbol: str, levels: Sequence[Level]) -> list[list[str]]:
    """The seed's book view of one symbol: a header row and one row per rank, ``Side,
    Price, Amount, Total, Sum`` of the buy level beside the same of the sell level."""
    base, quote = _units(symbol)
    unit = lambda name, u: f"{name} ({u})" if u else name  # noqa: E731
    fields = ["Side", unit("Price", quote), unit("Amount", base), unit("Total", quote), unit("Sum", quote)]
    by_rank: dict[int, dict[str, Level]] = {}
    for level in levels:
        side, _, rank = level.side.partition("_")
        by_rank.setdefault(int(rank), {})[side] = level
    rows = [fields + fields]
    for rank in sorted(by_rank):
        row: list[str] = []
        for side in ("buy", "sell"):
            level = by_rank[rank].get(side)
            row += ([f"{side.capitalize()} {rank}", _number(level.price), _number(level.amount),
                     _number(level.total), _number(level.cum_sum)] if level else [""] * 5)
        rows.append(row)
    return rows


def _aligned(rows: list[list[str]], split: int | None = None) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if i in (0, split) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        if split is not None:
            cells[split] = "| " + cells[split]
        lines.append("  ".join(cells).rstrip())
    return lines


def table(book: BookSecond, symbol: str | None, depth: int) -> str:
    """The book view of each symbol (or the one asked for), under the line that says
    which second it is and where it came from."""
    out = [book.describe()]
    symbols = [symbol] if symbol else book.symbols()
    if not symbols:
        out.append("The book is empty: no open orders.")
    for name in symbols:
        rows = book_view(name, book.levels(name, depth))
        out.append("")
        out.append(name)
        if len(rows) == 1:
            out.append("  (no levels)")
            continue
        lines = _aligned(rows, split=5)
        sell_at = lines[0].index("| ")
        out.append("Buy Order".ljust(sell_at) + "| Sell Order")
        out += lines
    return "\n".join(out) + "\n"


def _filtered(book: BookSecond, symbol: str | None, depth: int) -> SnapshotMessage:
    m = book.message
    return SnapshotMessage(m.snapshot_time, m.sequence, m.input_offsets, m.open_orders,
                           levels_to_json(book.levels(symbol, depth)), m.recovered)


def as_json(book: BookSecond, symbol: str | None, depth: int) -> str:
    m = book.message
    head = {"snapshot_time": show(m.snapshot_time), "sequence": m.sequence, "recovered": m.recovered,
            "source": book.source, "location": book.location,
            "input_offsets": {str(p): o for p, o in sorted(m.input_offsets.items())} or None,
            "open_orders": m.open_orders if m.open_orders >= 0 else None}
    # The levels as published: exact decimals, no float round trip.
    return json.dumps(head)[:-1] + f',"book":{_filtered(book, symbol, depth).value}}}\n'


def as_csv(book: BookSecond, symbol: str | None, depth: int) -> str:
    return render_csv([_filtered(book, symbol, depth)])


def range_messages(seconds: Sequence[BookSecond], symbol: str | None) -> list[SnapshotMessage]:
    return [_filtered(s, symbol, 0) for s in seconds]


def explanation(result: Explanation) -> str:
    level = result.level
    side, _, rank = level.side.partition("_")
    rows = [["Order id", "Price", "Size", "Opened (record time)"]]
    rows += [[str(order_id), _number(order.price), _number(order.size), show(order.tau) if order.tau else "-"]
             for order_id, order in result.orders]
    rows.append(["Sum", "", _number(result.total_size), ""])
    return "\n".join([
        result.book.describe(),
        f"{level.symbol} {side.capitalize()} {rank}: price {_number(level.price)}, amount {_number(level.amount)}",
        f"{len(result.orders)} open order(s), replayed from the input below offsets "
        f"{ {p: o for p, o in sorted(result.book.message.input_offsets.items())} }:",
        "", *_aligned(rows), "",
        f"The sizes sum to {_number(result.total_size)}, the level's amount, exactly.",
    ]) + "\n"


def explanation_json(result: Explanation) -> str:
    level = result.level
    return json.dumps({
        "snapshot_time": show(result.book.second), "sequence": result.book.message.sequence,
        "recovered": result.book.recovered, "symbol": level.symbol, "side": level.side,
        "price": format_decimal(level.price), "amount": format_decimal(level.amount),
        "input_offsets": {str(p): o for p, o in sorted(result.book.message.input_offsets.items())},
        "orders": [{"order_id": i, "size": format_decimal(o.size), "opened_at": show(o.tau) if o.tau else None}
                   for i, o in result.orders],
    }) + "\n"
