"""Market-data emulator and reference-price ETL against each other (real HTTP on a free
port, SQLite database): what is stored, what a re-run changes, what bad answers do."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest
import sqlalchemy as sa
from pyrate_limiter import limiter_factory

from marketstream.energy import db
from marketstream.energy.background import BackgroundLoop
from marketstream.energy.market_data_emulator import (
    MarketDataConfig,
    MarketDataEmulator,
    reference_price,
)
from marketstream.energy.reference_prices import (
    MarketDataClient,
    TransientApiError,
    hours_to_fetch,
    run_etl,
)
from marketstream.settings import load_settings

# 22:30 UTC: tradable hours are 23-24 today and the 24 hours of tomorrow.
LATE = datetime(2026, 11, 22, 22, 30, tzinfo=UTC)


@pytest.fixture
def loop():
    with BackgroundLoop() as background:
        background.emulators = []
        yield background
        for emulator in background.emulators:
            background.run(emulator.stop())


def start(loop, **config) -> MarketDataEmulator:
    emulator = MarketDataEmulator(MarketDataConfig(port=0, **config))
    loop.run(emulator.start())
    loop.emulators.append(emulator)
    return emulator


@pytest.fixture
def settings(tmp_path):
    return load_settings(database_url=f"sqlite:///{tmp_path / 'energy.db'}", market_data_max_attempts=6,
                         market_data_backoff_seconds=0.01)


def client_for(settings, emulator):
    # Unit tests: a generous in-memory budget; the shared 50/min limiter is exercised in
    # tests/integration/test_energy_reference_prices.py.
    return MarketDataClient(
        settings, limiter=limiter_factory.create_inmemory_limiter(1000, 1000),
        http=httpx.Client(base_url=f"http://127.0.0.1:{emulator.port}", timeout=5),
    )


def stored(settings):
    engine = db.make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.select(db.reference_prices)).mappings().all()
    finally:
        engine.dispose()


def test_api_answers_as_documented(loop):
    emulator = start(loop, regen_seconds=3600)
    for path in ("/reference-price", "/v1/reference-price"):
        response = httpx.get(f"http://127.0.0.1:{emulator.port}{path}",
                             params={"delivery_day": "2023-05-12", "delivery_hour": "08-09"})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"delivery_day", "delivery_hour", "value", "unit", "last_update"}
        assert body["unit"] == "euro/mwh" and body["delivery_hour"] == "08-09"
        datetime.fromisoformat(body["last_update"])
    for params, message in [
        ({"delivery_hour": "08-09"}, "missing parameter delivery_day"),
        ({"delivery_day": "2023-05-12"}, "missing parameter delivery_hour"),
        ({"delivery_day": "2023-13-01", "delivery_hour": "08-09"}, "not a calendar date"),
        ({"delivery_day": "2023-05-12", "delivery_hour": "8-9"}, "delivery_hour must be"),
    ]:
        response = httpx.get(f"http://127.0.0.1:{emulator.port}/reference-price", params=params)
        assert response.status_code == 400 and message in response.json()["error_message"]
    spec = httpx.get(f"http://127.0.0.1:{emulator.port}/openapi.yaml")
    assert spec.status_code == 200 and "/reference-price" in spec.text


def test_api_rate_limit_answers_429_with_retry_after(loop):
    emulator = start(loop, per_minute=5)
    url = f"http://127.0.0.1:{emulator.port}/reference-price"
    statuses = [httpx.get(url, params={"delivery_day": "2023-05-12", "delivery_hour": "08-09"}) for _ in range(7)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 2
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert statuses[-1].json()["error_message"] == "rate limit exceeded"


def test_value_changes_at_most_every_period():
    config = MarketDataConfig(regen_seconds=600, publication_delay_max=30)
    day, hour, base = date(2026, 11, 23), "10-11", 1_795_000_200.0 + 40  # 40 s into a period
    same_period = {reference_price(config, day, hour, base + s)["last_update"] for s in range(0, 500, 7)}
    assert len(same_period) == 1
    later = reference_price(config, day, hour, base + 600)
    assert later["last_update"] != reference_price(config, day, hour, base)["last_update"]


def test_etl_stores_every_hour_once_and_rerun_changes_nothing(loop, settings):
    emulator = start(loop, regen_seconds=3600, error_rate=0.2, throttle_rate=0.1, per_minute=None)
    client = client_for(settings, emulator)
    first = run_etl(settings, now=LATE, client=client)
    assert first.failed == [] and first.hours == 25 and first.stored_new == 25
    assert first.requests > 25  # the faults forced retries
    rows_after_first = stored(settings)
    second = run_etl(settings, now=LATE, client=client)
    assert second.failed == [] and second.stored_new == 0 and second.unchanged == 25
    assert stored(settings) == rows_after_first
    assert {(r["delivery_day"], r["delivery_hour"]) for r in rows_after_first} == set(
        hours_to_fetch(db.make_engine(settings.database_url), LATE, 2))


def test_new_publication_is_added_and_latest_view_follows(loop, settings):
    emulator = start(loop, regen_seconds=2, publication_delay_max=0, per_minute=None)
    client = client_for(settings, emulator)
    run_etl(settings, now=LATE, client=client)
    import time

    time.sleep(2.1)
    again = run_etl(settings, now=LATE, client=client)
    assert again.stored_new == 25
    engine = db.make_engine(settings.database_url)
    with engine.connect() as connection:
        history = connection.execute(sa.select(sa.func.count()).select_from(db.reference_prices)).scalar()
        latest = connection.execute(sa.select(db.latest_reference_prices)).mappings().all()
    engine.dispose()
    assert history == 50 and len(latest) == 25
    # Per hour: the second run may straddle a 2 s publication period, so hours fetched
    # after the boundary are one publication newer than those fetched before it.
    newest = {(r["delivery_day"], r["delivery_hour"]): db.as_utc(r["last_update"])
              for r in sorted(stored(settings), key=lambda r: db.as_utc(r["last_update"]))}
    assert {(r["delivery_day"], r["delivery_hour"]): db.as_utc(r["last_update"]) for r in latest} == newest


def test_traded_hours_are_fetched_too(loop, settings):
    emulator = start(loop, regen_seconds=3600, per_minute=None)
    db.migrate(settings.database_url)
    engine = db.make_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(db.trades.insert().values(
            deal_id="d1", trader_id="flex_trader_1", direction="buy", price=20, quantity=1,
            delivery_day=date(2026, 11, 22), delivery_hour="08-09", execution_time=LATE, loaded_at=LATE))
    engine.dispose()
    report = run_etl(settings, now=LATE, client=client_for(settings, emulator))
    assert report.hours == 26 and report.stored_new == 26
    assert (date(2026, 11, 22), "08-09") in {(r["delivery_day"], r["delivery_hour"]) for r in stored(settings)}


@pytest.mark.parametrize("body, status, reason", [
    (b"<html>gateway</html>", 200, "not a reference price"),
    ((b'{"delivery_day": "2026-11-23", "delivery_hour": "00-01", "value": "high", "unit": "euro/mwh",'
     b' "last_update": "2026-11-22T10:00:00+00:00"}'), 200, "value must be a JSON number"),
    ((b'{"delivery_day": "2026-11-23", "delivery_hour": "00-01", "value": 1, "unit": "euro/mwh",'
     b' "last_update": "soon"}'), 200, "not ISO-8601"),
    ((b'{"delivery_day": "2026-11-24", "delivery_hour": "00-01", "value": 1, "unit": "euro/mwh",'
     b' "last_update": "2026-11-22T10:00:00+00:00"}'), 200, "answer is for 2026-11-24"),
    (b'{"error_message": "no such hour"}', 404, "HTTP 404: no such hour"),
    (b"boom", 503, "HTTP 503"),
])
def test_api_garbage_is_reported_per_hour_and_nothing_crashes(settings, body, status, reason):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    client = MarketDataClient(
        settings.model_copy(update={"market_data_max_attempts": 2}),
        limiter=limiter_factory.create_inmemory_limiter(1000, 1000),
        http=httpx.Client(base_url="http://api", transport=httpx.MockTransport(handler)),
    )
    # 23:30: only tomorrow's 24 hours are tradable; the first one is 00-01.
    report = run_etl(settings, now=datetime(2026, 11, 22, 23, 30, tzinfo=UTC), client=client)
    assert report.stored_new == 0 and len(report.failed) == 24
    assert reason in report.failed[0].reason
    assert "missing: 2026-11-23 00-01" in report.summary()


def test_slow_api_times_out_retries_and_reports_the_hour(loop, settings):
    emulator = start(loop, slow_rate=1.0, slow_seconds=1.0, per_minute=None)
    client = MarketDataClient(
        settings.model_copy(update={"market_data_max_attempts": 2}),
        limiter=limiter_factory.create_inmemory_limiter(1000, 1000),
        http=httpx.Client(base_url=f"http://127.0.0.1:{emulator.port}", timeout=0.2),
    )
    day, hour = date(2026, 11, 23), "10-11"
    with pytest.raises(TransientApiError, match="ReadTimeout"):
        client.fetch(day, hour)
    assert client.requests == 2  # one retry, then it gives up on this hour


def test_garbage_answers_are_reported_not_stored(loop, settings):
    emulator = start(loop, garbage_rate=1.0, per_minute=None)
    report = run_etl(settings, now=LATE, client=client_for(settings, emulator))
    assert report.stored_new == 0 and len(report.failed) == 25
    assert all("not a reference price" in f.reason for f in report.failed)
    assert report.requests == 25  # a 200 with garbage is not retried within the run
    stats = httpx.get(f"http://127.0.0.1:{emulator.port}/_emulator/stats").json()
    assert stats["statuses"] == {"garbage": 25} and stats["requests"] == 25
