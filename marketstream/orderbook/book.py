"""The order book: open orders by id, aggregated into (symbol, side, price) levels.

Semantics, shared by the Spark job's state partitions and the validator's replay:
- an OPEN adds the order, unless the id is already open or a CLOSE of it is remembered
  (duplicates and opens that arrive after their close are ignored);
- a CLOSE removes the open order and is remembered as a *tombstone*, so the open that
  arrives later (from another partition) is ignored;
- with ``closed_ttl_s``, a tombstone only counts within that many seconds of *record
  time* (``tau``: the running maximum of the record timestamps, in seconds, within the
  record's Kafka partition; in the Spark job at least the last second published when a
  batch found the partition read to its end, ``spark.state.book_of_second``): a close hides or removes an open iff
  ``tau(close) > tau(open) - closed_ttl_s``. The rule looks only at the two records, so the
  book stays a function of the *set* of events seen, whatever the interleaving of
  partitions; ``expire`` drops the tombstones that can no longer matter;
- with ``max_symbols``, an OPEN for a symbol that has no open order while ``max_symbols``
  others do is refused (``Outcome.SYMBOL_LIMIT``: the caller dead-letters it).

Amounts are exact: sizes have at most 8 decimal places and are below 10**10 (the input
contract), so every sum fits the ``EXACT`` context, which raises instead of rounding.
"""

from __future__ import annotations

import decimal
import enum
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from marketstream.orderbook.events import BUY, OrderEvent

# Within the input contract no amount, total or running sum needs more than 60 digits
# (a size < 10**10 with 8 decimals, at most 2**63 orders on a level, a price < 10**10, at
# most 1,000 levels a side). Inexact or Rounded would mean a broken bound: raise, never round.
EXACT = decimal.Context(
    prec=100, Emax=999, Emin=-999,
    traps=[decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.InvalidOperation, decimal.DivisionByZero],
)
ZERO = Decimal(0)
@dataclass(frozen=True, slots=True)
class OpenOrder:
    symbol: str
    side: str
    price: Decimal
    size: Decimal
    tau: int = 0  # record second of the open (see the module docstring)


class Outcome(enum.Enum):
    OPENED = "opened"
    CLOSED = "closed"
    DUPLICATE_OPEN = "duplicate_open"
    OPEN_AFTER_CLOSE = "open_after_close"
    DUPLICATE_CLOSE = "duplicate_close"
    CLOSE_BEFORE_OPEN = "close_before_open"
    SYMBOL_LIMIT = "symbol_limit"

    @property
    def changes_book(self) -> bool:
        return self in (Outcome.OPENED, Outcome.CLOSED)


@dataclass
class ApplyStats:
    counts: dict[Outcome, int] = field(default_factory=lambda: defaultdict(int))

    def __getattr__(self, name: str) -> int:
        # stats.opened, stats.duplicate_opens ...: the counts under readable names.
        names = {"opened": Outcome.OPENED, "closed": Outcome.CLOSED, "duplicate_opens": Outcome.DUPLICATE_OPEN,
                 "duplicate_closes": Outcome.DUPLICATE_CLOSE, "opens_after_close": Outcome.OPEN_AFTER_CLOSE,
                 "closes_before_open": Outcome.CLOSE_BEFORE_OPEN, "symbol_limit": Outcome.SYMBOL_LIMIT}
        if name in names:
            return self.counts[names[name]]
        raise AttributeError(name)


LevelKey = tuple[str, str]  # (symbol, side)


def tombstone_hides(closed_tau: int, open_tau: int, ttl_s: int | None) -> bool:
    """Whether a close at record second ``closed_tau`` hides (or removes) an open at
    ``open_tau``: always without a TTL, else only within the TTL of record time."""
    return ttl_s is None or closed_tau > open_tau - ttl_s


@dataclass
class OrderBook:
    max_symbols: int | None = None
    closed_ttl_s: int | None = None
    open_orders: dict[int, OpenOrder] = field(default_factory=dict)
    closed_ids: dict[int, int] = field(default_factory=dict)  # id -> tau of its latest close
    levels: dict[LevelKey, dict[Decimal, Decimal]] = field(default_factory=lambda: defaultdict(dict))
    symbol_orders: dict[str, int] = field(default_factory=dict)  # open orders per symbol (> 0)
    stats: ApplyStats = field(default_factory=ApplyStats)

    def apply(self, event: OrderEvent, tau: int = 0) -> Outcome:
        outcome = self._open(event, tau) if event.is_open else self._close(event.order_id, tau)
        self.stats.counts[outcome] += 1
        return outcome

    def apply_all(self, events) -> "OrderBook":
        for event in events:
            self.apply(event)
        return self

    def _open(self, event: OrderEvent, tau: int) -> Outcome:
        closed_tau = self.closed_ids.get(event.order_id)
        if closed_tau is not None and tombstone_hides(closed_tau, tau, self.closed_ttl_s):
            return Outcome.OPEN_AFTER_CLOSE
        if event.order_id in self.open_orders:
            return Outcome.DUPLICATE_OPEN
        if (self.max_symbols is not None and event.symbol not in self.symbol_orders
                and len(self.symbol_orders) >= self.max_symbols):
            return Outcome.SYMBOL_LIMIT
        order = OpenOrder(event.symbol, event.side, event.price, event.size, tau)
        self.open_orders[event.order_id] = order
        side_levels = self.levels[(order.symbol, order.side)]
        side_levels[order.price] = EXACT.add(side_levels.get(order.price, ZERO), order.size)
        self.symbol_orders[order.symbol] = self.symbol_orders.get(order.symbol, 0) + 1
        return Outcome.OPENED

    def _close(self, order_id: int, tau: int) -> Outcome:
        previous = self.closed_ids.get(order_id)
        self.closed_ids[order_id] = tau if previous is None else max(previous, tau)
        order = self.open_orders.get(order_id)
        if order is None or not tombstone_hides(tau, order.tau, self.closed_ttl_s):
            return Outcome.DUPLICATE_CLOSE if previous is not None else Outcome.CLOSE_BEFORE_OPEN
        del self.open_orders[order_id]
        key = (order.symbol, order.side)
        side_levels = self.levels[key]
        remaining = EXACT.subtract(side_levels[order.price], order.size)
        if remaining:
            side_levels[order.price] = remaining
        else:
            del side_levels[order.price]
            if not side_levels:
                del self.levels[key]
        left = self.symbol_orders[order.symbol] - 1
        if left:
            self.symbol_orders[order.symbol] = left
        else:
            del self.symbol_orders[order.symbol]
        return Outcome.CLOSED

    def expire(self, watermark: int) -> int:
        """Forget the tombstones that cannot hide any future open: those with
        ``tau + closed_ttl_s <= watermark`` when every later record has ``tau >= watermark``
        (the minimum over the input partitions of their current record second)."""
        if self.closed_ttl_s is None:
            return 0
        horizon = watermark - self.closed_ttl_s
        stale = [order_id for order_id, tau in self.closed_ids.items() if tau <= horizon]
        for order_id in stale:
            del self.closed_ids[order_id]
        return len(stale)

    @property
    def open_count(self) -> int:
        return len(self.open_orders)


def sorted_side(levels: dict[Decimal, Decimal], side: str) -> list[tuple[Decimal, Decimal]]:
    """Buy levels best (highest) first, sell levels best (lowest) first."""
    return sorted(levels.items(), reverse=(side == BUY))
