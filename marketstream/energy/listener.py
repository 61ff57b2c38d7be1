"""Trade listener: exchange websocket → validated deals on the deals topic.

Each message is checked against the deal contract (``marketstream.energy.deals``): a deal
is produced to ``settings.deals_topic`` (key = deal id, value = the message bytes as
received, header ``received_at``) by an idempotent ``acks=all`` producer, and the send is
acknowledged before the next message is read, so a deal that reached us is in Kafka before
anything else happens; broker trouble is retried for as long as it lasts. Everything else
that can go wrong with one message becomes a dead letter on
``settings.deals_deadletter_topic`` with its reason and reason code
(``marketstream.deadletter``), and the listener goes on: a message that breaks the contract,
a record the broker refuses (too large for the topic), a websocket message too large to
read (``MAX_FRAME_BYTES``: the connection closes, the letter says so), any unexpected error.

Reconnects: after a connection that lived ``EXCHANGE_RECONNECT_RESET_SECONDS``, at once;
after a failed attempt or a connection that closed sooner, after an exponential, jittered
wait capped at ``EXCHANGE_RECONNECT_MAX_SECONDS``, so an exchange that accepts and closes
at once is asked about once every few seconds, not thousands of times. The exchange does not
replay, so deals sent while we were away are lost by design (as with the original).

Metrics at ``http://METRICS_ADDRESS:LISTENER_METRICS_PORT/metrics`` (``ListenerMetrics``).

    python -m marketstream.energy.listener
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import AsyncRetrying, Retrying, retry_if_exception_type, wait_exponential_jitter

from marketstream.deadletter import MAX_VALUE_BYTES, DeadLetter
from marketstream.energy.deals import DealReasonCode, InvalidDeal, parse_deal
from marketstream.energy.delivery import (
    RecordRefused,
    make_deadletter_producer,
    send_dead_letter,
    send_until_acknowledged,
)
from marketstream.prometheus import LastEventClock
from marketstream.settings import Settings

log = logging.getLogger(__name__)

# The largest websocket message read at all (a deal is ~300 bytes, the contract allows
# 4,096): anything up to this is dead-lettered whole; beyond it the websocket library
# closes the connection (1009) and the dead letter records what was lost.
MAX_FRAME_BYTES = MAX_VALUE_BYTES
# The first reconnect wait after a short-lived connection; doubles up to the cap.
RECONNECT_INITIAL_SECONDS = 0.1


class ListenerMetrics:
    """The listener's Prometheus figures (names as exposed):

    - ``marketstream_listener_deals_received_total``: websocket messages received
      (deals and rejects);
    - ``marketstream_listener_deals_produced_total``: deals acknowledged by the broker;
    - ``marketstream_listener_deals_dead_lettered_total{reason_code}``: rejects, by
      ``DealReasonCode``;
    - ``marketstream_listener_dead_letter_failures_total``: dead letters the broker refused;
    - ``marketstream_listener_produce_retries_total``: sends retried (broker trouble);
    - ``marketstream_listener_connections_total``, ``…_reconnects_total`` (connections after
      the first), ``…_connection_failures_total`` (attempts that failed), ``…_short_connections_total``
      (closed before ``EXCHANGE_RECONNECT_RESET_SECONDS``);
    - ``marketstream_listener_connected`` (1/0), ``marketstream_listener_reconnect_wait_seconds``
      (the wait before the next attempt, 0 when connected);
    - ``marketstream_listener_deal_last_timestamp_seconds`` and
      ``marketstream_listener_deal_seconds_since_last``: the last deal produced.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter("marketstream_listener_deals_received", "Websocket messages received from the "
                                "exchange (deals and rejects)", registry=r)
        self.produced = Counter("marketstream_listener_deals_produced", "Deals acknowledged by the broker on the "
                                "deals topic", registry=r)
        self.dead_lettered = Counter("marketstream_listener_deals_dead_lettered", "Messages sent to the deals "
                                     "dead-letter topic, by reason code", ["reason_code"], registry=r)
        for code in DealReasonCode:
            if code is not DealReasonCode.REFUSED_BY_DATABASE:  # the loader's
                self.dead_lettered.labels(code.value)
        self.dead_letter_failures = Counter("marketstream_listener_dead_letter_failures", "Dead letters the broker "
                                            "refused (lost)", registry=r)
        self.produce_retries = Counter("marketstream_listener_produce_retries", "Sends retried because of broker "
                                       "trouble", registry=r)
        self.connections = Counter("marketstream_listener_connections", "Connections opened to the exchange",
                                   registry=r)
        self.reconnects = Counter("marketstream_listener_reconnects", "Connections opened after the first",
                                  registry=r)
        self.connection_failures = Counter("marketstream_listener_connection_failures", "Connection attempts that "
                                           "failed", registry=r)
        self.short_connections = Counter("marketstream_listener_short_connections", "Connections closed before "
                                         "EXCHANGE_RECONNECT_RESET_SECONDS (the backoff keeps growing)", registry=r)
        self.connected = Gauge("marketstream_listener_connected", "1 while connected to the exchange", registry=r)
        self.reconnect_wait = Gauge("marketstream_listener_reconnect_wait_seconds", "Wait before the next "
                                    "connection attempt (0 when connected)", registry=r)
        self.last_deal = LastEventClock("marketstream_listener_deal", "deal produced", r)

    def value(self, name: str, **labels) -> float:
        """A figure as exposed, e.g. ``value("marketstream_listener_deals_produced_total")``."""
        return self.registry.get_sample_value(name, labels or None) or 0.0


