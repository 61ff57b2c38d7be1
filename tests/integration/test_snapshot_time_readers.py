"""The readers of the snapshot topic choose seconds by the snapshot time each record
carries, on a real Apache Kafka broker: records stamped with their produce time (as the JVM
Kafka sink leaves them), seconds backfilled after an outage and published late, an export
that waits for its interval to be final and heals on its retry, and the health check and
the dashboard counting the same seconds."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from marketstream.exports.exporter import IntervalNotFinal, export_interval
from marketstream.exports.layout import export_paths, list_exports
from marketstream.exports.validation import validate_interval
from marketstream.kafka_io import make_producer, read_range
from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book
from marketstream.orderbook.message import SnapshotMessage

pytestmark = pytest.mark.integration

# The interval under test: [T0, T0 + 10 s), well in the past, so the wall clock when the
# records are produced says nothing about it.
T0 = int(datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp())
START, END = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 10, UTC)
FIRST_SECOND = T0 - 3  # the job's first snapshot (sequence 1)


@pytest.fixture
def settings(kafka_settings, tmp_path):
    return kafka_settings.model_copy(update={"validation_cache_dir": tmp_path / "validation"})


def order_events(count: int) -> list[bytes]:
    """Open orders on both sides of one symbol, at distinct prices."""
    events = []
    for order_id in range(1, count + 1):
        side, price = ("BUY", 100 - order_id) if order_id % 2 else ("SELL", 100 + order_id)
        events.append(json.dumps({"order_id": order_id, "symbol": "BTC-USDT", "order_side": side, "size": order_id,
                                  "price": price, "status": "OPEN", "created_at": FIRST_SECOND}).encode())
    return events


class Job:
    """Publishes what the order-book job would: input events on the orders topic, and for
    each second the true book of the events before it (one more event a second), in
    order of snapshot time, with the record timestamp the producer gives them."""

    def __init__(self, settings, seconds: int):
        self.settings, self.producer = settings, make_producer(settings)
        self.events = order_events(seconds)
        for event in self.events:
            self.producer.send(settings.orders_topic, value=event, partition=0)
        self.producer.flush()
        self.sequence = 0

    def snapshot(self, second: int, recovered: bool = False) -> SnapshotMessage:
        applied = min(len(self.events), second - FIRST_SECOND + 1)
        book = OrderBook().apply_all(parse_event(e) for e in self.events[:applied])
        self.sequence += 1
        return SnapshotMessage(second, self.sequence, {0: applied, 1: 0, 2: 0}, book.open_count,
                               levels_to_json(render_book(book, self.settings.book_depth)), recovered)

    def publish(self, seconds, recovered: bool = False, published_at=None) -> None:
        for second in seconds:
            message = self.snapshot(second, recovered)
            # Live: produced in the second after the one it describes; late: when the job came back.
            stamp = published_at if published_at is not None else second + 1.3
            self.producer.send(self.settings.orderbook_topic, key=message.key.encode(), value=message.value.encode(),
                               headers=message.headers(), timestamp_ms=int(stamp * 1000))
        self.producer.flush()

    def close(self):
        self.producer.close()


def exported(settings) -> list[tuple[int, bool]]:
    items = json.loads(export_paths(settings.export_dir, START, END).data("json").read_text())
    return [(int(datetime.fromisoformat(i["snapshot_time"]).timestamp()) - T0, i["recovered"]) for i in items]


def test_export_picks_snapshots_by_snapshot_time_not_record_time(settings):
    """Live seconds are stamped a second late, and 08..11 (recovered after an outage) are
    published after the interval ended: by record time the interval would lose 08 and 09
    and gain the second before it."""
    job = Job(settings, 20)
    job.publish(range(FIRST_SECOND, T0 + 8))
    job.publish(range(T0 + 8, T0 + 12), recovered=True, published_at=T0 + 14.2)
    job.publish(range(T0 + 12, T0 + 15))
    job.close()

    by_record_time = sorted(
        SnapshotMessage.from_record(r.key, r.value, r.headers).snapshot_time - T0
        for r in read_range(settings, settings.orderbook_topic) if T0 * 1000 <= r.timestamp_ms < (T0 + 10) * 1000
    )
    assert by_record_time == list(range(-1, 8))  # what a record-time export would have written

    summary = export_interval(settings, START, END, grace_s=0)
    assert exported(settings) == [(s, s >= 8) for s in range(10)]
    assert summary["snapshots"] == 10 and summary["recovered_snapshots"] == 2
    report = validate_interval(settings, START, END)
    assert report["status"] == "passed", report["violations"]
    assert report["recovered_snapshots"] == 2 and report["reconciliation"]["matches"] is True


def test_an_interval_exported_during_an_outage_heals_on_the_retry(settings):
    """The job dies after 08:10:04. The export finds the interval not final: a retryable
    failure, no file. The job comes back, publishes 05..11 (recovered) then 12 live; the
    retry exports all ten seconds and validation passes, counting the recovered ones."""
    job = Job(settings, 20)
    job.publish(range(FIRST_SECOND, T0 + 5))
    started = time.monotonic()
    with pytest.raises(IntervalNotFinal, match="not final: the newest snapshot .* is for 2026-03-02T09:30:04Z"):
        export_interval(settings, START, END, grace_s=1)
    assert 1 <= time.monotonic() - started < 10
    assert list_exports(settings.export_dir) == []

    job.publish(range(T0 + 5, T0 + 12), recovered=True, published_at=time.time())
    job.publish([T0 + 12], published_at=time.time())
    job.close()
    summary = export_interval(settings, START, END, grace_s=1)  # the task's retry
    assert summary["snapshots"] == 10 and summary["recovered_snapshots"] == 5
    report = validate_interval(settings, START, END)
    assert report["status"] == "passed", report["violations"]
    assert report["recovered_snapshots"] == 5 and report["expected_snapshots"] == 10
    assert report["reconciliation"]["sequence"] == 13 and report["reconciliation"]["matches"] is True


def test_health_check_and_dashboard_count_the_same_seconds(settings):
    """A gap and a second published twice (identical copies count: a consumer sees both)
    in the last minute: the health DAG's check and the dashboard's health page agree."""
    from dashboard.model.health import snapshots_per_second
    from dashboard.sources import Sources
    from marketstream.health import SETTLE_SECONDS, WINDOW_SECONDS, collect

    now = int(time.time())
    window_end = now - SETTLE_SECONDS
    gap, twice = window_end - 30, window_end - 20
    producer = make_producer(settings)
    sequence = 0
    for second in range(window_end - WINDOW_SECONDS - 5, now):
        if second == gap:
            continue
        sequence += 1
        message = SnapshotMessage(second, sequence, {0: 0}, 0, "[]")
        for _copy in range(2 if second == twice else 1):
            # No timestamp: the producer stamps the send time, as the JVM sink leaves it.
            producer.send(settings.orderbook_topic, key=message.key.encode(), value=message.value.encode(),
                          headers=message.headers())
    producer.flush()
    producer.close()

    report = collect(settings, now=now + 0.5)
    per_second = snapshots_per_second(Sources(settings).health().snapshots, window_end - WINDOW_SECONDS,
                                      window_end - 1)
    dashboard_gaps = [int(t.timestamp()) for t in per_second[per_second.status == "gap"].time]
    dashboard_duplicates = [int(t.timestamp()) for t in per_second[per_second.status == "duplicate"].time]
    assert report.duplicate_seconds == dashboard_duplicates == [twice]
    assert dashboard_gaps == [gap]
    assert report.snapshots_in_window == int((per_second.snapshots > 0).sum()) == WINDOW_SECONDS - 1
    assert report.last_snapshot_time == now - 1
    assert any("1 second(s) with more than one snapshot" in p for p in report.problems)
