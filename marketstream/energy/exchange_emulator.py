"""Exchange emulator: a websocket server pushing ``{"deal_confirmation": {...}}`` messages.

Like the real exchange: every connection gets its own stream (nothing is replayed
after a disconnect), one deal every 5–10 s by default, traders ``flex_trader_1..N``,
price 10–30, quantity 1.0–5.0, delivery hour in the tradable range. On top of that:
a rate knob (``--deals-per-minute``, exact pace for load tests) and fault injection
(``--drop-probability`` closes the connection after a deal, ``--malformed-probability``
sends a broken message instead of a deal, ``closing_at_once`` accepts a connection and
closes it at once with 1011, as a failing exchange does).

What it sent is counted, and the last ``--history`` deals (and malformed messages, connect
and drop times) are kept for tests and benchmarks to check against: bounded, so an emulator
that runs for days does not grow.

Building a message (``DealFactory``) is separate from sending it (``ExchangeEmulator``);
``--seed`` makes every connection's stream repeatable.

    python -m marketstream.energy.exchange_emulator --deals-per-minute 100 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from marketstream.energy.deals import deal_message, tradable_hours

log = logging.getLogger(__name__)

MALFORMED_KINDS = (
    "not_json", "not_object", "missing_field", "wrong_type", "unknown_direction", "bad_date", "bad_hour",
)


@dataclass(frozen=True)
class ExchangeConfig:
    host: str = "127.0.0.1"
    port: int = 5050
    # None: the original's pace, a random 5–10 s between deals.
    deals_per_minute: float | None = None
    traders: int = 5
    seed: int | None = None
    drop_probability: float = 0.0
    malformed_probability: float = 0.0
    history: int = 10_000  # deals (and malformed messages, connects, drops) remembered

    def __post_init__(self):
        if self.deals_per_minute is not None and self.deals_per_minute <= 0:
            raise ValueError(f"deals_per_minute must be positive, got {self.deals_per_minute}")
        for name in ("drop_probability", "malformed_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.traders < 1:
            raise ValueError(f"traders must be at least 1, got {self.traders}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1, got {self.history}")


class DealFactory:
    """Builds the messages of one connection's stream from its own random generator."""

    def __init__(self, rng: random.Random, traders: int):
        self.rng = rng
        self.traders = traders

    def deal(self, now: datetime) -> dict:
        rng = self.rng
        day, hour = rng.choice(tradable_hours(now))
        return {
            "id": f"{rng.getrandbits(128):032x}",
            "price": round(rng.uniform(10, 30), 2),
            "quantity": round(rng.uniform(1.0, 5.0), 1),
            "direction": rng.choice(("buy", "sell")),
            "delivery_day": day.isoformat(),
            "delivery_hour": hour,
            "trader_id": f"flex_trader_{rng.randint(1, self.traders)}",
            "execution_time": now.astimezone(UTC).replace(microsecond=0).isoformat(),
        }

    def malformed(self, now: datetime, kind: str | None = None) -> tuple[str, str]:
        """``(kind, text)`` of a message a listener must reject."""
        kind = kind or self.rng.choice(MALFORMED_KINDS)
        deal = self.deal(now)
        if kind == "not_json":
            return kind, '{"deal_confirmation": {"id": "' + deal["id"] + '", "price": 2'
        if kind == "not_object":
            return kind, json.dumps([deal])
        if kind == "missing_field":
            del deal["id"]
        elif kind == "wrong_type":
            deal["price"] = str(deal["price"])
        elif kind == "unknown_direction":
            deal["direction"] = "hold"
        elif kind == "bad_date":
            deal["delivery_day"] = "2026-02-30"
        elif kind == "bad_hour":
            deal["delivery_hour"] = "24-25"
        else:
            raise ValueError(f"unknown malformed kind {kind!r}")
        return kind, deal_message(deal)

    def interval(self, deals_per_minute: float | None) -> float:
        if deals_per_minute is None:
            return self.rng.uniform(5.0, 10.0)
        return 60.0 / deals_per_minute


@dataclass
class SentDeal:
    deal_id: str
    connection: int
    sent_at: float  # time.time() when the frame was handed to the socket


