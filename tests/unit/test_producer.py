import json
import subprocess
import sys
from decimal import Decimal

from marketstream.orderbook import OrderBook, parse_event
from producer.__main__ import OutgoingEvent, send_events
from producer.flow import OrderFlow, instrument_for
from producer.pacing import Pacer
from tests.support import ROOT


def events(seed, n=2000, **kwargs):
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT", "SOL-USDT"], seed=seed, **kwargs)
    return [flow.next_event(now=1_700_000_000) for _ in range(n)]


def test_same_seed_same_events_other_seed_other_events():
    assert events(7) == events(7)
    assert events(7) != events(8)


def test_prices_sit_on_the_tick_grid_buys_below_sells_above_the_mid():
    flow = OrderFlow(symbols=["BTC-USDT"], seed=1, close_share=0)
    for _ in range(500):
        mid = flow._markets["BTC-USDT"].mid
        event = flow.next_event(now=0)
        new_mid = flow._markets["BTC-USDT"].mid
        assert event.price % instrument_for("BTC-USDT").tick == 0
        assert (event.price < new_mid) if event.side == "BUY" else (event.price > new_mid)
        assert abs(new_mid - mid) <= instrument_for("BTC-USDT").tick


def test_close_share_and_closes_only_target_live_orders():
    generated = events(3, n=5000, close_share=0.3)
    closes = [e for e in generated if e.status == "CLOSED"]
    assert 0.25 < len(closes) / len(generated) < 0.35
    opened = set()
    for event in generated:
        if event.status == "OPEN":
            opened.add(event.order_id)
        else:
            assert event.order_id in opened
            opened.remove(event.order_id)
    book = OrderBook().apply_all(generated)
    assert book.open_count == len(opened) and book.stats.closes_before_open == 0


def test_every_generated_event_is_valid_on_the_wire():
    from marketstream.orderbook.events import event_to_json
    for event in events(5, n=500):
        assert parse_event(event_to_json(event)) == event
        assert event.status == "CLOSED" or event.size > 0


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_pacer_absorbs_send_time_instead_of_adding_it():
    clock = FakeClock()
    pacer = Pacer(0.1, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        pacer.wait_for_next_tick()
        clock.now += 0.03  # sending takes 30 ms of every 100 ms tick
    assert abs(clock.now - (9.9 + 0.03)) < 1e-9  # 100 ticks in 10 s, not 13 s
    assert pacer.late_ticks == 0


def test_pacer_catches_up_after_a_stall_and_counts_it():
    clock = FakeClock()
    pacer = Pacer(0.1, clock=clock, sleep=clock.sleep)
    pacer.wait_for_next_tick()
    clock.now += 0.5  # a 500 ms stall
    for _ in range(10):
        pacer.wait_for_next_tick()
    assert abs(clock.now - 1.0) < 1e-9 and pacer.late_ticks >= 1


def test_send_events_sends_per_tick_batches_up_to_max_events():
    sent = []
    stream = (OutgoingEvent(None, str(i).encode()) for i in range(1000))
    report = send_events(stream, sent.append, per_tick=10, pacer=None, max_events=95)
    assert len(sent) == 95 == report.sent


def test_stdout_mode_prints_seeded_events_in_the_seed_format():
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "producer", "--stdout", "--seed", "11", "--max-events", "30", "--unpaced"],
        capture_output=True, text=True, cwd=ROOT, check=True, timeout=60,
    )
    first, second = run(), run()
    lines = first.stdout.splitlines()
    without_time = lambda out: [{k: v for k, v in json.loads(line).items() if k != "created_at"}  # noqa: E731
                                for line in out.splitlines()]
    assert len(lines) == 30 and without_time(first.stdout) == without_time(second.stdout)
    assert set(json.loads(lines[0])) == {"order_id", "symbol", "order_side", "size", "price", "status", "created_at"}
    assert "sent 30 events" in first.stderr
    assert isinstance(parse_event(lines[0]).price, Decimal)
