"""The job's query listener: the metrics message it leaves for the publisher for a batch's progress, taken as the JVM's
JSON text through its py4j bridge (that Spark calls the bridge is for the integration tests:
the job's metrics endpoint and metrics topic are fed by it), with what the batch published
as the publisher counted it on the state partitions' rows."""

from __future__ import annotations

import json

from marketstream.orderbook.metrics import BATCH_FIGURES
from marketstream.spark.publish.listener import MetricsListener, _ProgressAsJson
from marketstream.spark.publish.figures import FiguresByBatch, batch_figures
from marketstream.spark.dead_letters import DeadLetterRef
from marketstream.spark.state.book_of_second import BookPart
from marketstream.spark.state.partition import PartitionOutput
from marketstream.spark.state.processor import output_rows
from marketstream.spark.publish.publisher import MetricsOutbox

PROGRESS = {
    "id": "8f1c0b52-8d2b-4a43-9d0c-0d6f0a3c9a11", "runId": "0b8e6c8e-3f0e-4d8e-9c55-7d1f1c2a9b20",
    "name": "orderbook", "timestamp": "2026-12-01T06:00:00.000Z", "batchId": 41, "batchDuration": 512,
    "numInputRows": 3, "inputRowsPerSecond": 3.0, "processedRowsPerSecond": 6.0,
    "durationMs": {"addBatch": 400, "latestOffset": 9, "triggerExecution": 512},
    "stateOperators": [{"numRowsTotal": 7}],
    "sources": [{"startOffset": {"0": 10, "1": 20, "tick": 5}, "endOffset": {"0": 110, "1": 120, "tick": 6},
                 "latestOffset": {"0": 110, "1": 125}}],
    "sink": {"description": "ForeachBatchSink"},
}
FIGURES = {"snapshots": 1, "recovered": 0, "dead_letters": 2, "dead_letters_by_code": {"invalid_json": 2},
           "events_applied": 198}


class _JavaProgress:
    def __init__(self, text: str):
        self.text = text

    def json(self) -> str:
        return self.text


class _JavaEvent:
    """What the JVM hands the bridge: an event whose ``progress()`` has ``json()``."""

    def __init__(self, progress: dict | str):
        self._progress = _JavaProgress(progress if isinstance(progress, str) else json.dumps(progress))

    def progress(self) -> _JavaProgress:
        return self._progress


def _listener() -> tuple[MetricsListener, MetricsOutbox]:
    outbox = MetricsOutbox("metrics")
    return MetricsListener(outbox, "orderbook"), outbox


def _sent(outbox: MetricsOutbox) -> list[dict]:
    """The messages the listener left for the publisher, decoded."""
    return [json.loads(message) for message in outbox.take()]


def test_the_bridge_publishes_a_batch_from_its_json_progress_and_the_publishers_figures():
    listener, outbox = _listener()
    listener.figures.put(41, FIGURES)
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent(PROGRESS))
    [metrics] = _sent(outbox)
    assert metrics["batch_id"] == 41
    assert metrics["num_input_events"] == 200
    assert metrics["lag"] == 5
    assert metrics["state_rows"] == 7
    assert metrics["snapshots"] == 1
    assert metrics["dead_letters"] == 2
    assert metrics["dead_letters_by_code"] == {"invalid_json": 2}
    assert metrics["events_applied"] == 198


def test_a_batch_without_figures_published_nothing_and_figures_are_taken_once():
    listener, outbox = _listener()
    listener.figures.put(41, FIGURES)
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent(PROGRESS))
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent(PROGRESS))  # e.g. a second progress for the batch
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent({**PROGRESS, "batchId": 42}))
    assert [(m["batch_id"], m["snapshots"], m["events_applied"], m["last_second"]) for m in _sent(outbox)] == [
        (41, 1, 198, None), (41, 0, 0, None), (42, 0, 0, None)]


def test_figures_left_behind_are_bounded():
    figures = FiguresByBatch(capacity=3)
    for batch_id in range(10):
        figures.put(batch_id, {"snapshots": batch_id})
    assert [figures.take(b) for b in (6, 7, 8, 9)] == [None, {"snapshots": 7}, {"snapshots": 8}, {"snapshots": 9}]


def _part(second: int, recovered: bool = False, open_orders: int = 5) -> BookPart:
    return BookPart(second, second - 100, recovered, {0: 7}, open_orders, [("BTC-USD", 0, 100, 3)])


def test_batch_figures_count_what_the_state_partitions_rows_publish():
    dead = [DeadLetterRef(0, 3, "bad", "invalid_json", b"x"), DeadLetterRef(1, 4, "deep", "too_deep"),
            DeadLetterRef(0, 5, "bad", "invalid_json", b"y")]
    partition0 = PartitionOutput([_part(1000, recovered=True), _part(1001)], dead[:2], (900, 950), {"events": 40})
    partition1 = PartitionOutput([_part(1000, open_orders=7), _part(1001, open_orders=8)], dead[2:], None,
                                 {"events": 60})
    rows = [row.asDict() for index, out in enumerate((partition0, partition1)) for row in output_rows(index, out)]
    figures = batch_figures(rows)
    assert set(figures) == set(BATCH_FIGURES)
    # One snapshot per second whatever the number of partitions; open orders of the newest second summed.
    assert figures == {"snapshots": 2, "recovered": 1, "last_second": 1001, "open_orders": 5 + 8,
                       "dead_letters": 3, "dead_letters_by_code": {"invalid_json": 2, "too_deep": 1},
                       "gap_first": 900, "gap_last": 950, "events_applied": 100}


def test_batch_figures_of_a_batch_that_published_nothing():
    rows = [row.asDict() for row in output_rows(0, PartitionOutput([], [], None, {"events": 0}))]
    assert batch_figures(rows) == {"snapshots": 0, "recovered": 0, "last_second": None, "open_orders": None,
                                   "dead_letters": 0, "dead_letters_by_code": {}, "gap_first": None, "gap_last": None,
                                   "events_applied": 0}


def test_another_querys_progress_is_not_published():
    listener, outbox = _listener()
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent({**PROGRESS, "name": "something-else"}))
    assert _sent(outbox) == []


def test_unreadable_progress_is_logged_not_raised(caplog):
    listener, outbox = _listener()
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent("{not json"))
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent({"name": "orderbook"}))  # no batchId
    assert _sent(outbox) == []
    assert caplog.text.count("unreadable query progress") == 2


def test_the_outbox_is_bounded_and_a_failed_transactions_messages_go_back_before_newer_ones():
    outbox = MetricsOutbox("metrics", capacity=3)
    for n in range(5):
        outbox.put(b"%d" % n)
    assert outbox.dropped == 2
    taken = outbox.take()
    assert taken == [b"2", b"3", b"4"] and outbox.take() == []
    outbox.put(b"5")
    outbox.give_back(taken)  # the transaction that carried them did not commit
    assert outbox.take() == [b"3", b"4", b"5"] and outbox.dropped == 3
