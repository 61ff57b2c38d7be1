"""The platform's Kafka clients on secured listeners of the Apache Kafka test broker: TLS
(``SSL``, the broker verified with the test CA) and SASL_SSL with SCRAM-SHA-512. Every test
runs on both: topic creation, the order emulator, the readers behind exports and health,
and the energy listener and loader, each configured by the ``KAFKA_*`` settings alone;
and the order-book job with either connector on the SASL_SSL listener."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from marketstream import kafka_io
from marketstream.settings import Settings, load_settings
from tests.support import ROOT, SCRAM_USER, python_env, wait_for

pytestmark = pytest.mark.integration


def security_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess ``settings``' Kafka connection."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
           "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile}
    if settings.kafka_sasl_mechanism:
        env.update(KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism, KAFKA_SASL_USERNAME=settings.kafka_sasl_username,
                   KAFKA_SASL_PASSWORD=settings.kafka_sasl_password.get_secret_value())
    return env


def secured(kafka, protocol: str, **extra) -> dict:
    """Settings (as keyword arguments) for ``kafka``'s listener of ``protocol``."""
    if protocol == "SSL":
        return dict(kafka_bootstrap_servers=kafka.tls_bootstrap, kafka_security_protocol="SSL",
                    kafka_ssl_cafile=str(kafka.ca_file), **extra)
    return dict(kafka_bootstrap_servers=kafka.sasl_bootstrap, kafka_security_protocol="SASL_SSL",
                kafka_ssl_cafile=str(kafka.ca_file), kafka_sasl_mechanism="SCRAM-SHA-512",
                kafka_sasl_username=SCRAM_USER[0], kafka_sasl_password=SCRAM_USER[1], **extra)


@pytest.fixture(params=["SSL", "SASL_SSL"])
def secured_settings(request, apache_kafka, unique, tmp_path) -> Settings:
    """Private topics, created over the secured listener (the project's own topic creation)."""
    from tests.conftest import _private_settings

    kwargs = secured(apache_kafka, request.param)
    return _private_settings(kwargs.pop("kafka_bootstrap_servers"), unique, tmp_path, **kwargs)


def test_topics_are_created_over_the_secured_listener(secured_settings):
    from marketstream.topics import ensure_topics, topic_specs

    assert set(ensure_topics(secured_settings).values()) == {False}  # the fixture created them
    admin = kafka_io.make_admin(secured_settings)
    try:
        described = {t["name"]: t for t in admin.describe_topics([s.name for s in topic_specs(secured_settings)])}
    finally:
        admin.close()
    for spec in topic_specs(secured_settings):
        partitions = described[spec.name]["partitions"]
        assert len(partitions) == spec.partitions
        assert all(len(p["replica_nodes"]) == 1 for p in partitions)  # KAFKA_TOPIC_REPLICATION_FACTOR=1


def test_the_order_emulator_publishes_and_the_readers_read_back(secured_settings):
    from marketstream.health import collect

    settings = secured_settings
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--topic", settings.orders_topic, "--max-events", "300",
         "--events-per-tick", "100", "--tick-seconds", "0.05", "--seed", "7"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=python_env(**security_env(settings)),
    )
    assert result.returncode == 0, result.stderr
    if settings.kafka_sasl_mechanism:
        assert SCRAM_USER[1] not in result.stdout + result.stderr

    ends = kafka_io.topic_end_offsets(settings, settings.orders_topic)
    assert sum(ends.values()) == 300
    events = list(kafka_io.read_range(settings, settings.orders_topic))
    assert len(events) == 300 and all(e.value.startswith(b"{") for e in events)

    # The health check's reads: offsets by time and the metrics range (one unreadable record).
    producer = kafka_io.make_producer(settings)
    producer.send(settings.metrics_topic, b"not a metrics record")
    producer.flush()
    producer.close()
    report = collect(settings)
    assert report.bad_metrics == 1
    assert any("no snapshot has ever been published" in p for p in report.problems)


def test_the_energy_listener_and_loader(secured_settings, tmp_path):
    from marketstream.energy.background import BackgroundLoop
    from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
    import sqlalchemy as sa

    from tests.energy_support import Service, db_deal_ids

    database_url = f"sqlite:///{tmp_path / 'energy.db'}"

    def stored() -> list[str]:
        try:
            return db_deal_ids(database_url)
        except sa.exc.OperationalError:  # SQLite's "no such table": not migrated yet
            return []

    with BackgroundLoop() as loop:
        exchange = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=600, seed=3, malformed_probability=0))
        loop.run(exchange.start())
        env = python_env(**security_env(secured_settings), DEALS_TOPIC=secured_settings.deals_topic,
                         DEALS_DEADLETTER_TOPIC=secured_settings.deals_deadletter_topic, DATABASE_URL=database_url,
                         EXCHANGE_WS_URL=f"ws://127.0.0.1:{exchange.port}", LISTENER_METRICS_PORT="0",
                         LOADER_METRICS_PORT="0")
        listener = Service("listener", env, tmp_path / "listener.log")
        loader = Service("loader", env, tmp_path / "loader.log")
        try:
            wait_for(lambda: len(stored()) >= 10, 60, what="deals through Kafka into the database")
            exchange.paused = True
            time.sleep(1)
            listener.stop()
            sent = sorted({d.deal_id for d in exchange.stats.sent})
            wait_for(lambda: stored() == sent, 30, what="every sent deal in the database")
            on_topic = kafka_io.read_range(secured_settings, secured_settings.deals_topic)
            assert len({r.key for r in on_topic}) == len(sent)
        finally:
            for service in (listener, loader):
                service.stop()
            loop.run(exchange.stop())
        logs = listener.log_text() + loader.log_text()
        if secured_settings.kafka_sasl_mechanism:
            assert SCRAM_USER[1] not in logs


