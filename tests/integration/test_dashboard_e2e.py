"""The real dashboard (``python -m dashboard`` as a subprocess) against a real Apache Kafka broker,
PostgreSQL and exports directory, opened in Debian's headless Chromium. Each page's
numbers are compared with the data written into the sources; screenshots go to
test-artifacts/ for a human to look at."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from marketstream.kafka_io import make_producer
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import Settings
from tests.integration.dashboard_seed import (
    DEAD_LETTERS, reference_rows, seed_exports, seed_topics, trade_rows,
)
from tests.support import ARTIFACTS, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def energy_db(postgres_url, unique):
    """A private PostgreSQL database with the energy schema migrated in."""
    import sqlalchemy as sa

    from marketstream.energy.db import migrate

    name = f"dashboard_{unique}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def insert_desk_data(url: str, day: date, now: datetime) -> None:
    import sqlalchemy as sa

    from marketstream.energy.db import reference_prices, trades

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(trades.insert(), trade_rows(day, now))
        connection.execute(reference_prices.insert(), reference_rows(day, now))
    engine.dispose()


def publish_snapshot(settings: Settings, message: SnapshotMessage) -> None:
    producer = make_producer(settings)
    producer.send(settings.orderbook_topic, key=message.key.encode(), value=message.value.encode(),
                  headers=message.headers(), timestamp_ms=message.snapshot_time * 1000)
    producer.flush()
    producer.close()


def insert_trade(url: str, day: date, now: datetime) -> None:
    import sqlalchemy as sa

    from marketstream.energy.db import trades

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(trades.insert(), [{
            "deal_id": "d7", "trader_id": "flex_trader_3", "direction": "buy", "price": 20, "quantity": 1,
            "delivery_day": day, "delivery_hour": "10-11", "execution_time": now, "loaded_at": now,
        }])
    engine.dispose()


def dashboard_env(settings: Settings, database_url: str, port: int) -> dict[str, str]:
    return python_env(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        ORDERBOOK_TOPIC=settings.orderbook_topic,
        METRICS_TOPIC=settings.metrics_topic,
        DEADLETTER_TOPIC=settings.deadletter_topic,
        DEALS_DEADLETTER_TOPIC=settings.deals_deadletter_topic,
        EXPORT_DIR=str(settings.export_dir),
        DATABASE_URL=database_url,
        DASHBOARD_PORT=str(port),
        # The seeded book stops at the test's start; the stale rule is unit-tested.
        DASHBOARD_STALE_SECONDS="600",
        AIRFLOW_UI_URL="http://127.0.0.1:18080",
        SPARK_UI_URL="http://127.0.0.1:14040",
    )


@contextmanager
def running_dashboard(env: dict[str, str], port: int, log_path: Path):
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dashboard"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def healthy():
                assert process.poll() is None, f"dashboard exited: {log_path.read_text()}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as response:
                        return response.status == 200
                except OSError:
                    return False

            wait_for(healthy, timeout_s=60, what="the dashboard's health endpoint")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def browser_page(width: int = 1500, height: int = 1100, timezone_id: str | None = None):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, timezone_id=timezone_id)
            yield page
        finally:
            browser.close()


def open_page(page, url: str, ready_text: str, timeout_ms: int = 30_000) -> str:
    """Go to ``url``, wait until ``ready_text`` is on screen, return the main area's text."""
    page.goto(url)
    page.get_by_text(ready_text, exact=False).first.wait_for(timeout=timeout_ms)
    page.wait_for_timeout(1500)  # let charts and the rest of the run land before the screenshot
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")
    return page.locator('[data-testid="stMain"]').inner_text()


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
    return box.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def table_rows(page, index: int = 0) -> list[list[str]]:
    table = page.locator('[data-testid="stTable"] table').nth(index)
    return table.evaluate(
        "t => Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.querySelectorAll('td,th')).map(c => c.innerText.trim()))"
    )


def shot(page, name: str) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its main area, so the window
    is stretched to that area's height first."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate("document.querySelector('[data-testid=\\'stMain\\']').scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 40)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
    page.set_viewport_size(size)


