"""The Spark wing's shared names: dead letters made in one place and published with their
place and bytes, the shuffle's columns spelled once, side codes that read back, and the
partition-count check that stops a job on a checkpoint of another layout."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

from marketstream.deadletter import MAX_VALUE_BYTES, DeadLetter
from marketstream.orderbook.events import BUY, SELL, SIDE_CODES, SIDE_NAMES, InvalidEvent, parse_units
from marketstream.settings import load_settings
from marketstream.spark import dead_letters
from marketstream.spark.job import check_checkpoint_state_partitions
from marketstream.spark.route.parse import HEARTBEAT_PARTITION, route
from marketstream.spark.route.rows import EVENTS, EVENTS_PER_ROW, ROUTED_COLUMNS, from_rows, to_rows
from marketstream.spark.route.schema import ROUTED_SCHEMA, arrow_schema, routed_batch
from marketstream.spark.source.python_source import KafkaDataSource
from marketstream.spark.state.meta import StatePartitionsChanged
from marketstream.spark.state.partition import PartitionConfig, StatePartition
from marketstream.spark.state.server import RoutedRow
from tests.state_doubles import DictState


def _invalid(value: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_units(value)
    return caught.value


def test_a_record_that_is_no_order_event_is_published_with_its_place_reason_and_bytes():
    value = b'{"order_id": "x"'
    letter = dead_letters.invalid_event(value, _invalid(value), "orders", 2, 41)
    published = dead_letters.record(letter, "orders")
    assert published.value == value
    decoded = DeadLetter.from_record(published.value, published.headers())
    assert (decoded.source_topic, decoded.source_partition, decoded.source_offset) == ("orders", 2, 41)
    assert decoded.code == letter.code and decoded.reason == letter.reason and decoded.reason


def test_an_oversized_record_travels_cut_to_the_bound_and_says_where_the_whole_one_is():
    value = b"x" * (MAX_VALUE_BYTES + 10)
    letter = dead_letters.invalid_event(value, _invalid(value), "orders", 0, 7)
    assert len(letter.value) == MAX_VALUE_BYTES
    assert "orders[0]@7" in letter.reason


def test_dead_letters_cross_the_shuffle_unchanged():
    bad = [b"{not json", b'{"order_id": 1}']
    routed = route([(0, [5, 6], [1_000, 1_000], bad), (HEARTBEAT_PARTITION, [1], [], [b"{}"])], 2, "orders")
    rows = list(to_rows(routed, 2))
    assert all(set(row) == set(ROUTED_COLUMNS) for row in rows)
    letters = [letter for target in (0, 1) for letter in from_rows(r for r in rows if r["target"] == target)[1]]
    assert sorted((d.partition, d.offset, d.value) for d in letters) == [(0, 5, bad[0]), (0, 6, bad[1])]
    assert all(d.code and d.reason for d in letters)


def test_a_state_partitions_dead_letter_has_no_bytes_until_the_publisher_reads_them_back():
    letter = dead_letters.symbol_limit(1, 9, "ZZZ-USD", 3, 3)
    assert letter.value is None and letter.code == "symbol_limit"
    assert "'ZZZ-USD' would be symbol 4" in letter.reason and "BOOK_MAX_SYMBOLS=3" in letter.reason
    row = dead_letters.to_columns([letter])
    assert list(dead_letters.from_columns(row)) == [letter]


def test_the_shuffles_columns_are_spelled_once():
    assert tuple(ROUTED_SCHEMA.names) == ROUTED_COLUMNS
    assert tuple(f.name for f in msgspec.structs.fields(RoutedRow)) == ROUTED_COLUMNS


def test_routed_rows_hold_a_bounded_number_of_events_and_give_every_one_back():
    count = 2 * EVENTS_PER_ROW + 3
    offsets = list(range(10, 10 + count))
    values = [json.dumps({"order_id": i, "symbol": "A-B", "order_side": "BUY", "size": 1, "price": 10,
                          "status": "OPEN"}).encode() for i in offsets]
    records = [(2, offsets, [1_000 * 1_700_000_000] * count, values)]
    rows = list(to_rows(route(records, 1, "orders"), 1))
    assert [len(r["offsets"]) for r in rows if r["kind"] == EVENTS] == [EVENTS_PER_ROW, EVENTS_PER_ROW, 3]
    events, dead, runs, _heartbeat = from_rows(rows)
    assert [o for r in events for o in r["offsets"]] == offsets and not dead
    assert [o for r in events for o in r["order_ids"]] == offsets
    assert runs == {2: [(1_700_000_000, 10 + count)]}
    batch = routed_batch(records, [7], "orders")  # what a read task yields, as Spark takes it
    assert batch.schema.equals(arrow_schema()) and set(batch.column("target").to_pylist()) == {7}


def test_the_python_source_without_state_partition_keys_says_what_it_needs():
    with pytest.raises(ValueError, match="needs the option routeTo"):
        KafkaDataSource({"bootstrap.servers": "127.0.0.1:9", "topic": "orders"}).schema()


def test_side_codes_read_back_as_the_events_sides():
    assert {SIDE_NAMES[SIDE_CODES[side]] for side in (BUY, SELL)} == {BUY, SELL}
    assert SIDE_CODES[BUY] != SIDE_CODES[SELL]


def _config(partitions: int) -> PartitionConfig:
    return PartitionConfig(partitions=partitions, depth=5, max_symbols=None, closed_ttl_s=None, max_backfill_s=60)


def test_state_made_with_another_number_of_partitions_stops_the_job_and_says_what_to_set():
    state = DictState()
    state.meta_put(StatePartition(_config(2), 0).meta(state).to_text())
    with pytest.raises(StatePartitionsChanged, match="made with 2 state partitions, ORDERBOOK_STATE_PARTITIONS is 3: "
                                                     "set it back to 2"):
        StatePartition(_config(3), 0).meta(state)


def test_a_checkpoint_made_with_another_number_of_partitions_stops_the_start(tmp_path):
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    conf = {"batchWatermarkMs": 0, "batchTimestampMs": 1, "conf": {"spark.sql.shuffle.partitions": "2"}}
    (offsets / "0").write_text(f'v1\n{json.dumps(conf)}\n{{"0":1}}\n')
    check_checkpoint_state_partitions(load_settings(spark_checkpoint_dir=tmp_path, orderbook_state_partitions=2))
    with pytest.raises(StatePartitionsChanged, match=f"the checkpoint {tmp_path} was made with 2 state partitions"):
        check_checkpoint_state_partitions(load_settings(spark_checkpoint_dir=tmp_path, orderbook_state_partitions=3))


def test_the_class_archive_builder_does_not_bring_the_embedded_stack():
    code = ("import sys, marketstream.spark.class_archive; "
            "sys.exit(any(m.startswith('marketstream.embedded') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_fenced_driver_is_told_so_however_kafka_python_reports_the_fencing():
    from types import SimpleNamespace

    from kafka.errors import KafkaError, ProducerFencedError

    from marketstream.spark.publish.publisher import fenced

    healthy = SimpleNamespace(_transaction_manager=SimpleNamespace(last_error=None))
    assert fenced(ProducerFencedError(), healthy)
    # a send after the fencing reached the transaction manager
    assert fenced(KafkaError("Cannot perform send because at least one previous transactional or idempotent "
                             "request has failed with errors.", ProducerFencedError()), healthy)
    broken = SimpleNamespace(_transaction_manager=SimpleNamespace(last_error=ProducerFencedError()))
    assert fenced(KafkaError("Cannot execute transactional method because we are in an error state"), broken)
    assert not fenced(ConnectionError("broker gone"), healthy)
    assert not fenced(KafkaError("timed out"), healthy)
