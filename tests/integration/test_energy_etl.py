"""The reference-price ETL against the market-data emulator with 5xx, 429 and slow
responses, on PostgreSQL: every hour is stored, the API never sees more than 50 requests
in any minute — even across two processes — and a re-run changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from marketstream.energy import db
from marketstream.energy.background import BackgroundLoop
from marketstream.energy.market_data_emulator import (
    MarketDataConfig,
    MarketDataEmulator,
)
from marketstream.energy.reference_prices import run_etl
from marketstream.settings import load_settings
from tests.energy_support import private_schema
from tests.support import python_env

pytestmark = pytest.mark.integration

LATE = datetime(2026, 11, 22, 22, 30, tzinfo=UTC)  # 25 tradable hours


def table(url):
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(tuple(r) for r in connection.execute(sa.select(db.reference_prices)))
    finally:
        engine.dispose()


def test_etl_with_faults_keeps_the_rate_limit_and_is_idempotent(postgres_url, tmp_path):
    with private_schema(postgres_url) as url, BackgroundLoop() as loop:
        emulator = MarketDataEmulator(MarketDataConfig(
            port=0, seed=5, regen_seconds=3600, error_rate=0.15, throttle_rate=0.1, slow_rate=0.05,
            slow_seconds=1.0, per_minute=50,
        ))
        loop.run(emulator.start())
        try:
            settings = load_settings(
                database_url=url, market_data_url=f"http://127.0.0.1:{emulator.port}",
                market_data_rate_limit_path=tmp_path / "budget.sqlite", market_data_backoff_seconds=0.2,
                market_data_max_attempts=8,
            )
            first = run_etl(settings, now=LATE)
            assert first.failed == [] and first.stored_new == first.hours == 25
            after_first = table(url)
            assert len(after_first) == 25

            # The re-run is another process sharing the request budget through the SQLite file.
            env = python_env(
                DATABASE_URL=url, MARKET_DATA_URL=settings.market_data_url,
                MARKET_DATA_RATE_LIMIT_PATH=str(settings.market_data_rate_limit_path),
                MARKET_DATA_BACKOFF_SECONDS="0.2", MARKET_DATA_MAX_ATTEMPTS="8",
            )
            rerun = subprocess.run(
                [sys.executable, "-m", "marketstream.energy.reference_prices", "--now", LATE.isoformat()],
                env=env, capture_output=True, text=True, timeout=180, check=False,
            )
            assert rerun.returncode == 0, rerun.stderr[-2000:]
            second = json.loads(rerun.stdout)
            assert second["failed"] == [] and second["stored_new"] == 0 and second["unchanged"] == 25
            assert table(url) == after_first

            statuses = emulator.log.statuses
            assert statuses[500] + statuses[503] > 0 and statuses[429] > 0  # the faults really happened
            assert first.requests + second["requests"] > 50  # enough traffic for the limit to matter
            assert emulator.log.max_in_window(60.0) <= 50
        finally:
            loop.run(emulator.stop())
