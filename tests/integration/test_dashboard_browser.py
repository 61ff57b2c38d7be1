"""The dashboard in Debian's Chromium at 1280 px, in a browser whose zone is not UTC: no
figure or label is cut, the pages are named for what they show, and every time axis
reads 24-hour UTC, a second in hour 23 included. The real app (``python -m dashboard``)
reads a real Apache Kafka broker, an SQLite desk database and an exports directory; hour 23
comes from the real health page drawn at 23:59:40 (tests/integration/dashboard_clock_app.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.dashboard_seed import reference_rows, seed_exports, seed_topics, trade_rows
from tests.integration.test_dashboard_e2e import (
    browser_page, dashboard_env, metric, open_page, running_dashboard, shot,
)
from tests.support import ARTIFACTS, ROOT, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

WIDTH = 1280
ZONE = "America/Los_Angeles"  # a browser-local clock would be 7 or 8 hours off
PAGES = [("/", "Buy 1", "order-book"), ("/health", "Dead letters", "health"),
         ("/exports", "Validation passed", "exports"), ("/desk", "Per trader and delivery hour", "desk")]
# Streamlit cuts a text that does not fit with an ellipsis (CSS): a figure, a label or a
# button whose text is wider than its box.
CUT_FIGURES = """() => [...document.querySelectorAll('[data-testid=stMain] *')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).textOverflow === 'ellipsis')
    .map(e => e.innerText.trim())"""
AXIS_TIMES = r"^\d\d:\d\d:\d\d$"


def cut_figures(page) -> list[str]:
    return page.evaluate(CUT_FIGURES)


def time_labels(page) -> list[str]:
    texts = page.evaluate("() => [...document.querySelectorAll('[data-testid=stVegaLiteChart] svg text')]"
                          ".map(t => t.textContent.trim())")
    return [t for t in texts if re.match(AXIS_TIMES, t)]


def sqlite_desk(path: Path, now: datetime) -> str:
    from marketstream.energy.db import make_engine, migrate, reference_prices, trades

    url = f"sqlite:///{path}"
    migrate(url)
    big = {"deal_id": "big-1", "trader_id": "flex_trader_12", "direction": "sell", "price": Decimal("312.45"),
           "quantity": Decimal("2500.125"), "delivery_day": now.date(), "delivery_hour": "10-11",
           "execution_time": now - timedelta(minutes=5), "loaded_at": now - timedelta(minutes=4)}
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(trades.insert(), trade_rows(now.date(), now) + [big])
        connection.execute(reference_prices.insert(), reference_rows(now.date(), now))
    engine.dispose()
    return url


def test_every_page_fits_1280_px_and_reads_utc(kafka_settings, tmp_path):
    now = datetime.now(UTC)
    seed_topics(kafka_settings, int(now.timestamp()))
    exports = seed_exports(kafka_settings.export_dir, now.date())
    # A day's worth of levels makes files of hundreds of KB: the longest button label.
    with next(kafka_settings.export_dir.rglob(f"{exports.intervals[0][0]}.parquet")).open("ab") as parquet:
        parquet.write(b"\0" * 456_789)
    port = free_port()
    env = dashboard_env(kafka_settings, sqlite_desk(tmp_path / "energy.db", now), port)
    with running_dashboard(env, port, tmp_path / "dashboard.log") as url, \
            browser_page(width=WIDTH, height=900, timezone_id=ZONE) as page:
        for path, ready, name in PAGES:
            open_page(page, url + path, ready)
            assert cut_figures(page) == [], f"cut on {path}"
            nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert [n.split("\n")[-1].strip() for n in nav] == ["Order book", "Pipeline health", "Exports", "Trader desk"]
            shot(page, f"{WIDTH}px-{name}")
            if path == "/health":
                labels = time_labels(page)
                assert labels, "no time label on the health page's charts"
                hours = {f"{(now - timedelta(hours=h)):%H}" for h in (0, 1)}
                assert {label[:2] for label in labels} <= hours, labels  # UTC, not the browser's zone
                assert page.get_by_text("Time (UTC)").count() >= 1
            if path == "/exports":
                assert page.get_by_role("button", name=re.compile(r"^Parquet · 44\d\.\d KB$")).count() == 1
            if path == "/desk":  # the seeded deals and one of 2,500.125 MW sold at 312.45
                assert metric(page, "MW bought / sold") == "7.000 / 2,505.625"
                assert metric(page, "Cash PnL (EUR)") == "+781,148.56"


@contextmanager
def clock_app(log_path: Path):
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "tests" / "integration" / "dashboard_clock_app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=python_env(PYTHONPATH=str(ROOT)), stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            def healthy() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as response:
                        return response.status == 200
                except OSError:
                    return False

            wait_for(healthy, 60, what="the clock app")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=15)


def test_a_second_in_hour_23_reads_23_on_the_time_axes(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with clock_app(tmp_path / "clock-app.log") as url, \
            browser_page(width=WIDTH, height=900, timezone_id=ZONE) as page:
        open_page(page, url, "Spark micro-batches")
        labels = time_labels(page)
        assert any(re.match(r"^23:5\d:\d\d$", label) for label in labels), labels
        assert not [label for label in labels if not label.startswith("23:")], labels  # nothing 12-hour or local
        assert cut_figures(page) == []  # lag 1,234,567 and 123,456.7 events/s whole
        # The tooltip of a bar says the same second.
        box = page.locator('[data-testid="stVegaLiteChart"] svg .mark-rect').first.bounding_box()
        page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
        tooltip = page.locator("#vg-tooltip-element")
        tooltip.wait_for(timeout=5_000)
        assert re.search(r"Time \(UTC\)\s*23:5\d:\d\d", tooltip.inner_text()), tooltip.inner_text()
        shot(page, "health-at-2359")
