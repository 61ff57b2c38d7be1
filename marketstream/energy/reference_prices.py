"""Reference-price ETL: fetch the price of every hour that matters, store new values.

One run (the ``energy_reference_prices`` DAG, every 10 minutes):
1. hours to fetch: every tradable hour (next hour to the end of the next day, UTC) and
   every hour that has trades (delivery day within ``reference_price_lookback_days``);
2. fetch each from the market-data API through a rate limiter shared by all processes
   (``market_data_requests_per_minute`` 50, ``market_data_requests_per_hour`` 1,000), with
   retries and backoff on transient errors (network, timeouts, 5xx, 429 — honouring
   ``Retry-After``);
3. store each answer as a ``reference_prices`` row keyed by (day, hour, last_update):
   a value already stored is left alone, so a re-run changes nothing and history is kept;
4. report what was stored and which hours could not be fetched, with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from marketstream.energy import db
from marketstream.energy.deals import (
    check_delivery_day,
    check_delivery_hour,
    check_number,
    check_timestamp,
)
from marketstream.settings import Settings

log = logging.getLogger(__name__)

# The API counts requests per 60 s at its end; our window is a little longer so network
# jitter can never squeeze one request too many into its window.
RATE_WINDOW_MS = 61_000


class TransientApiError(Exception):
    """Worth retrying: 5xx, 429, network trouble."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class BadApiResponse(Exception):
    """Not worth retrying: 4xx other than 429, or an answer that is not a reference price."""


class ReferencePrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    delivery_day: date
    delivery_hour: str
    value: Decimal
    unit: str
    last_update: datetime

    @field_validator("delivery_day", mode="before")
    @classmethod
    def _day(cls, value: Any) -> date:
        return check_delivery_day(value)

    @field_validator("delivery_hour", mode="before")
    @classmethod
    def _hour(cls, value: Any) -> str:
        return check_delivery_hour(value)

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: Any) -> Decimal:
        return check_number("value", value)

    @field_validator("unit", mode="before")
    @classmethod
    def _unit(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"unit must be a non-empty string, got {value!r}")
        return value

    @field_validator("last_update", mode="before")
    @classmethod
    def _last_update(cls, value: Any) -> datetime:
        return check_timestamp("last_update", value)


@dataclass(frozen=True)
class FetchFailure:
    delivery_day: str
    delivery_hour: str
    reason: str


@dataclass
class EtlReport:
    hours: int = 0
    stored_new: int = 0
    unchanged: int = 0
    requests: int = 0
    failed: list[FetchFailure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.hours} hours: {self.stored_new} new values stored, {self.unchanged} unchanged, "
                f"{len(self.failed)} not fetched; {self.requests} requests in {self.seconds:.1f} s")
        if self.failed:
            text += "; missing: " + ", ".join(f"{f.delivery_day} {f.delivery_hour} ({f.reason})" for f in self.failed)
        return text


def hours_to_fetch(engine: sa.Engine, now: datetime, lookback_days: int) -> list[tuple[date, str]]:
    """Tradable hours at ``now`` plus every traded hour of the last ``lookback_days`` days
    and later, sorted."""
    from marketstream.energy.deals import tradable_hours

    hours = set(tradable_hours(now))
    since = now.astimezone(UTC).date() - timedelta(days=lookback_days)
    t = db.trades
    with engine.connect() as connection:
        traded = connection.execute(
            sa.select(t.c.delivery_day, t.c.delivery_hour).where(t.c.delivery_day >= since).distinct()
        )
        hours.update((day, hour) for day, hour in traded)
    return sorted(hours)


def make_limiter(settings: Settings):
    """A blocking limiter (per minute and per hour) whose budget lives in a SQLite file, so
    overlapping runs and manual triggers share the API's limit."""
    from pyrate_limiter import Limiter, Rate, SQLiteBucket

    path = settings.market_data_rate_limit_path
    path.parent.mkdir(parents=True, exist_ok=True)
    rates = [
        Rate(settings.market_data_requests_per_minute, RATE_WINDOW_MS),
        Rate(settings.market_data_requests_per_hour, 60 * RATE_WINDOW_MS),
    ]
    bucket = SQLiteBucket.init_from_file(rates, db_path=str(path), create_new_table=True, use_file_lock=True)
    return Limiter(bucket)


