"""The Apache Kafka test broker itself: it starts from the pinned jars, and the platform's
readers and topic creation work on it with several partitions (its ListOffsets is right,
so the fetch-high-watermark reads must agree with it)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_topics_and_reads_on_apache_kafka(kafka_settings):
    from kafka import KafkaConsumer, TopicPartition

    from marketstream.kafka_io import make_producer, read_range, topic_end_offsets

    settings = kafka_settings
    topic = settings.orders_topic
    producer = make_producer(settings)
    for i in range(300):
        producer.send(topic, key=str(i % 7).encode(), value=f"event-{i}".encode(), partition=i % 3)
    producer.flush()
    producer.close()

    ends = topic_end_offsets(settings, topic)
    assert ends == {0: 100, 1: 100, 2: 100}
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list)
    listed = consumer.end_offsets([TopicPartition(topic, p) for p in ends])
    consumer.close()
    assert {tp.partition: o for tp, o in listed.items()} == ends  # ListOffsets agrees on Apache Kafka
    values = sorted(r.value.decode() for r in read_range(settings, topic))
    assert values == sorted(f"event-{i}" for i in range(300))
