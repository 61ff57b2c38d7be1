"""``record_decoder.decode_batch`` reads exactly what kafka-python reads from the same record
batches (built by kafka-python's own batch builder), and refuses broken ones."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from marketstream.spark.source.record_decoder import decode_batch, is_lean, lean_consumer

CODEC_NONE, CODEC_GZIP = 0, 1


def build(records, base_offset=0, compression=CODEC_NONE, offset_step=1) -> bytes:
    """One v2 batch of ``(timestamp, key, value, headers)``; offsets ``base_offset`` +
    ``offset_step * i`` (a step > 1: the gaps compaction leaves)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=64 * 1024 * 1024)
    for i, (timestamp, key, value, headers) in enumerate(records):
        assert builder.append(i * offset_step, timestamp=timestamp, key=key, value=value, headers=headers) is not None
    raw = builder.build()
    raw[0:8] = struct.pack(">q", base_offset)
    return bytes(raw)


def kafka_python_reads(raw: bytes):
    batch = MemoryRecords(raw).next_batch()
    return [(r.offset, r.timestamp, r.value) for r in batch]


def lean_reads(raw: bytes):
    batch = MemoryRecords(raw).next_batch()
    assert batch.validate_crc()
    return decode_batch(batch)


records = st.lists(st.tuples(
    st.integers(min_value=1_700_000_000_000, max_value=1_700_000_000_000 + 10**10),  # deltas of 1 to 5 bytes
    st.one_of(st.none(), st.binary(max_size=300)),
    # long values (lengths of three varint bytes) as repeats: random ones exhaust hypothesis
    st.one_of(st.none(), st.binary(max_size=300), st.integers(min_value=8_000, max_value=20_000).map(b"v".__mul__)),
    st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=200))), max_size=3),
), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(records=records, base_offset=st.integers(min_value=0, max_value=2**40),
       offset_step=st.sampled_from([1, 3, 70_000]), compression=st.sampled_from([CODEC_NONE, CODEC_GZIP]))
def test_records_are_what_kafka_python_reads(records, base_offset, offset_step, compression):
    raw = build(records, base_offset, compression, offset_step)
    assert lean_reads(raw) == kafka_python_reads(raw)


def test_order_events_with_no_key_headers_or_value():
    events = [(1_700_000_000_000 + i, str(i).encode(), b'{"order_id":%d,"status":"CLOSED"}' % i, [])
              for i in range(5_000)]
    events.append((1_700_000_000_000, None, None, []))  # a tombstone
    raw = build(events, base_offset=123)
    decoded = lean_reads(raw)
    assert decoded == kafka_python_reads(raw)
    assert decoded[0] == (123, 1_700_000_000_000, b'{"order_id":0,"status":"CLOSED"}') and decoded[-1][2] is None


def test_log_append_time_gives_every_record_the_batch_time():
    raw = bytearray(build([(1_000 + i, None, b"x", []) for i in range(3)]))
    attributes_at = 8 + 4 + 4 + 1 + 4  # base offset, length, leader epoch, magic, crc
    struct.pack_into(">h", raw, attributes_at, struct.unpack_from(">h", raw, attributes_at)[0] | 0x08)
    batch = DefaultRecordBatch(bytes(raw))
    assert decode_batch(batch) == [(r.offset, r.timestamp, r.value) for r in DefaultRecordBatch(bytes(raw))]
    assert {timestamp for _, timestamp, _ in decode_batch(DefaultRecordBatch(bytes(raw)))} == {1_002}


@pytest.mark.parametrize("cut", [1, 7, 60])
def test_a_batch_cut_short_is_corrupt(cut):
    raw = build([(1_000, b"k", b"value-%d" % i, []) for i in range(20)])
    batch = DefaultRecordBatch(raw[:-cut])
    with pytest.raises(CorruptRecordError):
        decode_batch(batch)


def test_a_record_longer_than_its_length_field_is_corrupt():
    raw = bytearray(build([(1_000, None, b"abc", []), (1_001, None, b"def", [])]))
    header_size = DefaultRecordBatch.HEADER_STRUCT.size
    raw[header_size] -= 2  # the first record's length (zigzag: one less)
    with pytest.raises(CorruptRecordError):
        decode_batch(DefaultRecordBatch(bytes(raw)))


def test_a_fetcher_it_was_not_written_for_leaves_a_plain_consumer(monkeypatch):
    class Consumer:
        def __init__(self, **config):
            self._fetcher = object()  # no PartitionRecords

    monkeypatch.setattr("kafka.KafkaConsumer", Consumer)
    consumer = lean_consumer(bootstrap_servers=["127.0.0.1:1"])
    assert isinstance(consumer, Consumer) and not is_lean(consumer)


def test_the_fetchers_records_take_v2_and_older_message_sets():
    """Through kafka-python's own ``PartitionRecords`` machinery (what ``poll`` calls):
    a v2 batch, then message sets of magic 0 and 1 (older brokers' logs), from an offset
    inside the first batch."""
    from kafka import TopicPartition
    from kafka.consumer.fetcher import Fetcher
    from kafka.record.legacy_records import LegacyRecordBatchBuilder

    from marketstream.spark.source.record_decoder import _lean_partition_records

    raw = build([(1_000 + i, None, b"v2-%d" % i, []) for i in range(5)], base_offset=10)
    for magic, base in ((0, 15), (1, 17)):
        legacy = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1024 * 1024)
        for i in range(2):
            legacy.append(base + i, timestamp=2_000 + i if magic else None, key=None, value=b"m%d-%d" % (magic, i))
        raw += bytes(legacy.build())
    lean = _lean_partition_records(Fetcher.PartitionRecords)(12, TopicPartition("t", 0), MemoryRecords(raw))
    taken = lean.take(3) + lean.take(100)
    plain = Fetcher.PartitionRecords(12, TopicPartition("t", 0), MemoryRecords(raw)).take(100)
    assert taken == [(r.offset, r.timestamp, r.value) for r in plain]
    assert [offset for offset, _, _ in taken] == [12, 13, 14, 15, 16, 17, 18]
    assert lean.next_fetch_offset == 19


def test_a_batch_failing_its_crc_check_is_an_error_not_records():
    from kafka import TopicPartition
    from kafka.consumer.fetcher import Fetcher

    from marketstream.spark.source.record_decoder import _lean_partition_records

    raw = bytearray(build([(1_000, None, b"value-%d" % i, []) for i in range(3)]))
    raw[-3] ^= 0xFF  # a byte of the last value
    lean = _lean_partition_records(Fetcher.PartitionRecords)(0, TopicPartition("t", 0), MemoryRecords(bytes(raw)))
    with pytest.raises(CorruptRecordError, match="crc"):
        lean.take(10)
