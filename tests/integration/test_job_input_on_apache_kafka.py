"""Input as other producers write it, on Apache Kafka: every compression codec, committed
and aborted transactions, several partitions, and records deleted under the job.

The input is written by librdkafka (confluent-kafka), the client most non-JVM services
use, and the reference book is replayed from what librdkafka reads back read_committed:
an implementation independent of the job's own kafka-python reads."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from marketstream.settings import load_settings
from marketstream.topics import ensure_topics
from producer.flow import OrderFlow
from tests.spark_job import Job, assert_exact_and_one_per_second, snapshots
from tests.support import ARTIFACTS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEPTH = 10
CODECS = ("gzip", "snappy", "lz4", "zstd")


@pytest.fixture
def settings(apache_kafka, tmp_path):
    unique = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=apache_kafka.bootstrap, spark_kafka_connector="python",
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=tmp_path / "checkpoint", spark_index_dir=tmp_path / "index", spark_ui_enabled=False,
        orderbook_state_partitions=2, book_depth=DEPTH, orderbook_metrics_port=0, orders_partitions=3,
    )
    ensure_topics(settings)
    return settings


def librdkafka_producer(settings, **config):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20, **config})


def committed_input(settings) -> list:
    """The input topic as librdkafka reads it read_committed, in (partition, offset) order."""
    from confluent_kafka import Consumer, TopicPartition

    from marketstream.kafka_io import Record, topic_end_offsets

    ends = topic_end_offsets(settings, settings.orders_topic)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"check-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(settings.orders_topic, p, 0) for p in ends])
    records, deadline = [], time.monotonic() + 60
    done = {p for p, end in ends.items() if end == 0}
    while len(done) < len(ends) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            positions = consumer.position([TopicPartition(settings.orders_topic, p) for p in ends])
            done |= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
            continue
        records.append(Record(message.topic(), message.partition(), message.offset(), message.timestamp()[1],
                              message.key(), message.value(), []))
        if message.offset() + 1 >= ends[message.partition()]:
            done.add(message.partition())
    consumer.close()
    assert len(done) == len(ends), "librdkafka did not read the input topic to its end"
    return sorted(records, key=lambda r: (r.partition, r.offset))


def events(flow: OrderFlow, n: int) -> list[bytes]:
    from marketstream.orderbook.events import event_to_json

    now = int(time.time())
    return [event_to_json(flow.next_event(now)).encode() for _ in range(n)]


def test_every_codec_and_aborted_transactions_give_the_exact_book(settings):
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT"], seed=11, first_order_id=1)
    job = Job(settings, ARTIFACTS / "job-input-apache-kafka.log")
    ARTIFACTS.mkdir(exist_ok=True)
    job.log_path.write_text("")
    job.start()
    aborted_ids: set[int] = set()
    try:
        for round_ in range(2):
            for codec in CODECS:  # a producer per codec, as services with different defaults write
                producer = librdkafka_producer(settings, **{"compression.type": codec})
                for i, value in enumerate(events(flow, 300)):
                    producer.produce(settings.orders_topic, value=value, partition=i % 3)
                assert producer.flush(30) == 0
            transactional = librdkafka_producer(settings, **{"transactional.id": f"orders-{uuid.uuid4()}",
                                                              "compression.type": "lz4"})
            transactional.init_transactions(30)
            transactional.begin_transaction()
            for i, value in enumerate(events(flow, 200)):
                transactional.produce(settings.orders_topic, value=value, partition=i % 3)
            transactional.commit_transaction(30)
            # An aborted transaction: orders that must never reach the book. Fresh ids, so
            # a leak shows as a level no committed order explains.
            transactional.begin_transaction()
            for i in range(50):
                order_id = 10_000_000 + round_ * 1000 + i
                aborted_ids.add(order_id)
                transactional.produce(settings.orders_topic, partition=i % 3, value=json.dumps(
                    {"order_id": order_id, "symbol": "BTC-USDT", "order_side": "BUY", "size": "1",
                     "price": "1", "status": "OPEN"}).encode())
            transactional.flush(30)
            transactional.abort_transaction(30)
            time.sleep(1.5)

        records = committed_input(settings)
        assert not any(json.loads(r.value).get("order_id") in aborted_ids for r in records)
        assert len(records) == 2 * (len(CODECS) * 300 + 200)

        # A snapshot's input offsets follow the records it applied: the last committed
        # order of each partition, not the transaction markers and aborted records after it.
        ends = {}
        for record in records:
            ends[record.partition] = record.offset + 1

        def caught_up():
            job.assert_alive()
            return any(m.input_offsets == ends for m in snapshots(settings))

        try:
            wait_for(caught_up, 180, interval_s=1.0, what="a snapshot that has read the input to its end")
        except AssertionError:
            seen = snapshots(settings)
            raise AssertionError(f"input ends {ends}; {len(seen)} snapshots, the last "
                                 f"{seen[-1].input_offsets if seen else None}") from None
        messages = snapshots(settings)
        checked = assert_exact_and_one_per_second(settings, messages, records, DEPTH)
        assert checked >= 5
        assert "UnsupportedCodecError" not in job.log_path.read_text()
    finally:
        job.stop()


def test_an_input_transaction_left_open_does_not_hold_the_book_back(settings):
    """A producer opens a transaction and takes its time: while it is open the job goes on
    publishing a snapshot every second from what is committed (a batch reads to the last
    stable offset, not into the open transaction); once it commits, its orders follow."""
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT"], seed=17, first_order_id=1)
    ARTIFACTS.mkdir(exist_ok=True)
    job = Job(settings, ARTIFACTS / "job-input-open-transaction.log")
    job.log_path.write_text("")
    job.start()
    try:
        plain = librdkafka_producer(settings)
        for i, value in enumerate(events(flow, 300)):
            plain.produce(settings.orders_topic, value=value, partition=i % 3)
        assert plain.flush(30) == 0
        wait_for(lambda: job.assert_alive() or sum(m.input_offsets.get(p, 0) for m in snapshots(settings)[-1:]
                                                   for p in range(3)) == 300,
                 180, interval_s=1.0, what="the job to read the first 300 orders")

        transactional = librdkafka_producer(settings, **{"transactional.id": f"slow-{uuid.uuid4()}"})
        transactional.init_transactions(30)
        transactional.begin_transaction()
        for i, value in enumerate(events(flow, 100)):
            transactional.produce(settings.orders_topic, value=value, partition=i % 3)
        assert transactional.flush(30) == 0
        opened = time.time()
        for i, value in enumerate(events(flow, 60)):  # committed orders after the open ones
            plain.produce(settings.orders_topic, value=value, partition=i % 3)
        assert plain.flush(30) == 0
        time.sleep(12)
        # Still open: the seconds since it opened are on the topic already.
        published = {m.snapshot_time for m in snapshots(settings)}
        expected = set(range(int(opened) + 1, int(opened) + 9))
        assert expected <= published, f"seconds missing while a transaction was open: {sorted(expected - published)}"
        transactional.commit_transaction(30)

        records = committed_input(settings)
        assert len(records) == 460
        ends = {}
        for record in records:
            ends[record.partition] = record.offset + 1
        wait_for(lambda: job.assert_alive() or any(m.input_offsets == ends for m in snapshots(settings)),
                 120, interval_s=1.0, what="a snapshot with the committed transaction's orders")
        assert assert_exact_and_one_per_second(settings, snapshots(settings), records, DEPTH) >= 10
    finally:
        job.stop()


def test_records_deleted_before_the_job_read_them_stop_it_with_the_loss_named(settings, apache_kafka):
    from kafka import KafkaAdminClient, TopicPartition

    from marketstream.kafka_io import make_producer

    flow = OrderFlow(symbols=["BTC-USDT"], seed=5, first_order_id=1)
    producer = make_producer(settings)
    for value in events(flow, 200):
        producer.send(settings.orders_topic, value=value, partition=0)
    producer.flush()
    ARTIFACTS.mkdir(exist_ok=True)
    job = Job(settings, ARTIFACTS / "job-input-deleted.log")
    job.log_path.write_text("")
    job.start()
    try:
        wait_for(lambda: job.assert_alive() or any(m.input_offsets.get(0) == 200 for m in snapshots(settings)),
                 120, interval_s=1.0, what="the job to read the first 200 orders")
    finally:
        job.stop()
    # While the job is down: more orders, then retention (here DeleteRecords) takes some
    # the job has not read.
    for value in events(flow, 100):
        producer.send(settings.orders_topic, value=value, partition=0)
    producer.flush()
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    admin.delete_records({TopicPartition(settings.orders_topic, 0): 250})
    admin.close()

    job.start()
    job.process.wait(timeout=180)
    log = job.log_path.read_text()
    assert job.process.returncode != 0
    assert "InputRecordsLost" in log
    assert f"records of topic '{settings.orders_topic}' were deleted before the job read them" in log
    assert "partition 0: offsets 200 to 249 are gone, it now starts at 250" in log
    # Nothing was published from the incomplete input.
    assert max(m.input_offsets.get(0, 0) for m in snapshots(settings)) == 200


def test_a_read_task_range_ending_on_transaction_markers_finishes_and_skips_aborted_orders(kafka_settings):
    """A transactional producer leaves markers and aborted records before the end of a
    partition: a read task's range to that end still ends, without them."""
    from marketstream.kafka_io import end_offsets
    from marketstream.spark.kafka_clients import cached_consumer
    from marketstream.spark.source.python_source import read_range_columns

    settings = kafka_settings
    producer = librdkafka_producer(settings, **{"transactional.id": f"t-{uuid.uuid4()}"})
    producer.init_transactions(30)
    for commit in (True, False):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(settings.orders_topic, value=f"{commit}-{i}".encode(), partition=0)
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    consumer = cached_consumer(settings.kafka_bootstrap_servers, lean=True)
    end = end_offsets(consumer, settings.orders_topic, [0])[0]
    assert end == 12  # 5 committed, a commit marker, 5 aborted, an abort marker
    started = time.monotonic()
    offsets, _, values = read_range_columns(consumer, settings.orders_topic, 0, 0, end)
    assert time.monotonic() - started < 5
    assert offsets == [0, 1, 2, 3, 4] and values == [f"True-{i}".encode() for i in range(5)]


def test_a_replayed_range_that_retention_deleted_fails_the_read_with_the_loss_named(kafka_settings):
    """Every read checks its range, not only the start: a batch replayed after a restart
    reuses offsets from Spark's log, and part of them may be gone by then."""
    from kafka import KafkaAdminClient, TopicPartition

    from marketstream.kafka_io import make_producer
    from marketstream.spark.kafka_clients import cached_consumer
    from marketstream.spark.source.python_source import InputRecordsLost, read_range_columns

    settings = kafka_settings
    producer = make_producer(settings)
    for i in range(100):
        producer.send(settings.orders_topic, value=b"x%d" % i, partition=1)
    producer.flush()
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    admin.delete_records({TopicPartition(settings.orders_topic, 1): 60})
    admin.close()
    consumer = cached_consumer(settings.kafka_bootstrap_servers, lean=True)
    with pytest.raises(InputRecordsLost, match=r"partition 1: the batch reads offsets 40 to 99, offset 40 is not"):
        read_range_columns(consumer, settings.orders_topic, 1, 40, 100)
    assert read_range_columns(consumer, settings.orders_topic, 1, 60, 100)[0] == list(range(60, 100))
