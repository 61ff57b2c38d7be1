"""Order emulator: sends order events to Kafka at a steady pace (100 events/s by default).

    python -m producer                                # 10 events every 100 ms, forever
    python -m producer --seed 7 --max-events 5000     # repeatable, finite
    python -m producer --replay tests/fixtures/pintu_order_book_mockup.csv
    python -m producer --stdout --max-events 20       # print instead of sending

Defaults come from the settings (KAFKA_BOOTSTRAP_SERVERS, ORDERS_TOPIC,
PRODUCER_EVENTS_PER_TICK, PRODUCER_TICK_SECONDS, PRODUCER_SYMBOLS, PRODUCER_CLOSE_SHARE,
PRODUCER_MAX_LIVE_ORDERS). While it sends to Kafka, its Prometheus metrics are at
http://METRICS_ADDRESS:PRODUCER_METRICS_PORT/metrics (producer/metrics.py).
Messages are keyed by order id, so an order's open and close share a partition;
``--no-key`` sends them unkeyed (spread over partitions, closes may overtake opens).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from marketstream.orderbook.events import event_to_json
from marketstream.orderbook.replay import csv_row_to_json
from marketstream.settings import get_settings
from producer.flow import OrderFlow
from producer.pacing import Pacer

log = logging.getLogger("producer")


@dataclass(frozen=True)
class OutgoingEvent:
    key: bytes | None
    value: bytes


def generated_events(flow: OrderFlow, clock=time.time) -> Iterator[OutgoingEvent]:
    while True:
        event = flow.next_event(int(clock()))
        yield OutgoingEvent(str(event.order_id).encode(), event_to_json(event).encode())


def replayed_events(path: Path) -> Iterator[OutgoingEvent]:
    """The file's events in file order, as JSON; a JSON-lines file is sent line by line."""
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(handle):
                yield OutgoingEvent((row.get("order_id") or "").encode() or None, csv_row_to_json(row).encode())
        else:
            for line in handle:
                if line.strip():
                    yield OutgoingEvent(None, line.rstrip("\n").encode())


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    late_ticks: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def line(self, target_rate: float | None) -> str:
        target = f" (target {target_rate:.0f}/s)" if target_rate else ""
        return (
            f"sent {self.sent} events in {self.seconds:.1f} s: {self.rate:.1f} events/s{target}; "
            f"failed {self.failed}; late ticks {self.late_ticks}"
        )


