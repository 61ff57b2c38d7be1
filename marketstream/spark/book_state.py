"""What the stateful processor does with one micro-batch, without Spark.

``apply_batch`` applies a batch of raw input records to a ``BookStore`` (open orders by id,
a TTL'd set of closed ids) and to the level map, with the core library's semantics
(``marketstream.orderbook.book``: duplicate opens ignored, a close before its open
remembered). It reads each order id touched by the batch at most twice and writes it at
most twice, because every state access from a Python processor is a socket round trip
to the JVM. ``due_snapshots`` turns the batch time into the snapshot messages to publish.

Pure Python on purpose: the unit tests drive it with a dict-backed store and compare
with ``OrderBook``; the Spark processor drives it with RocksDB-backed state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Protocol

from marketstream.orderbook.book import OpenOrder
from marketstream.orderbook.events import InvalidEvent, OrderEvent, parse_event
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels

# Partition number of the heartbeat row the Python Kafka source adds to every batch:
# its value is the batch's end offsets, so a snapshot knows them even for partitions
# that had no event yet.
HEARTBEAT_PARTITION = -1

# A batch later than this many seconds after the previous snapshot (the job was down)
# publishes only the current second: the gap stays visible to the validator instead of
# being filled with snapshots of a book the job did not have at those times.
MAX_CATCH_UP_SECONDS = 10

# ``Progress.last_second`` after a new book's first batch: that batch starts the Python
# workers and works off the backlog (seconds, tens of seconds with a long topic) and
# publishes nothing; the snapshot clock starts with the next batch, so the stream does
# not open with a gap as long as the first batch.
WARMED_UP = -1

Levels = dict[tuple[str, str], dict[Decimal, Decimal]]


class BookStore(Protocol):
    def get_open(self, order_id: int) -> OpenOrder | None: ...
    def is_closed(self, order_id: int) -> bool: ...
    def put_open(self, order_id: int, order: OpenOrder) -> None: ...
    def remove_open(self, order_id: int) -> None: ...
    def put_closed(self, order_id: int) -> None: ...


@dataclass(frozen=True)
class InputRecord:
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    record: InputRecord
    reason: str


@dataclass
class Progress:
    """Per-book bookkeeping kept in state (a replay recomputes the same values)."""

    sequence: int = 0
    last_second: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    open_count: int = 0
    value: str = "[]"  # the last rendered snapshot value
    dirty: bool = False  # the book changed since ``value`` was rendered

    def to_row(self) -> tuple:
        offsets = json.dumps({str(p): o for p, o in sorted(self.offsets.items())})
        return (self.sequence, self.last_second, offsets, self.open_count, self.value, self.dirty)

    @classmethod
    def from_row(cls, row: tuple | None) -> "Progress":
        if row is None:
            return cls()
        sequence, last_second, offsets, open_count, value, dirty = row
        return cls(sequence, last_second, {int(p): int(o) for p, o in json.loads(offsets).items()},
                   open_count, value, bool(dirty))


def levels_to_text(levels: Levels) -> str:
    """Compact JSON for the level map; decimals as strings so they stay exact."""
    return json.dumps([
        [symbol, side, str(price), str(amount)]
        for (symbol, side), by_price in sorted(levels.items())
        for price, amount in by_price.items()
    ], separators=(",", ":"))


def levels_from_text(text: str | None) -> Levels:
    levels: Levels = {}
    for symbol, side, price, amount in json.loads(text) if text else []:
        levels.setdefault((symbol, side), {})[Decimal(price)] = Decimal(amount)
    return levels


def parse_record(record: InputRecord) -> OrderEvent:
    if record.value is None:
        raise InvalidEvent("empty message (null value)")
    return parse_event(bytes(record.value))


class _BatchView:
    """The store as seen during one batch: each id read at most once per kind, changes
    collected and written once at the end."""

    def __init__(self, store: BookStore):
        self.store = store
        self.open: dict[int, OpenOrder | None] = {}  # id -> open order (None: not open)
        self.initially_open: dict[int, bool] = {}
        self.closed: dict[int, bool] = {}
        self.newly_closed: set[int] = set()

    def get_open(self, order_id: int) -> OpenOrder | None:
        if order_id not in self.open:
            order = self.store.get_open(order_id)
            self.open[order_id] = order
            self.initially_open[order_id] = order is not None
        return self.open[order_id]

    def is_closed(self, order_id: int) -> bool:
        if order_id not in self.closed:
            self.closed[order_id] = self.store.is_closed(order_id)
        return self.closed[order_id]

    def flush(self) -> None:
        for order_id, order in self.open.items():
            was_open = self.initially_open[order_id]
            if order is not None and not was_open:
                self.store.put_open(order_id, order)
            elif order is None and was_open:
                self.store.remove_open(order_id)
        for order_id in sorted(self.newly_closed):
            self.store.put_closed(order_id)


def apply_events(store: BookStore, levels: Levels, events: Iterable[OrderEvent]) -> int:
    """Apply valid events in the given order; returns the change in open-order count."""
    view, delta = _BatchView(store), 0
    for event in events:
        order_id = event.order_id
        if event.is_open:
            # A closed id is never open (closes remove it), so the closed check comes first
            # and a duplicate open costs one more read only when the id is not closed.
            if view.is_closed(order_id) or view.get_open(order_id) is not None:
                continue
            order = OpenOrder(event.symbol, event.side, event.price, event.size)
            view.open[order_id] = order
            side_levels = levels.setdefault((order.symbol, order.side), {})
            side_levels[order.price] = side_levels.get(order.price, Decimal(0)) + order.size
            delta += 1
        else:
            # Whether already closed or not yet opened, the id is (re)marked closed, which
            # also refreshes its TTL; only a currently open order changes the levels.
            order = view.get_open(order_id)
            view.closed[order_id] = True
            view.newly_closed.add(order_id)
            if order is None:
                continue
            view.open[order_id] = None
            side_levels = levels[(order.symbol, order.side)]
            remaining = side_levels[order.price] - order.size
            if remaining:
                side_levels[order.price] = remaining
            else:
                del side_levels[order.price]
                if not side_levels:
                    del levels[(order.symbol, order.side)]
            delta -= 1
    view.flush()
    return delta


@dataclass
class BatchResult:
    dead_letters: list[DeadLetter]
    events: int


def apply_batch(
    store: BookStore, levels: Levels, progress: Progress, records: Iterable[InputRecord],
    heartbeat_offsets: Iterable[dict[int, int]] = (),
) -> BatchResult:
    """Parse and apply one batch of records (in offset order per partition, partitions in
    turn: deterministic, and the book does not depend on the interleaving anyway)."""
    records = sorted(records, key=lambda r: (r.partition, r.offset))
    events, dead = [], []
    for record in records:
        progress.offsets[record.partition] = max(progress.offsets.get(record.partition, 0), record.offset + 1)
        try:
            events.append(parse_record(record))
        except InvalidEvent as exc:
            dead.append(DeadLetter(record, exc.reason))
    for offsets in heartbeat_offsets:
        for partition, offset in offsets.items():
            progress.offsets[partition] = max(progress.offsets.get(partition, 0), offset)
    if events:
        progress.open_count += apply_events(store, levels, events)
        progress.dirty = True
    return BatchResult(dead, len(events))


def due_snapshots(
    progress: Progress, now_ms: int, render, depth: int,
) -> list[SnapshotMessage]:
    """Snapshots owed at batch time ``now_ms``: one per wall-clock second since the last
    one (at most ``MAX_CATCH_UP_SECONDS``), numbered on from the stored sequence; none in
    a new book's first batch (see ``WARMED_UP``). ``render`` is called only when the book
    changed since the last rendered value."""
    second = now_ms // 1000
    if progress.last_second is None:
        progress.last_second = WARMED_UP
        return []
    if second <= progress.last_second:
        return []
    if progress.last_second == WARMED_UP or second - progress.last_second > MAX_CATCH_UP_SECONDS:
        seconds = [second]
    else:
        seconds = list(range(progress.last_second + 1, second + 1))
    if progress.dirty:
        progress.value = levels_to_json(render_levels(render(), depth))
        progress.dirty = False
    out = []
    for snapshot_second in seconds:
        progress.sequence += 1
        out.append(SnapshotMessage(
            snapshot_time=snapshot_second, sequence=progress.sequence,
            input_offsets={p: o for p, o in progress.offsets.items() if p != HEARTBEAT_PARTITION},
            open_orders=progress.open_count, value=progress.value,
        ))
    progress.last_second = second
    return out


class DictStore:
    """An in-memory ``BookStore`` (unit tests, the benchmark's reference)."""

    def __init__(self):
        self.open_orders: dict[int, OpenOrder] = {}
        self.closed_ids: set[int] = set()
        self.reads = 0
        self.writes = 0

    def get_open(self, order_id):
        self.reads += 1
        return self.open_orders.get(order_id)

    def is_closed(self, order_id):
        self.reads += 1
        return order_id in self.closed_ids

    def put_open(self, order_id, order):
        self.writes += 1
        self.open_orders[order_id] = order

    def remove_open(self, order_id):
        self.writes += 1
        del self.open_orders[order_id]

    def put_closed(self, order_id):
        self.writes += 1
        self.closed_ids.add(order_id)


__all__ = [
    "BookStore", "DeadLetter", "DictStore", "HEARTBEAT_PARTITION", "InputRecord", "MAX_CATCH_UP_SECONDS",
    "Progress", "WARMED_UP", "apply_batch", "apply_events", "due_snapshots", "levels_from_text", "levels_to_text",
    "parse_record",
]
