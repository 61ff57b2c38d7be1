"""Kafka for Spark through PySpark's Python Data Source API, on kafka-python.

Used when the JVM ``kafka`` connector is not on the classpath (here its jars cannot be
downloaded). Registered as format ``marketstream_kafka``.

Reader (schema ``route.schema.ROUTED_SCHEMA``): each read task parses the records it
reads and routes them to the state partitions whose grouping keys ``routeTo`` names
(``route``), one Arrow record batch per task: one Python process and one trip through
the JVM less than a separate parse stage.
- offsets are ``{"<partition>": next_offset, ..., "tick": epoch_second, "latest":
  {"<partition>": end offset}}`` and live in Spark's checkpoint (offset log), never
  in consumer-group commits; ``latest`` makes a replayed batch see the same backlog as
  the first run of it;
- a new query starts at the beginning of the topic: the book is a function of all events;
- ``latestOffset`` caps a batch at ``maxEventsPerBatch`` events (fair share per
  partition) so a backlog is worked off in bounded batches;
- ``tick`` (the current second) changes every trigger, so a batch runs every second even
  with no input; each batch carries one heartbeat row (partition -1) whose value is the
  batch's progress, ``{"<partition>": [start, end, end offset]}``: the snapshot
  clock's input (which partitions were read to their end), given to every state
  partition (its ``offsets`` hold the tick, its ``values`` the JSON);
- ``readTasks`` read tasks share a batch's events equally, a Kafka partition's range cut
  where needed (``split_ranges``); a small batch uses at most one task per partition.

Security: the reader takes ``kafka_io.security_options`` among its options (the executors
have no settings of their own) and builds every client with them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Mapping

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows

from marketstream.spark.kafka_clients import cached_consumer
from marketstream.spark.route.parse import HEARTBEAT_PARTITION

FORMAT = "marketstream_kafka"
TICK = "tick"
LATEST = "latest"
# Batches smaller than this are read one task per Kafka partition at most (split_ranges).
SPLIT_MIN_EVENTS = 10_000

log = logging.getLogger("marketstream.spark.kafka")

def partition_offsets(offset: dict) -> dict[int, int]:
    """The Kafka partitions of an offset dict (without the tick and the end offsets)."""
    return {int(p): int(o) for p, o in offset.items() if p not in (TICK, LATEST)}


class InputOffsetsWentBack(RuntimeError):
    """The checkpoint is past the end of the topic: events would be skipped silently."""


class InputRecordsLost(RuntimeError):
    """Records the job has not read yet were deleted (retention): the book would be wrong."""


def records_lost(topic: str, where: str) -> InputRecordsLost:
    return InputRecordsLost(
        f"records of topic {topic!r} were deleted before the job read them ({where}): the book cannot be "
        "rebuilt from what is left. Keep the topic's retention longer than the job can be down; to go on "
        "from what is left, start the job with a new checkpoint (remove SPARK_CHECKPOINT_DIR), which "
        "builds the book from the records still on the topic, without the orders that were deleted.")


def check_no_data_loss(topic: str, start: dict[int, int], latest: dict[int, int],
                       earliest: dict[int, int] | None = None) -> None:
    """Fail like the JVM source's ``failOnDataLoss``: a partition that ends before the
    checkpoint's offset (or is gone) means the topic was recreated or the broker lost its
    data; one that now starts after it lost unread records to retention."""
    lost = {p: (o, earliest[p]) for p, o in start.items() if earliest and earliest.get(p, 0) > o}
    if lost:
        raise records_lost(topic, ", ".join(
            f"partition {p}: offsets {o} to {first - 1} are gone, it now starts at {first}"
            for p, (o, first) in sorted(lost.items())))
    behind = {p: (o, latest.get(p)) for p, o in start.items() if o > 0 and (latest.get(p) or 0) < o}
    if behind:
        where = ", ".join(f"partition {p} ends at {end if end is not None else '(missing)'}, checkpoint at {o}"
                          for p, (o, end) in sorted(behind.items()))
        raise InputOffsetsWentBack(
            f"topic {topic!r} is behind the job's checkpoint ({where}): it was recreated or the broker lost "
            "its data. Start the job with a new checkpoint (remove SPARK_CHECKPOINT_DIR; embedded: "
            "'make clean-state'), or it would skip the new events.")


def cap_offsets(start: dict[int, int], latest: dict[int, int], max_rows: int | None) -> dict[int, int]:
    """End offsets reading at most ``max_rows`` events, shared fairly between partitions
    (each gets an equal share; what a short partition leaves goes to the others)."""
    end = {p: max(latest[p], start.get(p, 0)) for p in latest}
    if max_rows is None:
        return end
    backlog = {p: end[p] - start.get(p, 0) for p in end}
    if sum(backlog.values()) <= max_rows:
        return end
    take, budget = {p: 0 for p in end}, max_rows
    pending = sorted(p for p in end if backlog[p] > 0)
    while budget > 0 and pending:
        share = max(1, budget // len(pending))
        for p in list(pending):
            grant = min(share, backlog[p] - take[p], budget)
            take[p] += grant
            budget -= grant
            if take[p] == backlog[p]:
                pending.remove(p)
            if budget == 0:
                break
    return {p: start.get(p, 0) + take[p] for p in end}


RETENTION_CHECK_SECONDS = 10.0


class KafkaSplit(InputPartition):
    """One read task: offset ranges ``(partition, start, end)`` and, in the first split,
    the heartbeat row's value."""

    def __init__(self, index: int, ranges: list[tuple[int, int, int]], tick: int, heartbeat: bytes | None):
        super().__init__(index)
        self.ranges, self.tick, self.heartbeat = ranges, tick, heartbeat