def send_events(
    events: Iterable[OutgoingEvent],
    send,
    per_tick: int,
    pacer: Pacer | None,
    max_events: int | None = None,
    report_every_s: float = 10.0,
    target_rate: float | None = None,
    stop=lambda: False,
) -> SendReport:
    """Send ``per_tick`` events per pacer tick (no pacing when ``pacer`` is None)."""
    report = SendReport()
    started = last_report = time.monotonic()
    stream = iter(events if max_events is None else itertools.islice(events, max_events))
    while not stop():
        batch = list(itertools.islice(stream, per_tick))
        if not batch:
            break
        if pacer is not None:
            pacer.wait_for_next_tick()
        for event in batch:
            send(event)
        report.sent += len(batch)
        now = time.monotonic()
        if now - last_report >= report_every_s:
            report.seconds = now - started
            report.late_ticks = pacer.late_ticks if pacer else 0
            log.info(report.line(target_rate))
            last_report = now
    # Paced: n ticks span n intervals (the last tick's interval included), not n - 1.
    report.seconds = pacer.elapsed() + pacer.interval_s if pacer else time.monotonic() - started
    report.late_ticks = pacer.late_ticks if pacer else 0
    return report


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m producer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--topic", default=settings.orders_topic)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based)")
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--events-per-tick", type=int, default=settings.producer_events_per_tick)
    parser.add_argument("--tick-seconds", type=float, default=settings.producer_tick_seconds)
    parser.add_argument("--symbols", default=settings.producer_symbols)
    parser.add_argument("--close-share", type=float, default=settings.producer_close_share)
    parser.add_argument("--max-live-orders", type=int, default=settings.producer_max_live_orders,
                        help="open orders kept at most, all symbols; at the cap the next event is a close "
                             "(default %(default)s; 0 = unbounded)")
    parser.add_argument("--first-order-id", type=int, default=None,
                        help="first generated id (default: derived from the clock, so restarts never reuse ids)")
    parser.add_argument("--replay", type=Path, help="send this CSV / JSON-lines file in file order")
    parser.add_argument("--no-key", action="store_true", help="send without keys")
    parser.add_argument("--unpaced", action="store_true", help="send as fast as possible (benchmarks)")
    parser.add_argument("--stdout", action="store_true", help="print events instead of sending")
    parser.add_argument("--broker-timeout", type=float, default=60.0,
                        help="seconds to wait for the broker at startup (default 60)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.events_per_tick < 1 or args.tick_seconds <= 0:
        parser.error("--events-per-tick must be >= 1 and --tick-seconds > 0")
    if args.max_live_orders < 0:
        parser.error("--max-live-orders must be >= 0 (0 = unbounded)")
    if not 0 <= args.close_share <= 1:
        parser.error("--close-share must be within [0, 1]")
    if args.replay:
        if not args.replay.is_file():
            parser.error(f"--replay: no such file: {args.replay}")
        events: Iterator[OutgoingEvent] = replayed_events(args.replay)
    else:
        seed = args.seed if args.seed is not None else time.time_ns()
        # Ids from the clock unless seeded: a restarted emulator must not reopen old ids,
        # which the book would ignore as already closed.
        first_id = args.first_order_id if args.first_order_id is not None else (
            1 if args.seed is not None else int(time.time() * 1000))
        flow = OrderFlow(symbols=[s.strip() for s in args.symbols.split(",") if s.strip()], seed=seed,
                         close_share=args.close_share, first_order_id=first_id,
                         max_live_orders=args.max_live_orders or None)
        events = generated_events(flow)
    if args.no_key:
        events = (OutgoingEvent(None, e.value) for e in events)

    stopping = False

    def request_stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    target = None if args.unpaced else args.events_per_tick / args.tick_seconds

    if args.stdout:
        pacer = None if args.unpaced else Pacer(args.tick_seconds)
        report = send_events(events, lambda e: print(e.value.decode(), flush=True), args.events_per_tick,
                             pacer, args.max_events, target_rate=target, stop=lambda: stopping)
        log.info(report.line(target))
        return 0

    from kafka.errors import KafkaError
    from prometheus_client import REGISTRY

    from marketstream.kafka_io import make_producer, wait_until_ready
    from marketstream.prometheus import serve_metrics
    from marketstream.settings import load_settings
    from producer.metrics import ProducerMetrics

    target_settings = load_settings(kafka_bootstrap_servers=args.bootstrap_servers)
    metrics = ProducerMetrics(REGISTRY)
    metrics.target_rate.set(target or 0)
    if not args.replay:
        metrics.follow_live_orders(lambda: flow.live_orders)
    serve_metrics(target_settings, "producer_metrics_port", metrics.registry)
    pacer = None if args.unpaced else Pacer(args.tick_seconds, on_late=metrics.late_ticks.inc)
    try:
        wait_until_ready(target_settings, timeout_s=args.broker_timeout)
    except TimeoutError as exc:
        log.error("%s; is the broker running (make run starts it)?", exc)
        return 1
    producer = make_producer(target_settings, linger_ms=5, retries=5)

    def send(event: OutgoingEvent) -> None:
        metrics.handed.inc()
        future = producer.send(args.topic, key=event.key, value=event.value)
        future.add_callback(metrics.acknowledged)
        future.add_errback(metrics.gave_up)

    log.info("sending to %s on %s", args.topic, args.bootstrap_servers)
    try:
        report = send_events(events, send, args.events_per_tick, pacer, args.max_events,
                             target_rate=target, stop=lambda: stopping)
        producer.flush(timeout=30)
    except KafkaError as exc:
        log.error("Kafka error: %s", exc)
        return 1
    finally:
        producer.close(timeout=10)
    report.failed = int(metrics.value("marketstream_producer_events_failed_total"))
    report.sent -= report.failed
    log.info(report.line(target))
    if report.failed:
        log.error("%d events were not delivered; first error: %s", report.failed, metrics.first_error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
