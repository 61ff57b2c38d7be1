"""The metrics contract: the message the job's listener builds from Spark's progress and
the parser the health check and the dashboard read it with."""

from __future__ import annotations

import json

import pytest

from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.metrics import (
    BadMetric, delivery_figures, encode_metric, metrics_from_progress, parse_metric,
)


def test_metrics_message_from_progress():
    # 300 events packed in 2 rows, plus the heartbeat row: Spark says 3 rows.
    progress = {
        "id": "x", "runId": "y", "name": "orderbook", "timestamp": "2026-11-22T08:00:00.000Z", "batchId": 7,
        "numInputRows": 3, "inputRowsPerSecond": 3.0, "processedRowsPerSecond": 6.0,
        "durationMs": {"triggerExecution": 480},
        "batchDuration": 480,
        "stateOperators": [{"numRowsTotal": 1234}],
        "sources": [{
            "startOffset": json.dumps({"0": 10, "1": 20, "tick": 5}),
            "endOffset": json.dumps({"0": 110, "1": 220, "tick": 6}),
            "latestOffset": json.dumps({"0": 150, "1": 220}),
        }],
    }
    # What the batch published, as the job's publisher counts it.
    published = {"snapshots": 3, "recovered": 2, "dead_letters": 4, "open_orders": 4174, "last_second": 1795334400,
                 "dead_letters_by_code": {"bad_json": 3, "symbol_limit": 1, "too_deep": 0},
                 "gap_first": 1795330000, "gap_last": 1795330799, "events_applied": 290,
                 "publish_ms": 12, "snapshot_latency_ms": [640]}
    metrics = metrics_from_progress(progress, published=published)
    assert metrics == {
        "query": "orderbook", "batch_id": 7, "timestamp": "2026-11-22T08:00:00.000Z", "num_input_events": 300,
        "input_events_per_second": 300.0, "processed_events_per_second": 600.0, "batch_duration_ms": 480,
        "state_rows": 1234, "start_offsets": {"0": 10, "1": 20}, "end_offsets": {"0": 110, "1": 220},
        "latest_offsets": {"0": 150, "1": 220}, "lag": 40,
        "snapshots": 3, "recovered": 2, "last_second": 1795334400, "open_orders": 4174, "dead_letters": 4,
        "dead_letters_by_code": {"bad_json": 3, "symbol_limit": 1}, "gap_first": 1795330000, "gap_last": 1795330799,
        "events_applied": 290, "publish_ms": 12, "snapshot_latency_ms": [640],
    }
    parsed = parse_metric(encode_metric(metrics))
    assert (parsed["snapshots"], parsed["gap_last"], parsed["dead_letters_by_code"]) == (3, 1795330799,
                                                                                          {"bad_json": 3, "symbol_limit": 1})
    # The JVM source nests offsets under the topic name.
    jvm = dict(progress, sources=[{"startOffset": '{"in":{"0":1}}', "endOffset": '{"in":{"0":2}}',
                                   "latestOffset": '{"in":{"0":9}}'}])
    assert metrics_from_progress(jvm)["lag"] == 7


def test_what_the_writer_builds_the_readers_parse():
    progress = {"timestamp": "2026-11-22T08:00:00.000Z", "batchId": 7, "numInputRows": 1, "batchDuration": 480,
                "sources": [{"startOffset": '{"0": 1}', "endOffset": '{"0": 2}', "latestOffset": '{"0": 9}'}]}
    row = parse_metric(encode_metric(metrics_from_progress(progress)))
    assert (row["batch_id"], row["lag"], row["num_input_events"], row["query"]) == (7, 7, 1, "orderbook")
    assert row["time"].isoformat() == "2026-11-22T08:00:00+00:00"


METRIC = {
    "query": "orderbook", "batch_id": 3, "timestamp": "2026-11-22T08:00:01.250Z", "num_input_events": 12,
    "input_events_per_second": 99.5, "processed_events_per_second": 120.0, "batch_duration_ms": 480,
    "state_rows": 4174, "start_offsets": {"0": 1}, "end_offsets": {"0": 13}, "latest_offsets": {"0": 20}, "lag": 7,
}


def test_parse_metric_reads_the_contract():
    row = parse_metric(json.dumps(METRIC).encode())
    assert row["batch_id"] == 3 and row["lag"] == 7 and row["batch_duration_ms"] == 480
    assert row["time"].isoformat() == "2026-11-22T08:00:01.250000+00:00"


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**METRIC, "lag": None}).encode(), "'lag'"),
        (json.dumps({**METRIC, "batch_duration_ms": "slow"}).encode(), "'batch_duration_ms'"),
        (json.dumps({**METRIC, "timestamp": "yesterday"}).encode(), "timestamp"),
    ],
)
def test_parse_metric_rejects_bad_records_with_a_reason(value, reason):
    with pytest.raises(BadMetric, match=reason):
        parse_metric(value)


def test_delivery_figures_time_the_publish_and_each_on_time_snapshot():
    def snapshot(second, recovered=False):
        return SnapshotMessage(second, second, {}, 0, "[]", recovered)

    # Seconds 100 and 101 published on time, 40 recovered after an outage; sent at 102.35,
    # acknowledged at 102.4: second 101 ended at 102.0, 0.4 s before its acknowledgement.
    figures = delivery_figures([snapshot(40, recovered=True), snapshot(100), snapshot(101)], 102.35, 102.4)
    assert figures == {"publish_ms": 50, "snapshot_latency_ms": [1400, 400]}
    assert delivery_figures([], 5.0, 5.0) == {"publish_ms": 0, "snapshot_latency_ms": []}
