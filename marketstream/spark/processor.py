"""The stateful processor (``transformWithState``, Row API) that keeps the order book.

One grouping key holds the whole book in Spark's fault-tolerant state (RocksDB). Open
orders (what a close removes) and closed ids (a close that overtakes its open is
remembered for ``CLOSED_ID_TTL_SECONDS``) are kept in one of two layouts
(``SPARK_STATE_LAYOUT``):
- ``journal`` (default): a per-batch journal of changes plus a compacted snapshot, read
  through a cache in the Python worker (``journal_state``): a few state calls per batch;
- ``per_order``: MapStates keyed by order id, closed ids with Spark's TTL: 2-3 state
  calls per event, each a socket round trip to the JVM.
Besides, one ValueState ``book`` holds the (symbol, side, price) -> amount map (O(levels)),
the progress (sequence number, last snapshot second, input offsets, last rendered value)
and the journal's metadata: read once and written once a batch.

Every output row is a Kafka record (topic, key, value, headers, timestamp_ms): snapshots
for the output topic and dead letters, so one sink writes both. Snapshots come from the
batch's processing time, which a replayed batch takes from the offset log: a replay
publishes the same messages with the same sequence numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterator

from pyspark.sql import Row
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import (
    ArrayType, BinaryType, BooleanType, LongType, StringType, StructField, StructType,
)

from marketstream.orderbook.book import OpenOrder
from marketstream.spark.book_state import (
    HEARTBEAT_PARTITION, InputRecord, Progress, apply_batch, due_snapshots, levels_from_text, levels_to_text,
)
from marketstream.spark.journal_state import JournalStore, Meta
from marketstream.spark.kafka_source import unpack

HEADERS_TYPE = ArrayType(StructType([
    StructField("key", StringType(), False),
    StructField("value", BinaryType(), True),
]))

OUTPUT_SCHEMA = StructType([
    StructField("topic", StringType(), False),
    StructField("key", BinaryType(), True),
    StructField("value", BinaryType(), True),
    StructField("headers", HEADERS_TYPE, True),
    StructField("timestamp_ms", LongType(), True),
])

def _schema(*fields: tuple[str, object]) -> StructType:
    return StructType([StructField(name, data_type) for name, data_type in fields])


# Schemas as StructTypes, not DDL strings: the client would ask the JVM to parse a string
# in every batch. Every state variable costs round trips to the JVM to register in every
# batch, so the book keeps few of them: one value for its bookkeeping, levels and journal
# metadata, and one map for the journal with its snapshot chunks (negative keys).
_BOOK = _schema(
    # Progress (book_state.Progress.to_row)
    ("sequence", LongType()), ("last_second", LongType()), ("offsets", StringType()),
    ("open_count", LongType()), ("value", StringType()), ("dirty", BooleanType()),
    # The (symbol, side, price) -> amount map (book_state.levels_to_text)
    ("levels", StringType()),
    # The journal's Meta (journal_state.Meta.to_row); null in the per_order layout
    ("book_id", StringType()), ("generation", LongType()), ("snapshot_token", StringType()),
    ("journal_first", LongType()), ("journal_next", LongType()), ("last_token", StringType()),
)
_JOURNAL_KEY = _schema(("seq", LongType()))
_JOURNAL_VALUE = _schema(("token", StringType()), ("data", StringType()))
_ORDER_ID = _schema(("order_id", LongType()))
_OPEN_ORDER = _schema(("symbol", StringType()), ("side", StringType()), ("price", StringType()), ("size", StringType()))
_CLOSED = _schema(("closed", BooleanType()))
_META_FIELDS = 6


@dataclass
class _Book:
    """What the ``book`` value state holds, as the batch works with it."""

    progress: Progress
    levels_text: str | None
    meta: Meta | None

    @classmethod
    def from_row(cls, row: tuple | None) -> "_Book":
        if row is None:
            return cls(Progress(), None, None)
        row = tuple(row)
        meta = row[7:]
        return cls(Progress.from_row(row[:6]), row[6], Meta.from_row(meta) if meta[0] is not None else None)

    def to_row(self) -> tuple:
        meta = self.meta.to_row() if self.meta is not None else (None,) * _META_FIELDS
        return self.progress.to_row() + (self.levels_text,) + meta


class _SparkStore:
    """``BookStore`` over the processor's MapStates (one socket round trip per call)."""

    def __init__(self, open_orders, closed_ids):
        self.open_orders, self.closed_ids = open_orders, closed_ids

    def get_open(self, order_id):
        value = self.open_orders.getValue((order_id,))
        if value is None:
            return None
        symbol, side, price, size = value
        return OpenOrder(symbol, side, Decimal(price), Decimal(size))

    def is_closed(self, order_id):
        return self.closed_ids.containsKey((order_id,))

    def put_open(self, order_id, order):
        self.open_orders.updateValue((order_id,), (order.symbol, order.side, str(order.price), str(order.size)))

    def remove_open(self, order_id):
        self.open_orders.removeKey((order_id,))

    def put_closed(self, order_id):
        self.closed_ids.updateValue((order_id,), (True,))


