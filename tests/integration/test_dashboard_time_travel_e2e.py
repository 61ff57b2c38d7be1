"""Time travel on the real dashboard (``python -m dashboard``) in Debian's headless
Chromium, against a real Apache Kafka broker: a link opens a past second, +1 s moves onto a
backfilled second (its badge, the URL), and a click on a level lists the orders behind
it, replayed from the input topic."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest

from tests.integration.test_dashboard_e2e import browser_page, dashboard_env, metric, running_dashboard, shot
from tests.published_stream import PublishedStream
from tests.support import free_port

pytestmark = pytest.mark.integration

T0 = int(datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp())
OUTAGE = range(T0 + 20, T0 + 30)


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_time_travel_moves_through_seconds_and_explains_a_level(kafka_settings, tmp_path):
    settings = kafka_settings
    stream = PublishedStream(settings, 60, T0)
    stream.publish(range(T0, OUTAGE.start))
    stream.publish(OUTAGE, recovered=True, published_at=T0 + 31.5)
    stream.publish(range(OUTAGE.stop, T0 + 40))
    stream.close()

    port = free_port()
    env = dashboard_env(settings, f"sqlite:///{tmp_path / 'desk.db'}", port)
    env.update(ORDERS_TOPIC=settings.orders_topic, VALIDATION_CACHE_DIR=str(tmp_path / "validation"))
    with running_dashboard(env, port, tmp_path / "dashboard.log") as url, browser_page() as page:
        before = OUTAGE.start - 1
        page.goto(f"{url}/?t={iso(before)}")  # the order-book page is the app's default
        page.get_by_text("Order book: time travel").wait_for(timeout=30_000)
        page.get_by_text(re.compile(r"\bLive$")).first.wait_for(timeout=30_000)
        assert metric(page, "Snapshot time (UTC)") == iso(before).replace("T", " ").rstrip("Z")
        assert metric(page, "Sequence") == str(before - T0 + 1)

        page.get_by_role("button", name="+1 s").click()
        page.get_by_text(re.compile(r"\bRecovered$")).first.wait_for(timeout=30_000)
        assert metric(page, "Snapshot time (UTC)") == iso(OUTAGE.start).replace("T", " ").rstrip("Z")
        page.wait_for_url(f"**t={iso(OUTAGE.start).replace(':', '%3A')}*", timeout=10_000)
        shot(page, "order-book-time-travel")

        # Level buy_1 at that second: PublishedStream's order ids are odd for buys, one
        # order a price; the level is the highest buy price among the first 21 orders.
        page.locator("[data-testid=stButtonGroup]").get_by_text("Buy 1", exact=True).click()
        page.get_by_text("their sizes sum to").wait_for(timeout=60_000)
        summary = page.get_by_text("their sizes sum to").inner_text()
        assert "1 open order(s)" in summary and "the level's amount, exactly" in summary
        shot(page, "order-book-explain")

        page.get_by_role("button", name="Newest").click()
        newest = iso(T0 + 39).replace("T", " ").rstrip("Z")
        page.get_by_text(newest).first.wait_for(timeout=30_000)

        # Play at 10x from the first second: ten seconds a second, stopping at the newest.
        page.goto(f"{url}/?t={iso(T0)}")
        page.get_by_text(iso(T0).replace("T", " ").rstrip("Z")).first.wait_for(timeout=30_000)
        started = time.monotonic()
        page.locator("[data-testid=stButtonGroup]").get_by_text("Play 10×", exact=True).click()
        page.get_by_text(iso(T0 + 10).replace("T", " ").rstrip("Z")).first.wait_for(timeout=15_000)
        page.get_by_text(newest).first.wait_for(timeout=30_000)
        assert time.monotonic() - started < 25  # 39 seconds at 10x: four ticks, not 39
        page.wait_for_timeout(2500)
        assert metric(page, "Snapshot time (UTC)") == newest  # stopped there
