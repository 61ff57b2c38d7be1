"""The end of a batch: the state partitions' output -> the Kafka records to publish.

- the parts of each second become its snapshot (``combine``);
- dead letters are put in input order, and those rejected after parsing (which carry no
  bytes) get their original bytes read back from the input topic;
- nothing is published twice: a batch that Spark runs again (after a crash, or a failed
  write) produces the same records, so whatever of them is already at the end of the
  output and dead-letter topics is dropped: snapshots up to the last second on the topic,
  dead letters up to the last one there.

Runs on the driver, in the query's foreachBatch publisher (``sink``), once per batch; no Spark import.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from marketstream.deadletter import DeadLetter
from marketstream.kafka_io import TopicReader
from marketstream.orderbook.message import SnapshotMessage
from marketstream.spark.combine import combine
from marketstream.spark.partition_state import BookPart, DeadLetterRef

log = logging.getLogger("marketstream.spark.output")


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
        if row["kind"] == "part":
            parts.append(BookPart(
                row["second"], row["sequence"], row["recovered"],
                {int(p): o for p, o in json.loads(row["input_offsets"]).items()}, row["open_orders"],
                [(s, side, p, int(a)) for s, side, p, a in zip(row["symbols"], row["sides"], row["prices"],
                                                               row["amounts"])]))
        elif row["kind"] == "dead":
            dead.extend(DeadLetterRef(p, o, r, c, v) for p, o, r, c, v in zip(
                row["partitions"], row["offsets"], row["reasons"], row["codes"], row["values"]))
    return parts, dead


def batch_figures(rows: Iterable[dict]) -> dict[str, Any]:
    """What a batch publishes, from the state partitions' rows (``collect``'s input): the
    ``metrics.BATCH_FIGURES`` of the batch's metrics message. Counted here, on the rows the
    driver collects anyway, not by an ``observe`` on the stateful stage, which generates
    its aggregation's code in every task of every batch."""
    snapshots = recovered = dead_letters = events = 0
    seconds, open_orders, gap_first, gap_last = [], [], [], []
    by_code: Counter[str] = Counter()
    for row in rows:
        kind = row["kind"]
        if kind == "part" and row["state_partition"] == 0:  # every partition has a part of each second
            snapshots += 1
            recovered += bool(row["recovered"])
        elif kind == "dead":
            dead_letters += len(row["codes"])
            by_code.update(row["codes"])
        elif kind == "info":
            events += json.loads(row["stats"]).get("events", 0)
            for values, name in ((seconds, "second"), (open_orders, "open_orders"), (gap_first, "gap_first"),
                                 (gap_last, "gap_last")):
                if row[name] is not None:
                    values.append(row[name])
    return {
        "snapshots": snapshots, "recovered": recovered,
        "last_second": max(seconds, default=None), "open_orders": sum(open_orders) if open_orders else None,
        "dead_letters": dead_letters, "dead_letters_by_code": dict(sorted(by_code.items())),
        "gap_first": min(gap_first, default=None), "gap_last": max(gap_last, default=None),
        "events_applied": events,
    }


class FiguresByBatch:
    """The publisher's ``batch_figures`` until the query listener takes them with the
    batch's progress (both run in the driver's Python process, on different threads). A
    batch whose progress never comes (the query stopped) leaves its figures behind: the
    oldest go beyond ``capacity``."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._figures: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, batch_id: int, figures: dict[str, Any]) -> None:
        with self._lock:
            self._figures[batch_id] = figures
            self._figures.move_to_end(batch_id)
            while len(self._figures) > self.capacity:
                self._figures.popitem(last=False)

    def take(self, batch_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._figures.pop(batch_id, None)


@dataclass
class Published:
    """What this process knows is at the end of the topics: after it published batch
    ``batch_id`` itself, the next batch needs no look at the topics (the job is their only
    writer); anything else (another process, a retry) reads them."""

    batch_id: int
    last_second: int | None
    last_dead_letter: tuple[int, int] | None


def finish(parts: list[BookPart], dead: list[DeadLetterRef], config: OutputConfig, kafka,
           known: Published | None = None, batch_id: int | None = None) -> BatchOutput:
    """Snapshots and dead letters of one batch, completed and without what the topics
    already hold. ``kafka``: a kafka-python consumer (reads only); ``known``: what this
    process published last (trusted for the batch right after it)."""
    snapshots = combine(parts, config.partitions, config.depth)
    dead = sorted(dead, key=lambda d: (d.partition, d.offset))
    dead = _with_values(dead, TopicReader(kafka, config.orders_topic)) if dead else dead
    trusted = known is not None and batch_id is not None and known.batch_id == batch_id - 1
    if trusted:
        last_second = known.last_second
    else:
        last_second = _last_snapshot_second(TopicReader(kafka, config.orderbook_topic)) if snapshots else None
    if last_second is not None:
        skipped = sum(1 for m in snapshots if m.snapshot_time <= last_second)
        if skipped:
            log.info("%d snapshot(s) up to %s are on %s already (a replayed batch): not published again",
                     skipped, last_second, config.orderbook_topic)
        snapshots = [m for m in snapshots if m.snapshot_time > last_second]
    if dead:
        last = known.last_dead_letter if trusted else _last_dead_letter(TopicReader(kafka, config.deadletter_topic))
        places = [(d.partition, d.offset) for d in dead]
        if last in places:
            done = places.index(last) + 1
            log.info("%d dead letter(s) of this batch are on %s already: not published again", done,
                     config.deadletter_topic)
            dead = dead[done:]
    return BatchOutput(snapshots, dead)


def records(output: BatchOutput, config: OutputConfig) -> Iterator[tuple[str, bytes | None, bytes, list]]:
    """The Kafka records: ``(topic, key, value, headers)``, snapshots first."""
    for m in output.snapshots:
        yield config.orderbook_topic, m.key.encode(), m.value.encode(), m.headers()
    for d in output.dead_letters:
        letter = DeadLetter(value=d.value or b"", reason=d.reason, code=str(d.code), source_topic=config.orders_topic,
                            source_partition=d.partition, source_offset=d.offset).bounded()
        yield config.deadletter_topic, None, letter.value, letter.headers()


def published_after(output: BatchOutput, before: Published | None, batch_id: int) -> Published:
    """What the topics end with once ``output`` (batch ``batch_id``) is published."""
    last_second = output.snapshots[-1].snapshot_time if output.snapshots else (before.last_second if before else None)
    last_dead = ((output.dead_letters[-1].partition, output.dead_letters[-1].offset) if output.dead_letters
                 else (before.last_dead_letter if before else None))
    return Published(batch_id, last_second, last_dead)


def _with_values(dead: list[DeadLetterRef], orders: TopicReader) -> list[DeadLetterRef]:
    """Dead letters with their original bytes (read back where they have none)."""
    wanted: dict[int, set[int]] = {}
    for d in dead:
        if d.value is None:
            wanted.setdefault(d.partition, set()).add(d.offset)
    values: dict[tuple[int, int], bytes | None] = {}
    for partition, offsets in wanted.items():
        for record in orders.read(partition, min(offsets), max(offsets) + 1):
            if record.offset in offsets:
                values[(partition, record.offset)] = record.value
    return [d if d.value is not None else
            DeadLetterRef(d.partition, d.offset, d.reason, d.code, values.get((d.partition, d.offset)) or b"")
            for d in dead]


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
