"""Shared fixtures: one Apache Kafka node for the test session (the embedded broker of
``make run``, started here on free ports with plaintext, TLS and SASL_SSL listeners),
settings pointing at it, and a PostgreSQL server started for the session. Integration
tests create uniquely named topics so they never see each other's data."""

from __future__ import annotations

import os
import uuid

import pytest

from marketstream.settings import Settings, load_settings

# Tests write records stamped days or months back (the fixtures' dates, chosen seconds):
# Apache Kafka's retention would delete them at once. Topics the tests create keep their
# records; a test of retention itself says so explicitly.
for _topic in ("ORDERS", "ORDERBOOK", "DEADLETTER", "METRICS", "DEALS"):
    os.environ.setdefault(f"{_topic}_RETENTION_MS", "-1")
# Likewise the exports of those dates: kept (0: for ever) unless a test of retention says otherwise.
os.environ.setdefault("EXPORT_RETENTION_DAYS", "0")
os.environ.setdefault("EXPORT_ROLLUP_RETENTION_DAYS", "0")


@pytest.fixture(scope="session")
def broker_bootstrap(apache_kafka) -> str:
    """The session's broker (its plaintext listener)."""
    return apache_kafka.bootstrap


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory):
    """One Apache Kafka node (KRaft) for the whole test session: a plaintext listener, a TLS
    listener and a SASL_SSL listener with a SCRAM-SHA-512 user (``SCRAM_USER``)."""
    from marketstream.embedded.apache_kafka import ApacheKafka
    from tests.support import SCRAM_USER

    kafka = ApacheKafka(tmp_path_factory.mktemp("apache-kafka") / "node", tls=True,
                        scram_users={SCRAM_USER[0]: SCRAM_USER[1]})
    kafka.start(timeout_s=120)
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


def _private_settings(bootstrap: str, unique: str, tmp_path, **extra) -> Settings:
    from marketstream.topics import ensure_topics

    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        orders_topic=f"orders-{unique}",
        orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}",
        metrics_topic=f"metrics-{unique}",
        deals_topic=f"deals-{unique}",
        deals_deadletter_topic=f"deals-dlq-{unique}",
        spark_checkpoint_dir=tmp_path / "checkpoint",
        export_dir=tmp_path / "exports",
        **extra,
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def kafka_settings(broker_bootstrap, unique, tmp_path) -> Settings:
    """Settings on the test broker with topic names and paths private to this test; topics
    are created (with the project's own code) before the test starts."""
    return _private_settings(broker_bootstrap, unique, tmp_path)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """``TEST_POSTGRES_URL`` when set, else a throwaway server started for this session
    (tests/postgres_server.py); tests fail, not skip, when neither is possible."""
    import os

    import sqlalchemy

    from tests.postgres_server import ThrowawayPostgres

    server = None
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        server = ThrowawayPostgres()
        url = server.start()
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        yield url
    finally:
        if server is not None:
            server.stop()
