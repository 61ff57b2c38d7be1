"""De-duplication against the tails of the topics the job writes: a batch that Spark runs
again (after a crash, or a failed write) produces the same records, so whatever of them
is already at the end of the snapshot and dead-letter topics is left out: snapshots up to
the last second on the topic, dead letters up to the last one there. After it published a
batch itself, the publisher knows the tails without reading them (``Published``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketstream.deadletter import DeadLetter
from marketstream.kafka_io import TopicReader
from marketstream.orderbook.message import SnapshotMessage

if TYPE_CHECKING:
    from marketstream.spark.publish.batch_output import BatchOutput


@dataclass
class Published:
    """What this process knows is at the end of the topics: after it published batch
    ``batch_id`` itself, the next batch needs no look at the topics (the job is their only
    writer); anything else (another process, a retry) reads them."""

    batch_id: int
    last_second: int | None
    last_dead_letter: tuple[int, int] | None


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


def last_snapshot_second(reader: TopicReader) -> int | None:
    record = _last_record(reader)
    if record is None or record.value is None:
        return None
    try:
        return SnapshotMessage.from_record(record.key, record.value, record.headers).snapshot_time
    except ValueError:
        return None


def last_dead_letter(reader: TopicReader) -> tuple[int, int] | None:
    record = _last_record(reader)
    if record is None:
        return None
    try:
        letter = DeadLetter.from_record(record.value, record.headers)
    except ValueError:
        return None
    return (letter.source_partition, letter.source_offset)