def test_a_replication_factor_the_cluster_cannot_give_is_refused_naming_the_setting(apache_kafka, unique):
    from marketstream.topics import TopicCreationError, ensure_topics

    settings = load_settings(**secured(apache_kafka, "SASL_SSL", orders_topic=f"orders-{unique}",
                                       kafka_topic_replication_factor=2))
    with pytest.raises(TopicCreationError) as caught:
        ensure_topics(settings)
    message = str(caught.value)
    assert f"'orders-{unique}'" in message and "KAFKA_TOPIC_REPLICATION_FACTOR=2" in message
    assert "only 1 broker(s)" in message  # the broker's reason

    # The command the compose init service and `make run` use: one line, exit status 1.
    env = python_env(**security_env(settings), ORDERS_TOPIC=f"orders-cli-{unique}", KAFKA_TOPIC_REPLICATION_FACTOR="2")
    result = subprocess.run([sys.executable, "-m", "marketstream.topics", "--timeout", "30"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120, env=env)
    assert result.returncode == 1 and "KAFKA_TOPIC_REPLICATION_FACTOR=2" in result.stderr
    assert "Traceback" not in result.stderr and SCRAM_USER[1] not in result.stderr


def test_wrong_credentials_or_an_unknown_ca_say_what_to_check(apache_kafka, tmp_path):
    from marketstream.embedded.apache_kafka import make_certificate_authority

    wrong_password = load_settings(**{**secured(apache_kafka, "SASL_SSL"), "kafka_sasl_password": "not-it-" + unique_word()})
    with pytest.raises(TimeoutError) as caught:
        kafka_io.wait_until_ready(wrong_password, timeout_s=4)
    message = str(caught.value)
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL" in message and "KAFKA_SASL_PASSWORD" in message
    assert wrong_password.kafka_sasl_password.get_secret_value() not in message

    other_ca, _ = make_certificate_authority(tmp_path / "other-ca")
    untrusted = load_settings(**{**secured(apache_kafka, "SSL"), "kafka_ssl_cafile": str(other_ca)})
    with pytest.raises(TimeoutError) as caught:
        kafka_io.wait_until_ready(untrusted, timeout_s=4)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) and "KAFKA_SSL_CAFILE" in str(caught.value)


def unique_word() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def test_the_embedded_broker_will_not_start_for_secured_settings():
    result = subprocess.run([sys.executable, "-m", "marketstream.embedded.broker"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, env=python_env(KAFKA_SECURITY_PROTOCOL="SSL"))
    assert result.returncode == 1
    assert "serves PLAINTEXT only" in result.stderr and "KAFKA_SECURITY_PROTOCOL=SSL" in result.stderr


@pytest.mark.timeout(600)
@pytest.mark.parametrize("connector", ["python", "jvm"])
def test_the_order_book_job_runs_over_sasl_ssl_with_either_connector(connector, apache_kafka, unique, tmp_path):
    """The whole job on the SCRAM listener: the Python source's executors get the security
    options, Spark's own connector ``spark_kafka_options``, the publisher and the metrics
    listener the client settings; the book it publishes is the exact replay."""
    from marketstream.orderbook.events import event_to_json
    from producer.flow import OrderFlow
    from tests.conftest import _private_settings
    from tests.spark_job import Job, assert_exact_and_one_per_second, snapshots
    from tests.support import ARTIFACTS

    kwargs = secured(apache_kafka, "SASL_SSL")
    settings = _private_settings(kwargs.pop("kafka_bootstrap_servers"), unique, tmp_path, spark_kafka_connector=connector,
                                 spark_ui_enabled=False, orderbook_state_partitions=2, book_depth=10,
                                 orderbook_metrics_port=0, spark_index_dir=tmp_path / "index", **kwargs)
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT"], seed=4, first_order_id=1)
    producer = kafka_io.make_producer(settings)
    for _ in range(500):
        producer.send(settings.orders_topic, event_to_json(flow.next_event(int(time.time()))).encode())
    producer.flush()
    producer.close()
    ARTIFACTS.mkdir(exist_ok=True)
    job = Job(settings, ARTIFACTS / f"job-sasl-ssl-{connector}.log")
    job.log_path.write_text("")
    job.start()
    try:
        records = list(kafka_io.read_range(settings, settings.orders_topic))
        ends = {}
        for record in records:
            ends[record.partition] = record.offset + 1
        wait_for(lambda: job.assert_alive() or any(m.input_offsets == ends for m in snapshots(settings)), 240,
                 interval_s=1.0, what="a snapshot of all the input over SASL_SSL")
        time.sleep(3)
        assert assert_exact_and_one_per_second(settings, snapshots(settings), records, 10) >= 3
        metrics = list(kafka_io.read_range(settings, settings.metrics_topic))
        assert metrics, "the metrics listener published over SASL_SSL too"
        assert SCRAM_USER[1] not in job.log_path.read_text()
    finally:
        job.stop()
