"""The exchange emulator over a real websocket: per-connection streams at the set pace,
dropped connections and malformed messages when asked."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from marketstream.energy.deals import InvalidDeal, parse_deal
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator


async def receive(url: str, count: int, timeout_s: float = 10) -> list[str]:
    messages = []
    async with connect(url) as ws:
        while len(messages) < count:
            messages.append(await asyncio.wait_for(ws.recv(), timeout_s))
    return messages


def test_each_connection_gets_its_own_paced_stream():
    async def scenario():
        emulator = await ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=1200, seed=4)).start()
        url = f"ws://127.0.0.1:{emulator.port}"
        try:
            started = time.monotonic()
            first, second = await asyncio.gather(receive(url, 10), receive(url, 10))
            elapsed = time.monotonic() - started
        finally:
            await emulator.stop()
        return first, second, elapsed, emulator

    first, second, elapsed, emulator = asyncio.run(scenario())
    ids_first = {parse_deal(m).id for m in first}
    ids_second = {parse_deal(m).id for m in second}
    assert len(ids_first) == 10 and not ids_first & ids_second  # nothing shared or replayed
    assert 0.4 < elapsed < 2.0  # 1200/min = one every 50 ms per connection
    assert emulator.stats.connections_opened == 2
    assert json.loads(first[0]).keys() == {"deal_confirmation"}


def test_drop_and_malformed_faults():
    async def scenario():
        emulator = await ExchangeEmulator(ExchangeConfig(
            port=0, deals_per_minute=6000, seed=9, drop_probability=0.2, malformed_probability=0.3,
        )).start()
        url = f"ws://127.0.0.1:{emulator.port}"
        received, drops = [], 0
        try:
            for _ in range(5):
                try:
                    async with connect(url) as ws:
                        while True:
                            received.append(await asyncio.wait_for(ws.recv(), 5))
                except ConnectionClosedError as exc:
                    assert exc.rcvd.code == 1011
                    drops += 1
        finally:
            await emulator.stop()
        return emulator, received, drops

    emulator, received, drops = asyncio.run(scenario())
    assert drops == 5
    bad = 0
    for message in received:
        try:
            parse_deal(message)
        except InvalidDeal:
            bad += 1
    assert bad == len(emulator.stats.malformed) > 0
    assert len(received) - bad == len(emulator.stats.sent)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="drop_probability"):
        ExchangeConfig(drop_probability=1.5)
    with pytest.raises(ValueError, match="deals_per_minute"):
        ExchangeConfig(deals_per_minute=0)


def test_the_exchange_remembers_a_bounded_history():
    async def scenario():
        emulator = await ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=60_000, seed=2, history=5)).start()
        try:
            messages = await receive(f"ws://127.0.0.1:{emulator.port}", 40)
            emulator.paused = True
            await asyncio.sleep(0.05)
        finally:
            await emulator.stop()
        return emulator, messages

    emulator, messages = asyncio.run(scenario())
    assert emulator.stats.deals_sent >= 40  # counted, all of them ...
    assert len(emulator.stats.sent) == 5  # ... remembered, the last five
    remembered = {d.deal_id for d in emulator.stats.sent}
    received = [parse_deal(m).id for m in messages]
    assert len(remembered) == 5 and not remembered & set(received[:30])  # the early ones are forgotten
    with pytest.raises(ValueError, match="history"):
        ExchangeConfig(history=0)


def test_the_market_data_emulator_remembers_a_bounded_history():
    import httpx

    from marketstream.energy.background import BackgroundLoop
    from marketstream.energy.market_data_emulator import MarketDataConfig, MarketDataEmulator

    with BackgroundLoop() as loop:
        emulator = MarketDataEmulator(MarketDataConfig(port=0, per_minute=None, per_hour=None, history=3))
        loop.run(emulator.start())
        try:
            for _ in range(10):
                httpx.get(f"http://127.0.0.1:{emulator.port}/reference-price",
                          params={"delivery_day": "2026-11-23", "delivery_hour": "10-11"}, timeout=5)
            stats = httpx.get(f"http://127.0.0.1:{emulator.port}/_emulator/stats", timeout=5).json()
        finally:
            loop.run(emulator.stop())
    assert stats["requests"] == 10 and stats["statuses"] == {"200": 10}
    assert len(emulator.log.times) == 3 and stats["max_requests_in_60s"] == 3
