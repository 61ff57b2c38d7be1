"""The stateful processor (``transformWithState``, Row API) that keeps the order book.

One grouping key holds the whole book in Spark's fault-tolerant state (RocksDB):
- ``open_orders``  MapState order_id -> (symbol, side, price, size): what a close removes;
- ``closed_ids``   MapState order_id -> marker, with a TTL: a close that overtakes its
  open is remembered for ``CLOSED_ID_TTL_SECONDS`` (bounded memory of history);
- ``levels``       ValueState: the (symbol, side, price) -> amount map, O(levels);
- ``progress``     ValueState: sequence number, last snapshot second, input offsets, the
  last rendered value.
Per batch the work is O(events in the batch + levels), never O(history).

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
from pyspark.sql.types import (
    ArrayType, BinaryType, IntegerType, LongType, StringType, StructField, StructType,
)

from marketstream.orderbook.book import OpenOrder
from marketstream.spark.book_state import (
    HEARTBEAT_PARTITION, InputRecord, Progress, apply_batch, due_snapshots, levels_from_text, levels_to_text,
)

INPUT_SCHEMA = StructType([
    StructField("partition", IntegerType(), False),
    StructField("offset", LongType(), False),
    StructField("value", BinaryType(), True),
])

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


class OrderBookProcessor(StatefulProcessor):
    def __init__(self, orders_topic: str, orderbook_topic: str, deadletter_topic: str,
                 depth: int, closed_id_ttl_ms: int):
        self.orders_topic = orders_topic
        self.orderbook_topic = orderbook_topic
        self.deadletter_topic = deadletter_topic
        self.depth = depth
        self.closed_id_ttl_ms = closed_id_ttl_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.open_orders = handle.getMapState("open_orders", "order_id long", _OPEN_VALUE)
        self.closed_ids = handle.getMapState(
            "closed_ids", "order_id long", "closed boolean", ttlDurationMs=self.closed_id_ttl_ms)
        self.levels = handle.getValueState("levels", "levels string")
        self.progress = handle.getValueState("progress", _PROGRESS)
        self.store = _SparkStore(self.open_orders, self.closed_ids)

    def handleInputRows(self, key, rows, timerValues) -> Iterator[Row]:
        progress = Progress.from_row(self.progress.get())
        records, heartbeats = [], []
        for row in rows:
            if row.partition == HEARTBEAT_PARTITION:
                heartbeats.append({int(p): int(o) for p, o in json.loads(bytes(row.value)).items()})
            else:
                records.append(InputRecord(row.partition, row.offset, row.value))
        levels = None
        if records:
            stored = self.levels.get()
            levels = levels_from_text(stored[0] if stored else None)
        result = apply_batch(self.store, levels if levels is not None else {}, progress, records, heartbeats)
        if result.events:
            self.levels.update((levels_to_text(levels),))
        out = [self._dead_letter_row(d) for d in result.dead_letters]
        out += self._snapshots(progress, timerValues.getCurrentProcessingTimeInMs(), levels)
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
