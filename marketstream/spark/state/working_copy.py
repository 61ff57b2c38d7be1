"""A state partition's committed state in memory: the working copy the job looks orders
up in, kept by the partition's state server (``server``) so that it lives in one
process, whatever Python worker Spark hands the partition's task to.

The truth stays in Spark's state (``partition``: a journal of per-batch changes
and rolling segment snapshots, checkpointed and rolled back with each batch). This copy
is named by the journal entry it ends with (``version``). A batch's own changes are
*staged*: applied at once, with what they replaced kept aside, and settled at the start
of the next batch — kept when the state says the batch committed, undone when Spark
rolled it back. A copy that is lost, or from another history, is rebuilt from the state.

An open order is one Python int (``_encode``: price, size and record second in 1e-8 units
and seconds, side, symbol number): about 120 bytes an order with the dict that holds it,
so ten million open orders fit in about a gigabyte and a quarter.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable

import msgspec
from sortedcontainers import SortedDict

from marketstream.orderbook.events import BUY_CODE


_M64 = (1 << 64) - 1
_JSON_ENCODER = msgspec.json.Encoder()
_SYMBOL_BITS = 16  # symbols per state partition < 65,536 (BOOK_MAX_SYMBOLS is at most 10,000)

Level = tuple[str, int, int]  # (symbol, side, price)


@dataclass(frozen=True, slots=True)
class StoredOrder:
    symbol: str
    side: int
    price: int
    size: int
    tau: int


@dataclass
class Changes:
    """One batch's changes, in the journal's shape (see ``to_json``)."""

    opened: dict[int, tuple[int, StoredOrder]]  # id -> (segment, order)
    closed: dict[int, tuple[int, str]]  # id -> (segment, symbol)
    tombs: dict[int, tuple[int, int]]  # id -> (segment, tau)
    expire_before: int | None  # tombstones with tau <= this go
    levels: dict[Level, tuple[int, int]]  # level -> (amount, orders) after the batch; (0, 0): gone

    @classmethod
    def empty(cls) -> "Changes":
        return cls({}, {}, {}, None, {})

    def __len__(self) -> int:
        return len(self.opened) + len(self.closed) + len(self.tombs) + len(self.levels)

    def to_json(self) -> dict:
        return {
            "o": [[i, seg, o.symbol, o.side, o.price, o.size, o.tau] for i, (seg, o) in self.opened.items()],
            "c": [[i, seg, symbol] for i, (seg, symbol) in self.closed.items()],
            "t": [[i, seg, tau] for i, (seg, tau) in self.tombs.items()],
            "x": self.expire_before,
            "l": [[s, side, p, str(a), n] for (s, side, p), (a, n) in self.levels.items()],
        }

    def to_text(self) -> str:
        """``to_json`` as compact JSON text (the journal's and segment snapshots' values):
        the text ``json.dumps(..., separators=(",", ":"))`` writes, ~4x faster."""
        return _JSON_ENCODER.encode(self.to_json()).decode()

    @classmethod
    def from_text(cls, text: str) -> "Changes":
        return cls.from_json(msgspec.json.decode(text))

    @classmethod
    def from_json(cls, data: dict) -> "Changes":
        return cls(
            opened={i: (seg, StoredOrder(s, side, p, size, tau)) for i, seg, s, side, p, size, tau in data["o"]},
            closed={i: (seg, s) for i, seg, s in data["c"]},
            tombs={i: (seg, tau) for i, seg, tau in data["t"]},
            expire_before=data["x"],
            levels={(s, side, p): (int(a), n) for s, side, p, a, n in data["l"]},
        )


class MemoryIndex:
    """Open orders and tombstones by segment, published levels, symbols in use."""

    def __init__(self, segments: int):
        self.segments = segments
        self.reset()

    def reset(self) -> None:
        self.orders: list[dict[int, int]] = [{} for _ in range(self.segments)]  # per segment: id -> encoded order
        self.tombs: list[dict[int, int]] = [{} for _ in range(self.segments)]  # per segment: id -> tau
        self._expiry: list[tuple[int, int, int]] = []  # heap of (tau, segment, id); stale entries skipped
        self.levels: dict[tuple[str, int], SortedDict] = {}  # (symbol, side) -> price -> (amount, orders)
        self.symbols: dict[str, int] = {}  # symbol -> open orders
        self._numbers: dict[str, int] = {}  # symbol -> number used in encoded orders
        self._names: dict[int, str] = {}
        self._free: list[int] = []
        self._zeroed: set[str] = set()  # symbols whose last order went: their number is freed on commit
        self._version: tuple[int, str] | None = None
        self._staged: tuple[tuple[int, str], list] | None = None  # (version, undo records)
        self._undo: list | None = None

    # ------------------------------------------------------------------ an order as one int
    def _number(self, symbol: str) -> int:
        number = self._numbers.get(symbol)
        if number is None:
            number = self._free.pop() if self._free else len(self._numbers)
            if number >= 1 << _SYMBOL_BITS:
                raise OverflowError(f"more than {1 << _SYMBOL_BITS} symbols in one state partition")
            self._numbers[symbol], self._names[number] = number, symbol
        return number

    def _encode(self, o: StoredOrder) -> int:
        return ((((((o.tau << 1) | o.side) << 64 | o.price) << 64) | o.size) << _SYMBOL_BITS) | self._number(o.symbol)

    def _decode(self, encoded: int) -> StoredOrder:
        return StoredOrder(self._names[encoded & ((1 << _SYMBOL_BITS) - 1)], (encoded >> (_SYMBOL_BITS + 128)) & 1,
                           (encoded >> (_SYMBOL_BITS + 64)) & _M64, (encoded >> _SYMBOL_BITS) & _M64,
                           encoded >> (_SYMBOL_BITS + 129))

    # ------------------------------------------------------------------ version
    def version(self) -> tuple[int, str] | None:
        return self._version

    # ------------------------------------------------------------------ reads
    def lookup(self, ids: Iterable[tuple[int, int]]) -> tuple[dict[int, StoredOrder], dict[int, int]]:
        """Open orders and tombstones (id -> tau) among ``(id, segment)`` pairs."""
        orders, tombs = {}, {}
        for order_id, seg in ids:
            encoded = self.orders[seg].get(order_id)
            if encoded is not None:
                orders[order_id] = self._decode(encoded)
            tau = self.tombs[seg].get(order_id)
            if tau is not None:
                tombs[order_id] = tau
        return orders, tombs

    def symbol_orders(self) -> dict[str, int]:
        return dict(self.symbols)

    def levels_of(self, keys: Iterable[Level]) -> dict[Level, tuple[int, int]]:
        out = {}
        for symbol, side, price in keys:
            prices = self.levels.get((symbol, side))
            if prices is not None and price in prices:
                out[(symbol, side, price)] = prices[price]
        return out

    def best_levels(self, symbol: str, side: int, limit: int) -> list[tuple[int, int, int]]:
        """``(price, amount, orders)`` of the ``limit`` best published levels of a side."""
        prices = self.levels.get((symbol, side))
        if not prices:
            return []
        keys = prices.keys()
        chosen = reversed(keys[-limit:]) if side == BUY_CODE else keys[:limit]
        return [(p, *prices[p]) for p in chosen]

    def sides(self) -> set[tuple[str, int]]:
        return {side for side, prices in self.levels.items() if prices}

    def open_orders(self) -> int:
        return sum(self.symbols.values())

    def tomb_count(self) -> int:
        return sum(len(d) for d in self.tombs)

    def rows(self) -> int:
        return sum(len(d) for d in self.orders) + sum(len(d) for d in self.tombs)

    def segment(self, seg: int) -> tuple[dict[int, StoredOrder], dict[int, int]]:
        return {i: self._decode(p) for i, p in self.orders[seg].items()}, dict(self.tombs[seg])

    # ------------------------------------------------------------------ writes
    def apply(self, seq: int, token: str, changes: Changes) -> None:
        """Apply a committed journal entry."""
        self.stage(seq, token, changes)
        self.settle((seq, token))

    def stage(self, seq: int, token: str, changes: Changes) -> None:
        """Apply this batch's entry; ``settle`` keeps or undoes it. A write that raises
        halfway (a MemoryError, say) leaves an empty copy, never a half-applied one with
        a version's name."""
        previous, self._version = self._version, None
        self._undo = []
        try:
            self._write(changes)
        except BaseException:
            self.reset()  # half-written: empty, so the next batch rebuilds it
            raise
        self._undo.append(("version", previous))
        self._version = (seq, token)
        self._staged, self._undo = ((seq, token), self._undo), None

    def settle(self, committed: tuple[int, str] | None) -> None:
        """Keep the staged entry if it is the state's last committed one, else undo it."""
        if self._staged is None:
            return
        version, undo = self._staged
        self._staged = None
        if version == committed:
            self._free_zeroed()
            return
        self._zeroed.clear()
        self._version = None
        try:
            self._undo_records(undo)
        except BaseException:
            self.reset()  # half-undone: empty, so this batch rebuilds it
            raise
        self._version = undo[-1][1]  # the version record, written last by ``stage``

    def _undo_records(self, undo: list) -> None:
        for record in reversed(undo):
            kind = record[0]
            if kind == "order":
                _, seg, order_id, previous = record
                if previous is None:
                    self.orders[seg].pop(order_id, None)
                else:
                    self.orders[seg][order_id] = previous
            elif kind == "tomb":
                _, seg, order_id, previous = record
                if previous is None:
                    self.tombs[seg].pop(order_id, None)
                else:
                    self.tombs[seg][order_id] = previous
                    heapq.heappush(self._expiry, (previous, seg, order_id))
            elif kind == "level":
                _, key, previous = record
                self._set_level(key, previous)
            elif kind == "symbol":
                _, symbol, delta = record
                self._count(symbol, -delta)

    def _write(self, changes: Changes) -> None:
        undo = self._undo
        for order_id, (seg, symbol) in changes.closed.items():
            previous = self.orders[seg].pop(order_id, None)
            if undo is not None:
                undo.append(("order", seg, order_id, previous))
            self._count(symbol, -1)
            if undo is not None:
                undo.append(("symbol", symbol, -1))
        for order_id, (seg, order) in changes.opened.items():
            encoded = self._encode(order)
            previous = self.orders[seg].get(order_id)
            self.orders[seg][order_id] = encoded
            if undo is not None:
                undo.append(("order", seg, order_id, previous))
            self._count(order.symbol, 1)
            if undo is not None:
                undo.append(("symbol", order.symbol, 1))
        for order_id, (seg, tau) in changes.tombs.items():
            previous = self.tombs[seg].get(order_id)
            self.tombs[seg][order_id] = tau
            heapq.heappush(self._expiry, (tau, seg, order_id))
            if undo is not None:
                undo.append(("tomb", seg, order_id, previous))
        if changes.expire_before is not None:
            self._expire(changes.expire_before)
        for key, value in changes.levels.items():
            if undo is not None:
                prices = self.levels.get((key[0], key[1]))
                undo.append(("level", key, prices.get(key[2]) if prices is not None else None))
            self._set_level(key, value if value[0] else None)

    def _expire(self, horizon: int) -> None:
        heap, undo = self._expiry, self._undo
        while heap and heap[0][0] <= horizon:
            tau, seg, order_id = heapq.heappop(heap)
            if self.tombs[seg].get(order_id) == tau:  # else a stale entry: refreshed or gone
                del self.tombs[seg][order_id]
                if undo is not None:
                    undo.append(("tomb", seg, order_id, tau))

    def _set_level(self, key: Level, value: tuple[int, int] | None) -> None:
        symbol, side, price = key
        prices = self.levels.get((symbol, side))
        if value is None:
            if prices is not None:
                prices.pop(price, None)
                if not prices:
                    del self.levels[(symbol, side)]
            return
        if prices is None:
            prices = self.levels[(symbol, side)] = SortedDict()
        prices[price] = value

    def _count(self, symbol: str, delta: int) -> None:
        left = self.symbols.get(symbol, 0) + delta
        if left > 0:
            self.symbols[symbol] = left
            return
        self.symbols.pop(symbol, None)
        # Its number stays taken until the change commits: an undo puts back orders
        # encoded with it.
        self._zeroed.add(symbol)

    def _free_zeroed(self) -> None:
        for symbol in self._zeroed:
            if symbol not in self.symbols:
                number = self._numbers.pop(symbol, None)
                if number is not None:
                    del self._names[number]
                    self._free.append(number)
        self._zeroed.clear()

    def load(self, segments: Iterable[tuple[int, Changes]], journal: Iterable[tuple[int, str, Changes]],
             chunk_versions: dict[int, int], pending_levels: dict[Level, tuple[int, int]],
             seq: int, token: str) -> None:
        """Rebuild from the state: segment snapshots, then the journal entries each
        segment has not seen, then the published levels (all open orders minus the
        effects not published yet, ``pending_levels``). Labelled only when complete."""
        self.reset()
        for _segment, chunk in segments:
            self._write(chunk)
        for entry_seq, _token, changes in journal:
            self._write(Changes(
                opened={i: v for i, v in changes.opened.items() if entry_seq > chunk_versions.get(v[0], -1)},
                closed={i: v for i, v in changes.closed.items() if entry_seq > chunk_versions.get(v[0], -1)},
                tombs={i: v for i, v in changes.tombs.items() if entry_seq > chunk_versions.get(v[0], -1)},
                expire_before=changes.expire_before, levels={},
            ))
        totals: dict[Level, list[int]] = {}
        for seg_orders in self.orders:
            for encoded in seg_orders.values():
                o = self._decode(encoded)
                level = totals.setdefault((o.symbol, o.side, o.price), [0, 0])
                level[0] += o.size
                level[1] += 1
        for key, (amount, orders) in pending_levels.items():
            level = totals.setdefault(key, [0, 0])
            level[0] -= amount
            level[1] -= orders
        self.levels = {}
        for key, (amount, orders) in totals.items():
            if amount:
                self._set_level(key, (amount, orders))
        self._free_zeroed()
        self._version = (seq, token)


__all__ = ["Changes", "MemoryIndex", "StoredOrder"]
