"""Known data for the dashboard's end-to-end test, written into the real sources (topics,
exports directory, database) so the test can compare what the browser shows with them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from marketstream.deadletter import DeadLetter
from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import export_paths
from marketstream.kafka_io import make_producer
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels
from marketstream.settings import Settings

BOOK = {
    ("BTC-USDT", "BUY"): {Decimal("34045.24"): Decimal("6.5137"), Decimal("34045.23"): Decimal("0.00058"),
                          Decimal("34044.94"): Decimal("0.0205")},
    ("BTC-USDT", "SELL"): {Decimal("34054.25"): Decimal("7.52013"), Decimal("34054.37"): Decimal("0.10531")},
    ("ETH-USDT", "BUY"): {Decimal("1800.5"): Decimal("3")},
    ("ETH-USDT", "SELL"): {Decimal("1801"): Decimal("2.5"), Decimal("1802.25"): Decimal("1")},
}

DEAD_LETTERS = [
    (b'{"order_id": 7, "status": "OPEN"', "bad JSON: Expecting ',' delimiter"),
    (b'{"order_id": 8, "status": "WEIRD", "created_at": 1}', "unknown status 'WEIRD'"),
    (b'{"order_id": 9, "symbol": "BTC-USDT", "order_side": "BUY", "size": -1}', "size must be positive"),
]


@dataclass
class SeededTopics:
    last: SnapshotMessage
    snapshot_seconds: list[int]  # snapshot_time of every record produced, in order
    gap_second: int
    duplicate_second: int
    last_lag: int
    last_batch_ms: int
    metrics_count: int


def seed_topics(settings: Settings, now: int, seconds: int = 90) -> SeededTopics:
    """``seconds`` snapshots ending at ``now - 1``, one second missing and one published
    twice; a metrics record per second; three dead letters for orders, one for deals."""
    producer = make_producer(settings)
    value = levels_to_json(render_levels({(s, side.upper()): v for (s, side), v in BOOK.items()}, 15))
    first = now - seconds
    gap, duplicate = now - 30, now - 20
    produced: list[int] = []
    sequence = 0
    last = None
    for second in range(first, now):
        if second == gap:
            continue
        for _copy in range(2 if second == duplicate else 1):
            sequence += 1
            last = SnapshotMessage(second, sequence, {0: 100 + sequence, 1: 50 + sequence}, 8, value)
            producer.send(settings.orderbook_topic, key=last.key.encode(), value=value.encode(),
                          headers=last.headers(), timestamp_ms=second * 1000)
            produced.append(second)
    lag = 0
    for batch_id, second in enumerate(range(first, now)):
        lag = 40 + batch_id % 5
        metric = {
            "query": "orderbook", "batch_id": batch_id,
            "timestamp": datetime.fromtimestamp(second, tz=timezone.utc).isoformat(),
            "num_input_events": 100, "input_events_per_second": 100.0 + batch_id % 7,
            "processed_events_per_second": 180.0, "batch_duration_ms": 400 + batch_id % 50, "state_rows": 4174,
            "start_offsets": {"0": batch_id * 100}, "end_offsets": {"0": batch_id * 100 + 100},
            "latest_offsets": {"0": batch_id * 100 + 100 + lag}, "lag": lag,
        }
        producer.send(settings.metrics_topic, value=json.dumps(metric).encode(), timestamp_ms=second * 1000)
    for offset, (raw, reason) in enumerate(DEAD_LETTERS):
        letter = DeadLetter(raw, reason, settings.orders_topic, 1, offset + 10)
        producer.send(settings.deadletter_topic, value=letter.value, headers=letter.headers())
    letter = DeadLetter(b"not json", "deal is not JSON", source=settings.exchange_ws_url)
    producer.send(settings.deals_deadletter_topic, value=letter.value, headers=letter.headers())
    producer.flush()
    producer.close()
    return SeededTopics(last, produced, gap, duplicate, lag, 400 + (seconds - 1) % 50, seconds)


@dataclass
class SeededExports:
    intervals: list[tuple[str, str]] = field(default_factory=list)  # (stem, status) newest first


def seed_exports(export_dir: Path, day: date) -> SeededExports:
    """Three intervals, every format written by its real renderer: validation passed,
    failed, and not validated (no report)."""
    start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=timezone.utc)
    seeded = SeededExports()
    for index, status in enumerate(["passed", "failed", None]):
        begin = start + timedelta(minutes=5 * index)
        end = begin + timedelta(minutes=5)
        paths = export_paths(export_dir, begin, end)
        paths.folder.mkdir(parents=True, exist_ok=True)
        empty_book = SnapshotMessage(int(begin.timestamp()), index + 1, {}, 0, "[]")
        for export_format in FORMATS:
            paths.data(export_format.name).write_bytes(export_format.render([empty_book]))
        if status:
            report = {"status": status, "interval_start": begin.isoformat(), "interval_end": end.isoformat(),
                      "snapshots": 300 if status == "passed" else 298,
                      "violations": [] if status == "passed" else ["gap: no snapshot at 10:07:12",
                                                                   "duplicate: 2 snapshots at 10:08:01"]}
            paths.validation.write_text(json.dumps(report))
        seeded.intervals.insert(0, (paths.stem, status or "not validated"))
    (paths.folder / ".tmp-partial.json").write_text("ignored")  # a writer's temp file: not listed
    return seeded


TRADES = [
    # deal_id, trader, direction, price, quantity, hour
    ("d1", "flex_trader_1", "buy", "20.50", "2.0", "10-11"),
    ("d2", "flex_trader_1", "sell", "25.00", "1.5", "10-11"),
    ("d3", "flex_trader_1", "buy", "23.00", "1.0", "11-12"),
    ("d4", "flex_trader_2", "sell", "21.00", "3.0", "10-11"),
    ("d5", "flex_trader_2", "sell", "24.00", "1.0", "11-12"),
    ("d6", "flex_trader_2", "buy", "19.00", "4.0", "12-13"),
]
REFERENCES = {"10-11": "22.00", "11-12": "22.50"}  # 12-13 has none


def trade_rows(day: date, now: datetime) -> list[dict]:
    return [
        {"deal_id": d, "trader_id": t, "direction": side, "price": Decimal(p), "quantity": Decimal(q),
         "delivery_day": day, "delivery_hour": hour, "execution_time": now - timedelta(minutes=30),
         "loaded_at": now - timedelta(minutes=29)}
        for d, t, side, p, q, hour in TRADES
    ]


def reference_rows(day: date, now: datetime) -> list[dict]:
    rows = []
    for hour, value in REFERENCES.items():
        # An older value too: the desk must use the newest one.
        rows.append({"delivery_day": day, "delivery_hour": hour, "value": Decimal("99"), "unit": "euro/mwh",
                     "last_update": now - timedelta(hours=2), "fetched_at": now - timedelta(hours=2)})
        rows.append({"delivery_day": day, "delivery_hour": hour, "value": Decimal(value), "unit": "euro/mwh",
                     "last_update": now - timedelta(minutes=12), "fetched_at": now - timedelta(minutes=11)})
    return rows
