"""The loader against a deals topic that is not the one its stored offsets belong to: a
broker that came back empty at the same address (a recreated cluster, or ``make
clean-state``). All real: an Apache Kafka node of the test's own, stopped and started again
with empty storage at the same address,
PostgreSQL, the loader as ``python -m marketstream.energy.loader``. And the opposite: a
plain loader restart on an unchanged topic re-reads nothing."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest
from pydantic import SecretStr

from marketstream.energy import db
from marketstream.energy.loader import TradeLoader, resume_positions, stored_offsets
from marketstream.settings import Settings, load_settings
from tests.energy_support import Broker, Service, db_deal_ids, private_schema, settings_env
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url(postgres_url):
    with private_schema(postgres_url) as url:
        yield url


def deal_json(deal_id: str) -> str:
    return json.dumps({"deal_confirmation": {
        "id": deal_id, "price": 20.5, "quantity": 1.5, "direction": "buy", "delivery_day": "2026-11-23",
        "delivery_hour": "10-11", "trader_id": "flex_trader_1", "execution_time": "2026-11-22T09:00:00+00:00",
    }})


def send(settings: Settings, deal_ids: list[str]) -> None:
    """One by one through the listener's own producing path (acknowledged before the next)."""
    from marketstream.energy.listener import TradeListener

    listener = TradeListener(settings)
    try:
        for deal_id in deal_ids:
            assert listener.handle(deal_json(deal_id)) == deal_id
    finally:
        listener.close()


def send_batched(settings: Settings, deal_ids: list[str]) -> None:
    """In producer batches: afterwards Tansu's ListOffsets end is stale, the fetch high
    watermark is not; a loader that trusted the former would see its stored offset 'beyond
    the end' and re-read."""
    from marketstream.kafka_io import make_producer

    producer = make_producer(settings, linger_ms=50)
    try:
        for deal_id in deal_ids:
            producer.send(settings.deals_topic, key=deal_id.encode(), value=deal_json(deal_id).encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def offsets_in_db(url: str, topic: str) -> dict[int, int]:
    engine = db.make_engine(url)
    try:
        return stored_offsets(engine, topic)
    finally:
        engine.dispose()


@pytest.fixture
def own_broker_settings(pg_url, unique) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", deals_topic=f"deals-{unique}",
        deals_deadletter_topic=f"deals-dlq-{unique}", database_url=pg_url,
    )


def load_then_lose_the_broker(settings: Settings, old_ids: list[str], tmp_path) -> Broker:
    """Load ``old_ids`` with a real loader, stop it, restart the broker empty; returns the
    new broker."""
    broker = Broker(settings, tmp_path / "kafka-1")
    try:
        send(settings, old_ids)
        loader = Service("loader", settings_env(settings), tmp_path / "loader-1.log")
        try:
            wait_for(lambda: len(db_deal_ids(settings.database_url)) == len(old_ids), 30, what="the first deals")
        finally:
            assert loader.stop() == 0
        assert offsets_in_db(settings.database_url, settings.deals_topic) == {0: len(old_ids)}
    finally:
        broker.stop()
    return Broker(settings, tmp_path / "kafka-2")  # same address, empty


def test_a_restarted_empty_broker_is_read_from_the_beginning(own_broker_settings, tmp_path):
    settings, url, topic = own_broker_settings, own_broker_settings.database_url, own_broker_settings.deals_topic
    old_ids = [f"old-{i:03d}" for i in range(30)]
    new_ids = [f"new-{i:03d}" for i in range(12)]
    broker = load_then_lose_the_broker(settings, old_ids, tmp_path)
    loader = None
    try:
        send(settings, new_ids)  # offsets 0-11 of the new topic; the stored offset says 30
        loader = Service("loader", settings_env(settings), tmp_path / "loader-2.log")
        wait_for(lambda: set(new_ids) <= set(db_deal_ids(url)), 30, what="the new broker's deals")
        assert db_deal_ids(url) == sorted(old_ids + new_ids)
        warnings = [line for line in loader.log_text().splitlines() if " WARNING " in line]
        assert any(f"{topic} partition 0: stored offset 30 is beyond the end of the partition (12)" in line
                   and "topic was recreated or the broker lost its data: reading it from the beginning" in line
                   for line in warnings), loader.log_text()
        # ... and it goes on loading live deals from there.
        later = [f"later-{i}" for i in range(3)]
        send(settings, later)
        wait_for(lambda: set(later) <= set(db_deal_ids(url)), 30, what="deals produced after the reset")
        assert offsets_in_db(url, topic) == {0: 15}
        assert loader.alive()
    finally:
        if loader is not None:
            loader.stop()
        broker.stop()


