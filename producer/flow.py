"""Building order events: pure, seeded, no I/O.

``OrderFlow`` simulates a market per symbol: a mid price that drifts on a tick grid, buys
placed below the mid and sells above it, and a share of events that close a random live
order. Same seed, same ``now`` values → the same events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from marketstream.orderbook.events import BUY, CLOSED, OPEN, SELL, OrderEvent


@dataclass(frozen=True)
class Instrument:
    symbol: str
    mid: Decimal  # starting mid price
    tick: Decimal  # price grid
    max_size: Decimal
    size_decimals: int


# Realistic grids: BTC on 10-dollar steps like the official sample, others finer.
KNOWN_INSTRUMENTS = {
    "BTC-USDT": Instrument("BTC-USDT", Decimal("34000"), Decimal("10"), Decimal("2"), 4),
    "ETH-USDT": Instrument("ETH-USDT", Decimal("1800"), Decimal("0.5"), Decimal("20"), 3),
    "SOL-USDT": Instrument("SOL-USDT", Decimal("20"), Decimal("0.01"), Decimal("500"), 2),
    "BNB-USDT": Instrument("BNB-USDT", Decimal("215"), Decimal("0.1"), Decimal("50"), 3),
}


def instrument_for(symbol: str) -> Instrument:
    return KNOWN_INSTRUMENTS.get(symbol) or Instrument(symbol, Decimal("100"), Decimal("0.01"), Decimal("10"), 3)


@dataclass
class _Market:
    instrument: Instrument
    mid_ticks: int  # mid price in ticks

    @property
    def mid(self) -> Decimal:
        return self.instrument.tick * self.mid_ticks


@dataclass
class OrderFlow:
    symbols: list[str]
    seed: int = 0
    close_share: float = 0.3
    max_depth_ticks: int = 20  # how far from the mid new orders are placed
    first_order_id: int = 1
    _rng: random.Random = field(init=False, repr=False)
    _markets: dict[str, _Market] = field(init=False, repr=False)
    _live: list[int] = field(init=False, repr=False, default_factory=list)
    _next_id: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("OrderFlow needs at least one symbol")
        if not 0 <= self.close_share <= 1:
            raise ValueError(f"close_share must be within [0, 1], got {self.close_share}")
        self._rng = random.Random(self.seed)
        self._markets = {}
        for symbol in self.symbols:
            instrument = instrument_for(symbol)
            self._markets[symbol] = _Market(instrument, int(instrument.mid / instrument.tick))
        self._next_id = self.first_order_id

    @property
    def live_orders(self) -> int:
        return len(self._live)

    def next_event(self, now: int) -> OrderEvent:
        """The next event; ``now`` (epoch seconds) becomes its ``created_at``."""
        if self._live and self._rng.random() < self.close_share:
            return self._close(now)
        return self._open(now)

    def _close(self, now: int) -> OrderEvent:
        # Swap-remove keeps closing a random live order O(1).
        index = self._rng.randrange(len(self._live))
        self._live[index], self._live[-1] = self._live[-1], self._live[index]
        order_id = self._live.pop()
        return OrderEvent(order_id=order_id, status=CLOSED, created_at=Decimal(now))

    def _open(self, now: int) -> OrderEvent:
        symbol = self._rng.choice(self.symbols)
        market = self._markets[symbol]
        # The mid drifts a tick now and then: the book moves slowly, as a real one does.
        market.mid_ticks = max(self.max_depth_ticks + 1, market.mid_ticks + self._rng.choice((-1, 0, 0, 0, 0, 1)))
        side = BUY if self._rng.random() < 0.5 else SELL
        distance = self._rng.randint(1, self.max_depth_ticks)
        price_ticks = market.mid_ticks - distance if side == BUY else market.mid_ticks + distance
        instrument = market.instrument
        quantum = Decimal(1).scaleb(-instrument.size_decimals)
        size = (instrument.max_size * Decimal(str(self._rng.random()))).quantize(quantum)
        size = max(size, quantum)
        order_id = self._next_id
        self._next_id += 1
        self._live.append(order_id)
        return OrderEvent(
            order_id=order_id,
            status=OPEN,
            symbol=symbol,
            side=side,
            size=size,
            price=instrument.tick * price_ticks,
            created_at=Decimal(now),
        )
