"""Each long-running process of the stream answers /metrics with figures that move,
scraped during a live run: the order emulator, the trade listener and the trade loader as
the processes `make run` starts, a real Apache Kafka broker, the exchange emulator, PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from marketstream.energy.background import BackgroundLoop
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from tests.energy_support import Service, private_schema, settings_env
from tests.support import ROOT, free_port, python_env, wait_for

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    """Unlabelled samples by name, labelled ones summed (e.g. dead letters over reason codes)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def answering(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@pytest.fixture
def pg_url(postgres_url):
    with private_schema(postgres_url) as url:
        yield url


def test_each_process_serves_moving_figures(kafka_settings, pg_url, tmp_path):
    ports = {"producer": free_port(), "listener": free_port(), "loader": free_port()}
    with BackgroundLoop() as loop:
        exchange = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=300, seed=3, malformed_probability=0.1))
        loop.run(exchange.start())
        settings = kafka_settings.model_copy(update={
            "database_url": SecretStr(pg_url), "exchange_ws_url": f"ws://127.0.0.1:{exchange.port}"})
        producer_log = (tmp_path / "producer.log").open("w")
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer", "--bootstrap-servers", settings.kafka_bootstrap_servers,
             "--topic", settings.orders_topic, "--seed", "4"],
            cwd=ROOT, env=python_env(PRODUCER_METRICS_PORT=str(ports["producer"])),
            stdout=producer_log, stderr=subprocess.STDOUT)
        listener = Service("listener", settings_env(settings, LISTENER_METRICS_PORT=str(ports["listener"])),
                           tmp_path / "listener.log")
        loader = Service("loader", settings_env(settings, LOADER_METRICS_PORT=str(ports["loader"])),
                         tmp_path / "loader.log")
        try:
            for name, port in ports.items():
                wait_for(lambda port=port: answering(port), 30, what=f"the {name}'s /metrics")
            wait_for(lambda: scrape(ports["loader"]).get("marketstream_loader_deals_stored_total", 0) >= 2, 60,
                     what="the first deals stored")
            first = {name: scrape(port) for name, port in ports.items()}
            time.sleep(4)
            second = {name: scrape(port) for name, port in ports.items()}
        finally:
            producer.terminate()
            producer.wait(15)
            producer_log.close()
            listener.stop()
            loader.stop()
            loop.run(exchange.stop())

    def moved(process: str, name: str) -> float:
        return second[process][name] - first[process][name]

    # The order emulator: 100 events/s by default, acknowledged by the broker.
    assert moved("producer", "marketstream_producer_events_sent_total") >= 200
    assert second["producer"]["marketstream_producer_target_events_per_second"] == 100
    assert second["producer"]["marketstream_producer_live_orders"] > 0
    assert second["producer"]["marketstream_producer_event_seconds_since_last"] < 2
    assert second["producer"]["marketstream_producer_events_failed_total"] == 0
    assert "process_resident_memory_bytes" in second["producer"]  # the client's process figures too
    # The listener: 5 deals/s from the exchange, about a tenth of them malformed.
    assert moved("listener", "marketstream_listener_deals_received_total") >= 10
    assert moved("listener", "marketstream_listener_deals_produced_total") >= 8
    assert second["listener"]["marketstream_listener_deals_dead_lettered_total"] >= 1
    assert second["listener"]["marketstream_listener_connected"] == 1
    assert second["listener"]["marketstream_listener_deal_seconds_since_last"] < 3
    # The loader: what the listener produced, stored.
    assert moved("loader", "marketstream_loader_deals_stored_total") >= 8
    assert moved("loader", "marketstream_loader_deals_consumed_total") >= 8
    assert second["loader"]["marketstream_loader_deal_seconds_since_last"] < 3
    assert second["loader"]["marketstream_loader_lag_deals"] >= 0
    assert second["loader"]["marketstream_loader_deals_dead_lettered_total"] == 0  # the listener validated them
