"""Building order events: pure, seeded, no I/O.

``OrderFlow`` simulates a market per symbol, on the instrument's tick grid:

- buys are placed below the symbol's mid price and sells above it, 1 to
  ``max_depth_ticks`` ticks away;
- now and then (``mid_move_share`` of events) one symbol's mid moves one tick, with a pull
  back toward its starting mid that grows with the distance, so the mid wanders within
  ``mid_band_ticks`` of where it started, for hours;
- when the mid moves through resting orders (a move up reaches the best sells, a move
  down the best buys) those orders are filled: one CLOSED event each, oldest first, one
  per call, before anything else happens; the mid takes its new value with the last fill;
- ``close_share`` of the other events close (cancel) a random live order;
- with ``max_live_orders`` live orders (all symbols together) the next event is a close.

So after every event, every live buy < its symbol's mid < every live sell: the book is
never crossed. Same seed, same ``now`` values → the same events.
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
    start_ticks: int = -1  # the starting mid, which the mid reverts to

    def __post_init__(self) -> None:
        if self.start_ticks < 0:
            self.start_ticks = self.mid_ticks

    @property
    def mid(self) -> Decimal:
        return self.instrument.tick * self.mid_ticks


# Where a live order rests: (symbol, side, price in ticks).
_LevelKey = tuple[str, str, int]


@dataclass
class OrderFlow:
    symbols: list[str]
    seed: int = 0
    close_share: float = 0.3  # share of (non-fill) events that cancel a random live order
    max_depth_ticks: int = 20  # how far from the mid new orders are placed
    first_order_id: int = 1
    mid_move_share: float = 0.02  # chance per event that one symbol's mid moves a tick
    mid_band_ticks: int | None = None  # how far the mid may wander; None: 3 × max_depth_ticks
    max_live_orders: int | None = 5_000  # across all symbols; None: unbounded
    _rng: random.Random = field(init=False, repr=False)
    _markets: dict[str, _Market] = field(init=False, repr=False)
    # Live ids in a list (random pick, swap-remove) with each id's position in it.
    _live: list[int] = field(init=False, repr=False, default_factory=list)
    _position: dict[int, int] = field(init=False, repr=False, default_factory=dict)
    # Live ids by level, oldest first, and each live id's level: fills find their orders here.
    _levels: dict[_LevelKey, dict[int, None]] = field(init=False, repr=False, default_factory=dict)
    _level_of: dict[int, _LevelKey] = field(init=False, repr=False, default_factory=dict)
    # Orders the last mid move went through, to close before anything else, and that move.
    _fills: list[int] = field(init=False, repr=False, default_factory=list)
    _pending_mid: tuple[_Market, int] | None = field(init=False, repr=False, default=None)
    _next_id: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("OrderFlow needs at least one symbol")
        if not 0 <= self.close_share <= 1:
            raise ValueError(f"close_share must be within [0, 1], got {self.close_share}")
        if not 0 <= self.mid_move_share <= 1:
            raise ValueError(f"mid_move_share must be within [0, 1], got {self.mid_move_share}")
        if self.max_depth_ticks < 1:
            raise ValueError(f"max_depth_ticks must be >= 1, got {self.max_depth_ticks}")
        if self.mid_band_ticks is None:
            self.mid_band_ticks = 3 * self.max_depth_ticks
        if self.mid_band_ticks < 1:
            raise ValueError(f"mid_band_ticks must be >= 1, got {self.mid_band_ticks}")
        if self.max_live_orders is not None and self.max_live_orders < 1:
            raise ValueError(f"max_live_orders must be >= 1 or None (unbounded), got {self.max_live_orders}")
        self._rng = random.Random(self.seed)
        self._markets = {}
        for symbol in self.symbols:
            instrument = instrument_for(symbol)
            # Far enough from zero that a buy max_depth_ticks below the mid is still positive.
            self._markets[symbol] = _Market(instrument, max(int(instrument.mid / instrument.tick),
                                                            self.max_depth_ticks + 1))
        self._next_id = self.first_order_id

    @property
    def live_orders(self) -> int:
        return len(self._live)

    @property
    def pending_fills(self) -> int:
        """Orders a mid move went through, still to close (the next events)."""
        return len(self._fills)

    def mid(self, symbol: str) -> Decimal:
        """The symbol's mid price: every live buy is below it, every live sell above."""
        return self._markets[symbol].mid

    def next_event(self, now: int) -> OrderEvent:
        """The next event; ``now`` (epoch seconds) becomes its ``created_at``."""
        if self._fills:
            return self._fill(now)
        rng = self._rng
        if rng.random() < self.mid_move_share:
            self._move_mid()
            if self._fills:
                return self._fill(now)
        if self._live and (
            (self.max_live_orders is not None and len(self._live) >= self.max_live_orders)
            or rng.random() < self.close_share
        ):
            return self._close(now)
        return self._open(now)

    def _move_mid(self) -> None:
        """Move one symbol's mid a tick; queue the resting orders it goes through."""
        market = self._markets[self._rng.choice(self.symbols)]
        # Chance of a step down: 1/2 at the starting mid, rising with the cube of the
        # distance above it (falling below it) to 1 (0) at the band's edge.
        offset = (market.mid_ticks - market.start_ticks) / self.mid_band_ticks
        down = self._rng.random() < 0.5 + 0.5 * max(-1.0, min(1.0, offset)) ** 3
        if down:
            target = market.mid_ticks - 1
            if target <= self.max_depth_ticks:  # buys must stay above zero
                return
            crossed = (market.instrument.symbol, BUY, target)  # buys at >= the new mid
        else:
            target = market.mid_ticks + 1
            crossed = (market.instrument.symbol, SELL, target)  # sells at <= the new mid
        # Every buy is below the old mid and every sell above it, so a one-tick move only
        # goes through the level at the new mid.
        resting = self._levels.get(crossed)
        if resting:
            self._fills = list(reversed(resting))  # popped from the end: oldest first
            self._pending_mid = (market, target)
        else:
            market.mid_ticks = target

    def _fill(self, now: int) -> OrderEvent:
        order_id = self._fills.pop()
        self._remove(order_id)
        if not self._fills:  # the last order in the way: the mid moves now
            market, target = self._pending_mid
            market.mid_ticks = target
            self._pending_mid = None
        return OrderEvent(order_id=order_id, status=CLOSED, created_at=Decimal(now))

    def _close(self, now: int) -> OrderEvent:
        order_id = self._live[self._rng.randrange(len(self._live))]
        self._remove(order_id)
        return OrderEvent(order_id=order_id, status=CLOSED, created_at=Decimal(now))

    def _remove(self, order_id: int) -> None:
        # Swap-remove keeps closing any live order O(1).
        live, position = self._live, self._position
        index = position.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[index] = last
            position[last] = index
        key = self._level_of.pop(order_id)
        level = self._levels[key]
        del level[order_id]
        if not level:
            del self._levels[key]

    def _open(self, now: int) -> OrderEvent:
        rng = self._rng
        symbol = rng.choice(self.symbols)
        market = self._markets[symbol]
        side = BUY if rng.random() < 0.5 else SELL
        distance = rng.randint(1, self.max_depth_ticks)
        price_ticks = market.mid_ticks - distance if side == BUY else market.mid_ticks + distance
        instrument = market.instrument
        quantum = Decimal(1).scaleb(-instrument.size_decimals)
        size = (instrument.max_size * Decimal(str(rng.random()))).quantize(quantum)
        size = max(size, quantum)
        order_id = self._next_id
        self._next_id += 1
        self._position[order_id] = len(self._live)
        self._live.append(order_id)
        key = (symbol, side, price_ticks)
        self._level_of[order_id] = key
        level = self._levels.get(key)
        if level is None:
            self._levels[key] = {order_id: None}
        else:
            level[order_id] = None
        return OrderEvent(
            order_id=order_id,
            status=OPEN,
            symbol=symbol,
            side=side,
            size=size,
            price=instrument.tick * price_ticks,
            created_at=Decimal(now),
        )
