"""``make run``'s broker as its supervisor runs it: ``python -m marketstream.embedded.broker``
starts Apache Kafka in the foreground on the configured loopback address, keeps its topics
across a restart, stops on SIGTERM, and will not start a second broker on a taken address."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from marketstream.kafka_io import make_producer, read_range, wait_until_ready
from marketstream.settings import load_settings
from marketstream.topics import ensure_topics
from tests.support import ROOT, free_port, python_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def start(env):
    return subprocess.Popen([sys.executable, "-m", "marketstream.embedded.broker"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def test_the_embedded_broker_keeps_its_topics_across_a_restart(tmp_path):
    port, controller = free_port(), free_port()
    env = python_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", EMBEDDED_KAFKA_DIR=str(tmp_path / "kafka"),
                     EMBEDDED_KAFKA_CONTROLLER_PORT=str(controller), ORDERS_TOPIC="orders-kept")
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", orders_topic="orders-kept")
    broker = start(env)
    try:
        wait_until_ready(settings, timeout_s=90)
        ensure_topics(settings)
        producer = make_producer(settings)
        for i in range(10):
            producer.send(settings.orders_topic, f"order-{i}".encode())
        producer.flush()
        producer.close()

        second = start(env)  # the address is taken: it says so and exits
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 1 and "a broker already answers" in output

        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        own = [line for line in listening.splitlines() if f"pid={broker.pid}," in line]
        local = [line.split()[3] for line in own]  # the local address column
        assert local and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in local), own  # loopback only
    finally:
        stop(broker)
    assert (tmp_path / "kafka").stat().st_mode & 0o077 == 0  # the data is its user's only

    broker = start(env)
    try:
        wait_until_ready(settings, timeout_s=90)
        kept = sorted(r.value for r in read_range(settings, settings.orders_topic))
        assert kept == sorted(f"order-{i}".encode() for i in range(10))
    finally:
        stop(broker)
    assert broker.returncode in (0, 143, -signal.SIGTERM)
