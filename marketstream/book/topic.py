"""Seconds from the snapshot topic, located through the topic's time index.

A snapshot record's Kafka timestamp is when it was produced, never before the second it
describes, and a backfilled second is produced late; the snapshot time itself is in the
headers, and never decreases in offset order (``marketstream.snapshots``). So the time
index (``offsets_for_times``, Kafka's ListOffsets by timestamp) only gives a *hint*: the
first record produced at or after the second, usually a record or two before it. The
hint is verified by the snapshot time of the record found there, and corrected by
stepping one record per second of difference (``locate``). Apache Kafka answers the first
record produced at or after the time; Tansu answers offset 0 for any time (measured on
the embedded broker), so there the first step is from the topic's start.

Readers use ``isolation_level="read_committed"``: a snapshot of an aborted transaction
was never published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from marketstream.kafka_io import PROBING, Record, TopicReader, open_topic
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import Settings
from marketstream.snapshots import decode_snapshot, snapshot_time_of

# Read only what was committed; and a broker that does not answer within 5 s is down for
# a user waiting at a prompt (the exports may still answer).
COMMITTED = {"isolation_level": "read_committed", "bootstrap_timeout_ms": 5000}
SHORT_RANGE_SECONDS = 4


@dataclass(frozen=True)
class Bounds:
    """Offsets of one partition still held: ``[low, high)``."""

    low: int
    high: int


# Records a probe asks for first: a snapshot record is almost always the first one. A
# read of the rest of the topic would let the consumer fetch ahead, and the next probe's
# seek would wait for that fetch to come back before sending its own.
PROBE_WINDOW = 8


def _next_keyed(reader: TopicReader, partition: int, offset: int, high: int) -> tuple[Record, int] | None:
    """The first snapshot record at or after ``offset``, and its snapshot time."""
    while offset < high:
        stop = min(high, offset + PROBE_WINDOW)
        found = next(((r, t) for r in reader.read(partition, offset, stop)
                      if (t := snapshot_time_of(r)) is not None), None)
        if found is not None:
            return found
        offset = stop
    return None


def index_hint(reader: TopicReader, partition: int, second: int) -> int | None:
    """What the broker's time index says: the first offset produced at or after ``second``
    (``None``: nothing was)."""
    from kafka import TopicPartition

    tp = TopicPartition(reader.topic, partition)
    found = reader.consumer.offsets_for_times({tp: second * 1000}).get(tp)
    return None if found is None else found.offset


# Estimates before falling back to a plain binary search over what is left.
MAX_ESTIMATES = 8


def locate(reader: TopicReader, partition: int, bounds: Bounds, second: int, hint: int | None = None) -> int:
    """The first offset in ``[low, high]`` from which the next snapshot record is for
    ``second`` or later (``high`` when there is none).

    The first read is at the time index's hint (or the one given). Each read's snapshot
    time then says how far to step: one record a second, so the record for ``second`` is
    ``second - t`` records on from one for ``t``; the record before it is read too, which
    pins the answer on both sides. Every read narrows ``[low, high]``, so a wrong hint or
    estimate (gaps, duplicates, records that are not snapshots) costs reads, never the
    answer: after ``MAX_ESTIMATES`` a binary search finishes. Any hint gives the same
    answer; a good one gives it in two or three reads."""
    return _locate(reader, partition, bounds, second, hint)[0]


def _locate(reader: TopicReader, partition: int, bounds: Bounds, second: int,
            hint: int | None = None) -> tuple[int, Record | None]:
    """``locate``, and the first snapshot record from the answer on when a read already
    fetched it (``None``: not known, or there is none)."""
    low, high = bounds.low, bounds.high
    if hint is None:
        hint = index_hint(reader, partition, second)
    probe = high if hint is None else hint
    at_high: Record | None = None  # the first snapshot record from ``high`` on, when read
    for _ in range(MAX_ESTIMATES):
        if low >= high:
            return low, at_high
        probe = min(max(probe, low), high - 1)
        found = _next_keyed(reader, partition, probe, high)
        if found is None:  # nothing keyed from here on: the answer is at or before it
            high, probe, at_high = probe, probe - 1, None
            continue
        record, time = found
        if time >= second:
            high, at_high = probe, record
        else:
            low = record.offset + 1
        # Read just before where the second should start: that record is earlier than it.
        probe = record.offset + (second - time) - 1
    return reader.first_offset(partition, low, high, snapshot_time_of, second), None


@dataclass(frozen=True)
class TopicSecond:
    message: SnapshotMessage
    partition: int
    offset: int


@dataclass
class TopicSeconds:
    """The snapshot records for the seconds ``[start, end)`` in topic order, and the
    records there that are not snapshot messages ("partition:offset: reason")."""

    messages: list[TopicSecond]
    undecodable: list[str]


def _decoded(records: Iterator[Record], start: int, end: int, undecodable: list[str],
             limit: int) -> Iterator[TopicSecond]:
    for record in records:
        try:
            message = decode_snapshot(record)
        except ValueError as exc:
            if len(undecodable) < limit:
                undecodable.append(f"{record.partition}:{record.offset}: {exc}")
            continue
        if message.snapshot_time >= end:
            return  # times never decrease: nothing further belongs to the range
        if message.snapshot_time >= start:
            yield TopicSecond(message, record.partition, record.offset)


def read_seconds(settings: Settings, start: int, end: int, max_undecodable: int = 100) -> TopicSeconds:
    """The snapshot records for ``[start, end)``; ``LookupError`` when the topic does not
    exist. Reading stops at the first record past the range, so a second near the head of
    a long topic costs a few reads, not a scan."""
    messages: list[TopicSecond] = []
    undecodable: list[str] = []
    with open_topic(settings, settings.orderbook_topic, **PROBING, **COMMITTED) as reader:
        starts, ends = reader.start_offsets(), reader.end_offsets()
        located = {p: _locate(reader, p, Bounds(starts.get(p, 0), ends[p]), start) for p in reader.partitions}
        begins = {p: offset for p, (offset, _) in located.items()}
        if end - start <= SHORT_RANGE_SECONDS:  # a record or two: the probing consumer's small fetches suffice
            for partition in reader.partitions:
                first = located[partition][1]
                if end - start == 1 and first is not None:
                    # One second, and the search already read the record it starts at:
                    # that is the second's snapshot, or a later one (a gap).
                    records: Iterator[Record] = iter([first])
                else:
                    records = reader.read(partition, begins[partition], ends[partition])
                messages += _decoded(records, start, end, undecodable, max_undecodable)
            return TopicSeconds(messages, undecodable)
    # A consumer of its own: the probing one's small fetches would slow a long read.
    with open_topic(settings, settings.orderbook_topic, **COMMITTED) as reader:
        for partition in reader.partitions:
            records = reader.read(partition, begins.get(partition, 0), ends.get(partition, 0))
            messages += _decoded(records, start, end, undecodable, max_undecodable)
    return TopicSeconds(messages, undecodable)
