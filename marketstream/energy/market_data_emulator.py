"""Market-data API emulator: ``GET /reference-price`` (and ``/v1/reference-price``).

Answers as the API documents it (``openapi.yaml`` beside this file, served at
``/openapi.yaml``)::

    {"delivery_day": "2023-05-12", "delivery_hour": "08-09", "value": 27.74,
     "unit": "euro/mwh", "last_update": "2023-02-21T07:10:20+00:00"}

A missing or malformed parameter gets 400 ``{"error_message": …}``. Each hour's value is
regenerated at most every ``--regen-seconds`` (10 minutes): the value of a period is a
function of (seed, day, hour, period), published 0–30 s after the period starts (the
real API's publication delay), so ``last_update`` is the publication time.

Switchable faults: ``--error-rate`` (500/503), ``--slow-rate``/``--slow-seconds``, the
rate limit (429 with ``Retry-After`` above ``--per-minute`` requests in any 60 s, or
``--per-hour``), ``--throttle-rate`` (random 429s even under the limit) and
``--garbage-rate`` (a 200 whose body is not a reference price). Requests are counted, and
the arrival times of the last ``--history`` (10,000: bounded memory) kept;
``GET /_emulator/stats`` reports the counts and the busiest 60 s window among them, so a
test can check that a client kept the limit.

    python -m marketstream.energy.market_data_emulator --error-rate 0.2 --seed 3
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from aiohttp import web

from marketstream.energy.deals import check_delivery_day, check_delivery_hour

log = logging.getLogger(__name__)
GARBAGE = (
    "<html><body>502 Bad Gateway</body></html>",
    '{"delivery_day": "2026-01-01", "value": ',
    '{"value": "n/a", "unit": "euro/mwh"}',
    "[]",
)
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@dataclass(frozen=True)
class MarketDataConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    seed: int = 0
    regen_seconds: float = 600.0
    publication_delay_max: float = 30.0
    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    throttle_rate: float = 0.0  # share of requests answered 429 even under the limit
    garbage_rate: float = 0.0  # share of requests answered 200 with a body that is no price
    per_minute: int | None = 50  # None: no rate limit
    per_hour: int | None = 1000
    history: int = 10_000  # request arrival times remembered for the stats

    def __post_init__(self):
        for name in ("error_rate", "slow_rate", "throttle_rate", "garbage_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1, got {self.history}")
        if self.regen_seconds <= 0 or not 0 <= self.publication_delay_max < self.regen_seconds:
            raise ValueError("need regen_seconds > 0 and 0 <= publication_delay_max < regen_seconds")


def _unit_random(*parts) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reference_price(config: MarketDataConfig, day: date, hour: str, now: float) -> dict:
    """The published price of ``day``/``hour`` at unix time ``now`` (pure: no state)."""
    period = int(now // config.regen_seconds)
    published = period * config.regen_seconds + _unit_random(config.seed, "delay", period) * config.publication_delay_max
    if now < published:  # this period's value is not out yet: the previous one stands
        period -= 1
        published = period * config.regen_seconds + _unit_random(config.seed, "delay", period) * config.publication_delay_max
    value = round(10 + 20 * _unit_random(config.seed, day, hour, period), 2)
    return {
        "delivery_day": day.isoformat(),
        "delivery_hour": hour,
        "value": value,
        "unit": "euro/mwh",
        "last_update": datetime.fromtimestamp(int(published), UTC).isoformat(),
    }


class RequestLog:
    """How many requests arrived (by answer), and the arrival times of the last ``history``."""

    def __init__(self, history: int = 10_000):
        self.times: deque[float] = deque(maxlen=history)  # arrival of the recent requests, any status
        self.requests = 0
        self.statuses: Counter = Counter()  # one key per status code (and "garbage"): bounded

    def arrived(self, now: float) -> None:
        self.times.append(now)
        self.requests += 1

    def max_in_window(self, window_s: float = 60.0) -> int:
        """Most requests that arrived within any ``window_s`` seconds (of those remembered)."""
        times = list(self.times)
        best = 0
        for i, start in enumerate(times):
            best = max(best, bisect.bisect_left(times, start + window_s) - i)
        return best


class MarketDataEmulator:
    def __init__(self, config: MarketDataConfig):
        self.config = config
        self.log = RequestLog(config.history)
        self.rng = random.Random(config.seed)
        self._accepted_minute: deque[float] = deque()
        self._accepted_hour: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/reference-price", self.reference_price)
        app.router.add_get("/v1/reference-price", self.reference_price)
        app.router.add_get("/openapi.yaml", self.openapi)
        app.router.add_get("/_emulator/stats", self.stats)
        return app

    async def start(self) -> MarketDataEmulator:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("market-data emulator on http://%s:%d (faults: errors %.0f%%, slow %.0f%%, limit %s/min)",
                 self.config.host, self.port, 100 * self.config.error_rate, 100 * self.config.slow_rate,
                 self.config.per_minute)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _rate_limited(self, now: float) -> float | None:
        """Seconds to wait when over the limit, else None (and the request counts)."""
        for queue, window in ((self._accepted_minute, 60.0), (self._accepted_hour, 3600.0)):
            while queue and queue[0] <= now - window:
                queue.popleft()
        for queue, window, limit in ((self._accepted_minute, 60.0, self.config.per_minute),
                                     (self._accepted_hour, 3600.0, self.config.per_hour)):
            if limit is not None and len(queue) >= limit:
                return queue[0] + window - now
        self._accepted_minute.append(now)
        self._accepted_hour.append(now)
        return None

    def _reply(self, status: int, body: dict, **headers) -> web.Response:
        self.log.statuses[status] += 1
        return web.json_response(body, status=status, headers=headers or None)

    async def reference_price(self, request: web.Request) -> web.Response:
        now = time.time()
        self.log.arrived(now)
        wait = self._rate_limited(now)
        if wait is None and self.rng.random() < self.config.throttle_rate:
            wait = 1.0
        if wait is not None:
            return self._reply(429, {"error_message": "rate limit exceeded"}, **{"Retry-After": str(max(1, round(wait)))})
        if self.rng.random() < self.config.slow_rate:
            await asyncio.sleep(self.config.slow_seconds)
        if self.rng.random() < self.config.error_rate:
            status = self.rng.choice((500, 503))
            return self._reply(status, {"error_message": "emulated server error"})
        try:
            day = check_delivery_day(_required(request, "delivery_day"))
            hour = check_delivery_hour(_required(request, "delivery_hour"))
        except ValueError as exc:
            return self._reply(400, {"error_message": str(exc)})
        if self.rng.random() < self.config.garbage_rate:
            self.log.statuses["garbage"] += 1
            return web.Response(text=self.rng.choice(GARBAGE), content_type="application/json")
        return self._reply(200, reference_price(self.config, day, hour, time.time()))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=OPENAPI_PATH.read_text(), content_type="application/yaml")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "requests": self.log.requests,
            "statuses": {str(k): v for k, v in sorted(self.log.statuses.items(), key=lambda kv: str(kv[0]))},
            "max_requests_in_60s": self.log.max_in_window(60.0),
        })


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None or value == "":
        raise ValueError(f"missing parameter {name}")
    return value


async def _serve_forever(config: MarketDataConfig) -> None:
    emulator = await MarketDataEmulator(config).start()
    try:
        await asyncio.Future()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    from marketstream.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m marketstream.energy.market_data_emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=settings.market_data_host)
    parser.add_argument("--port", type=int, default=settings.market_data_port)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regen-seconds", type=float, default=600.0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500/503")
    parser.add_argument("--slow-rate", type=float, default=0.0, help="share of requests delayed --slow-seconds")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="share of requests answered 429 anyway")
    parser.add_argument("--garbage-rate", type=float, default=0.0, help="share of 200s whose body is garbage")
    parser.add_argument("--per-minute", type=int, default=50, help="rate limit; 0 = none")
    parser.add_argument("--per-hour", type=int, default=1000, help="rate limit; 0 = none")
    parser.add_argument("--history", type=int, default=10_000, help="request times remembered (bounded memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = MarketDataConfig(
            host=args.host, port=args.port, seed=args.seed, regen_seconds=args.regen_seconds,
            publication_delay_max=min(30.0, args.regen_seconds / 2), error_rate=args.error_rate,
            slow_rate=args.slow_rate, slow_seconds=args.slow_seconds, throttle_rate=args.throttle_rate,
            garbage_rate=args.garbage_rate,
            per_minute=args.per_minute or None, per_hour=args.per_hour or None, history=args.history,
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
