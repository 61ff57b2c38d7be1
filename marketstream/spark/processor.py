"""The stateful processor (``transformWithState``, Row API) that keeps the order book.

One grouping key holds the whole book in Spark's fault-tolerant state (RocksDB). Open
orders (what a close removes) and closed ids (a close that overtakes its open is
remembered for ``CLOSED_ID_TTL_SECONDS``) are kept in one of two layouts
(``SPARK_STATE_LAYOUT``):
- ``journal`` (default): a per-batch journal of changes plus a compacted snapshot, read
  through a cache in the Python worker (``journal_state``): a few state calls per batch;
- ``per_order``: MapStates keyed by order id, closed ids with Spark's TTL: 2-3 state
  calls per event, each a socket round trip to the JVM.
Besides: ``levels`` (ValueState, the (symbol, side, price) -> amount map, O(levels)) and
``progress`` (sequence number, last snapshot second, input offsets, last rendered value).

Every output row is a Kafka record (topic, key, value, headers, timestamp_ms): snapshots
for the output topic and dead letters, so one sink writes both. Snapshots come from the
batch's processing time, which a replayed batch takes from the offset log: a replay
publishes the same messages with the same sequence numbers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Iterator

from pyspark.sql import Row
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import ArrayType, BinaryType, LongType, StringType, StructField, StructType

from marketstream.orderbook.book import OpenOrder
from marketstream.spark.journal_state import META_SCHEMA, JournalStore, Meta
from marketstream.spark.book_state import (
    HEARTBEAT_PARTITION, InputRecord, Progress, apply_batch, due_snapshots, levels_from_text, levels_to_text,
)
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

_OPEN_VALUE = "symbol string, side string, price string, size string"
_PROGRESS = "sequence long, last_second long, offsets string, open_count long, value string, dirty boolean"


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
    """``JournalBackend`` over the processor's journal and snapshot MapStates."""

    def __init__(self, journal, chunks):
        self.journal, self.chunk_state = journal, chunks

    def journal_get(self, seq):
        return self.journal.getValue((seq,))

    def journal_put(self, seq, token, changes):
        self.journal.updateValue((seq,), (token, changes))

    def journal_remove(self, seq):
        self.journal.removeKey((seq,))

    def chunks(self):
        return ((key[0], value[0]) for key, value in self.chunk_state.iterator())

    def chunks_clear(self):
        self.chunk_state.clear()

    def chunk_put(self, index, data):
        self.chunk_state.updateValue((index,), (data,))


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
        if self.state_layout == "per_order":
            open_orders = handle.getMapState("open_orders", "order_id long", _OPEN_VALUE)
            closed_ids = handle.getMapState(
                "closed_ids", "order_id long", "closed boolean", ttlDurationMs=self.closed_id_ttl_ms)
            self._per_order_store = _SparkStore(open_orders, closed_ids)
        else:
            self.journal_meta = handle.getValueState("journal_meta", META_SCHEMA)
            self.journal_backend = _SparkJournalBackend(
                handle.getMapState("journal", "seq long", "token string, changes string"),
                handle.getMapState("snapshot_chunks", "idx int", "data string"),
            )
        self.levels = handle.getValueState("levels", "levels string")
        self.progress = handle.getValueState("progress", _PROGRESS)

    def handleInputRows(self, key, rows, timerValues) -> Iterator[Row]:
        progress = Progress.from_row(self.progress.get())
        records, heartbeats = [], []
        for partition, offset, value in unpack(rows):
            if partition == HEARTBEAT_PARTITION:
                heartbeats.append({int(p): int(o) for p, o in json.loads(bytes(value)).items()})
            else:
                records.append(InputRecord(partition, offset, value))
        now_ms = timerValues.getCurrentProcessingTimeInMs()
        levels, journal = None, None
        if records:
            stored = self.levels.get()
            levels = levels_from_text(stored[0] if stored else None)
        if self.state_layout == "per_order":
            store = self._per_order_store
        elif records:
            meta = Meta.from_row(self.journal_meta.get())
            store = journal = JournalStore(meta, self.journal_backend, now_ms)
        else:
            store = None  # heartbeat only: no order is looked up
        result = apply_batch(store, levels if levels is not None else {}, progress, records, heartbeats)
        if journal is not None and journal.commit(self.closed_id_ttl_ms):
            self.journal_meta.update(journal.meta.to_row())
        if result.events:
            self.levels.update((levels_to_text(levels),))
        out = [self._dead_letter_row(d) for d in result.dead_letters]
        out += self._snapshots(progress, now_ms, levels)
        yield from out

    def handleExpiredTimer(self, key, timerValues, expiredTimerInfo) -> Iterator[Row]:
        # Idle seconds with the JVM Kafka source (which has no heartbeat rows): the timer
        # makes Spark run a no-data batch so the snapshot still goes out.
        progress = Progress.from_row(self.progress.get())
        yield from self._snapshots(progress, timerValues.getCurrentProcessingTimeInMs(), None)

    def _snapshots(self, progress: Progress, now_ms: int, levels) -> list[Row]:
        def render():
            if levels is not None:
                return levels
            stored = self.levels.get()
            return levels_from_text(stored[0] if stored else None)

        messages = due_snapshots(progress, now_ms, render, self.depth)
        self.progress.update(progress.to_row())
        # Exactly one pending timer: the next second boundary, strictly in the future.
        self.handle.registerTimer((now_ms // 1000 + 1) * 1000)
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