def split_ranges(ranges: list[tuple[int, int, int]], tasks: int,
                 min_events: int = SPLIT_MIN_EVENTS) -> list[list[tuple[int, int, int]]]:
    """Offset ranges ``(partition, start, end)`` -> the ranges of each read task: an equal
    share of the events each, cutting a partition's range where a share ends (3 Kafka
    partitions over 2 tasks would otherwise leave one task twice the other's work: the
    read stage is as slow as its slowest task). Below ``min_events`` a batch is not cut:
    at most one task per partition (a task launch costs more than it saves there). The
    state partitions join the pieces of a partition back in offset order (``route.rows.from_rows``)."""
    total = sum(end - start for _, start, end in ranges)
    if total < min_events:
        count = max(1, min(tasks, len(ranges)))
        return [ranges[i::count] for i in range(count)]
    share = -(-total // tasks)
    splits: list[list[tuple[int, int, int]]] = [[]]
    room = share
    for partition, start, end in ranges:
        while start < end:
            if room == 0:
                splits.append([])
                room = share
            cut = min(end, start + room)
            splits[-1].append((partition, start, cut))
            room -= cut - start
            start = cut
    return splits


def read_range_columns(consumer, topic: str, partition: int, start: int, end: int):
    """A read task's range as columns (``record_decoder.read_columns``); a range that is no
    longer all on the broker (every read checks, a replayed batch's too) stops the job."""
    from marketstream.kafka_io import RangeNotOnBroker
    from marketstream.spark.source.record_decoder import read_columns

    try:
        return read_columns(consumer, topic, partition, start, end, timeout_s=120.0)
    except RangeNotOnBroker as gone:
        raise records_lost(topic, f"partition {partition}: the batch reads offsets {start} to {end - 1}, "
                                  f"offset {gone.missing_from} is not on the broker any more") from gone


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        self.bootstrap = options["bootstrap.servers"]
        self.topic = options["topic"]
        self.max_rows = int(options["maxEventsPerBatch"]) if options.get("maxEventsPerBatch") else None
        self.read_tasks = int(options.get("readTasks") or 1)
        self.route_to = route_labels(options)
        self.security = security_of(options)
        self._client = None
        self._latest: dict[int, int] = {}
        self._retention_checked_at = float("-inf")

    def _partitions(self) -> list[int]:
        from marketstream.kafka_io import partitions_of

        return partitions_of(self._kafka(), self.topic, timeout_s=30)

    def _kafka(self):
        if self._client is None:
            from kafka import KafkaConsumer

            from marketstream.kafka_io import client_security

            self._client = KafkaConsumer(
                bootstrap_servers=self.bootstrap.split(","), group_id=None, enable_auto_commit=False,
                isolation_level="read_committed", **client_security(self.security),
            )
        return self._client

    def _end_offsets(self) -> dict[int, int]:
        from marketstream.kafka_io import end_offsets

        return end_offsets(self._kafka(), self.topic, self._partitions())

    def initialOffset(self) -> dict:
        offsets = {str(p): 0 for p in self._partitions()}
        offsets[TICK] = 0
        return offsets

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows else ReadAllAvailable()

    def _earliest(self) -> dict[int, int]:
        from kafka import TopicPartition

        firsts = self._kafka().beginning_offsets([TopicPartition(self.topic, p) for p in self._partitions()])
        return {tp.partition: offset for tp, offset in firsts.items()}

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        self._latest = self._end_offsets()
        # Retention is checked at start and then every RETENTION_CHECK_SECONDS (a second
        # ListOffsets a batch otherwise), which only a job lagging at the very edge of the
        # topic's retention could outrun; every read checks its own range as well.
        earliest = None
        if time.monotonic() - self._retention_checked_at >= RETENTION_CHECK_SECONDS:
            earliest, self._retention_checked_at = self._earliest(), time.monotonic()
        check_no_data_loss(self.topic, partition_offsets(start), self._latest, earliest)
        max_rows = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        end = cap_offsets(partition_offsets(start), self._latest, max_rows)
        result: dict = {str(p): o for p, o in sorted(end.items())}
        # The current second: makes every trigger a batch, with its heartbeat row.
        result[TICK] = max(int(time.time()), int(start.get(TICK, 0)))
        result[LATEST] = {str(p): max(o, end[p]) for p, o in sorted(self._latest.items())}
        return result

    def reportLatestOffset(self) -> dict | None:
        return {str(p): o for p, o in sorted(self._latest.items())} if self._latest else None

    def partitions(self, start: dict, end: dict):
        begin, stop = partition_offsets(start), partition_offsets(end)
        latest = {int(p): int(o) for p, o in (end.get(LATEST) or {}).items()}
        ranges = [(p, begin.get(p, 0), stop[p]) for p in sorted(stop) if stop[p] > begin.get(p, 0)]
        heartbeat = json.dumps({str(p): [begin.get(p, 0), o, max(o, latest.get(p, o))]
                                for p, o in sorted(stop.items())}).encode()
        tick = int(end.get(TICK, 0))
        return [KafkaSplit(i, chunks, tick, heartbeat if i == 0 else None)
                for i, chunks in enumerate(split_ranges(ranges, self.read_tasks))]

    def read(self, split: KafkaSplit):
        consumer = cached_consumer(self.bootstrap, lean=True, security=self.security)
        heartbeat = [(HEARTBEAT_PARTITION, [split.tick], [], [split.heartbeat])] if split.heartbeat is not None else []
        records = [(partition, *read_range_columns(consumer, self.topic, partition, start, end))
                   for partition, start, end in split.ranges]
        from marketstream.spark.route.schema import routed_batch

        batch = routed_batch(heartbeat + records, self.route_to, self.topic)
        if batch is not None:
            yield batch

    def commit(self, end: dict) -> None:
        pass

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def security_of(options: Mapping[str, str]) -> dict[str, str]:
    """The TLS/SASL options (``kafka_io.security_options``) among a data source's options."""
    from marketstream.kafka_io import SECURITY_KEYS

    return {key: value for key, value in options.items() if key in SECURITY_KEYS}


def route_labels(options: Mapping[str, str]) -> list[int]:
    """The state partitions' grouping keys (``routeTo``, comma-separated)."""
    text = options.get("routeTo")
    if not text:
        raise ValueError(f"the {FORMAT} source needs the option routeTo: the state partitions' grouping keys, "
                         "comma-separated (job.read_orders sets it)")
    return [int(label) for label in text.split(",")]


class KafkaDataSource(DataSource):
    """``spark.readStream.format("marketstream_kafka").option("bootstrap.servers", ...)
    .option("topic", ...).option("routeTo", ...).option("maxEventsPerBatch", ...)``: order
    events parsed and routed to the state partitions whose keys ``routeTo`` names
    (comma-separated). TLS/SASL: ``security_of``."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self):
        from marketstream.spark.route.schema import ROUTED_SCHEMA

        route_labels(self.options)  # a source without them fails here, at the query's start
        return ROUTED_SCHEMA

    def streamReader(self, schema) -> DataSourceStreamReader:
        return KafkaStreamReader(self.options)


def read_python(spark, settings, labels: list[int]):
    """The input topic as routed rows (``route.schema.ROUTED_SCHEMA``), through this source."""
    from marketstream.kafka_io import security_options

    spark.dataSource.register(KafkaDataSource)
    return (
        spark.readStream.format(FORMAT)
        .option("bootstrap.servers", settings.kafka_bootstrap_servers)
        .options(**security_options(settings))
        .option("topic", settings.orders_topic)
        .option("maxEventsPerBatch", str(settings.spark_max_events_per_batch))
        .option("readTasks", str(settings.spark_read_tasks))
        .option("routeTo", ",".join(str(label) for label in labels))
        .load()
    )
