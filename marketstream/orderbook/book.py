"""The order book: open orders by id, aggregated into (symbol, side, price) levels.

Semantics (shared by the Spark job and the validator's reference replay):
- an OPEN adds the order unless the id is already open or was already closed
  (duplicates and opens arriving after their close are ignored);
- a CLOSED removes the order; a close for an unknown id is remembered, so the open that
  arrives later (from another partition) is ignored.
With these rules the book is a function of the *set* of events seen, so any interleaving
of partitions gives the same result.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from marketstream.orderbook.events import BUY, OrderEvent


@dataclass(frozen=True, slots=True)
class OpenOrder:
    symbol: str
    side: str
    price: Decimal
    size: Decimal


@dataclass
class ApplyStats:
    opened: int = 0
    closed: int = 0
    duplicate_opens: int = 0
    duplicate_closes: int = 0
    opens_after_close: int = 0
    closes_before_open: int = 0


LevelKey = tuple[str, str]  # (symbol, side)


@dataclass
class OrderBook:
    open_orders: dict[int, OpenOrder] = field(default_factory=dict)
    closed_ids: set[int] = field(default_factory=set)
    levels: dict[LevelKey, dict[Decimal, Decimal]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    stats: ApplyStats = field(default_factory=ApplyStats)

    def apply(self, event: OrderEvent) -> None:
        if event.is_open:
            self._open(event)
        else:
            self._close(event.order_id)

    def apply_all(self, events) -> "OrderBook":
        for event in events:
            self.apply(event)
        return self

    def _open(self, event: OrderEvent) -> None:
        if event.order_id in self.closed_ids:
            self.stats.opens_after_close += 1
            return
        if event.order_id in self.open_orders:
            self.stats.duplicate_opens += 1
            return
        order = OpenOrder(event.symbol, event.side, event.price, event.size)
        self.open_orders[event.order_id] = order
        side_levels = self.levels[(order.symbol, order.side)]
        side_levels[order.price] = side_levels.get(order.price, Decimal(0)) + order.size
        self.stats.opened += 1

    def _close(self, order_id: int) -> None:
        if order_id in self.closed_ids:
            self.stats.duplicate_closes += 1
            return
        self.closed_ids.add(order_id)
        order = self.open_orders.pop(order_id, None)
        if order is None:
            self.stats.closes_before_open += 1
            return
        side_levels = self.levels[(order.symbol, order.side)]
        remaining = side_levels[order.price] - order.size
        if remaining:
            side_levels[order.price] = remaining
        else:
            del side_levels[order.price]
        self.stats.closed += 1

    @property
    def open_count(self) -> int:
        return len(self.open_orders)


def sorted_side(levels: dict[Decimal, Decimal], side: str) -> list[tuple[Decimal, Decimal]]:
    """Buy levels best (highest) first, sell levels best (lowest) first."""
    return sorted(levels.items(), reverse=(side == BUY))
