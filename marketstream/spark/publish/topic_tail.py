"""De-duplication against the tails of the topics the job writes: a batch that Spark runs
again (after a crash, or a failed write) produces the same records, so whatever of them
is already at the end of the snapshot and dead-letter topics is left out: snapshots up to
the last second on the topic, dead letters up to the last one there. After it published a
batch itself, the publisher knows the tails without reading them (``Published``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketstream.deadletter import DeadLetter
from marketstream.kafka_io import TopicReader
from marketstream.orderbook.message import SnapshotMessage

if TYPE_CHECKING:
    from marketstream.spark.dead_letters import DeadLetterRef
    from marketstream.spark.publish.batch_output import BatchOutput

log = logging.getLogger("marketstream.spark.publish")


@dataclass
class Published:
    """What this process knows is at the end of the topics: after it published batch
    ``batch_id`` itself, the next batch needs no look at the topics (the job is their only
    writer); anything else (another process, a retry) reads them."""

    batch_id: int
    last_second: int | None
    last_dead_letter: tuple[int, int] | None


def unpublished(snapshots: list[SnapshotMessage], dead: list[DeadLetterRef], kafka, orderbook_topic: str,
                deadletter_topic: str, known: Published | None = None,
                batch_id: int | None = None) -> tuple[list[SnapshotMessage], list[DeadLetterRef]]:
    """A batch's snapshots and dead letters (in input order) without what the topics already
    end with. ``kafka``: a kafka-python consumer (reads only); ``known``: what this process
    published last (trusted for the batch right after it)."""
    trusted = known is not None and batch_id is not None and known.batch_id == batch_id - 1
    if trusted:
        last_second = known.last_second
    else:
        last_second = _last_snapshot_second(TopicReader(kafka, orderbook_topic)) if snapshots else None
    if last_second is not None:
        skipped = sum(1 for m in snapshots if m.snapshot_time <= last_second)
        if skipped:
            log.info("%d snapshot(s) up to %s are on %s already (a replayed batch): not published again",
                     skipped, last_second, orderbook_topic)
        snapshots = [m for m in snapshots if m.snapshot_time > last_second]
    if dead:
        last = known.last_dead_letter if trusted else _last_dead_letter(TopicReader(kafka, deadletter_topic))
        places = [(d.partition, d.offset) for d in dead]
        if last in places:
            done = places.index(last) + 1
            log.info("%d dead letter(s) of this batch are on %s already: not published again", done,
                     deadletter_topic)
            dead = dead[done:]
    return snapshots, dead


def published_after(output: BatchOutput, before: Published | None, batch_id: int) -> Published:
    """What the topics end with once ``output`` (batch ``batch_id``, a ``BatchOutput``) is published."""
    last_second = output.snapshots[-1].snapshot_time if output.snapshots else (before.last_second if before else None)
    last_dead = ((output.dead_letters[-1].partition, output.dead_letters[-1].offset) if output.dead_letters
                 else (before.last_dead_letter if before else None))
    return Published(batch_id, last_second, last_dead)


def _last_record(reader: TopicReader):
    """The topic's last committed record (one partition, checked at the job's start).
    Transaction markers and aborted records take offsets too: look back from the end,
    twice as far each time, until a record is found."""
    [(partition, end)] = reader.end_offsets().items()
    first = reader.start_offsets().get(partition, 0)
    window = 8
    while end > first:
        start = max(first, end - window)
        found = None
        for found in reader.read(partition, start, end):
            pass
        if found is not None:
            return found
        end, window = start, window * 2
    return None


def _last_snapshot_second(reader: TopicReader) -> int | None:
    record = _last_record(reader)
    if record is None or record.value is None:
        return None
    try:
        return SnapshotMessage.from_record(record.key, record.value, record.headers).snapshot_time
    except ValueError:
        return None


def _last_dead_letter(reader: TopicReader) -> tuple[int, int] | None:
    record = _last_record(reader)
    if record is None:
        return None
    try:
        letter = DeadLetter.from_record(record.value, record.headers)
    except ValueError:
        return None
    return (letter.source_partition, letter.source_offset)
