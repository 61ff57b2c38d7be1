"""The order-book job's stages without Spark: parse -> state partitions -> combine, batch
by batch, with in-memory state that commits or rolls back like Spark's. Unit tests drive
it and compare what it publishes with a straightforward replay of the input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_levels
from marketstream.orderbook.events import InvalidEvent
from marketstream.orderbook.message import SnapshotMessage
from marketstream.spark.publish.combine import combine
from marketstream.spark.route.keys import state_partition_of
from marketstream.spark.route.parse import HEARTBEAT_PARTITION, route
from marketstream.spark.route.rows import from_rows, to_rows
from marketstream.spark.source.python_source import split_ranges
from marketstream.spark.state.book_of_second import PartitionProgress, second_of
from marketstream.spark.state import partition as partition_state
from marketstream.spark.state.partition import PartitionBatch, PartitionConfig, StatePartition
from marketstream.spark.state.working_copy import MemoryIndex
from tests.state_doubles import DictState


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


class Topic:
    """An input topic: records per partition, appended with timestamps."""

    def __init__(self, partitions: int):
        self.records: dict[int, list[Record]] = {p: [] for p in range(partitions)}

    def append(self, partition: int, timestamp_ms: int, value: bytes | None) -> Record:
        record = Record(partition, len(self.records[partition]), timestamp_ms, value)
        self.records[partition].append(record)
        return record

    def end_offsets(self, now_ms: int | None = None) -> dict[int, int]:
        """What the broker holds at ``now_ms`` (records appended by then)."""
        if now_ms is None:
            return {p: len(r) for p, r in self.records.items()}
        return {p: sum(1 for x in r if x.timestamp_ms <= now_ms) for p, r in self.records.items()}


@dataclass
class Job:
    """The job's state across batches: the read position and each partition's state."""

    topic: Topic
    config: PartitionConfig
    max_events_per_batch: int | None = None
    read_tasks: int = 1  # read tasks sharing each batch's records (``python_source.split_ranges``)
    positions: dict[int, int] = field(default_factory=dict)
    states: list[DictState] = field(default_factory=list)
    published: list[SnapshotMessage] = field(default_factory=list)
    dead_letters: list = field(default_factory=list)
    gaps: list = field(default_factory=list)
    rebuilds: int = 0  # local indexes rebuilt from the state's segment snapshots

    indexes: list[MemoryIndex] = field(default_factory=list)  # each partition's working copy (its state server)

    def __post_init__(self):
        self.states = [DictState() for _ in range(self.config.partitions)]
        self.indexes = [MemoryIndex(partition_state.SEGMENTS) for _ in range(self.config.partitions)]

    def batch(self, now_ms: int, fail_after_partition: int | None = None) -> list[SnapshotMessage]:
        """Run one micro-batch at processing time ``now_ms``. With ``fail_after_partition``
        the batch dies after that many state partitions ran: their state rolls back and
        nothing is published (Spark replays the batch)."""
        marks = self.topic.end_offsets(now_ms)
        ends = self._cap(marks)
        heartbeat = (HEARTBEAT_PARTITION, [], [], [json.dumps(
            {str(p): [self.positions.get(p, 0), ends[p], marks[p]] for p in marks}).encode()])
        ranges = [(p, self.positions.get(p, 0), end) for p, end in ends.items() if end > self.positions.get(p, 0)]
        routed_rows = []
        # Each read task parses and routes its own pieces; the state partitions get the
        # tasks' rows in no particular order (here: the last task's first).
        for task, pieces in reversed(list(enumerate(split_ranges(ranges, self.read_tasks, min_events=0)))):
            rows = [heartbeat] if task == 0 else []
            for p, start, end in pieces:
                chunk = self.topic.records[p][start:end]
                rows.append((p, [r.offset for r in chunk], [r.timestamp_ms for r in chunk], [r.value for r in chunk]))
            routed_rows += to_rows(route(rows, self.config.partitions, "orders"), self.config.partitions)
        parts, dead = [], []
        for index, state in enumerate(self.states):
            if fail_after_partition is not None and index >= fail_after_partition:
                for s in self.states:
                    s.rollback()
                return []
            events, dead_in, runs, heartbeat = from_rows(r for r in routed_rows if r["target"] == index)
            progress = {int(p): PartitionProgress(*v) for p, v in json.loads(heartbeat).items()}
            out = StatePartition(self.config, index).process(
                PartitionBatch(now_ms, events, dead_in, runs, progress), state, self.indexes[index])
            parts += out.parts
            dead += out.dead_letters
            self.rebuilds += out.stats.get("index_rebuilds", 0)
            if index == 0 and out.gap:
                self.gaps.append(out.gap)
        messages = combine(parts, self.config.partitions, self.config.depth)
        for state in self.states:
            state.commit()
        self.positions.update(ends)
        self.published += messages
        self.dead_letters += sorted(dead, key=lambda d: (d.partition, d.offset))
        return messages

    def _cap(self, marks: dict[int, int]) -> dict[int, int]:
        start = {p: self.positions.get(p, 0) for p in marks}
        if self.max_events_per_batch is None:
            return dict(marks)
        from marketstream.spark.source.python_source import cap_offsets

        return cap_offsets(start, marks, self.max_events_per_batch)


def reference_snapshot(topic: Topic, offsets: dict[int, int], config: PartitionConfig,
                       skip: set[tuple[int, int]] = frozenset()) -> tuple[str, int]:
    """The book over the records below ``offsets``: a plain ``OrderBook`` per state
    partition, records applied partition by partition (the book does not depend on the
    order). ``skip``: the records the job dead-lettered for the symbol limit (whether a
    symbol fits depends on arrival order, so the replay takes the job's word for those,
    as the validator does). Returns (value, open orders)."""
    books = [OrderBook(closed_ttl_s=config.closed_ttl_s) for _ in range(config.partitions)]
    for partition, records in topic.records.items():
        tau = None
        for record in records[:offsets.get(partition, 0)]:
            second = second_of(record.timestamp_ms)
            tau = second if tau is None else max(tau, second)
            if (partition, record.offset) in skip:
                continue
            try:
                event = parse_event(record.value or b"")
            except InvalidEvent:
                continue
            books[state_partition_of(event.order_id, config.partitions)].apply(event, tau)
    levels: dict = {}
    for book in books:
        for key, prices in book.levels.items():
            merged = levels.setdefault(key, {})
            for price, amount in prices.items():
                merged[price] = merged.get(price, 0) + amount
    return levels_to_json(render_levels(levels, config.depth)), sum(b.open_count for b in books)


def config(partitions: int = 2, depth: int = 15, max_symbols: int | None = None,
           closed_ttl_s: int | None = None, max_backfill_s: int = 3600,
           max_closed_ids: int | None = None) -> PartitionConfig:
    return PartitionConfig(partitions, depth, max_symbols, closed_ttl_s, max_backfill_s, max_closed_ids)
