"""Hostile input for the power desk, all real: a websocket server that sends hostile
messages, the listener and loader as the processes `make run` starts, an Apache Kafka
broker, PostgreSQL. Every hostile message becomes a dead letter with its reason code, every
valid deal around them is stored once, and nothing stops or wedges."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from marketstream.deadletter import MAX_VALUE_BYTES, DeadLetter
from marketstream.energy.background import BackgroundLoop
from marketstream.energy.deals import MAX_DEAL_BYTES, DealReasonCode
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from marketstream.kafka_io import make_producer, read_range
from tests.energy_support import Service, db_deal_ids, private_schema, settings_env
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration
C = DealReasonCode


@pytest.fixture
def pg_url(postgres_url):
    with private_schema(postgres_url) as url:
        yield url


def deal(deal_id: str, **extra) -> dict:
    return {"deal_confirmation": {
        "id": deal_id, "price": 20.5, "quantity": 1.5, "direction": "buy", "delivery_day": "2026-11-23",
        "delivery_hour": "10-11", "trader_id": "flex_trader_1", "execution_time": "2026-11-22T09:00:00+00:00",
        **extra,
    }}


def deal_text(deal_id: str, **extra) -> str:
    return json.dumps(deal(deal_id, **extra))


def letters(settings) -> list[DeadLetter]:
    return [DeadLetter.from_record(r.value, r.headers) for r in read_range(settings, settings.deals_deadletter_topic)]


def scrape(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class ScriptedExchange:
    """A websocket server that sends each new connection the next script of messages (text
    or bytes), then keeps it open without sending more."""

    def __init__(self, loop: BackgroundLoop, scripts: list[list]):
        self.loop, self.scripts, self.connections = loop, list(scripts), 0
        self.server = loop.run(self._start())
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _start(self):
        from websockets.asyncio.server import serve

        return await serve(self._handle, "127.0.0.1", 0, max_size=None)

    async def _handle(self, connection) -> None:
        self.connections += 1
        script = self.scripts.pop(0) if self.scripts else []
        for message in script:
            await connection.send(message)
        await connection.wait_closed()

    def close(self) -> None:
        self.server.close()
        self.loop.run(self.server.wait_closed())


def test_hostile_messages_are_dead_lettered_and_the_deals_around_them_stored(
        kafka_settings, pg_url, tmp_path):
    one_mb_valid_deal = deal_text("big", note="x" * 1_000_000)  # valid but for its size
    deep_100k = '{"deal_confirmation": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    deep_2000 = '{"deal_confirmation": {"x": ' + "[" * 2000 + "]" * 2000 + "}}"
    price_overflow = deal_text("p", price="@").replace('"@"', "1e999999999")
    garbage = bytes(range(256)) * 4  # a binary frame, not UTF-8
    over_the_frame_limit = "x" * (2 * MAX_VALUE_BYTES)  # the websocket library closes the connection
    scripts = [
        ["ok-1", price_overflow, deep_100k, deep_2000, one_mb_valid_deal, garbage, "ok-2", over_the_frame_limit],
        ["ok-3"],  # after the reconnect
    ]
    expected_codes = [C.OUT_OF_RANGE, C.TOO_LARGE, C.TOO_DEEP, C.TOO_LARGE, C.NOT_UTF8, C.FRAME_TOO_LARGE]
    scripts = [[deal_text(m) if m in ("ok-1", "ok-2", "ok-3") else m for m in script] for script in scripts]

    # Records only a foreign writer can put on the deals topic (one whose operator raised its
    # max.message.bytes): the loader's side.
    from kafka.admin import ConfigResource, ConfigResourceType

    from marketstream.kafka_io import make_admin

    admin = make_admin(kafka_settings)
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, kafka_settings.deals_topic,
                                        configs={"max.message.bytes": str(4 * MAX_VALUE_BYTES)})])
    admin.close()
    foreign = make_producer(kafka_settings, max_request_size=4 * MAX_VALUE_BYTES)
    too_big_for_a_letter = b"y" * (MAX_VALUE_BYTES + 500_000)
    for value in (too_big_for_a_letter, b"\xff\xfe", deal_text("ok-4").encode(), b"[" * 5000):
        foreign.send(kafka_settings.deals_topic, value=value).get(timeout=30)
    foreign.close()

    with BackgroundLoop() as loop:
        exchange = ScriptedExchange(loop, scripts)
        settings = kafka_settings.model_copy(update={"database_url": SecretStr(pg_url), "exchange_ws_url": exchange.url})
        listener_port, loader_port = free_port(), free_port()
        listener = Service("listener", settings_env(settings, LISTENER_METRICS_PORT=str(listener_port)),
                           tmp_path / "listener.log")
        loader = Service("loader", settings_env(settings, LOADER_METRICS_PORT=str(loader_port)),
                         tmp_path / "loader.log")
        try:
            wait_for(lambda: db_deal_ids(pg_url) == ["ok-1", "ok-2", "ok-3", "ok-4"], 60,
                     what="the valid deals in the database")
            wait_for(lambda: len(letters(settings)) >= len(expected_codes) + 3, 30, what="the dead letters")
            found = letters(settings)
            assert listener.alive() and loader.alive()
            assert exchange.connections == 2  # one reconnect: after the over-size frame
        finally:
            listener_metrics, loader_metrics = scrape(listener_port), scrape(loader_port)
            listener.stop()
            loader.stop()
            exchange.close()

    from_listener = [letter for letter in found if letter.source == exchange.url]
    assert [letter.code for letter in from_listener] == expected_codes
    sent_hostile = [price_overflow, deep_100k, deep_2000, one_mb_valid_deal, garbage]
    assert [letter.value for letter in from_listener[:5]] == [
        m if isinstance(m, bytes) else m.encode() for m in sent_hostile]  # the original bytes, whole
    assert from_listener[5].value == b"" and "was not read" in from_listener[5].reason
    assert "price out of range" in from_listener[0].reason and "1e999999999" in from_listener[0].reason
    assert f"over the {MAX_DEAL_BYTES:,}-byte limit" in from_listener[1].reason
    for code in set(expected_codes):
        assert listener_metrics[("marketstream_listener_deals_dead_lettered_total", (("reason_code", code),))] == \
            expected_codes.count(code)
    assert listener_metrics[("marketstream_listener_deals_produced_total", ())] == 3
    assert listener_metrics[("marketstream_listener_deals_received_total", ())] == 8

    from_loader = [letter for letter in found if letter.source_topic == settings.deals_topic]
    assert [letter.code for letter in from_loader] == [C.TOO_LARGE, C.NOT_UTF8, C.TOO_LARGE]
    cut = from_loader[0]
    assert cut.value == too_big_for_a_letter[:MAX_VALUE_BYTES]  # bounded, and it says so and where
    assert "value cut to 1,048,576 of 1,548,576 bytes" in cut.reason and f"{settings.deals_topic}[0]@0" in cut.reason
    assert loader_metrics[("marketstream_loader_deals_dead_lettered_total", (("reason_code", "too_large"),))] == 2
    assert loader_metrics[("marketstream_loader_deals_stored_total", ())] == 4


def test_a_record_the_producer_refuses_is_dead_lettered_at_once_not_retried(kafka_settings):
    """A record the topic refuses (MessageSizeTooLarge) is dead-lettered, not retried forever.
    A deals producer whose limit is below a (valid, 2 KB) deal stands in for a topic that
    takes less than the contract allows (the producer's own check raises the broker's error)."""
    from marketstream.energy.listener import TradeListener

    small = make_producer(kafka_settings, enable_idempotence=True, acks="all", linger_ms=0, max_request_size=1024)
    listener = TradeListener(kafka_settings, producer=small)
    try:
        started = time.monotonic()
        padded = deal_text("padded", note="x" * 2000)
        assert listener.handle(padded) is None
        assert time.monotonic() - started < 5
        assert listener.handle(deal_text("small")) == "small"  # not wedged: the next deal goes through
    finally:
        listener.close()
    [letter] = letters(kafka_settings)
    assert letter.code == C.TOO_LARGE_FOR_TOPIC and letter.value == padded.encode()
    assert "refused the record" in letter.reason and "MessageSizeTooLargeError" in letter.reason
    assert [r.key for r in read_range(kafka_settings, kafka_settings.deals_topic)] == [b"small"]
    assert listener.metrics.value("marketstream_listener_deals_dead_lettered_total",
                                  reason_code="too_large_for_topic") == 1


def test_an_exchange_that_closes_at_once_is_reconnected_to_at_a_bounded_rate_then_deals_are_stored(
        kafka_settings, pg_url, tmp_path):
    """Against an exchange that accepts and closes at once (1011), a reconnect loop without
    backoff makes about a thousand connections a second. Expected: a handful, one every
    EXCHANGE_RECONNECT_MAX_SECONDS at most, no crash; once the exchange recovers, every
    deal it sends is stored."""
    with BackgroundLoop() as loop:
        exchange = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=600, seed=5))
        exchange.closing_at_once = True
        loop.run(exchange.start())
        settings = kafka_settings.model_copy(update={
            "database_url": SecretStr(pg_url), "exchange_ws_url": f"ws://127.0.0.1:{exchange.port}"})
        listener_port = free_port()
        listener = Service("listener", settings_env(settings, LISTENER_METRICS_PORT=str(listener_port)),
                           tmp_path / "listener.log")
        loader = Service("loader", settings_env(settings), tmp_path / "loader.log")
        try:
            wait_for(lambda: exchange.stats.connections_opened >= 1, 30, what="the listener's first attempt")
            first_at = time.monotonic()
            time.sleep(8)
            attempts = exchange.stats.connections_opened
            window = time.monotonic() - first_at
            assert listener.alive()
            # ~5 in the first 2 s, then one per 2 s: ~8 in 8 s (vs thousands without backoff).
            assert attempts <= 6 + window / 2, (attempts, window)
            metrics = scrape(listener_port)
            assert metrics[("marketstream_listener_short_connections_total", ())] >= attempts - 1
            assert metrics[("marketstream_listener_connected", ())] == 0

            exchange.closing_at_once = False
            wait_for(lambda: exchange.open_connections == 1, 10, what="the listener to reconnect after recovery")
            wait_for(lambda: exchange.stats.deals_sent >= 20, 30, what="deals after the recovery")
            exchange.paused = True
            time.sleep(0.5)
            sent = sorted(d.deal_id for d in exchange.stats.sent)
            wait_for(lambda: db_deal_ids(pg_url) == sent, 30, what="every deal sent after the recovery stored")
            metrics = scrape(listener_port)
            assert metrics[("marketstream_listener_connected", ())] == 1
            assert metrics[("marketstream_listener_reconnects_total", ())] == exchange.stats.connections_opened - 1
            assert listener.alive() and loader.alive()
        finally:
            listener.stop()
            loader.stop()
            loop.run(exchange.stop())


def test_a_deal_waits_for_a_broker_that_is_away_and_is_not_dead_lettered(unique, tmp_path):
    """Broker trouble is not the deal's fault: the listener keeps it (creating its producer
    included) until a broker answers, then produces it; nothing is dead-lettered."""
    import threading

    from marketstream.energy.listener import TradeListener
    from marketstream.settings import load_settings
    from tests.energy_support import Broker

    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", deals_topic=f"deals-{unique}",
                             deals_deadletter_topic=f"deals-dlq-{unique}")
    listener = TradeListener(settings)
    outcome: dict = {}
    handling = threading.Thread(target=lambda: outcome.update(deal_id=listener.handle(deal_text("waited"))),
                                daemon=True)
    handling.start()
    time.sleep(4)
    assert handling.is_alive()  # still waiting for the broker, not dead-lettered
    broker = Broker(settings, tmp_path / "kafka")
    try:
        handling.join(120)
        assert outcome == {"deal_id": "waited"}
        assert [r.key for r in read_range(settings, settings.deals_topic)] == [b"waited"]
        assert letters(settings) == []
    finally:
        listener.close()
        broker.stop()
