"""The job's publisher on Apache Kafka: each batch is one transaction (its snapshots and the
metrics messages waiting for it), a publish that fails part-way leaves nothing a reader sees, the retried batch publishes every second once, and
a newer publisher of the same checkpoint fences the older one.

The publisher is driven with batches of state-partition rows as the stateful stage emits
them (``processor.PART_SCHEMA``), so a failure can be injected between two records."""

from __future__ import annotations

import json

import pytest

from marketstream.kafka_io import read_range
from marketstream.orderbook.message import SnapshotMessage
from marketstream.spark.publish.batch_output import OutputConfig
from marketstream.spark.publish.publisher import DriverFenced, MetricsOutbox, Publisher, transactional_id

pytestmark = pytest.mark.integration


class Rows:
    """What ``foreachBatch`` hands the publisher: ``collect()`` gives rows with ``asDict``."""

    class Row(dict):
        def asDict(self):
            return dict(self)

    def __init__(self, rows):
        self.rows = [self.Row(r) for r in rows]

    def collect(self):
        return self.rows


def part(second: int, sequence: int, price: int) -> dict:
    return {"kind": "part", "state_partition": 0, "second": second, "sequence": sequence, "recovered": False,
            "input_offsets": json.dumps({"0": sequence}), "open_orders": 1, "symbols": ["BTC-USDT"],
            "sides": [1], "prices": [price * 10**8], "amounts": [10**8]}


def batch(first_second: int, count: int) -> Rows:
    return Rows([part(first_second + i, first_second + i, 100 + i) for i in range(count)])


def config(settings) -> OutputConfig:
    return OutputConfig(bootstrap_servers=settings.kafka_bootstrap_servers, orders_topic=settings.orders_topic,
                        orderbook_topic=settings.orderbook_topic, deadletter_topic=settings.deadletter_topic,
                        partitions=1, depth=5, transactional_id=transactional_id(str(settings.spark_checkpoint_dir)))


def published_seconds(settings) -> list[int]:
    return [SnapshotMessage.from_record(r.key, r.value, r.headers).snapshot_time
            for r in read_range(settings, settings.orderbook_topic)]


def published_metrics(settings) -> list[int]:
    return [json.loads(r.value)["batch_id"] for r in read_range(settings, settings.metrics_topic)]


def test_a_publish_that_fails_part_way_leaves_no_second_missing_or_doubled(kafka_settings):
    settings = kafka_settings
    outbox = MetricsOutbox(settings.metrics_topic)
    publisher = Publisher(config(settings), 1 << 20, metrics=outbox)
    publisher(batch(1_000, 5), 0)
    assert published_seconds(settings) == list(range(1_000, 1_005))
    outbox.put(json.dumps({"batch_id": 0}).encode())  # as the query listener does once batch 0 is over

    producer = publisher.producer()
    real_send, sent = producer.send, []

    def send_then_fail(topic, **kwargs):
        if len(sent) == 3:
            raise ConnectionError("injected: the broker went away after three records")
        sent.append(kwargs)
        return real_send(topic, **kwargs)

    producer.send = send_then_fail
    with pytest.raises(ConnectionError, match="injected"):
        publisher(batch(1_005, 6), 1)
    assert len(sent) == 3  # batch 0's metrics and two seconds reached the broker, in an aborted transaction
    assert published_seconds(settings) == list(range(1_000, 1_005))  # a read_committed reader sees none
    assert published_metrics(settings) == []

    publisher(batch(1_005, 6), 1)  # the batch again, as Spark runs it after the failure
    outbox.put(json.dumps({"batch_id": 1}).encode())
    publisher(batch(1_011, 2), 2)
    assert published_seconds(settings) == list(range(1_000, 1_013))
    assert published_metrics(settings) == [0, 1]
    outbox.put(json.dumps({"batch_id": 2}).encode())
    publisher.close()  # the job ends: the last batch's metrics in a transaction of their own
    assert published_metrics(settings) == [0, 1, 2]


def test_a_newer_driver_fences_the_older_and_publishes_only_what_is_missing(kafka_settings):
    settings = kafka_settings
    old = Publisher(config(settings), 1 << 20)
    old(batch(2_000, 3), 0)
    new = Publisher(config(settings), 1 << 20)  # a second driver on the same checkpoint
    new(batch(2_000, 5), 0)  # it replays the batch: only the two seconds not on the topic go out
    with pytest.raises(DriverFenced, match="another driver started on this checkpoint"):
        old(batch(2_003, 4), 1)  # the old driver's memory says "publish from 2003": it must not
    new(batch(2_005, 2), 1)
    assert published_seconds(settings) == list(range(2_000, 2_007))
