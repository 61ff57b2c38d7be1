"""Rendering a book in the seed's exact output format.

One JSON array per snapshot: for each symbol (alphabetical) the levels interleaved
``buy_1, sell_1, buy_2, sell_2, ...``; ``total = price * amount``; ``cum_sum`` is the
running sum of ``total`` down that side. When one side is deeper, its extra levels follow
in order. Arithmetic is exact ``Decimal``; the JSON numbers carry no float noise.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping

from marketstream.orderbook.book import OrderBook, sorted_side
from marketstream.orderbook.events import BUY, SELL, format_decimal

# Exact products and sums: 28 digits (the default) could round large books.
_EXACT = decimal.Context(prec=80)


@dataclass(frozen=True, slots=True)
class Level:
    symbol: str
    side: str  # "buy_1", "sell_3", ...
    price: Decimal
    amount: Decimal
    total: Decimal
    cum_sum: Decimal

    def to_json(self) -> str:
        return (
            f'{{"symbol":{json.dumps(self.symbol)},"side":"{self.side}",'
            f'"price":{format_decimal(self.price)},"amount":{format_decimal(self.amount)},'
            f'"total":{format_decimal(self.total)},"cum_sum":{format_decimal(self.cum_sum)}}}'
        )


def _side_levels(symbol: str, side: str, levels: Mapping[Decimal, Decimal], depth: int) -> list[Level]:
    ordered = sorted_side(dict(levels), side)
    if depth:
        ordered = ordered[:depth]
    out, cum = [], Decimal(0)
    for rank, (price, amount) in enumerate(ordered, start=1):
        total = _EXACT.multiply(price, amount)
        cum = _EXACT.add(cum, total)
        out.append(Level(symbol, f"{side.lower()}_{rank}", price, amount, total, cum))
    return out


def render_levels(
    levels: Mapping[tuple[str, str], Mapping[Decimal, Decimal]], depth: int = 15
) -> list[Level]:
    """Render ``{(symbol, side): {price: amount}}`` into the interleaved level list."""
    symbols = sorted({symbol for (symbol, _side), by_price in levels.items() if by_price})
    rows: list[Level] = []
    for symbol in symbols:
        buys = _side_levels(symbol, BUY, levels.get((symbol, BUY), {}), depth)
        sells = _side_levels(symbol, SELL, levels.get((symbol, SELL), {}), depth)
        for rank in range(max(len(buys), len(sells))):
            if rank < len(buys):
                rows.append(buys[rank])
            if rank < len(sells):
                rows.append(sells[rank])
    return rows


def render_book(book: OrderBook, depth: int = 15) -> list[Level]:
    return render_levels(book.levels, depth)


def levels_to_json(rows: Iterable[Level]) -> str:
    """The snapshot value: a compact JSON array in the seed's field order."""
    return "[" + ",".join(row.to_json() for row in rows) + "]"


def levels_from_json(text: str | bytes) -> list[Level]:
    """Parse a snapshot value back, numbers as exact ``Decimal``."""
    return [
        Level(
            symbol=item["symbol"],
            side=item["side"],
            price=Decimal(item["price"]),
            amount=Decimal(item["amount"]),
            total=Decimal(item["total"]),
            cum_sum=Decimal(item["cum_sum"]),
        )
        for item in json.loads(text, parse_float=Decimal, parse_int=Decimal)
    ]
