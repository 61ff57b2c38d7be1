"""The emulator against a real Apache Kafka broker: what it sends is what a consumer reads back."""

import re
import subprocess
import sys
import time

import pytest

from marketstream import kafka_io
from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book
from marketstream.orderbook.replay import replay_file
from marketstream.topics import ensure_topics, topic_specs
from tests.support import OFFICIAL_CSV, ROOT, python_env

pytestmark = pytest.mark.integration


def run_producer(settings, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "producer", "--bootstrap-servers", settings.kafka_bootstrap_servers,
         "--topic", settings.orders_topic, *args],
        capture_output=True, text=True, cwd=ROOT, env=python_env(), timeout=timeout,
    )


def test_topic_creation_is_idempotent_with_the_configured_partitions(kafka_settings):
    assert set(ensure_topics(kafka_settings).values()) == {False}  # the fixture created them already
    consumer = kafka_io.make_consumer(kafka_settings)
    try:
        for spec in topic_specs(kafka_settings):
            assert len(kafka_io.partitions_of(consumer, spec.name)) == spec.partitions
    finally:
        consumer.close()


def test_official_sample_replayed_through_the_broker_gives_the_reference_book(kafka_settings):
    result = run_producer(kafka_settings, "--replay", str(OFFICIAL_CSV), "--events-per-tick", "1000",
                          "--tick-seconds", "0.05")
    assert result.returncode == 0, result.stderr
    assert "sent 7826 events" in result.stderr
    records = list(kafka_io.read_range(kafka_settings, kafka_settings.orders_topic))
    assert len(records) == 7826
    book = OrderBook().apply_all(parse_event(r.value) for r in records)
    reference, _ = replay_file(OFFICIAL_CSV)
    assert book.open_count == 4174
    assert levels_to_json(render_book(book, 0)) == levels_to_json(render_book(reference, 0))


def test_emulator_keeps_the_seed_pace_and_keys_by_order_id(kafka_settings):
    started = time.monotonic()
    result = run_producer(kafka_settings, "--seed", "5", "--max-events", "300")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    summary = re.search(
        r"sent 300 events in ([\d.]+) s: ([\d.]+) events/s \(target 100/s\); failed 0;", result.stderr
    )
    assert summary, result.stderr
    # the pace is the seed's 100 events/s; a busy machine may tick a few ms late
    assert 2.9 <= float(summary[1]) <= 3.3 and 90 <= float(summary[2]) <= 103.5
    assert elapsed < 15
    records = list(kafka_io.read_range(kafka_settings, kafka_settings.orders_topic))
    assert len(records) == 300
    partitions_by_order: dict = {}
    for record in records:
        event = parse_event(record.value)
        assert record.key == str(event.order_id).encode()
        partitions_by_order.setdefault(event.order_id, set()).add(record.partition)
    # an order's open and close share a partition, so a close never overtakes its open
    assert all(len(p) == 1 for p in partitions_by_order.values())
    assert len({r.partition for r in records}) == kafka_settings.orders_partitions


def test_unreachable_broker_is_a_clear_error_not_a_hang():
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--max-events", "1", "--broker-timeout", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env=python_env(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1"),
    )
    assert result.returncode != 0
    assert "no Kafka broker answered at 127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


def test_end_offsets_are_the_true_ends_of_batched_partitions_call_after_call(kafka_settings):
    """Batches of thousands of records in every partition: each call on the same consumer
    answers every partition's true end, also after more records came."""
    topic = kafka_settings.orders_topic
    producer = kafka_io.make_producer(kafka_settings, linger_ms=50, batch_size=256 * 1024)
    consumer = kafka_io.make_consumer(kafka_settings)
    try:
        partitions = kafka_io.partitions_of(consumer, topic)
        sent = dict.fromkeys(partitions, 0)
        for round_size in (3000, 2000):
            for i in range(round_size * len(partitions)):
                partition = partitions[i % len(partitions)]
                producer.send(topic, value=b'{"x": %d}' % i, partition=partition)
                sent[partition] += 1
            producer.flush()
            assert kafka_io.end_offsets(consumer, topic, partitions) == sent
    finally:
        producer.close()
        consumer.close()


def test_topics_are_created_with_their_retention(kafka_settings):
    """Each topic is created with the retention.ms its setting gives."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_list)
    try:
        expected = {spec.name: spec.configs["retention.ms"] for spec in topic_specs(kafka_settings)}
        assert expected[kafka_settings.orderbook_topic] == str(kafka_settings.orderbook_retention_ms)
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in expected],
                                           config_filter="all")
        found = {name: configs["retention.ms"]["value"] for name, configs in described["topic"].items()}
        assert found == expected
    finally:
        admin.close()
