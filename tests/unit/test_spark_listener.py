"""The job's query listener: what it publishes for a batch's progress, taken as the JVM's
JSON text through its py4j bridge (that Spark calls the bridge is for the integration tests:
the job's metrics endpoint and metrics topic are fed by it)."""

from __future__ import annotations

import json

from marketstream.orderbook.metrics import OBSERVED_OUTPUT
from marketstream.spark.listener import MetricsListener, _ProgressAsJson

PROGRESS = {
    "id": "8f1c0b52-8d2b-4a43-9d0c-0d6f0a3c9a11", "runId": "0b8e6c8e-3f0e-4d8e-9c55-7d1f1c2a9b20",
    "name": "orderbook", "timestamp": "2026-12-01T06:00:00.000Z", "batchId": 41, "batchDuration": 512,
    "numInputRows": 3, "inputRowsPerSecond": 3.0, "processedRowsPerSecond": 6.0,
    "durationMs": {"addBatch": 400, "latestOffset": 9, "triggerExecution": 512},
    "stateOperators": [{"numRowsTotal": 7}],
    "sources": [{"startOffset": {"0": 10, "1": 20, "tick": 5}, "endOffset": {"0": 110, "1": 120, "tick": 6},
                 "latestOffset": {"0": 110, "1": 125}}],
    "sink": {"description": "ForeachBatchSink"},
    "observedMetrics": {OBSERVED_OUTPUT: {"snapshots": 1, "recovered": 0, "dead_letters": 2,
                                         "dead_letters_invalid_json": 2, "events_applied": 198}},
}


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


def _listener() -> tuple[MetricsListener, list[dict]]:
    sent: list[dict] = []
    listener = MetricsListener("127.0.0.1:1", "metrics")
    listener._send = sent.append
    return listener, sent


def test_the_bridge_publishes_a_batch_from_its_json_progress():
    listener, sent = _listener()
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent(PROGRESS))
    [metrics] = sent
    assert metrics["batch_id"] == 41
    assert metrics["num_input_events"] == 200
    assert metrics["lag"] == 5
    assert metrics["state_rows"] == 7
    assert metrics["snapshots"] == 1
    assert metrics["dead_letters"] == 2


def test_another_querys_progress_is_not_published():
    listener, sent = _listener()
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent({**PROGRESS, "name": "something-else"}))
    assert sent == []


def test_unreadable_progress_is_logged_not_raised(caplog):
    listener, sent = _listener()
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent("{not json"))
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent({"name": "orderbook"}))  # no batchId
    assert sent == []
    assert caplog.text.count("unreadable query progress") == 2


def test_a_failing_metrics_producer_does_not_reach_the_query(caplog):
    listener, _ = _listener()

    def broken(metrics):
        raise OSError("broker gone")

    listener._send = broken
    _ProgressAsJson(listener).onQueryProgress(_JavaEvent(PROGRESS))
    assert "could not publish metrics" in caplog.text
