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
    tick = instrument_for("BTC-USDT").tick
    opens = 0
    for _ in range(5000):
        mid = flow.mid("BTC-USDT")
        event = flow.next_event(now=0)
        new_mid = flow.mid("BTC-USDT")
        assert abs(new_mid - mid) <= tick  # the mid moves a tick at most
        if event.status == "OPEN":  # closes (fills here, close_share=0) carry no price
            opens += 1
            assert event.price % tick == 0
            assert (event.price < new_mid) if event.side == "BUY" else (event.price > new_mid)
    assert opens > 2500


SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


def best_prices(book, symbol):
    buys, sells = book.levels[(symbol, "BUY")], book.levels[(symbol, "SELL")]
    return (max(buys) if buys else None), (min(sells) if sells else None)


def test_the_book_is_never_crossed_and_the_mid_sits_between_the_sides():
    flow = OrderFlow(symbols=SYMBOLS, seed=2)
    book = OrderBook()
    for _ in range(50_000):
        event = flow.next_event(now=0)
        book.apply(event)
        for symbol in SYMBOLS:
            best_buy, best_sell = best_prices(book, symbol)
            assert best_buy is None or best_sell is None or best_buy < best_sell, (symbol, best_buy, best_sell)
            assert best_buy is None or best_buy < flow.mid(symbol)
            assert best_sell is None or best_sell > flow.mid(symbol)
    assert book.open_count == flow.live_orders and book.stats.closes_before_open == 0
    assert all(best_prices(book, s)[0] and best_prices(book, s)[1] for s in SYMBOLS)


def test_live_orders_never_exceed_the_cap():
    flow = OrderFlow(symbols=SYMBOLS, seed=4, max_live_orders=300)
    for _ in range(20_000):
        flow.next_event(now=0)
        assert flow.live_orders <= 300
    assert flow.live_orders >= 250  # the cap is reached and held


def test_with_the_default_cap_the_open_order_count_is_stable():
    flow = OrderFlow(symbols=SYMBOLS, seed=5)
    counts = []
    for i in range(1, 100_001):
        flow.next_event(now=0)
        assert flow.live_orders <= 5_000
        if i % 10_000 == 0:
            counts.append(flow.live_orders)
    assert min(counts[-5:]) >= 4_500, counts  # flat near the cap, not growing


def test_unbounded_when_asked():
    flow = OrderFlow(symbols=SYMBOLS, seed=4, max_live_orders=None, mid_move_share=0)
    for _ in range(20_000):
        flow.next_event(now=0)
    assert flow.live_orders > 5_000


def test_the_mid_stays_within_its_band_for_hours():
    flow = OrderFlow(symbols=SYMBOLS, seed=6)
    markets = [flow._markets[s] for s in SYMBOLS]  # mids in ticks: cheaper than Decimal prices
    start = [m.mid_ticks for m in markets]
    low, high = list(start), list(start)
    for _ in range(200_000):  # over half an hour at the default 100 events/s
        flow.next_event(now=0)
        for i, market in enumerate(markets):
            mid = market.mid_ticks
            if mid < low[i]:
                low[i] = mid
            elif mid > high[i]:
                high[i] = mid
    for i, s in enumerate(SYMBOLS):
        assert start[i] - flow.mid_band_ticks <= low[i] and high[i] <= start[i] + flow.mid_band_ticks, (s, low, high)
        assert high[i] - low[i] >= 5  # it does move
    assert flow.mid("BTC-USDT") % instrument_for("BTC-USDT").tick == 0


def test_mid_moves_fill_the_orders_they_go_through_before_anything_else():
    flow = OrderFlow(symbols=SYMBOLS, seed=8)
    book = OrderBook()
    fills = runs = 0
    pending = 0
    for _ in range(30_000):
        event = flow.next_event(now=0)
        if pending:  # fills come one per event, before anything else
            assert event.status == "CLOSED" and flow.pending_fills == pending - 1
        if event.status == "CLOSED":
            order = book.open_orders[event.order_id]
            # A cancel never leaves the mid on the closed order's price (live orders are
            # strictly off the mid); the last fill of a run moves the mid onto it.
            if flow.pending_fills or flow.mid(order.symbol) == order.price:
                fills += 1
                runs += not pending
                best_buy, best_sell = best_prices(book, order.symbol)
                assert order.price == (best_buy if order.side == "BUY" else best_sell)  # the front of the book
        pending = flow.pending_fills
        book.apply(event)
    assert runs > 50 and fills > runs



def test_close_share_and_closes_only_target_live_orders():
    generated = events(3, n=5000, close_share=0.3)  # fills (mid moves) add a few closes
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


def test_late_ticks_are_told_to_the_metrics():
    from producer.metrics import ProducerMetrics

    now = [0.0]
    metrics = ProducerMetrics()
    pacer = Pacer(0.1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                  on_late=metrics.late_ticks.inc)
    for _ in range(3):
        pacer.wait_for_next_tick()
    now[0] += 1.0  # the sender stalled for ten intervals
    pacer.wait_for_next_tick()
    assert pacer.late_ticks == 1 == metrics.value("marketstream_producer_late_ticks_total")


def test_producer_metrics_count_failures_and_keep_only_the_first_error():
    from producer.metrics import ProducerMetrics

    metrics = ProducerMetrics()
    metrics.follow_live_orders(lambda: 42)
    for attempt in range(1000):
        metrics.gave_up(RuntimeError(f"failure {attempt}"))
    metrics.acknowledged()
    assert metrics.value("marketstream_producer_events_failed_total") == 1000
    assert str(metrics.first_error) == "failure 0"
    assert metrics.value("marketstream_producer_events_sent_total") == 1
    assert metrics.value("marketstream_producer_live_orders") == 42
    assert metrics.value("marketstream_producer_event_seconds_since_last") < 1


def test_make_run_prints_every_metrics_endpoint():
    from marketstream.embedded.stack import metrics_rows
    from marketstream.settings import load_settings

    rows = dict(metrics_rows(load_settings()))
    assert rows["Metrics: order emulator"] == "http://127.0.0.1:9101/metrics"
    assert rows["Metrics: trade listener"] == "http://127.0.0.1:9102/metrics"
    assert rows["Metrics: trade loader"] == "http://127.0.0.1:9103/metrics"
    # Inside a container they listen on every interface; scraped from the host by loopback.
    rows = dict(metrics_rows(load_settings(metrics_address="0.0.0.0", loader_metrics_port=0)))
    assert rows["Metrics: trade listener"] == "http://127.0.0.1:9102/metrics"
    assert rows["Metrics: trade loader"] == "off"