class MarketDataClient:
    def __init__(self, settings: Settings, limiter=None, http: httpx.Client | None = None):
        self.settings = settings
        self.limiter = limiter or make_limiter(settings)
        self.http = http or httpx.Client(base_url=settings.market_data_url, timeout=settings.market_data_timeout_seconds)
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    def _get_once(self, day: date, hour: str) -> ReferencePrice:
        self.limiter.try_acquire("market-data")  # blocks until the budget allows a request
        self.requests += 1
        try:
            response = self.http.get("/reference-price", params={"delivery_day": day.isoformat(), "delivery_hour": hour})
        except httpx.TransportError as exc:
            raise TransientApiError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 429:
            raise TransientApiError("429 rate limited", retry_after=_retry_after(response))
        if response.status_code >= 500:
            raise TransientApiError(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            raise BadApiResponse(f"HTTP {response.status_code}: {_error_message(response)}")
        try:
            price = ReferencePrice.model_validate_json(response.content)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise BadApiResponse(f"not a reference price ({problems}): {response.text[:200]!r}") from None
        if (price.delivery_day, price.delivery_hour) != (day, hour):
            raise BadApiResponse(f"answer is for {price.delivery_day} {price.delivery_hour}, asked {day} {hour}")
        return price

    def fetch(self, day: date, hour: str) -> ReferencePrice:
        """The current price of one hour, retrying transient errors with backoff."""
        initial = self.settings.market_data_backoff_seconds
        backoff = wait_exponential_jitter(multiplier=initial, max=30, jitter=initial)

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, TransientApiError) and exc.retry_after is not None:
                return min(exc.retry_after, 60.0)
            return backoff(state)

        for attempt in Retrying(
            retry=retry_if_exception_type(TransientApiError),
            stop=stop_after_attempt(self.settings.market_data_max_attempts),
            wait=wait,
            before_sleep=lambda s: log.info("%s %s: %s; retry %d", day, hour, s.outcome.exception(), s.attempt_number),
            reraise=True,
        ):
            with attempt:
                return self._get_once(day, hour)
        raise AssertionError("unreachable")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error_message"])
    except (ValueError, KeyError, TypeError):
        return repr(response.text[:200])


def store_price(engine: sa.Engine, price: ReferencePrice, fetched_at: datetime) -> bool:
    """Insert one published value; False when that (day, hour, last_update) is already stored."""
    statement = (
        db.insert_on_conflict(engine, db.reference_prices)
        .values(
            delivery_day=price.delivery_day, delivery_hour=price.delivery_hour, value=price.value,
            unit=price.unit, last_update=price.last_update, fetched_at=fetched_at,
        )
        .on_conflict_do_nothing(index_elements=["delivery_day", "delivery_hour", "last_update"])
        # RETURNING, not rowcount: the only answer that is right on every dialect and driver.
        .returning(db.reference_prices.c.last_update)
    )
    with engine.begin() as connection:
        return connection.execute(statement).first() is not None


def run_etl(settings: Settings, now: datetime | None = None, engine: sa.Engine | None = None,
            client: MarketDataClient | None = None) -> EtlReport:
    """One ETL run; never raises for a single hour (those are in ``report.failed``)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    own_engine, own_client = engine is None, client is None
    engine = engine or db.make_engine(settings.database_url)
    client = client or MarketDataClient(settings)
    report = EtlReport()
    try:
        db.migrate(engine)
        hours = hours_to_fetch(engine, now, settings.reference_price_lookback_days)
        report.hours = len(hours)
        requests_before = client.requests
        for day, hour in hours:
            try:
                price = client.fetch(day, hour)
            except (TransientApiError, BadApiResponse) as exc:
                failure = FetchFailure(day.isoformat(), hour, str(exc))
                log.warning("could not fetch the reference price of %s %s: %s", day, hour, exc)
                report.failed.append(failure)
                continue
            if store_price(engine, price, db.utcnow()):
                report.stored_new += 1
            else:
                report.unchanged += 1
        report.requests = client.requests - requests_before
    finally:
        if own_client:
            client.close()
        if own_engine:
            engine.dispose()
    report.seconds = time.monotonic() - started
    log.info("reference prices: %s", report.summary())
    return report


class MissingReferencePrices(RuntimeError):
    """Some hours could not be fetched (the others were stored)."""


def run_and_check(settings: Settings) -> dict:
    """The DAG task: run, then fail loudly (after storing what it could) if hours are missing."""
    report = run_etl(settings)
    if report.failed:
        raise MissingReferencePrices(report.summary())
    return report.as_dict()


def _aware_datetime(text: str) -> datetime:
    try:
        return check_timestamp("--now", text)
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from marketstream.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m marketstream.energy.reference_prices", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--now", type=_aware_datetime, default=None,
                        help="fetch the hours tradable at this ISO-8601 time (default: now)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run_etl(get_settings(), now=args.now)
    print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
