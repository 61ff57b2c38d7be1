"""A kafka-python consumer that hands out records as ``(offset, timestamp, value)``
tuples, for the order-book job's read tasks.

kafka-python turns every record into a ``DefaultRecord`` and then a 13-field
``ConsumerRecord`` (two deserializer calls, header sizes, a CRC call and a handful of
property lookups a record): 10-13 µs of CPU a record on a 2-core x86_64 box, the biggest single
cost of the job's read tasks. The job needs three fields. ``lean_consumer`` makes a
``KafkaConsumer`` whose fetcher decodes each v2 record batch straight into tuples: ~2 µs a
record, with the same records read end to end. Fetching, positions,
batch CRC checks, decompression, control batches, transactions and older formats stay
kafka-python's: only the loop over a v2 batch's records is ours, in ``decode_batch``.

It plugs into kafka-python's ``Fetcher.PartitionRecords`` (internal API of the pinned
kafka-python, checked by ``tests/unit/test_spark_record_decoder.py`` against kafka-python's own
decoding and by ``tests/integration/test_spark_record_decoder_broker.py`` against its consumer,
read_committed included);
where that class is not there, the consumer stays a plain one.
"""

from __future__ import annotations

import logging
import operator

from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel

log = logging.getLogger(__name__)

_LOG_APPEND_TIME = 1


