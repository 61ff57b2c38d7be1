"""The snapshot topic as its consumers read it: by snapshot time.

Every reader (the exports and their validation, the health check, the dashboard) locates
seconds by the snapshot time each record carries (``SnapshotMessage.snapshot_time``, from
its headers), never by the Kafka record timestamp: the JVM Kafka sink does not set it,
and a backfilled second is published after later wall-clock seconds. The topic has one
partition and the job publishes seconds in order (identical copies of one may follow each
other in old data), so snapshot times never decrease in offset order and a binary search
over offsets finds a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from marketstream.kafka_io import PROBING, Record, TopicReader, open_topic
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import Settings

log = logging.getLogger(__name__)


def decode_snapshot(record: Record) -> SnapshotMessage:
    """The snapshot message of a consumed record; ``ValueError`` when it is not one."""
    if record.value is None:
        raise ValueError("record has no value")
    # A header without a value (a foreign writer's) reads as empty: not a valid field.
    return SnapshotMessage.from_record(record.key, record.value, [(k, v or b"") for k, v in record.headers])


def snapshot_time_of(record: Record) -> int | None:
    """The snapshot time a record carries, or ``None`` when it is not a snapshot message."""
    try:
        return decode_snapshot(record).snapshot_time
    except ValueError:
        return None


@dataclass(frozen=True)
class TopicSpan:
    """The snapshot times at both ends of the topic (``None``: no snapshot message)."""

    first: int | None
    last: int | None
    records: int  # on the topic, snapshot messages or not


def topic_span(settings: Settings) -> TopicSpan:
    """First and last snapshot time on the topic; ``LookupError`` if it does not exist.

    Found from each end, skipping records that are not snapshot messages."""
    with open_topic(settings, settings.orderbook_topic, **PROBING) as reader:
        starts, ends = reader.start_offsets(), reader.end_offsets()
        firsts, lasts = [], []
        for partition in reader.partitions:
            low, high = starts.get(partition, 0), ends[partition]
            firsts += [t for t in [_next_time(reader, partition, low, high)] if t is not None]
            lasts += [t for t in [_last_time(reader, partition, low, high)] if t is not None]
        records = sum(max(0, ends[p] - starts.get(p, 0)) for p in reader.partitions)
        return TopicSpan(min(firsts, default=None), max(lasts, default=None), records)


def _next_time(reader: TopicReader, partition: int, low: int, high: int) -> int | None:
    return next((t for r in reader.read(partition, low, high) if (t := snapshot_time_of(r)) is not None), None)


def _last_time(reader: TopicReader, partition: int, low: int, high: int) -> int | None:
    """The newest snapshot time below ``high``: the last record, or further back in
    doubling steps when the newest records are not snapshot messages."""
    step, stop = 1, high
    while stop > low:
        begin = max(low, stop - step)
        times = [t for r in reader.read(partition, begin, stop) if (t := snapshot_time_of(r)) is not None]
        if times:
            return times[-1]
        stop, step = begin, step * 2
    return None


MAX_UNDECODABLE_LISTED = 100


@dataclass
class SnapshotsRead:
    """What the topic holds for ``[start, end)``, in topic order."""

    snapshots: list[SnapshotMessage] = field(default_factory=list)
    # Records in the range that are not snapshot messages: "partition:offset: reason",
    # the first MAX_UNDECODABLE_LISTED of them, then "... and N more".
    undecodable: list[str] = field(default_factory=list)


def read_seconds(settings: Settings, start: int, end: int) -> SnapshotsRead:
    """Every record for the seconds ``[start, end)`` (epoch seconds), as published:
    identical copies are kept, each one counts for a consumer. A record that is not a
    snapshot message belongs to the range of the next one that is."""
    result, undecodable = SnapshotsRead(), 0
    with open_topic(settings, settings.orderbook_topic, **PROBING) as reader:
        begin = reader.offsets_where(snapshot_time_of, start)
        stop = reader.offsets_where(snapshot_time_of, end)
    for record in _read(settings, begin, stop):
        try:
            message = decode_snapshot(record)
        except ValueError as exc:
            undecodable += 1
            if undecodable <= MAX_UNDECODABLE_LISTED:
                result.undecodable.append(f"{record.partition}:{record.offset}: {exc}")
                log.warning("skipping undecodable record %s:%s: %s", record.partition, record.offset, exc)
            continue
        if start <= message.snapshot_time < end:  # times never decrease: only a guard
            result.snapshots.append(message)
    if undecodable > MAX_UNDECODABLE_LISTED:
        result.undecodable.append(f"... and {undecodable - MAX_UNDECODABLE_LISTED} more")
        log.warning("%d undecodable records in all", undecodable)
    return result


def _read(settings: Settings, begin: dict[int, int], stop: dict[int, int]) -> Iterable[Record]:
    # A consumer of its own: the probing one's small fetches would slow a long read.
    with open_topic(settings, settings.orderbook_topic) as reader:
        for partition in reader.partitions:
            yield from reader.read(partition, begin.get(partition, 0), stop.get(partition, 0))


# ---------------------------------------------------------------- cadence


@dataclass(frozen=True)
class SecondCounts:
    """How many snapshot records a consumer sees for each second of ``[start, end)``:
    0 is a gap, more than 1 a duplicate (identical copies included)."""

    start: int
    counts: list[int]

    @property
    def seconds(self) -> range:
        return range(self.start, self.start + len(self.counts))

    @property
    def gaps(self) -> list[int]:
        return [s for s, n in zip(self.seconds, self.counts) if n == 0]

    @property
    def duplicates(self) -> list[int]:
        return [s for s, n in zip(self.seconds, self.counts) if n > 1]

    @property
    def seconds_with_snapshots(self) -> int:
        return sum(1 for n in self.counts if n)


def count_per_second(snapshot_times: Iterable[int], start: int, end: int) -> SecondCounts:
    """The per-second count the health check and the dashboard's health page both judge
    the cadence by; times outside ``[start, end)`` are ignored."""
    counts = [0] * max(0, end - start)
    for second in snapshot_times:
        if start <= second < end:
            counts[second - start] += 1
    return SecondCounts(start, counts)
