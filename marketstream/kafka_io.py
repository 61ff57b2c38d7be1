"""Small kafka-python helpers shared by every reader and writer of the platform's topics.

Reads use explicit partition assignment (no consumer group), read_committed, and end
where ``end_offsets`` says: the last stable offset, so a read never waits for a
transaction some producer left open. ``partition_chunks`` is the one loop that reads a
partition's offset range; everything else builds on it.
"""

from __future__ import annotations

import bisect
import logging
import operator
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # the job's Python workers read through this module: no pydantic import (~0.15 s) there
    from marketstream.settings import Settings


class _LastError(logging.Handler):
    """Keeps the text of the last error kafka-python logged about a connection (and nothing
    else): its closing "Bootstrap failed: ... Unable to bootstrap" repeats no cause."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Bootstrap failed"):
            self.message = message


@contextmanager
def quiet_kafka_logs():
    """While waiting for a broker that may not be up yet: kafka-python logs each refused
    connection at ERROR; the caller's own "waiting for Kafka" line says it once. Yields
    what keeps the last such error (``.message``), for the caller's message when it gives up."""
    logger = logging.getLogger("kafka")
    previous = logger.level, logger.propagate
    last = _LastError()
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    logger.addHandler(last)
    try:
        yield last
    finally:
        logger.removeHandler(last)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


# Every fetch response lists every assigned partition: an incremental fetch session leaves
# out partitions that did not change, so a re-assigned partition that stays empty would get
# no high watermark (``consumer.highwater``) and no fetch position update on Apache Kafka.
FULL_FETCHES = {"enable_incremental_fetch_sessions": False}
# ---------------------------------------------------------------- security

