"""Rendering a book in the seed's exact output format.

One JSON array per snapshot: for each symbol (alphabetical) the levels interleaved
``buy_1, sell_1, buy_2, sell_2, ...``; ``total = price * amount``; ``cum_sum`` is the
running sum of ``total`` down that side. When one side is deeper, its extra levels follow
in order. Arithmetic is exact ``Decimal``; the JSON numbers carry no float noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping

from marketstream.orderbook.book import EXACT as _EXACT, OrderBook, sorted_side
from marketstream.orderbook.events import BUY, SELL, format_decimal



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


def largest_snapshot_bytes(depth: int, symbols: int) -> int:
    """The size of the largest snapshot the input contract allows with ``depth`` levels a
    side and ``symbols`` symbols: every row at its longest (a 32-character symbol, the
    largest price, an amount of the most orders 64-bit ids allow at the largest size)."""
    from marketstream.orderbook.events import MAX_ORDER_ID, MAX_PRICE_SIZE, MAX_SYMBOL_LENGTH

    largest = Decimal(MAX_PRICE_SIZE) - Decimal("0.00000001")
    amount = _EXACT.multiply(largest, Decimal(MAX_ORDER_ID))
    total = _EXACT.multiply(largest, amount)
    row = Level("S" * MAX_SYMBOL_LENGTH, f"sell_{depth}", largest, amount, total,
                _EXACT.multiply(total, Decimal(depth)))
    rows = 2 * depth * symbols
    return 2 + rows * (len(row.to_json().encode()) + 1)
