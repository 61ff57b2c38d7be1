"""Shared fixtures: the two real brokers, each started once per session on free ports, settings
pointing at them, and a PostgreSQL server started for the session. Integration tests create
uniquely named topics so they never see each other's data.

Which broker: tests whose subject is broker behaviour (transactions and read_committed,
retention and DeleteRecords, compression codecs, TLS and SASL) run against Apache Kafka
(``apache_kafka``, ``apache_kafka_settings``), which implements them; the rest run against
the embedded Tansu broker (``kafka_settings``), which starts in a fraction of a second and
is what ``make run`` uses."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from marketstream.settings import Settings, load_settings
from tests.support import free_port


@pytest.fixture(scope="session")
def broker_bootstrap(tmp_path_factory) -> str:
    """A real Tansu broker (memory storage) for the whole test session."""
    from marketstream.embedded.broker import tansu_command
    from marketstream.kafka_io import wait_until_ready

    port = free_port()
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{port}")
    log = (tmp_path_factory.mktemp("tansu") / "tansu.log").open("w")
    process = subprocess.Popen(tansu_command(settings), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(settings, timeout_s=30)
        yield settings.kafka_bootstrap_servers
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


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
    """Settings on the Tansu test broker with topic names and paths private to this test;
    topics are created (with the project's own code) before the test starts."""
    return _private_settings(broker_bootstrap, unique, tmp_path)


@pytest.fixture
def apache_kafka_settings(apache_kafka, unique, tmp_path) -> Settings:
    """``kafka_settings`` on the Apache Kafka test broker (plaintext listener)."""
    return _private_settings(apache_kafka.bootstrap, unique, tmp_path)


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
