"""Small kafka-python helpers shared by the exporter, validator, dashboard and tests.

Reads use explicit partition assignment (no consumer group) and decide "end of data"
from the high watermark of fetch responses: Tansu's ListOffsets (``end_offsets``) is
wrong after batched produces, the fetch high watermark is right.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from marketstream.settings import Settings



@contextmanager
def quiet_kafka_logs():
    """While waiting for a broker that may not be up yet: kafka-python logs each refused
    connection at ERROR; the caller's own "waiting for Kafka" line says it once."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def make_consumer(settings: Settings, **overrides):
    from kafka import KafkaConsumer

    config = dict(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        fetch_max_wait_ms=100,
    )
    config.update(overrides)
    return KafkaConsumer(**config)


def make_producer(settings: Settings, **overrides):
    from kafka import KafkaProducer

    config = dict(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5)
    config.update(overrides)
    return KafkaProducer(**config)


def partitions_of(consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        time.sleep(0.2)
    raise LookupError(f"topic {topic!r} does not exist or has no partitions")


def high_watermarks(consumer, topic: str, partitions: Sequence[int], timeout_s: float = 10.0) -> dict[int, int]:
    """True end offsets per partition, taken from fetch responses (not ListOffsets)."""
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    # Seek to the last offset ListOffsets knows: a fetch from there is cheap and its
    # response carries the correct high watermark even when ListOffsets is stale.
    for tp, end in consumer.end_offsets(tps).items():
        consumer.seek(tp, max(0, end - 1))
    marks: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(marks) < len(tps) and time.monotonic() < deadline:
        # Short polls: an empty partition's fetch answers after fetch_max_wait_ms with no
        # records, and a long poll would sit out its whole timeout after that answer.
        consumer.poll(timeout_ms=20, max_records=1)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                marks[tp.partition] = hw
    missing = [tp.partition for tp in tps if tp.partition not in marks]
    if missing:
        raise TimeoutError(f"no high watermark for {topic} partitions {missing} within {timeout_s} s")
    return marks


def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """True end offset of every partition of ``topic`` (``LookupError`` if it does not exist)."""
    consumer = make_consumer(settings)
    try:
        return high_watermarks(consumer, topic, partitions_of(consumer, topic))
    finally:
        consumer.close()


def read_range(
    settings: Settings,
    topic: str,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    timeout_s: float = 60.0,
) -> Iterator[Record]:
    """Yield records of ``topic`` from ``start`` (default: beginning) up to ``stop``
    (exclusive; default: the high watermark at call time), partition by partition."""
    from kafka import TopicPartition

    consumer = make_consumer(settings)
    try:
        partitions = partitions_of(consumer, topic)
        if stop is None:
            stop = high_watermarks(consumer, topic, partitions)
        start = start or {}
        for partition in partitions:
            begin, end = start.get(partition, 0), stop.get(partition, 0)
            if end <= begin:
                continue
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, begin)
            position, deadline = begin, time.monotonic() + timeout_s
            while position < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic}[{partition}] stalled at offset {position} of {end}")
                for message in consumer.poll(timeout_ms=500).get(tp, []):
                    if message.offset >= end:
                        position = end
                        break
                    position = message.offset + 1
                    yield Record(
                        topic, partition, message.offset, message.timestamp, message.key,
                        message.value, list(message.headers or []),
                    )
    finally:
        consumer.close()


def _timestamp_at(consumer, tp, offset: int, timeout_s: float = 10.0) -> int:
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in consumer.poll(timeout_ms=300, max_records=1).get(tp, []):
            return message.timestamp
    raise TimeoutError(f"no record at {tp.topic}[{tp.partition}] offset {offset}")


def offsets_for_time(settings: Settings, topic: str, timestamp_ms: int) -> dict[int, int]:
    """First offset per partition whose record timestamp is >= ``timestamp_ms`` (the high
    watermark where there is none).

    A binary search over record timestamps, which assumes they do not decrease within a
    partition (true for the snapshot and metrics topics: one writer stamping wall-clock
    time). Tansu's own ListOffsets-by-time answers 0 for any time, so it is not used.
    """
    from kafka import TopicPartition

    consumer = make_consumer(settings, max_poll_records=1)
    try:
        partitions = partitions_of(consumer, topic)
        marks = high_watermarks(consumer, topic, partitions)
        result: dict[int, int] = {}
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            low, high = 0, marks[partition]  # answer lies in [low, high]
            while low < high:
                middle = (low + high) // 2
                if _timestamp_at(consumer, tp, middle) >= timestamp_ms:
                    high = middle
                else:
                    low = middle + 1
            result[partition] = low
        return result
    finally:
        consumer.close()