def test_the_reset_is_stored_before_the_first_batch(own_broker_settings, tmp_path, caplog):
    """A loader that dies between noticing the new topic and loading from it must not leave
    the stale offset behind: once the new topic has grown past it, nothing would tell."""
    settings, url, topic = own_broker_settings, own_broker_settings.database_url, own_broker_settings.deals_topic
    old_ids = [f"old-{i:03d}" for i in range(30)]
    new_ids = [f"new-{i:03d}" for i in range(50)]
    broker = load_then_lose_the_broker(settings, old_ids, tmp_path)
    loader = None
    try:
        send(settings, new_ids[:5])
        crashing = TradeLoader(settings)
        with caplog.at_level(logging.WARNING, logger="marketstream.energy.loader"):
            crashing.start()  # positions itself, then "crashes" before its first poll
        crashing.close()
        crashing.engine.dispose()
        assert "stored offset 30 is beyond the end of the partition (5)" in caplog.text
        assert offsets_in_db(url, topic) == {0: 0}
        send(settings, new_ids[5:])  # the new topic (50) is now past the old offset (30)
        loader = Service("loader", settings_env(settings), tmp_path / "loader-2.log")
        wait_for(lambda: set(new_ids) <= set(db_deal_ids(url)), 30, what="every deal of the new topic")
        assert db_deal_ids(url) == sorted(old_ids + new_ids)
        assert "beyond the end" not in loader.log_text()
    finally:
        if loader is not None:
            loader.stop()
        broker.stop()


def test_a_plain_loader_restart_rereads_nothing(kafka_settings, pg_url, tmp_path):
    """Stored offset == end (caught up) and end_offsets stale on Tansu: no reset, no re-read."""
    settings = kafka_settings.model_copy(update={"database_url": SecretStr(pg_url)})
    topic, env = settings.deals_topic, settings_env(settings)
    first = [f"a-{i:03d}" for i in range(40)]
    send_batched(settings, first)
    loader = Service("loader", env, tmp_path / "loader-1.log")
    try:
        wait_for(lambda: len(db_deal_ids(pg_url)) == 40, 30, what="the first deals")
    finally:
        assert loader.stop() == 0
    assert offsets_in_db(pg_url, topic) == {0: 40}

    loader = Service("loader", env, tmp_path / "loader-2.log")
    try:
        wait_for(lambda: "loading " in loader.log_text(), 30, what="the restarted loader to position itself")
        assert "from offsets {0: 40} (ends {0: 40})" in loader.log_text()
        more = [f"b-{i:03d}" for i in range(7)]
        send_batched(settings, more)
        wait_for(lambda: len(db_deal_ids(pg_url)) == 47, 30, what="the deals produced after the restart")
        assert offsets_in_db(pg_url, topic) == {0: 47}
        stored_lines = re.findall(r"stored (\d+) new deals \((\d+) already present\)", loader.log_text())
        assert sum(int(new) for new, _ in stored_lines) == 7, stored_lines
        assert all(present == "0" for _, present in stored_lines), stored_lines  # nothing re-read
        assert " WARNING " not in loader.log_text(), loader.log_text()
    finally:
        loader.stop()


def test_resume_positions_decides_per_partition(caplog):
    stored = {0: 40, 1: 50, 2: 3, 3: 0}
    earliest = {0: 0, 1: 0, 2: 10, 3: 0, 4: 2}
    ends = {0: 40, 1: 12, 2: 20, 3: 0, 4: 9}
    with caplog.at_level(logging.WARNING, logger="marketstream.energy.loader"):
        positions, corrections = resume_positions("deals", stored, earliest, ends)
    assert positions == {
        0: 40,  # caught up: stored == end is normal, no reset
        1: 0,   # beyond the end: a new topic, from its beginning
        2: 10,  # below the earliest (retention): from the earliest
        3: 0,   # empty partition, caught up
        4: 2,   # never stored: from the earliest, not 0
    }
    assert corrections == {1: 0, 2: 10}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "deals partition 1: stored offset 50 is beyond the end of the partition (12)" in messages[0]
    assert "reading it from the beginning (offset 0)" in messages[0]
    assert "deals partition 2: stored offset 3 is below the earliest available offset 10" in messages[1]
    # An earliest offset past the end (a wrong ListOffsets answer) never skips records.
    assert resume_positions("deals", {0: 30}, {0: 8}, {0: 5}) == ({0: 5}, {0: 5})