def _varint(buffer, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` (before zigzag decoding) and the position after it."""
    result, shift = 0, 0
    while True:
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise CorruptRecordError("a varint is out of the int64 range")


def decode_batch(batch) -> list[tuple[int, int, bytes | None]]:
    """The records of a v2 ``DefaultRecordBatch`` (CRC already checked, not yet iterated)
    as ``(offset, timestamp, value)``.

    A record (Kafka's ``DefaultRecord``): length, attributes (one byte), timestamp delta,
    offset delta, key length, key, value length, value, headers; the integers zigzag
    varints. The loop is unrolled and reads varints of one or two bytes inline (nearly all
    of them here): a function call per field was half of the time."""
    batch._maybe_uncompress()
    # bytes, not kafka-python's bytearray: a slice of it is the value, with no second copy
    buffer, pos = bytes(batch._buffer), batch._pos
    base_offset = batch.base_offset
    log_append = batch.timestamp_type == _LOG_APPEND_TIME
    first_timestamp = batch.max_timestamp if log_append else batch.first_timestamp
    records: list[tuple[int, int, bytes | None]] = []
    append = records.append
    try:
        for _ in range(batch.records_count):
            length = buffer[pos]
            if length < 0x80:
                pos += 1
            elif buffer[pos + 1] < 0x80:
                length, pos = length & 0x7F | buffer[pos + 1] << 7, pos + 2
            else:
                length, pos = _varint(buffer, pos)
            record_start = pos
            pos += 1  # attributes: unused
            timestamp_delta = buffer[pos]
            if timestamp_delta < 0x80:
                pos += 1
            elif buffer[pos + 1] < 0x80:
                timestamp_delta, pos = timestamp_delta & 0x7F | buffer[pos + 1] << 7, pos + 2
            else:
                timestamp_delta, pos = _varint(buffer, pos)
            offset_delta = buffer[pos]
            if offset_delta < 0x80:
                pos += 1
            elif buffer[pos + 1] < 0x80:
                offset_delta, pos = offset_delta & 0x7F | buffer[pos + 1] << 7, pos + 2
            else:
                offset_delta, pos = _varint(buffer, pos)
            key_length = buffer[pos]
            if key_length < 0x80:
                pos += 1
            elif buffer[pos + 1] < 0x80:
                key_length, pos = key_length & 0x7F | buffer[pos + 1] << 7, pos + 2
            else:
                key_length, pos = _varint(buffer, pos)
            key_length = (key_length >> 1) ^ -(key_length & 1)
            if key_length > 0:
                pos += key_length
            value_length = buffer[pos]
            if value_length < 0x80:
                pos += 1
            elif buffer[pos + 1] < 0x80:
                value_length, pos = value_length & 0x7F | buffer[pos + 1] << 7, pos + 2
            else:
                value_length, pos = _varint(buffer, pos)
            value_length = (value_length >> 1) ^ -(value_length & 1)
            if value_length >= 0:
                value = buffer[pos:pos + value_length]
                pos += value_length
            else:
                value = None
            if buffer[pos]:  # headers: none in the common case (a zero count)
                pos = _skip_headers(buffer, pos)
            else:
                pos += 1
            length = (length >> 1) ^ -(length & 1)
            if pos - record_start != length:
                raise CorruptRecordError(f"a record of the batch at offset {base_offset} is {pos - record_start} "
                                         f"bytes long, its length field says {length}")
            timestamp_delta = (timestamp_delta >> 1) ^ -(timestamp_delta & 1)
            append((base_offset + ((offset_delta >> 1) ^ -(offset_delta & 1)),
                    first_timestamp if log_append else first_timestamp + timestamp_delta, value))
    except IndexError as exc:
        raise CorruptRecordError(f"the record batch at offset {base_offset} ends inside a record") from exc
    if pos != len(buffer):
        raise CorruptRecordError(f"{len(buffer) - pos} bytes are left after the records of the batch at {base_offset}")
    return records


def _skip_headers(buffer, pos: int) -> int:
    """The position after a record's headers (their count at ``pos``)."""
    count, pos = _zigzag(buffer, pos)
    if count < 0:
        raise CorruptRecordError(f"a record has {count} headers")
    for _ in range(count):
        key_length, pos = _zigzag(buffer, pos)
        if key_length < 0:
            raise CorruptRecordError(f"a record header's key has the length {key_length}")
        value_length, pos = _zigzag(buffer, pos + key_length)
        pos += max(value_length, 0)
    return pos


def _zigzag(buffer, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it."""
    value, pos = _varint(buffer, pos)
    return (value >> 1) ^ -(value & 1), pos


def _lean_partition_records(base: type) -> type:
    """kafka-python's ``Fetcher.PartitionRecords`` yielding ``(offset, timestamp, value)``."""

    class LeanPartitionRecords(base):
        def _maybe_skip_record(self, record) -> bool:
            return record[0] < self.fetch_offset  # a fetch can start inside a batch

        def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
            read_committed = self.isolation_level == IsolationLevel.READ_COMMITTED
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(f"Record batch for partition {tp} at offset {batch.base_offset} "
                                             "failed crc check")
                if batch.magic != 2:  # a message set from before Kafka 0.11: a CRC per record
                    decoded = []
                    for record in batch:
                        if self.check_crcs and not record.validate_crc():
                            raise CorruptRecordError(f"Record for partition {tp} at offset {record.offset} "
                                                     "failed crc check")
                        decoded.append((record.offset, record.timestamp, record.value))
                else:
                    self.leader_epoch = batch.leader_epoch
                    if read_committed and batch.has_producer_id():
                        # kafka-python's own bookkeeping of the aborted transactions the
                        # fetch response lists: a batch of one is skipped whole, and its
                        # abort marker ends it.
                        self._consume_aborted_transactions_up_to(batch.last_offset)
                        if self._contains_abort_marker(batch):
                            self.aborted_producer_ids.discard(batch.producer_id)
                        elif self._is_batch_aborted(batch):
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                    if batch.is_control_batch:  # transaction markers: not records
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                    decoded = decode_batch(batch)
                self.bytes_read += batch.size_in_bytes
                for record in decoded:
                    self.records_read += 1
                    self.next_fetch_offset = record[0] + 1
                    yield record
                batch = records.next_batch()
            # As kafka-python: the next fetch starts after the last batch, even when
            # compaction removed its last records.
            if last_batch is not None and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

    return LeanPartitionRecords


def lean_consumer(**config):
    """A ``KafkaConsumer(**config)`` whose ``poll`` gives ``(offset, timestamp, value)``
    tuples, or a plain one (``ConsumerRecord`` objects) where kafka-python's fetcher is not
    the one this was written for (then ``is_lean`` is False)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**config)
    fetcher = getattr(consumer, "_fetcher", None)
    base = getattr(fetcher, "PartitionRecords", None)
    needed = ("_unpack_records", "_consume_aborted_transactions_up_to", "_is_batch_aborted", "_contains_abort_marker")
    if base is None or not all(callable(getattr(base, name, None)) for name in needed):
        log.warning("kafka-python's fetcher has no PartitionRecords._unpack_records: records are decoded the slow way")
        return consumer
    fetcher.PartitionRecords = _lean_partition_records(base)
    return consumer


def is_lean(consumer) -> bool:
    records = getattr(getattr(consumer, "_fetcher", None), "PartitionRecords", None)
    return getattr(records, "__name__", "") == "LeanPartitionRecords"


def read_columns(consumer, topic: str, partition: int, start: int, end: int,
                 timeout_s: float = 60.0) -> tuple[list[int], list[int], list[bytes | None]]:
    """The offsets, timestamps and values of ``topic[partition]`` at offsets ``[start, end)``
    (``kafka_io.partition_chunks``), read with a ``lean_consumer`` (or a plain one)."""
    from marketstream.kafka_io import partition_chunks

    lean = is_lean(consumer)
    offsets: list[int] = []
    timestamps: list[int] = []
    values: list[bytes | None] = []
    for chunk in partition_chunks(consumer, topic, partition, start, end, timeout_s,
                                  offset_of=_first if lean else _offset_attribute):
        if lean:
            offsets += map(_first, chunk)
            timestamps += map(_second, chunk)
            values += map(_third, chunk)
        else:
            offsets += (m.offset for m in chunk)
            timestamps += (m.timestamp for m in chunk)
            values += (m.value for m in chunk)
    return offsets, timestamps, values


_first, _second, _third = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_offset_attribute = operator.attrgetter("offset")
