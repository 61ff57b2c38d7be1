"""The job's Kafka consumers, one per process and client configuration: the read tasks'
(``lean``, records as tuples) and the driver's publisher's (it reads the tails of the
topics it writes and the dead letters' original bytes). Spark reuses Python workers
across batches, and connecting costs tens of milliseconds: a cache of connections only,
nothing here is state."""

from __future__ import annotations

from typing import Mapping

from marketstream.kafka_io import FULL_FETCHES

# Keyed by everything that makes the client; at most one per (bootstrap, lean, security)
# a process uses: a handful.
_CONSUMERS: dict[tuple, object] = {}


def _security_key(security: Mapping[str, str] | None) -> tuple:
    return tuple(sorted((security or {}).items()))


def cached_consumer(bootstrap: str, lean: bool = False, security: Mapping[str, str] | None = None):
    """The process's read_committed consumer for ``bootstrap``. ``lean``: records as
    ``(offset, timestamp, value)`` tuples (``source.record_decoder``), what the read tasks
    take; else kafka-python's ``ConsumerRecord`` objects (keys, headers). ``security``:
    ``kafka_io.security_options`` (TLS/SASL), as the executors get them."""
    from kafka import KafkaConsumer

    from marketstream.kafka_io import client_security
    from marketstream.spark.source.record_decoder import lean_consumer

    key = (bootstrap, lean, _security_key(security))
    consumer = _CONSUMERS.get(key)
    if consumer is None:
        consumer = (lean_consumer if lean else KafkaConsumer)(
            bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
            # Never a silent jump: a range retention deleted fails the read (RangeNotOnBroker).
            auto_offset_reset="none",
            # Orders of aborted transactions never enter the book; transaction markers are skipped.
            isolation_level="read_committed",
            fetch_max_wait_ms=50, max_partition_fetch_bytes=8 * 1024 * 1024, **FULL_FETCHES,
            **client_security(security or {}),
        )
        _CONSUMERS[key] = consumer
    return consumer


def close_all() -> None:
    """Close and forget every cached consumer (a process that outlives its broker: tests)."""
    for consumer in _CONSUMERS.values():
        consumer.close()
    _CONSUMERS.clear()
