"""The stateful processor's adapter to Spark, without Spark: the state layout (one map,
the bookkeeping at its own key), the batch's time (the heartbeat's tick) and the start-up
check that refuses a checkpoint written in another layout."""

from __future__ import annotations

import json

import pytest

from marketstream.spark.route.parse import HEARTBEAT_PARTITION, route
from marketstream.spark.route.rows import HEARTBEAT, to_rows
from marketstream.spark.job import StateLayoutChanged, check_state_layout, state_layout_file
from marketstream.spark.state.processor import META_KEY, STATE_LAYOUT, _SparkState, batch_time_ms


class _MapState:
    """The calls ``_SparkState`` makes on Spark's ``MapState``, over a dict."""

    def __init__(self):
        self.entries: dict[tuple, tuple] = {}

    def getValue(self, key):
        return self.entries.get(key)

    def updateValue(self, key, value):
        self.entries[key] = value

    def removeKey(self, key):
        self.entries.pop(key, None)

    def iterator(self):
        return iter(list(self.entries.items()))


def test_bookkeeping_journal_and_segments_share_one_map_without_mixing():
    journal = _MapState()
    state = _SparkState(journal)
    assert state.meta_get() is None  # a new partition
    state.meta_put('{"committed": 3}')
    state.journal_put(0, "t0", "entry 0")
    state.journal_put(1, "t1", "entry 1")
    state.chunk_put(0, 7, "segment 0")
    state.chunk_put(5, 8, "segment 5")
    state.journal_remove(0)
    assert state.meta_get() == '{"committed": 3}'
    assert state.journal_get(0) is None and state.journal_get(1) == ("t1", "entry 1")
    assert sorted(state.chunks()) == [(0, 7, "segment 0"), (5, 8, "segment 5")]
    assert (META_KEY,) in journal.entries and len(journal.entries) == 4


def test_a_batch_takes_its_time_from_the_heartbeats_tick():
    # What the Python source's read task routes: the heartbeat row carries the tick.
    routed = list(to_rows(route([(HEARTBEAT_PARTITION, [1_795_000_123], [], [b'{"0": [0, 0, 0]}'])], 2), 2))
    heartbeats = [row for row in routed if row["kind"] == HEARTBEAT]
    assert [row["target"] for row in heartbeats] == [0, 1]
    assert all(row["offsets"] == [1_795_000_123] for row in heartbeats)
    assert batch_time_ms(routed, -1) == 1_795_000_123_000
    # The JVM connector's batches have no heartbeat: Spark's processing time.
    assert batch_time_ms([], 1_795_000_124_500) == 1_795_000_124_500
    with pytest.raises(ValueError, match="heartbeat"):
        batch_time_ms([], -1)


def test_a_new_checkpoint_records_its_state_layout_and_accepts_it_again(tmp_path):
    check_state_layout(tmp_path / "ckpt", "python")
    recorded = json.loads(state_layout_file(tmp_path / "ckpt").read_text())
    assert recorded == {"state_layout": STATE_LAYOUT, "time_mode": "None"}
    (tmp_path / "ckpt" / "offsets").mkdir()
    (tmp_path / "ckpt" / "offsets" / "0").write_text("v1\n{}\n{}\n")
    check_state_layout(tmp_path / "ckpt", "python")


def test_a_checkpoint_of_an_earlier_layout_stops_the_start_naming_what_to_do(tmp_path):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "offsets" / "12").write_text("v1\n{}\n{}\n")  # batches, but no layout recorded
    with pytest.raises(StateLayoutChanged) as caught:
        check_state_layout(tmp_path, "python")
    message = str(caught.value)
    assert str(tmp_path) in message and "'state_layout': 1" in message and "SPARK_CHECKPOINT_DIR" in message
    assert not state_layout_file(tmp_path).exists()


def test_a_checkpoint_of_the_other_connectors_time_mode_stops_the_start(tmp_path):
    check_state_layout(tmp_path, "jvm")  # timers: processing time
    with pytest.raises(StateLayoutChanged, match="'time_mode': 'ProcessingTime'"):
        check_state_layout(tmp_path, "python")
