"""Exchange emulator → listener → deals topic → loader → PostgreSQL, all real: every deal
the exchange sent lands in the database once, through loader kills, 20 forced
disconnects, malformed messages and a database outage."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from marketstream.deadletter import DeadLetter
from marketstream.energy import db
from marketstream.energy.background import BackgroundLoop
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from marketstream.kafka_io import read_range
from tests.energy_support import Service, TcpProxy, db_deal_ids, private_schema, settings_env
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url(postgres_url):
    with private_schema(postgres_url) as url:
        yield url


@pytest.fixture
def exchange():
    with BackgroundLoop() as loop:
        emulator = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=600, seed=11, malformed_probability=0.05))
        loop.run(emulator.start())
        emulator.loop = loop
        yield emulator
        loop.run(emulator.stop())


def test_every_sent_deal_lands_once(kafka_settings, pg_url, exchange, tmp_path):
    settings = kafka_settings.model_copy(update={
        "database_url": SecretStr(pg_url), "exchange_ws_url": f"ws://127.0.0.1:{exchange.port}",
    })
    # Connections here live 0.3 s between forced drops: count that as a healthy connection,
    # so each drop is a reconnect at once (short-lived ones back off: test_energy_hostile.py).
    env = settings_env(settings, EXCHANGE_RECONNECT_RESET_SECONDS="0.2")
    listener = Service("listener", env, tmp_path / "listener.log")
    loader = Service("loader", env, tmp_path / "loader.log")
    try:
        wait_for(lambda: exchange.open_connections == 1, 20, what="the listener to connect")
        wait_for(lambda: len(db_deal_ids(pg_url)) >= 20, 30, what="first deals in the database")

        # Kill the loader mid-stream (no goodbye), let deals pile up in Kafka, restart it.
        loader.kill()
        time.sleep(2)
        loader = Service("loader", env, tmp_path / "loader.log")

        # 20 forced disconnects: each time the listener must be back within 5 s.
        reconnect_seconds = []
        for _ in range(20):
            before = exchange.stats.connections_opened
            dropped_at = time.time()
            assert exchange.loop.run(exchange.drop_all()) == 1
            wait_for(lambda before=before: exchange.stats.connections_opened > before and exchange.open_connections == 1,
                     5, interval_s=0.01, what="the listener to reconnect")
            reconnect_seconds.append(exchange.stats.connect_times[-1] - dropped_at)
            time.sleep(0.3)
        assert max(reconnect_seconds) < 5

        time.sleep(2)
        exchange.paused = True  # no deal in flight while the listener stops
        time.sleep(0.5)
        listener.stop()
        sent = [d.deal_id for d in exchange.stats.sent]
        assert len(sent) >= 100
        wait_for(lambda: len(db_deal_ids(pg_url)) >= len(set(sent)), 30, what="every sent deal in the database")
        stored = db_deal_ids(pg_url)
        assert sorted(stored) == sorted(set(sent)) and len(set(sent)) == len(sent)

        # The topic holds each deal once too (idempotent producer, no duplicate sends).
        topic_keys = [r.key.decode() for r in read_range(settings, settings.deals_topic)]
        assert sorted(topic_keys) == sorted(sent)
        # Every malformed message became a dead letter with a reason.
        letters = [DeadLetter.from_record(r.value, r.headers)
                   for r in read_range(settings, settings.deals_deadletter_topic)]
        assert len(letters) == len(exchange.stats.malformed) > 0
        sent_malformed = sorted(text.encode() for _, text in exchange.stats.malformed)
        assert sorted(letter.value for letter in letters) == sent_malformed
        assert all(letter.reason and letter.source == settings.exchange_ws_url for letter in letters)
        assert "dead-lettering a bad exchange message" in listener.log_text()
        assert loader.alive()
    finally:
        listener.stop()
        loader.stop()


def test_loader_waits_out_a_database_outage(kafka_settings, pg_url, tmp_path):
    """Database down: the loader keeps retrying, deals wait in Kafka, then all arrive once."""
    from marketstream.energy.listener import TradeListener

    import sqlalchemy as sa

    server = sa.engine.make_url(pg_url)
    proxy = TcpProxy(server.host, server.port)
    proxied_url = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = kafka_settings.model_copy(update={"database_url": SecretStr(proxied_url)})
    listener = TradeListener(settings)  # used as a plain producer of validated deals
    loader = Service("loader", settings_env(settings), tmp_path / "loader.log")
    try:
        ids = [f"deal-{i:03d}" for i in range(60)]

        def send(deal_ids):
            for deal_id in deal_ids:
                listener.handle(
                    f'{{"deal_confirmation": {{"id": "{deal_id}", "price": 20.5, "quantity": 1.5, "direction": "buy",'
                    ' "delivery_day": "2026-11-23", "delivery_hour": "10-11", "trader_id": "flex_trader_1",'
                    ' "execution_time": "2026-11-22T09:00:00+00:00"}}')

        send(ids[:20])
        wait_for(lambda: len(db_deal_ids(pg_url)) == 20, 30, what="the first 20 deals")
        proxy.cut()
        send(ids[20:])
        wait_for(lambda: "deals wait in Kafka" in loader.log_text(), 30, what="the loader to report the outage")
        assert len(db_deal_ids(pg_url)) == 20 and loader.alive()
        time.sleep(3)
        proxy.restore()
        wait_for(lambda: len(db_deal_ids(pg_url)) == 60, 60, what="the loader to catch up")
        assert sorted(db_deal_ids(pg_url)) == ids
        # Replaying the topic from scratch (offsets wiped) inserts nothing twice.
        loader.stop()
        engine = db.make_engine(pg_url)
        with engine.begin() as connection:
            connection.execute(db.loader_offsets.delete())
        engine.dispose()
        loader = Service("loader", settings_env(settings), tmp_path / "loader2.log")
        wait_for(lambda: "0 new deals (60 already present)" in loader.log_text()
                 or "stored 0 new deals" in loader.log_text(), 30, what="the replay")
        assert sorted(db_deal_ids(pg_url)) == ids
    finally:
        listener.close()
        loader.stop()
        proxy.close()


def test_listener_retries_an_absent_exchange_and_stops_on_sigterm(kafka_settings, tmp_path):
    from tests.support import free_port

    settings = kafka_settings.model_copy(update={"exchange_ws_url": f"ws://127.0.0.1:{free_port()}"})
    listener = Service("listener", settings_env(settings), tmp_path / "listener.log")
    try:
        wait_for(lambda: listener.log_text().count("cannot reach the exchange") >= 3, 30,
                 what="the listener to retry the absent exchange")
        assert listener.alive()
        started = time.monotonic()
        assert listener.stop(timeout_s=10) == 0
        assert time.monotonic() - started < 5
    finally:
        listener.stop()


def test_a_deal_the_database_refuses_is_dead_lettered_and_the_rest_stored(kafka_settings, pg_url, tmp_path):
    from marketstream.energy.listener import TradeListener

    db.migrate(pg_url)
    engine = db.make_engine(pg_url)
    with engine.begin() as connection:  # a database-side rule the deal validation does not know
        connection.execute(sa.text("ALTER TABLE trades ADD CONSTRAINT no_666 CHECK (trader_id <> 'flex_trader_666')"))
    engine.dispose()
    settings = kafka_settings.model_copy(update={"database_url": SecretStr(pg_url)})
    listener = TradeListener(settings)
    loader = Service("loader", settings_env(settings), tmp_path / "loader.log")
    try:
        for deal_id, trader in [("ok-1", "flex_trader_1"), ("bad", "flex_trader_666"), ("ok-2", "flex_trader_2")]:
            listener.handle(json.dumps({"deal_confirmation": {
                "id": deal_id, "price": 20.5, "quantity": 1.5, "direction": "buy", "delivery_day": "2026-11-23",
                "delivery_hour": "10-11", "trader_id": trader, "execution_time": "2026-11-22T09:00:00+00:00",
            }}))
        wait_for(lambda: sorted(db_deal_ids(pg_url)) == ["ok-1", "ok-2"], 30, what="the acceptable deals")
        letters = wait_for(lambda: list(read_range(settings, settings.deals_deadletter_topic)), 30,
                           what="the refused deal's dead letter")
        letter = DeadLetter.from_record(letters[0].value, letters[0].headers)
        assert b'"id": "bad"' in letter.value
        assert letter.reason.startswith("refused by the database") and "no_666" in letter.reason
        assert letter.source_topic == settings.deals_topic
        assert letter.origin.startswith(f"{settings.deals_topic}[0]@")
        assert loader.alive()
    finally:
        listener.close()
        loader.stop()