class _SparkJournalBackend:
    """``JournalBackend`` over one MapState: journal entries at their sequence number
    (>= 0), snapshot chunk ``i`` at key ``-1 - i``."""

    def __init__(self, journal):
        self.journal = journal

    def journal_get(self, seq):
        value = self.journal.getValue((seq,))
        return tuple(value) if value is not None else None

    def journal_put(self, seq, token, changes):
        self.journal.updateValue((seq,), (token, changes))

    def journal_remove(self, seq):
        self.journal.removeKey((seq,))

    def chunks(self):
        return ((-1 - key[0], value[1]) for key, value in self.journal.iterator() if key[0] < 0)

    def chunks_clear(self):
        for key in [key for key in self.journal.keys() if key[0] < 0]:
            self.journal.removeKey(tuple(key))

    def chunk_put(self, index, data):
        self.journal.updateValue((-1 - index,), ("", data))


class OrderBookProcessor(StatefulProcessor):
    def __init__(self, orders_topic: str, orderbook_topic: str, deadletter_topic: str,
                 depth: int, closed_id_ttl_ms: int, state_layout: str = "journal"):
        self.orders_topic = orders_topic
        self.orderbook_topic = orderbook_topic
        self.deadletter_topic = deadletter_topic
        self.depth = depth
        self.closed_id_ttl_ms = closed_id_ttl_ms
        if state_layout not in ("journal", "per_order"):
            raise ValueError(f"unknown state layout {state_layout!r}")
        self.state_layout = state_layout

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.book = handle.getValueState("book", _BOOK)
        if self.state_layout == "per_order":
            open_orders = handle.getMapState("open_orders", _ORDER_ID, _OPEN_ORDER)
            closed_ids = handle.getMapState("closed_ids", _ORDER_ID, _CLOSED, ttlDurationMs=self.closed_id_ttl_ms)
            self._per_order_store = _SparkStore(open_orders, closed_ids)
        else:
            self.journal_backend = _SparkJournalBackend(handle.getMapState("journal", _JOURNAL_KEY, _JOURNAL_VALUE))

    def handleInputRows(self, key, rows, timerValues) -> Iterator[Row]:
        book = _Book.from_row(self.book.get())
        records, heartbeats = [], []
        for partition, offset, value in unpack(rows):
            if partition == HEARTBEAT_PARTITION:
                heartbeats.append({int(p): int(o) for p, o in json.loads(bytes(value)).items()})
            else:
                records.append(InputRecord(partition, offset, value))
        now_ms = timerValues.getCurrentProcessingTimeInMs()
        levels, journal = None, None
        if records:
            levels = levels_from_text(book.levels_text)
        if self.state_layout == "per_order":
            store = self._per_order_store
        elif records:
            book.meta = book.meta or Meta.from_row(None)
            store = journal = JournalStore(book.meta, self.journal_backend, now_ms)
        else:
            store = None  # heartbeat only: no order is looked up
        result = apply_batch(store, levels if levels is not None else {}, book.progress, records, heartbeats)
        if journal is not None:
            journal.commit(self.closed_id_ttl_ms)  # updates book.meta, saved below
        if result.events:
            book.levels_text = levels_to_text(levels)
        out = [self._dead_letter_row(d) for d in result.dead_letters]
        out += self._snapshots(book, now_ms, levels)
        self.book.update(book.to_row())
        if not heartbeats:
            # The JVM Kafka source has no heartbeat rows: a timer at the next second makes
            # Spark run a batch in idle seconds too (exactly one pending timer).
            self.handle.registerTimer((now_ms // 1000 + 1) * 1000)
        yield from out

    def handleExpiredTimer(self, key, timerValues, expiredTimerInfo) -> Iterator[Row]:
        book = _Book.from_row(self.book.get())
        now_ms = timerValues.getCurrentProcessingTimeInMs()
        out = self._snapshots(book, now_ms, None)
        self.book.update(book.to_row())
        self.handle.registerTimer((now_ms // 1000 + 1) * 1000)
        yield from out

    def _snapshots(self, book: _Book, now_ms: int, levels) -> list[Row]:
        def render():
            return levels if levels is not None else levels_from_text(book.levels_text)

        messages = due_snapshots(book.progress, now_ms, render, self.depth)
        return [
            Row(topic=self.orderbook_topic, key=m.key.encode(), value=m.value.encode(),
                headers=[Row(key=k, value=v) for k, v in m.headers()], timestamp_ms=m.snapshot_time * 1000)
            for m in messages
        ]

    def _dead_letter_row(self, dead) -> Row:
        record = dead.record
        headers = [
            Row(key="reason", value=dead.reason.encode()),
            Row(key="source_topic", value=self.orders_topic.encode()),
            Row(key="source_partition", value=str(record.partition).encode()),
            Row(key="source_offset", value=str(record.offset).encode()),
        ]
        value = bytes(record.value) if record.value is not None else None
        return Row(topic=self.deadletter_topic, key=None, value=value, headers=headers, timestamp_ms=None)

    def close(self) -> None:
        pass
