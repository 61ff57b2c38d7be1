"""The lean consumer (what the job's read tasks use) reads from a real broker exactly the
offsets, timestamps and values kafka-python's own consumer reads: plain and compressed
batches, keys, headers, null values, and ranges that start or end inside a batch."""

from __future__ import annotations

import random

import pytest

from marketstream.kafka_io import make_consumer, make_producer, read_partition
from marketstream.spark.source.record_decoder import is_lean, lean_consumer, read_columns

pytestmark = pytest.mark.integration


def _produce(settings, compression: str | None) -> int:
    rng = random.Random(5)
    producer = make_producer(settings, compression_type=compression, linger_ms=20, batch_size=64 * 1024)
    for i in range(3_000):
        value = None if i % 97 == 0 else bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 3, 90, 400])))
        headers = [("source", b"test"), ("empty", b"")] if i % 5 == 0 else []
        key = str(i).encode() if i % 2 or value is None else None
        producer.send(settings.orders_topic, key=key, value=value, headers=headers, partition=0,
                      timestamp_ms=1_700_000_000_000 + rng.randrange(-5_000, 2_000_000))
    producer.flush()
    producer.close()
    return 3_000


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_the_lean_consumer_reads_what_kafka_python_reads(kafka_settings, compression):
    total = _produce(kafka_settings, compression)
    topic = kafka_settings.orders_topic
    lean = lean_consumer(bootstrap_servers=kafka_settings.kafka_bootstrap_servers.split(","), group_id=None,
                         enable_auto_commit=False, fetch_max_wait_ms=50)
    plain = make_consumer(kafka_settings)
    try:
        assert is_lean(lean)
        for start, end in [(0, total), (1, 2), (777, 2_345), (total - 1, total)]:
            expected = [(r.offset, r.timestamp_ms, r.value) for r in read_partition(plain, topic, 0, start, end)]
            offsets, timestamps, values = read_columns(lean, topic, 0, start, end)
            assert list(zip(offsets, timestamps, values)) == expected
            assert offsets == list(range(start, end))
    finally:
        lean.close()
        plain.close()
