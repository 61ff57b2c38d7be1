"""The listener's connection loop against a real websocket server (the exchange emulator,
in this process): an exchange that accepts and closes at once is not reconnected to in a
hot loop, the backoff resets once a connection has lived, and SIGTERM-like stops are quick.
No deal is sent (the emulator is paused or closing), so no broker is needed here; the
deal path is tested against a real broker in tests/integration/test_energy_hostile.py."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from marketstream.energy.listener import ListenerMetrics, TradeListener
from marketstream.prometheus import LastEventClock, serve_metrics
from marketstream.settings import load_settings
from tests.support import free_port


async def started_emulator(**config) -> ExchangeEmulator:
    emulator = await ExchangeEmulator(ExchangeConfig(port=0, **config)).start()
    emulator.paused = True  # no deals: nothing to produce
    return emulator


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def listener_for(emulator: ExchangeEmulator, **settings) -> TradeListener:
    return TradeListener(load_settings(exchange_ws_url=f"ws://127.0.0.1:{emulator.port}", **settings))


def test_an_exchange_that_closes_at_once_is_not_reconnected_in_a_hot_loop():
    """Without backoff, 3,206 connections in 3 s. With it: about five in
    the first two seconds (0.1, 0.2, 0.4, 0.8 s + jitter), then one every
    EXCHANGE_RECONNECT_MAX_SECONDS (2 s) at most; and once the exchange recovers, the
    listener is back within that cap."""

    async def scenario():
        emulator = await started_emulator()
        emulator.closing_at_once = True
        listener = listener_for(emulator)
        stop = asyncio.Event()
        running = asyncio.ensure_future(listener.run(stop))
        await asyncio.sleep(6)
        closing_phase = emulator.stats.connections_opened
        waits = listener.metrics.value("marketstream_listener_reconnect_wait_seconds")
        emulator.closing_at_once = False
        recovered_at = time.monotonic()
        await wait_until(lambda: emulator.open_connections == 1, 5, "the listener to reconnect")
        back_after = time.monotonic() - recovered_at
        await asyncio.sleep(1)  # a healthy connection stays: no more connections
        opened = emulator.stats.connections_opened
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(running, 5)
        stop_seconds = time.monotonic() - stopped_at
        await emulator.stop()
        return listener.metrics, closing_phase, waits, back_after, opened, stop_seconds

    metrics, closing_phase, waits, back_after, opened, stop_seconds = asyncio.run(scenario())
    assert 3 <= closing_phase <= 9, closing_phase
    assert 0 <= waits <= 2.0  # the backoff in force when sampled (0 while an attempt is under way)
    assert back_after < 2.5
    assert opened == closing_phase + 1
    assert metrics.value("marketstream_listener_connections_total") == opened
    assert metrics.value("marketstream_listener_reconnects_total") == opened - 1
    assert metrics.value("marketstream_listener_short_connections_total") == closing_phase
    assert metrics.value("marketstream_listener_connected") == 0  # after the stop
    assert stop_seconds < 2


def test_the_backoff_resets_after_a_connection_that_lived():
    """A connection that lived EXCHANGE_RECONNECT_RESET_SECONDS: the next attempt is at once,
    however many short ones came before."""

    async def scenario():
        emulator = await started_emulator()
        listener = listener_for(emulator, exchange_reconnect_reset_seconds=0.5)
        stop = asyncio.Event()
        running = asyncio.ensure_future(listener.run(stop))
        gaps = []
        for lived in (0.0, 0.0, 0.0, 0.0, 0.8, 0.8):  # four short connections, then two that lived
            await wait_until(lambda: emulator.open_connections == 1, 5, "a connection")
            await asyncio.sleep(lived)
            before = emulator.stats.connections_opened
            dropped_at = time.monotonic()
            await emulator.drop_all()
            await wait_until(lambda before=before: emulator.stats.connections_opened > before, 5, "a reconnect")
            gaps.append(time.monotonic() - dropped_at)
        stop.set()
        await asyncio.wait_for(running, 5)
        await emulator.stop()
        return gaps

    gaps = asyncio.run(scenario())
    # After short connections the waits grow (0.1, 0.2, 0.4 s, each + up to 0.5 s jitter) ...
    assert gaps[3] >= 0.4, gaps
    # ... and a connection that lived resets them: back at once (no wait; the margin is the
    # close and connect handshakes on a busy machine, still well under the grown backoff).
    assert gaps[4] < 0.3 and gaps[5] < 0.3, gaps


def test_stop_while_the_exchange_is_away_is_quick():
    async def scenario():
        listener = TradeListener(load_settings(exchange_ws_url=f"ws://127.0.0.1:{free_port()}"))
        stop = asyncio.Event()
        running = asyncio.ensure_future(listener.run(stop))
        await asyncio.sleep(3)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(running, 5)
        return listener.metrics, time.monotonic() - stopped_at

    metrics, stop_seconds = asyncio.run(scenario())
    assert stop_seconds < 1
    failures = metrics.value("marketstream_listener_connection_failures_total")
    assert 3 <= failures <= 9, failures  # backed off, not a hot loop
    assert metrics.value("marketstream_listener_connections_total") == 0


def test_the_endpoint_serves_the_listener_figures():
    settings = load_settings(listener_metrics_port=free_port())
    metrics = ListenerMetrics()
    server = serve_metrics(settings, "listener_metrics_port", metrics.registry)
    try:
        metrics.received.inc(3)
        metrics.dead_lettered.labels("out_of_range").inc()
        text = urllib.request.urlopen(f"http://127.0.0.1:{settings.listener_metrics_port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
        server.server_close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text.decode()) for s in family.samples}
    assert samples[("marketstream_listener_deals_received_total", ())] == 3
    assert samples[("marketstream_listener_deals_dead_lettered_total", (("reason_code", "out_of_range"),))] == 1
    # Every reason code is there from the start (rates work from zero).
    assert samples[("marketstream_listener_deals_dead_lettered_total", (("reason_code", "too_deep"),))] == 0
    assert ("marketstream_listener_deal_seconds_since_last", ()) in samples


def test_a_port_in_use_stops_startup_naming_the_setting():
    import socket

    import pytest

    from marketstream.settings import SettingsError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"LOADER_METRICS_PORT={port}: cannot serve metrics"):
            serve_metrics(load_settings(loader_metrics_port=port), "loader_metrics_port", ListenerMetrics().registry)
    assert serve_metrics(load_settings(loader_metrics_port=0), "loader_metrics_port", ListenerMetrics().registry) is None


def test_seconds_since_the_last_event():
    from prometheus_client import CollectorRegistry

    now = [1000.0]
    registry = CollectorRegistry()
    clock = LastEventClock("x_deal", "deal", registry, clock=lambda: now[0])
    now[0] = 1030.0
    assert registry.get_sample_value("x_deal_seconds_since_last") == 30  # since start: none yet
    assert registry.get_sample_value("x_deal_last_timestamp_seconds") == 0
    clock.mark()
    now[0] = 1032.5
    assert registry.get_sample_value("x_deal_seconds_since_last") == 2.5
    assert registry.get_sample_value("x_deal_last_timestamp_seconds") == 1030
