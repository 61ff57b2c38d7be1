"""Producing one record of the power desk (a deal, a dead letter) until the broker has it.

Broker trouble (away, leader moving, timeouts) is retried for as long as it lasts: the
record waits, nothing is dropped. An error about the record itself (too large for the
producer or the topic, invalid, corrupt) would fail the same way forever, so it is raised at
once as ``RecordRefused`` for the caller to dead-letter: never retried, never a wedge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from tenacity import Retrying, retry_if_exception, wait_exponential_jitter

from marketstream.deadletter import DEADLETTER_MAX_MESSAGE_BYTES, DeadLetter
from marketstream.energy.deals import DealReasonCode

log = logging.getLogger(__name__)

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_RECORD_ERRORS = (*_TOO_LARGE, InvalidRecordError, CorruptRecordError)
ACK_TIMEOUT_S = 30


class RecordRefused(Exception):
    """The producer or the broker will never take this record: ``code`` and ``reason`` for
    its dead letter."""

    def __init__(self, reason: str, code: DealReasonCode):
        super().__init__(reason)
        self.reason, self.code = reason, code


def _broker_trouble(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and not isinstance(exc, _RECORD_ERRORS)


def send_until_acknowledged(producer: Callable[[], Any], topic: str, value: bytes, key: bytes | None = None,
                            headers=None, on_retry: Callable[[BaseException, int], None] | None = None) -> None:
    """Send and wait for the broker's acknowledgement; see the module docstring.
    ``producer`` returns the producer to use, and is asked again on every attempt: creating
    one fails while the broker is away, which is broker trouble like any other."""

    def before_sleep(state) -> None:
        error = state.outcome.exception()
        log.warning("producing to %s failed (%s); retry %d", topic, error, state.attempt_number)
        if on_retry is not None:
            on_retry(error, state.attempt_number)

    try:
        for attempt in Retrying(retry=retry_if_exception(_broker_trouble),
                                wait=wait_exponential_jitter(multiplier=0.2, max=10), before_sleep=before_sleep,
                                reraise=True):
            with attempt:
                producer().send(topic, key=key, value=value, headers=headers or []).get(timeout=ACK_TIMEOUT_S)
    except _RECORD_ERRORS as exc:
        code = DealReasonCode.TOO_LARGE_FOR_TOPIC if isinstance(exc, _TOO_LARGE) else DealReasonCode.REFUSED_BY_BROKER
        raise RecordRefused(f"{topic} refused the record of {len(value):,} bytes: {type(exc).__name__}: {exc}",
                            code) from None


def make_deadletter_producer(settings):
    """A producer that takes any bounded dead letter (``DeadLetter.bounded()`` plus headers)."""
    from marketstream.kafka_io import make_producer

    return make_producer(settings, enable_idempotence=True, acks="all", linger_ms=0,
                         max_request_size=DEADLETTER_MAX_MESSAGE_BYTES)


def send_dead_letter(producer: Callable[[], Any], topic: str, letter: DeadLetter) -> bool:
    """Send ``letter`` (bounded first) until acknowledged; ``False`` (and an ERROR log) when
    even the bounded letter is refused, which only a dead-letter topic configured below
    ``DEADLETTER_MAX_MESSAGE_BYTES`` can do."""
    letter = letter.bounded()
    try:
        send_until_acknowledged(producer, topic, letter.value, headers=letter.headers())
    except RecordRefused as exc:
        log.error("could not dead-letter a rejected record (%s: %s): %s", letter.code, letter.reason, exc.reason)
        return False
    return True
