"""What the order-book job publishes, without Spark, on a real broker: input events on the
orders topic and, for each second, the true book of the events before it (one more event a
second) on the snapshot topic, plus one metrics message per batch. ``LiveJob`` does it
every second like the running job, and can die and come back (publishing the seconds it
missed, marked recovered, as the job does)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from marketstream.kafka_io import make_producer
from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book
from marketstream.orderbook.metrics import encode_metric
from marketstream.orderbook.message import SnapshotMessage


def order_events(count: int, created_at: int) -> list[bytes]:
    """Open orders on both sides of one symbol, at distinct prices."""
    events = []
    for order_id in range(1, count + 1):
        side, price = ("BUY", 100 - order_id % 90) if order_id % 2 else ("SELL", 100 + order_id % 90)
        events.append(json.dumps({"order_id": order_id, "symbol": "BTC-USDT", "order_side": side, "size": order_id,
                                  "price": price, "status": "OPEN", "created_at": created_at}).encode())
    return events


class PublishedStream:
    """The job's output from ``first_second`` on (sequence 1), for ``events`` input events."""

    def __init__(self, settings, events: int, first_second: int):
        self.settings, self.first_second = settings, first_second
        self.producer = make_producer(settings)
        self.events = order_events(events, first_second)
        for event in self.events:
            self.producer.send(settings.orders_topic, value=event, partition=0)
        self.producer.flush()
        self.sequence = 0
        self.batch_id = 0

    def snapshot(self, second: int, recovered: bool = False) -> SnapshotMessage:
        applied = max(0, min(len(self.events), second - self.first_second + 1))
        book = OrderBook().apply_all(parse_event(e) for e in self.events[:applied])
        self.sequence += 1
        return SnapshotMessage(second, self.sequence, {0: applied, 1: 0, 2: 0}, book.open_count,
                               levels_to_json(render_book(book, self.settings.book_depth)), recovered)

    def publish(self, seconds, recovered: bool = False, published_at: float | None = None) -> None:
        for second in seconds:
            message = self.snapshot(second, recovered)
            # Live: produced in the second after the one it describes; late: when the job came back.
            stamp = published_at if published_at is not None else second + 1.3
            self.producer.send(self.settings.orderbook_topic, key=message.key.encode(), value=message.value.encode(),
                               headers=message.headers(), timestamp_ms=int(stamp * 1000))
        self.producer.flush()

    def publish_metrics(self, at: float, snapshots: int = 1) -> None:
        """One batch's metrics message (a healthy batch: no lag, 300 ms)."""
        self.batch_id += 1
        metrics = {
            "query": "orderbook", "batch_id": self.batch_id,
            "timestamp": datetime.fromtimestamp(at, UTC).isoformat(), "num_input_events": 0,
            "input_events_per_second": 0.0, "processed_events_per_second": 0.0, "batch_duration_ms": 300,
            "state_rows": len(self.events), "start_offsets": {}, "end_offsets": {}, "latest_offsets": {}, "lag": 0,
            "snapshots": snapshots,
        }
        self.producer.send(self.settings.metrics_topic, value=encode_metric(metrics), timestamp_ms=int(at * 1000))
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


class LiveJob:
    """Publishes like the running job: second S at S+1, one metrics message a batch. Starts
    with ``history_s`` seconds already published (a job that has been running)."""

    def __init__(self, settings, history_s: int = 80):
        now = int(time.time())
        self.stream = PublishedStream(settings, 50, now - history_s)
        self.stream.publish(range(now - history_s, now - 1))
        for age in range(history_s - 20, 0, -1):
            self.stream.publish_metrics(now - age)
        self.last_published = now - 2
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._closed.wait(0.2):
            if not self._running.is_set():
                continue
            with self._lock:
                due = int(time.time()) - 1
                if due > self.last_published:
                    backlog = due - self.last_published > 1  # seconds missed while down
                    self.stream.publish(range(self.last_published + 1, due), recovered=True, published_at=time.time())
                    self.stream.publish([due])
                    self.stream.publish_metrics(time.time(), snapshots=due - self.last_published)
                    if backlog:
                        print(f"job back: backfilled {due - self.last_published - 1} second(s)")
                    self.last_published = due

    def start(self) -> "LiveJob":
        self._running.set()
        self._thread.start()
        return self

    def die(self) -> None:
        with self._lock:
            self._running.clear()

    def come_back(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10)
        self.stream.close()
