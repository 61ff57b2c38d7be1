"""A batch's output on the driver: the state partitions' rows -> the Kafka records to
publish.

- the parts of each second become its snapshot (``combine``);
- dead letters are put in input order, and those rejected after parsing (which carry no
  bytes) get their original bytes read back from the input topic
  (``dead_letters.with_values``);
- nothing is published twice: whatever of the batch is already at the end of the output
  and dead-letter topics (a replayed batch) is left out (``topic_tail``).

Runs on the driver, in the query's foreachBatch publisher (``publisher``), once per batch;
no Spark import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from marketstream.kafka_io import TopicReader
from marketstream.orderbook.message import SnapshotMessage
from marketstream.spark import dead_letters
from marketstream.spark.dead_letters import DeadLetterRef
from marketstream.spark.publish.combine import combine
from marketstream.spark.publish.topic_tail import Published, unpublished
from marketstream.spark.state.book_of_second import BookPart
from marketstream.spark.state.partition import PART


@dataclass(frozen=True)
class OutputConfig:
    bootstrap_servers: str
    orders_topic: str
    orderbook_topic: str
    deadletter_topic: str
    partitions: int
    depth: int
    transactional_id: str = "marketstream-orderbook"
    security: dict[str, str] = field(default_factory=dict)  # kafka_io.security_options


@dataclass
class BatchOutput:
    snapshots: list[SnapshotMessage]
    dead_letters: list[DeadLetterRef]


def collect(rows: Iterable[dict]) -> tuple[list[BookPart], list[DeadLetterRef]]:
    """The state partitions' rows (``processor.PART_SCHEMA`` as dicts)."""
    parts, dead = [], []
    for row in rows:
        if row["kind"] == PART:
            parts.append(BookPart(
                row["second"], row["sequence"], row["recovered"],
                {int(p): o for p, o in json.loads(row["input_offsets"]).items()}, row["open_orders"],
                [(s, side, p, int(a)) for s, side, p, a in zip(row["symbols"], row["sides"], row["prices"],
                                                               row["amounts"])]))
        elif row["kind"] == dead_letters.KIND:
            dead.extend(dead_letters.from_columns(row))
    return parts, dead


def finish(parts: list[BookPart], dead: list[DeadLetterRef], config: OutputConfig, kafka,
           known: Published | None = None, batch_id: int | None = None) -> BatchOutput:
    """Snapshots and dead letters of one batch, completed and without what the topics
    already hold. ``kafka``: a kafka-python consumer (reads only); ``known``: what this
    process published last (trusted for the batch right after it)."""
    snapshots = combine(parts, config.partitions, config.depth)
    dead = sorted(dead, key=lambda d: (d.partition, d.offset))
    dead = dead_letters.with_values(dead, TopicReader(kafka, config.orders_topic)) if dead else dead
    snapshots, dead = unpublished(snapshots, dead, kafka, config.orderbook_topic, config.deadletter_topic, known,
                                  batch_id)
    return BatchOutput(snapshots, dead)


def records(output: BatchOutput, config: OutputConfig) -> Iterator[tuple[str, bytes | None, bytes, list]]:
    """The Kafka records: ``(topic, key, value, headers)``, snapshots first."""
    for m in output.snapshots:
        yield config.orderbook_topic, m.key.encode(), m.value.encode(), m.headers()
    for d in output.dead_letters:
        letter = dead_letters.record(d, config.orders_topic)
        yield config.deadletter_topic, None, letter.value, letter.headers()