# The kafka-python arguments that say how to reach the brokers securely (``client_security``).
SECURITY_KEYS = ("security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname",
                 "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
_JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class HiddenPassword(str):
    """The SASL password as kafka-python takes it (a ``str``), shown as asterisks wherever
    it is printed: ``KafkaAdminClient`` logs its whole configuration at DEBUG."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"

    def __str__(self) -> str:
        return "**********"

    def __reduce__(self):  # a copy or a pickle stays hidden
        return (HiddenPassword, (str.__str__(self),))


def security_options(settings: Settings) -> dict[str, str]:
    """The ``KAFKA_SECURITY_PROTOCOL``/``KAFKA_SSL_*``/``KAFKA_SASL_*`` settings as string
    options named after kafka-python's arguments (``SECURITY_KEYS``), only those the
    protocol uses: what a process without the settings (a Spark executor) is handed to
    build its clients with ``client_security(options)``. Holds the password in clear:
    pass it where options are redacted by key (Spark hides any option named ``*password*``)."""
    protocol = settings.kafka_security_protocol
    options = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_check_hostname"] = "true" if settings.kafka_ssl_check_hostname else "false"
        for key, value in (("ssl_cafile", settings.kafka_ssl_cafile), ("ssl_certfile", settings.kafka_ssl_certfile),
                           ("ssl_keyfile", settings.kafka_ssl_keyfile)):
            if value:
                options[key] = value
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return options


def client_security(source: Settings | Mapping[str, str]) -> dict:
    """kafka-python keyword arguments (``security_protocol``, ``ssl_cafile``,
    ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``, ...) for every
    ``KafkaConsumer``/``KafkaProducer``/``KafkaAdminClient`` of the platform, from the
    settings or from ``security_options`` (other keys of the mapping are ignored). The
    password is a ``HiddenPassword``."""
    options = source if isinstance(source, Mapping) else security_options(source)
    config: dict = {key: options[key] for key in SECURITY_KEYS if options.get(key)}
    config.setdefault("security_protocol", "PLAINTEXT")
    if "ssl_check_hostname" in config:
        config["ssl_check_hostname"] = str(config["ssl_check_hostname"]).lower() != "false"
    if "sasl_plain_password" in config:
        config["sasl_plain_password"] = HiddenPassword(config["sasl_plain_password"])
    return config


def _jaas_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """The same settings as options of Spark's own (JVM) Kafka connector, for
    ``readStream.format("kafka")`` and ``write.format("kafka")``: ``kafka.security.protocol``,
    ``kafka.ssl.truststore.*`` (PEM), ``kafka.ssl.keystore.*`` (mutual TLS: one PEM file
    with the client's PKCS#8 key and certificate), ``kafka.sasl.mechanism`` and
    ``kafka.sasl.jaas.config`` (which holds the password; Spark redacts option values that
    name a password in its UI and plans). Empty for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options = {"kafka.security.protocol": protocol}
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_cafile:
            options.update({"kafka.ssl.truststore.type": "PEM",
                            "kafka.ssl.truststore.location": settings.kafka_ssl_cafile})
        if settings.kafka_ssl_certfile:
            if settings.kafka_ssl_keyfile and settings.kafka_ssl_keyfile != settings.kafka_ssl_certfile:
                raise ValueError("Spark's Kafka connector reads a client certificate and its key from one PEM "
                                 "file: put both in KAFKA_SSL_CERTFILE and leave KAFKA_SSL_KEYFILE empty")
            options.update({"kafka.ssl.keystore.type": "PEM",
                            "kafka.ssl.keystore.location": settings.kafka_ssl_certfile})
        if not settings.kafka_ssl_check_hostname:
            options["kafka.ssl.endpoint.identification.algorithm"] = ""
    if protocol.startswith("SASL_"):
        mechanism = settings.kafka_sasl_mechanism
        options.update({
            "kafka.sasl.mechanism": mechanism,
            "kafka.sasl.jaas.config": (
                f"{_JAAS_MODULES[mechanism]} required username={_jaas_quoted(settings.kafka_sasl_username)} "
                f"password={_jaas_quoted(settings.kafka_sasl_password.get_secret_value())};"),
        })
    return options


def make_consumer(settings: Settings, **overrides):
    from kafka import KafkaConsumer

    config = dict(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        fetch_max_wait_ms=100,
        # What a transaction aborted (a batch the order-book job published only in part) is
        # never read; ``end_offsets`` stops before a transaction still open.
        isolation_level="read_committed",
        **FULL_FETCHES,
        **client_security(settings),
    )
    config.update(overrides)
    return KafkaConsumer(**config)


def make_producer(settings: Settings, **overrides):
    from kafka import KafkaProducer

    config = dict(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5, **client_security(settings))
    config.update(overrides)
    return KafkaProducer(**config)


def make_admin(settings: Settings, **overrides):
    from kafka import KafkaAdminClient

    config = dict(bootstrap_servers=settings.bootstrap_list, **client_security(settings))
    config.update(overrides)
    return KafkaAdminClient(**config)


# ---------------------------------------------------------------- the broker


def _unreachable_because(settings: Settings, timeout_s: float) -> str | None:
    """``None`` when the broker answers a metadata request, else why not (as kafka-python says it)."""
    from kafka.errors import KafkaError

    with quiet_kafka_logs() as last:  # "not reachable" is an answer here, not an error
        try:
            admin = make_admin(
                settings,
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
                client_id="marketstream-health",
            )
        except (KafkaError, OSError, ValueError) as exc:
            return last.message or str(exc)
        try:
            admin.list_topics()
            return None
        except (KafkaError, OSError) as exc:
            return last.message or str(exc)
        finally:
            admin.close()


def is_reachable(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a metadata request."""
    return _unreachable_because(settings, timeout_s) is None


def wait_until_ready(settings: Settings, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    reason = None
    while time.monotonic() < deadline:
        reason = _unreachable_because(settings, min(2.0, max(0.5, deadline - time.monotonic())))
        if reason is None:
            return
        time.sleep(0.3)
    protocol = settings.kafka_security_protocol
    hint = {
        "SSL": "; check KAFKA_SSL_CAFILE (and the client certificate, if the brokers want one)",
        "SASL_SSL": "; check KAFKA_SSL_CAFILE, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
                    "(a broker closes the connection on wrong credentials)",
        "SASL_PLAINTEXT": "; check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
    }.get(protocol, "")
    raise TimeoutError(
        f"no Kafka broker answered at {settings.kafka_bootstrap_servers} (KAFKA_SECURITY_PROTOCOL={protocol}) "
        f"within {timeout_s:.0f} s; last error: {reason}{hint}"
    )


# ---------------------------------------------------------------- reading


def partitions_of(consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        time.sleep(0.2)
    raise LookupError(f"topic {topic!r} does not exist or has no partitions")


def end_offsets(consumer, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """Where a read of each partition ends: ListOffsets at the consumer's isolation level.
    For a read_committed consumer that is the last stable offset: the records of a
    transaction still open lie beyond it, so a range read to it never waits for a producer
    to commit or abort (the next range takes them once it has)."""
    from kafka import TopicPartition

    ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    return {tp.partition: offset for tp, offset in ends.items()}


class RangeNotOnBroker(LookupError):
    """Part of an offset range is no longer (or not yet) on the broker: retention deleted
    it, or the topic was recreated. Raised only by consumers that do not reset offsets
    (``auto_offset_reset="none"``): a reader that must not skip records silently."""

    def __init__(self, topic: str, partition: int, start: int, end: int, missing_from: int):
        self.topic, self.partition, self.start, self.end, self.missing_from = topic, partition, start, end, missing_from
        super().__init__(f"offsets {missing_from}.. of {topic}[{partition}] (of the range {start}..{end - 1} being "
                         "read) are not on the broker: retention deleted them, or the topic was recreated")


def partition_chunks(consumer, topic: str, partition: int, start: int, end: int, timeout_s: float = 60.0,
                     offset_of: Callable = operator.attrgetter("offset")):
    """The messages of ``topic[partition]`` at offsets ``[start, end)`` as the lists one
    poll each gives, in offset order: the one read loop every reader uses. ``offset_of``
    gets a message's offset (``record_decoder``'s consumer gives tuples, offset first).

    Stops at ``end`` even when a fetch returns records beyond it (data published since
    ``end`` was taken) and skips records before ``start`` (a fetch can return the whole
    batch the seek position lies in). Offsets may skip (compaction, transaction markers,
    aborted transactions under read_committed): the consumer's position moves past them,
    and the range ends when it reaches ``end``. Raises ``TimeoutError`` when no progress is
    made for ``timeout_s``, ``RangeNotOnBroker`` when part of the range is gone and the
    consumer does not reset. The consumer is left assigned to this partition only."""
    from kafka import TopicPartition
    from kafka.errors import OffsetOutOfRangeError

    if end <= start:
        return
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, start)
    position, deadline = start, time.monotonic() + timeout_s
    while position < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic}[{partition}] stalled at offset {position} of {end}")
        # No more records than the range still needs: a fetch brings up to
        # max_partition_fetch_bytes, and kafka-python decodes every record a poll returns
        # (a batch that reads 16,000 of a backlog's records decoded 50,000: 2.4x the time).
        try:
            polled = consumer.poll(timeout_ms=500, max_records=min(100_000, end - position)).get(tp, [])
        except OffsetOutOfRangeError as error:
            missing_from = next(iter(error.args[0].values()), position) if error.args else position
            raise RangeNotOnBroker(topic, partition, start, end, int(missing_from)) from error
        first = bisect.bisect_left(polled, position, key=offset_of)
        last = bisect.bisect_left(polled, end, lo=first, key=offset_of)
        if last > first:
            position = offset_of(polled[last - 1]) + 1
            deadline = time.monotonic() + timeout_s
            yield polled[first:last] if first or last < len(polled) else polled
        if last < len(polled):
            position = end
        elif not polled:
            # Markers and aborted records return nothing but move the position on.
            moved = consumer.position(tp)
            if moved is not None and moved > position:
                position, deadline = moved, time.monotonic() + timeout_s


def read_partition(consumer, topic: str, partition: int, start: int, end: int,
                   timeout_s: float = 60.0) -> Iterator[Record]:
    """The records of ``topic[partition]`` at offsets ``[start, end)`` (``partition_chunks``)."""
    for chunk in partition_chunks(consumer, topic, partition, start, end, timeout_s):
        for m in chunk:
            yield Record(topic, partition, m.offset, m.timestamp, m.key, m.value, list(m.headers or []))


# For a consumer that mostly probes single records (binary searches): one record a poll,
# small fetches instead of a megabyte per probe.
PROBING = {"max_poll_records": 1, "max_partition_fetch_bytes": 64 * 1024}


class TopicReader:
    """One consumer on one topic: its partitions, offset bounds, ranges and binary searches
    (see ``open_topic``)."""

    def __init__(self, consumer, topic: str):
        self.consumer, self.topic = consumer, topic
        self.partitions = partitions_of(consumer, topic)

    def end_offsets(self) -> dict[int, int]:
        return end_offsets(self.consumer, self.topic, self.partitions)

    def start_offsets(self) -> dict[int, int]:
        """The first offset each partition still holds (after retention)."""
        from kafka import TopicPartition

        firsts = self.consumer.beginning_offsets([TopicPartition(self.topic, p) for p in self.partitions])
        return {tp.partition: offset for tp, offset in firsts.items()}

    def read(self, partition: int, start: int, end: int, timeout_s: float = 60.0) -> Iterator[Record]:
        return read_partition(self.consumer, self.topic, partition, start, end, timeout_s)

    def first_offset(self, partition: int, low: int, high: int, key: Callable[[Record], int | None],
                     target: int) -> int:
        """The first offset in ``[low, high]`` from which the next record carrying a key has
        ``key(record) >= target`` (``high`` when none has): a binary search, for keys that
        never decrease in offset order. A record whose key is ``None`` (one that cannot be
        decoded) takes the key of the next record that has one, so it belongs to the range
        of that record."""
        while low < high:
            middle = (low + high) // 2
            found = next(((r.offset, k) for r in self.read(partition, middle, high)
                          if (k := key(r)) is not None), None)
            if found is None or found[1] >= target:
                high = middle  # no key before high, or the next key is already at the target
            else:
                low = found[0] + 1
        return low

    def offsets_where(self, key: Callable[[Record], int | None], target: int) -> dict[int, int]:
        """``first_offset`` for every partition, over what each holds now."""
        starts, ends = self.start_offsets(), self.end_offsets()
        return {p: self.first_offset(p, starts.get(p, 0), ends[p], key, target) for p in self.partitions}


@contextmanager
def open_topic(settings: Settings, topic: str, **consumer_overrides) -> Iterator[TopicReader]:
    """A ``TopicReader`` for ``topic`` (``LookupError`` if it does not exist), closed on exit."""
    consumer = make_consumer(settings, **consumer_overrides)
    try:
        yield TopicReader(consumer, topic)
    finally:
        consumer.close()


def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """True end offset of every partition of ``topic`` (``LookupError`` if it does not exist)."""
    with open_topic(settings, topic) as reader:
        return reader.end_offsets()


def read_range(
    settings: Settings,
    topic: str,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    timeout_s: float = 60.0,
) -> Iterator[Record]:
    """Yield records of ``topic`` from ``start`` (default: beginning) up to ``stop``
    (exclusive; default: the end at call time, ``end_offsets``), partition by partition."""
    with open_topic(settings, topic) as reader:
        stop = reader.end_offsets() if stop is None else stop
        start = start or {}
        for partition in reader.partitions:
            yield from reader.read(partition, start.get(partition, 0), stop.get(partition, 0), timeout_s)


def offsets_for_time(settings: Settings, topic: str, timestamp_ms: int) -> dict[int, int]:
    """First offset per partition whose record timestamp is >= ``timestamp_ms`` (the high
    watermark where there is none), for topics whose one writer stamps records with the
    time it sends them (the metrics topic). Tansu's own ListOffsets-by-time answers 0 for
    any time, so it is not used."""
    with open_topic(settings, topic, **PROBING) as reader:
        return reader.offsets_where(lambda record: record.timestamp_ms, timestamp_ms)