class ConnectionEndedEarly(Exception):
    """A connection closed before it lived ``EXCHANGE_RECONNECT_RESET_SECONDS``: reconnecting
    waits like after a failed attempt."""


class TradeListener:
    def __init__(self, settings: Settings, producer=None, metrics: ListenerMetrics | None = None,
                 deadletter_producer=None):
        self.settings = settings
        self.metrics = metrics or ListenerMetrics()
        self._producer = producer
        self._deadletter_producer = deadletter_producer

    @property
    def producer(self):
        if self._producer is None:
            from marketstream.kafka_io import make_producer

            # Idempotent + acks=all: a retried send after a broker hiccup is not a duplicate.
            self._producer = make_producer(self.settings, enable_idempotence=True, acks="all", linger_ms=0)
        return self._producer

    @property
    def deadletter_producer(self):
        if self._deadletter_producer is None:
            self._deadletter_producer = make_deadletter_producer(self.settings)
        return self._deadletter_producer

    def close(self) -> None:
        for producer in (self._producer, self._deadletter_producer):
            if producer is not None:
                producer.flush(timeout=10)
                producer.close(timeout=10)
        self._producer = self._deadletter_producer = None

    # -- one message -------------------------------------------------------------------
    def handle(self, raw: bytes | str) -> str | None:
        """Validate and durably produce one websocket message; returns the deal id, or None
        when it went to the dead-letter topic. Blocks until the broker acknowledged it.
        Raises nothing: whatever goes wrong with this message is its dead letter."""
        self.metrics.received.inc()
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        try:
            deal = parse_deal(data)
            received_at = datetime.now(UTC).isoformat()
            send_until_acknowledged(lambda: self.producer, self.settings.deals_topic, data, key=deal.id.encode(),
                                    headers=[("received_at", received_at.encode())], on_retry=self._retried)
        except (InvalidDeal, RecordRefused) as exc:
            self.dead_letter(data, exc.reason, exc.code)
            return None
        except Exception as exc:  # a bug costs this message (dead-lettered), never the listener
            log.exception("unexpected error while handling an exchange message")
            self.dead_letter(data, f"unexpected error: {type(exc).__name__}: {exc}", DealReasonCode.INTERNAL_ERROR)
            return None
        self.metrics.produced.inc()
        self.metrics.last_deal.mark()
        return deal.id

    def _retried(self, error: BaseException, attempt: int) -> None:
        self.metrics.produce_retries.inc()

    def dead_letter(self, data: bytes, reason: str, code: DealReasonCode) -> None:
        log.warning("dead-lettering a bad exchange message [%s]: %s (%.200r)", code, reason, data)
        letter = DeadLetter(data, reason, code.value, source=self.settings.exchange_ws_url)
        try:
            sent = send_dead_letter(lambda: self.deadletter_producer, self.settings.deals_deadletter_topic, letter)
        except Exception:  # noqa: BLE001 - losing one letter is logged and counted, never fatal
            log.exception("could not dead-letter an exchange message")
            sent = False
        if sent:
            self.metrics.dead_lettered.labels(code.value).inc()
        else:
            self.metrics.dead_letter_failures.inc()

    # -- the connection loop -----------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Listen until ``stop`` is set (or forever)."""
        from websockets.exceptions import InvalidHandshake

        stop = stop or asyncio.Event()

        async def sleep_unless_stopped(seconds: float) -> None:
            self.metrics.reconnect_wait.set(seconds)
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            except TimeoutError:
                pass
            self.metrics.reconnect_wait.set(0)

        def before_sleep(state) -> None:
            error = state.outcome.exception()
            if isinstance(error, ConnectionEndedEarly):
                log.warning("%s; reconnecting in %.1f s", error, state.upcoming_sleep)
            else:
                self.metrics.connection_failures.inc()
                log.warning("cannot reach the exchange at %s (%s); attempt %d failed, next in %.1f s",
                            self.settings.exchange_ws_url, error, state.attempt_number, state.upcoming_sleep)

        while not stop.is_set():
            # A fresh backoff only after a connection that lived long enough: the first
            # attempt is immediate, every failed or short-lived one waits longer.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((OSError, InvalidHandshake, TimeoutError, ConnectionEndedEarly)),
                wait=wait_exponential_jitter(multiplier=RECONNECT_INITIAL_SECONDS,
                                             max=self.settings.exchange_reconnect_max_seconds,
                                             jitter=self.settings.exchange_reconnect_max_seconds / 4),
                sleep=sleep_unless_stopped,
                before_sleep=before_sleep,
            ):
                with attempt:
                    await self._session(stop)
        log.info("listener stopped: %d deals produced, %d dead-lettered, %d connections",
                 self.metrics.value("marketstream_listener_deals_produced_total"),
                 sum(self.metrics.value("marketstream_listener_deals_dead_lettered_total", reason_code=c.value)
                     for c in DealReasonCode),
                 self.metrics.value("marketstream_listener_connections_total"))

    async def _connect(self, stop: asyncio.Event):
        """A connection, or None when ``stop`` came first (SIGTERM while the exchange is away
        must not wait for it)."""
        from websockets.asyncio.client import connect

        connecting = asyncio.ensure_future(connect(
            self.settings.exchange_ws_url, open_timeout=5, max_size=MAX_FRAME_BYTES,
            ping_timeout=self.settings.exchange_ping_timeout_seconds,
        ))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            return None
        return connecting.result()

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection: open, handle messages until it closes or ``stop``; raises
        ``ConnectionEndedEarly`` when it closed sooner than the reset time."""
        from websockets.exceptions import ConnectionClosed

        if stop.is_set():
            return
        connection = await self._connect(stop)
        if connection is None:
            return
        opened = time.monotonic()
        if self.metrics.value("marketstream_listener_connections_total"):
            self.metrics.reconnects.inc()
        self.metrics.connections.inc()
        self.metrics.connected.set(1)
        log.info("connected to the exchange at %s (connection %d)", self.settings.exchange_ws_url,
                 self.metrics.value("marketstream_listener_connections_total"))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receive = asyncio.ensure_future(connection.recv())
                done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    await self._drain(connection)
                    return
                # In a thread: the event loop keeps answering pings while the broker acks.
                await asyncio.to_thread(self.handle, receive.result())
        except ConnectionClosed as exc:
            await asyncio.to_thread(self._note_close, exc)
            lived = time.monotonic() - opened
            if lived < self.settings.exchange_reconnect_reset_seconds:
                self.metrics.short_connections.inc()
                raise ConnectionEndedEarly(f"exchange connection closed after {lived:.2f} s ({exc})") from None
            log.warning("exchange connection closed after %.0f s (%s); reconnecting", lived, exc)
        finally:
            self.metrics.connected.set(0)
            stopper.cancel()
            await connection.close()

    def _note_close(self, exc) -> None:
        """A close because a message was over ``MAX_FRAME_BYTES`` lost that message: say so
        on the dead-letter topic (its bytes were never read)."""
        from websockets.frames import CloseCode

        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            self.dead_letter(b"", f"a websocket message over {MAX_FRAME_BYTES:,} bytes was not read and the "
                             f"connection closed ({exc.sent.reason})", DealReasonCode.FRAME_TOO_LARGE)

    async def _drain(self, connection) -> None:
        """On shutdown: close, then still handle what the exchange sent before the close."""
        from websockets.exceptions import ConnectionClosed

        await connection.close()
        try:
            while True:
                await asyncio.to_thread(self.handle, await connection.recv())
        except ConnectionClosed:
            pass


def _ensure_topics(settings: Settings) -> None:
    """Create the deals topics if missing, waiting for a broker that starts after us."""
    from kafka.errors import KafkaError

    from marketstream.kafka_io import quiet_kafka_logs
    from marketstream.topics import ensure_topics

    for attempt in Retrying(
        retry=retry_if_exception_type(KafkaError),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        before_sleep=lambda s: log.warning("waiting for Kafka at %s: %s", settings.kafka_bootstrap_servers,
                                           s.outcome.exception()),
    ):
        with attempt, quiet_kafka_logs():
            ensure_topics(settings)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from prometheus_client import REGISTRY

    from marketstream.prometheus import serve_metrics
    from marketstream.settings import get_settings

    argparse.ArgumentParser(prog="python -m marketstream.energy.listener", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    metrics = ListenerMetrics(REGISTRY)
    serve_metrics(settings, "listener_metrics_port", metrics.registry)
    _ensure_topics(settings)
    listener = TradeListener(settings, metrics=metrics)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await listener.run(stop)

    try:
        asyncio.run(run())
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