class ExchangeStats:
    """Totals since start, and the most recent ``history`` of each kind of event."""

    def __init__(self, history: int):
        self.connections_opened = 0
        self.deals_sent = 0
        self.malformed_sent = 0
        self.connect_times: deque[float] = deque(maxlen=history)
        self.drop_times: deque[float] = deque(maxlen=history)
        self.sent: deque[SentDeal] = deque(maxlen=history)
        self.malformed: deque[tuple[str, str]] = deque(maxlen=history)


class ExchangeEmulator:
    def __init__(self, config: ExchangeConfig):
        self.config = config
        self.stats = ExchangeStats(config.history)
        self._connections: set = set()
        self._server = None
        # Tests and benchmarks stop the flow before reading the final counts.
        self.paused = False
        # A failing exchange: every new connection is accepted, then closed with 1011 at once.
        self.closing_at_once = False

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> ExchangeEmulator:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.config.host, self.config.port)
        log.info("exchange emulator on ws://%s:%d (%s)", self.config.host, self.port, self._pace())
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _pace(self) -> str:
        rate = self.config.deals_per_minute
        return "one deal every 5-10 s per connection" if rate is None else f"{rate:g} deals/min per connection"

    async def drop_all(self) -> int:
        """Close every open connection now (a forced disconnect); returns how many."""
        connections = list(self._connections)
        self.stats.drop_times.append(time.time())
        await asyncio.gather(*(c.close(1011, "emulated disconnect") for c in connections), return_exceptions=True)
        return len(connections)

    async def _handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        self.stats.connections_opened += 1
        number = self.stats.connections_opened
        self.stats.connect_times.append(time.time())
        seed = None if self.config.seed is None else f"{self.config.seed}:{number}"
        factory = DealFactory(random.Random(seed), self.config.traders)
        if self.closing_at_once:
            await connection.close(1011, "emulated failure: closing at once")
            return
        self._connections.add(connection)
        log.info("connection %d from %s", number, connection.remote_address)
        next_at = time.monotonic()
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            while True:
                # Pace from a schedule, not from "now": sending time does not slow the rate.
                next_at = max(next_at + factory.interval(self.config.deals_per_minute), time.monotonic() - 1)
                # Wait for the next deal's time, or notice the peer left (even while paused).
                await asyncio.wait({closed}, timeout=max(0.0, next_at - time.monotonic()))
                if closed.done():
                    return
                if self.paused:
                    continue
                now = datetime.now(UTC)
                if factory.rng.random() < self.config.malformed_probability:
                    kind, text = factory.malformed(now)
                    await connection.send(text)
                    self.stats.malformed.append((kind, text))
                    self.stats.malformed_sent += 1
                    continue
                deal = factory.deal(now)
                await connection.send(deal_message(deal))
                self.stats.sent.append(SentDeal(deal["id"], number, time.time()))
                self.stats.deals_sent += 1
                if factory.rng.random() < self.config.drop_probability:
                    log.info("fault: dropping connection %d", number)
                    self.stats.drop_times.append(time.time())
                    await connection.close(1011, "emulated disconnect")
                    return
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()
            self._connections.discard(connection)
            log.info("connection %d closed", number)


async def _serve_forever(config: ExchangeConfig) -> None:
    emulator = await ExchangeEmulator(config).start()
    try:
        await asyncio.Future()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    from marketstream.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m marketstream.energy.exchange_emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=settings.exchange_host)
    parser.add_argument("--port", type=int, default=settings.exchange_port)
    parser.add_argument("--deals-per-minute", type=float, default=None,
                        help="per connection; default: the original's random 5-10 s between deals")
    parser.add_argument("--traders", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--drop-probability", type=float, default=0.0, help="after each deal, close the connection")
    parser.add_argument("--malformed-probability", type=float, default=0.0, help="send a broken message instead")
    parser.add_argument("--history", type=int, default=10_000, help="recent deals remembered (bounded memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ExchangeConfig(
            host=args.host, port=args.port, deals_per_minute=args.deals_per_minute, traders=args.traders,
            seed=args.seed, drop_probability=args.drop_probability, malformed_probability=args.malformed_probability,
            history=args.history,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve_forever(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