def test_every_page_shows_what_the_sources_hold(kafka_settings, energy_db, tmp_path):
    now = datetime.now(timezone.utc)
    seeded = seed_topics(kafka_settings, int(now.timestamp()))
    exports = seed_exports(kafka_settings.export_dir, now.date())
    insert_desk_data(energy_db, now.date(), now)
    port = free_port()

    with running_dashboard(dashboard_env(kafka_settings, energy_db, port), port, tmp_path / "dashboard.log") as url, \
            browser_page() as page:
        # Order book: the newest snapshot in the book view, exact numbers.
        open_page(page, url + "/", "Buy 1")
        last = seeded.last
        assert metric(page, "Sequence") == str(last.sequence)
        assert metric(page, "Snapshot time (UTC)") == datetime.fromtimestamp(
            last.snapshot_time, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        assert metric(page, "Open orders") == "8"
        rows = table_rows(page)
        expected = [lv for lv in last.levels() if lv.symbol == "BTC-USDT"]
        assert rows[0] == ["Buy 1", "34,045.24", "6.5137", "221,760.479788", "221,760.479788",
                           "Sell 1", "34,054.25", "7.52013", "256,092.3870525", "256,092.3870525"]
        assert rows[2][:5] == ["Buy 3", "34,044.94", "0.0205", "697.92127", f"{expected[-1].cum_sum:,}"]
        assert page.get_by_text("Live: snapshot").count() == 1
        shot(page, "order-book")
        # Refreshes by itself: a new snapshot shows up without reloading the page.
        publish_snapshot(kafka_settings, SnapshotMessage(
            int(time.time()), last.sequence + 1, last.input_offsets, last.open_orders, last.value))
        page.wait_for_function(
            "s => [...document.querySelectorAll('[data-testid=stMetricValue]')].some(e => e.innerText.trim() === s)",
            arg=str(last.sequence + 1), timeout=10_000)
        page.get_by_text("ETH-USDT").first.click()
        page.get_by_text("1,802.25").first.wait_for(timeout=10_000)
        assert table_rows(page)[0][:2] == ["Buy 1", "1,800.5"]

        # Pipeline health: cadence with the seeded gap and duplicate, metrics, dead letters.
        open_page(page, url + "/health", "Dead letters")
        assert metric(page, "Seconds without a snapshot") != ""
        gaps = int(metric(page, "Seconds without a snapshot"))
        # The seeded gap, plus the seconds since the seeding ended (the chart ends 2 s ago).
        assert 1 <= gaps <= 1 + (int(time.time()) - int(now.timestamp())) + 1
        assert metric(page, "Seconds with duplicates") == "1"
        assert metric(page, "Consumer lag (events)") == str(seeded.last_lag)
        assert metric(page, "Last batch duration") == f"{seeded.last_batch_ms} ms"
        assert metric(page, f"Records in {kafka_settings.deadletter_topic}") == str(len(DEAD_LETTERS))
        assert metric(page, f"Records in {kafka_settings.deals_deadletter_topic}") == "1"
        body = page.locator('[data-testid="stMain"]').inner_text()
        for _raw, reason in DEAD_LETTERS:
            assert reason in body
        assert page.get_by_role("link", name="Airflow UI").get_attribute("href") == "http://127.0.0.1:18080"
        assert page.get_by_role("link", name="Spark UI").get_attribute("href") == "http://127.0.0.1:14040"
        shot(page, "health")

        # Exports: newest first, status per interval, downloads serve the file's bytes.
        text = open_page(page, url + "/exports", "Validation passed")
        statuses = [s for s in ("not validated", "failed", "passed") if s in text]
        assert statuses == ["not validated", "failed", "passed"]
        positions = [text.index(stem_time) for stem_time in ("10:10:00 →", "10:05:00 →", "10:00:00 →")]
        assert positions == sorted(positions)  # newest first
        with page.expect_download() as download_info:
            page.get_by_role("button", name="JSON").first.click()
        download = download_info.value
        newest_stem = exports.intervals[0][0]
        assert download.suggested_filename == f"{newest_stem}.json"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        source = kafka_settings.export_dir / "orderbook" / now.date().isoformat() / f"{newest_stem}.json"
        assert saved.read_bytes() == source.read_bytes()
        with page.expect_download() as download_info:
            page.get_by_role("button", name="Parquet").first.click()
        download = download_info.value
        assert download.suggested_filename == f"{newest_stem}.parquet"
        download.save_as(tmp_path / download.suggested_filename)
        assert (tmp_path / download.suggested_filename).read_bytes() == source.with_suffix(".parquet").read_bytes()
        shot(page, "exports")

        # Trader desk: figures computed from the database rows, by hand in dashboard_seed.
        open_page(page, url + "/desk", "Per trader and delivery hour")
        assert metric(page, "Trades") == "6"
        assert metric(page, "Cash PnL (EUR)") == "-15.50"
        assert metric(page, "Edge vs reference (EUR)") == "+5.50"
        rows = table_rows(page, 0)
        by_key = {(r[0], r[1]): r for r in rows}
        t1 = by_key[("flex_trader_1", "10-11")]
        # Trader, Hour, Trades, bought, sold, net, VWAP, VWAP buy, VWAP sell, Ref, age, buy-ref, sell-ref, edge, cash
        assert t1[2:] == ["2", "2.000", "1.500", "+0.500", "22.43", "20.50", "25.00", "22.00", "12 min",
                          "-1.50", "+3.00", "+7.50", "-3.50"]
        assert by_key[("flex_trader_2", "12-13")][9] == "no reference"
        # Refreshes by itself: a deal loaded now appears within the page's refresh period.
        insert_trade(energy_db, now.date(), now)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stMetric]')].some("
            "m => m.querySelector('[data-testid=stMetricLabel]').innerText.trim() === 'Trades' && "
            "m.querySelector('[data-testid=stMetricValue]').innerText.trim() === '7')", timeout=20_000)
        green = page.locator('[data-testid="stTable"] td', has_text="+3.00").first.evaluate(
            "c => getComputedStyle(c).color")
        assert green == "rgb(26, 127, 55)"  # #1a7f37
        red = page.locator('[data-testid="stTable"] td', has_text="-1.00").first.evaluate(
            "c => getComputedStyle(c).color")
        assert red == "rgb(207, 34, 46)"  # #cf222e: flex_trader_2 sold 1.00 below the reference
        shot(page, "desk")


def test_empty_sources_show_empty_states(kafka_settings, energy_db, tmp_path):
    port = free_port()
    with running_dashboard(dashboard_env(kafka_settings, energy_db, port), port, tmp_path / "dashboard.log") as url, \
            browser_page() as page:
        for path, ready, name in [
            ("/", "No snapshot yet", "order-book"),
            ("/health", "No batch metrics yet", "health"),
            ("/exports", "No exports yet", "exports"),
            ("/desk", "No trades yet", "desk"),
        ]:
            open_page(page, url + path, ready)
            shot(page, f"empty-{name}")
