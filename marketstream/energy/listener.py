"""Trade listener: exchange websocket → validated deals on the deals topic.

Keeps the websocket open and reconnects at once after a drop, then with exponential
backoff and jitter while the exchange stays away. Each message is validated: a deal is
produced to ``settings.deals_topic`` (key = deal id, value = the message bytes as
received, header ``received_at``) by an idempotent ``acks=all`` producer, and the send is
acknowledged before the next message is read — so a deal that reached us is in Kafka
before anything else happens. A bad message goes to ``settings.deals_deadletter_topic``
with its reason (``marketstream.deadletter``). Nothing is replayed by the exchange after a disconnect, so
deals sent while we were away are lost by design (as with the original).

    python -m marketstream.energy.listener
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from marketstream.deadletter import DeadLetter
from marketstream.energy.deals import InvalidDeal, parse_deal
from marketstream.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ListenerStats:
    connections: int = 0
    received: int = 0
    produced: int = 0
    dead_lettered: int = 0
    last_connected_at: float | None = None
    last_report_at: float = 0.0


class TradeListener:
    def __init__(self, settings: Settings, producer=None):
        self.settings = settings
        self.stats = ListenerStats()
        self._producer = producer

    @property
    def producer(self):
        if self._producer is None:
            from marketstream.kafka_io import make_producer

            # Idempotent + acks=all: a retried send after a broker hiccup is not a duplicate.
            self._producer = make_producer(self.settings, enable_idempotence=True, acks="all", linger_ms=0)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=10)
            self._producer.close(timeout=10)
            self._producer = None

    # -- one message -------------------------------------------------------------------
    def handle(self, raw: bytes | str) -> str | None:
        """Validate and durably produce one websocket message; returns the deal id, or None
        when it went to the dead-letter topic. Blocks until the broker acknowledged it."""
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        self.stats.received += 1
        try:
            deal = parse_deal(data)
        except InvalidDeal as exc:
            log.warning("dead-lettering a bad exchange message: %s (%.200r)", exc.reason, data)
            letter = DeadLetter(data, exc.reason, source=self.settings.exchange_ws_url)
            self._send(self.settings.deals_deadletter_topic, None, letter.value, letter.headers())
            self.stats.dead_lettered += 1
            return None
        received_at = datetime.now(UTC).isoformat()
        self._send(self.settings.deals_topic, deal.id.encode(), data, [("received_at", received_at.encode())])
        self.stats.produced += 1
        if time.monotonic() - self.stats.last_report_at >= 60:  # a heartbeat operators can grep
            self.stats.last_report_at = time.monotonic()
            log.info("%d deals produced, %d dead-lettered, %d connections so far", self.stats.produced,
                     self.stats.dead_lettered, self.stats.connections)
        return deal.id

    def _send(self, topic: str, key: bytes | None, value: bytes, headers) -> None:
        from kafka.errors import KafkaError

        # The broker may be briefly away: keep the deal and retry rather than drop it.
        for attempt in Retrying(
            retry=retry_if_exception_type(KafkaError),
            wait=wait_exponential_jitter(multiplier=0.2, max=10),
            before_sleep=lambda state: log.warning(
                "producing to %s failed (%s); retry %d", topic, state.outcome.exception(), state.attempt_number
            ),
            reraise=True,
        ):
            with attempt:
                self.producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)

    # -- the connection loop -----------------------------------------------------------
    async def _connect(self):
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((OSError, InvalidHandshake, asyncio.TimeoutError)),
            wait=wait_exponential_jitter(multiplier=0.1, max=self.settings.exchange_reconnect_max_seconds, jitter=0.2),
            before_sleep=lambda state: log.warning(
                "cannot reach the exchange at %s (%s); attempt %d failed",
                self.settings.exchange_ws_url, state.outcome.exception(), state.attempt_number,
            ),
        ):
            with attempt:
                return await connect(
                    self.settings.exchange_ws_url, open_timeout=5, max_size=1 << 20,
                    ping_timeout=self.settings.exchange_ping_timeout_seconds,
                )

    async def _drain(self, connection) -> None:
        """On shutdown: close, then still handle what the exchange sent before the close."""
        from websockets.exceptions import ConnectionClosed

        await connection.close()
        try:
            while True:
                await asyncio.to_thread(self.handle, await connection.recv())
        except ConnectionClosed:
            pass

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Listen until ``stop`` is set (or forever)."""
        from websockets.exceptions import ConnectionClosed

        stop = stop or asyncio.Event()
        while not stop.is_set():
            # Stop-aware: SIGTERM while the exchange is away must not wait for it.
            connecting, stopping = asyncio.ensure_future(self._connect()), asyncio.ensure_future(stop.wait())
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                break
            connection = connecting.result()
            self.stats.connections += 1
            self.stats.last_connected_at = time.time()
            log.info("connected to the exchange at %s (connection %d)", self.settings.exchange_ws_url,
                     self.stats.connections)
            stopper = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    receive = asyncio.ensure_future(connection.recv())
                    done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if receive not in done:
                        receive.cancel()
                        await self._drain(connection)
                        break
                    # In a thread: the event loop keeps answering pings while the broker acks.
                    await asyncio.to_thread(self.handle, receive.result())
            except ConnectionClosed as exc:
                log.warning("exchange connection closed (%s); reconnecting", exc)
            finally:
                stopper.cancel()
                await connection.close()
        log.info("listener stopped: %s", self.stats)


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

    from marketstream.settings import get_settings

    argparse.ArgumentParser(prog="python -m marketstream.energy.listener", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    _ensure_topics(settings)
    listener = TradeListener(settings)

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
