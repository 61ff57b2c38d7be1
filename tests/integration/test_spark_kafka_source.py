"""The Python Kafka data source's reader against a real broker, without starting Spark
(the methods are plain Python; Spark calls them the same way)."""

from __future__ import annotations

import json
import random
import time

import pytest
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from marketstream.kafka_io import make_producer
from marketstream.spark import kafka_clients
from marketstream.spark.route.rows import from_rows
from marketstream.spark.source.python_source import LATEST, TICK, KafkaStreamReader

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _close_cached_clients():
    """``read`` caches its consumers per process (a Spark worker's life); here the process
    is pytest's, which outlives the broker: close them with the module."""
    yield
    kafka_clients.close_all()


def records_of(batches):
    """``(partition, offset, value)`` of every record the reader's batches carry (none of
    these values is an order event: each comes back as a dead letter with its bytes),
    the clock runs and the heartbeat."""
    rows = [row for batch in batches for row in batch.to_pylist()]
    _events, dead, runs, heartbeat = from_rows(rows)
    return sorted((d.partition, d.offset, d.value) for d in dead), runs, heartbeat


def _produce(settings, per_partition: int, start: int = 0):
    producer = make_producer(settings)
    for i in range(per_partition):
        for partition in range(3):
            producer.send(settings.orders_topic, value=f"p{partition}-{start + i}".encode(), partition=partition)
    producer.flush()
    producer.close()


def test_reader_sees_every_partition_advance_each_batch_and_caps_batches(kafka_settings):
    reader = KafkaStreamReader({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers,
                                "topic": kafka_settings.orders_topic, "maxEventsPerBatch": "10", "routeTo": "0"})
    try:
        start = reader.initialOffset()
        assert start == {"0": 0, "1": 0, "2": 0, TICK: 0}
        _produce(kafka_settings, 5)
        first = reader.latestOffset(start, ReadAllAvailable())
        assert {p: first[p] for p in "012"} == {"0": 5, "1": 5, "2": 5}
        assert first[LATEST] == {"0": 5, "1": 5, "2": 5}  # in the offset log: a replay sees the same backlog
        # The same reader again (it keeps its client): every partition's new end is seen,
        # not only the partitions fetched last (stale end offsets delay events).
        _produce(kafka_settings, 4, start=5)
        second = reader.latestOffset(first, ReadAllAvailable())
        assert {p: second[p] for p in "012"} == {"0": 9, "1": 9, "2": 9}
        assert second[TICK] >= first[TICK] > 0

        capped = reader.latestOffset(start, reader.getDefaultReadLimit())
        assert reader.getDefaultReadLimit() == ReadMaxRows(10)
        assert sum(capped[p] for p in "012") == 10

        splits = reader.partitions(first, second)
        assert len(splits) == 1  # one read task unless readTasks says otherwise
        batches = [batch for part in splits for batch in reader.read(part)]
        assert len(batches) == 1  # one Arrow record batch a read task
        records, runs, heartbeat = records_of(batches)
        assert records == [(p, o, f"p{p}-{o}".encode()) for p in range(3) for o in range(5, 9)]
        # The records' seconds (the clock's runs) are the broker's timestamps: now.
        assert all(abs(lmax - time.time()) < 120 for p in runs for lmax, _end in runs[p])
        assert {p: runs[p][-1][1] for p in runs} == {0: 9, 1: 9, 2: 9}
        # Per partition: where the batch starts and ends, and the end offset then.
        assert json.loads(heartbeat) == {"0": [5, 9, 9], "1": [5, 9, 9], "2": [5, 9, 9]}
        assert reader.reportLatestOffset() == {"0": 9, "1": 9, "2": 9}

        reader.read_tasks = 2
        splits = reader.partitions(start, second)
        assert len(splits) == 2 and sum(1 for s in splits if s.heartbeat) == 1
        records, _runs, _heartbeat = records_of(batch for part in splits for batch in reader.read(part))
        assert [(p, o) for p, o, _v in records] == [(p, o) for p in range(3) for o in range(9)]
    finally:
        reader.stop()


def test_read_tasks_cut_partitions_and_the_state_partitions_see_one_read(kafka_settings):
    """A backlog batch over 3 partitions and 2 read tasks: the tasks read equal shares
    (a partition cut between them), and what each state partition gets back from
    ``rows.from_rows`` equals what one task reading everything gives, record times that go
    back within a partition included."""
    rng = random.Random(3)
    producer = make_producer(kafka_settings)
    base_ms = int(time.time() * 1000) - 60_000
    for i in range(12_000):
        value = json.dumps({"order_id": i, "symbol": "A-B", "order_side": "BUY", "size": 1, "price": 10,
                            "status": "OPEN"}).encode() if i % 50 else b"{"
        producer.send(kafka_settings.orders_topic, value=value, partition=i % 3,
                      timestamp_ms=base_ms + i * 3 + rng.randint(-4000, 4000))
    producer.flush()
    producer.close()
    options = {"bootstrap.servers": kafka_settings.kafka_bootstrap_servers, "topic": kafka_settings.orders_topic,
               "routeTo": "11,22"}
    reader = KafkaStreamReader(options)
    try:
        start = reader.initialOffset()
        end = reader.latestOffset(start, ReadAllAvailable())

        def state_partitions(read_tasks):
            reader.read_tasks = read_tasks
            splits = reader.partitions(start, end)
            rows = [row for split in reversed(splits) for batch in reader.read(split) for row in batch.to_pylist()]
            return splits, {target: from_rows(r for r in rows if r["target"] == target) for target in (11, 22)}

        one_split, one = state_partitions(1)
        splits, two = state_partitions(2)
        assert len(one_split) == 1 and len(splits) == 2
        shares = [sum(stop - begin for _, begin, stop in split.ranges) for split in splits]
        assert shares == [6_000, 6_000] and {p for split in splits for p, _, _ in split.ranges} == {0, 1, 2}
        for target in (11, 22):
            events_one, dead_one, runs_one, heartbeat_one = one[target]
            events_two, dead_two, runs_two, heartbeat_two = two[target]
            assert runs_two == runs_one and heartbeat_two == heartbeat_one
            assert sorted(dead_two, key=repr) == sorted(dead_one, key=repr) and len(dead_one) > 0

            def by_record(events):
                return sorted((row["partition"], offset, lmax) for row in events
                              for offset, lmax in zip(row["offsets"], row["lmax"]))

            assert by_record(events_two) == by_record(events_one)
    finally:
        reader.stop()
