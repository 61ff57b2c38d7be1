"""The order-book job's Prometheus figures follow its metrics messages."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from marketstream.spark.job_metrics import OrderBookMetrics


def sample(registry, name, labels=None):
    return registry.get_sample_value(name, labels or {})


def test_each_batch_moves_the_figures():
    registry = CollectorRegistry()
    metrics = OrderBookMetrics(registry)
    metrics.observe({"num_input_events": 500, "snapshots": 1, "recovered": 0, "dead_letters_by_code": {"bad_json": 2},
                     "open_orders": 4174, "lag": 12, "batch_duration_ms": 480, "last_second": 1_795_334_400,
                     "gap_first": None, "gap_last": None})
    metrics.observe({"num_input_events": 9000, "snapshots": 45, "recovered": 44,
                     "dead_letters_by_code": {"bad_json": 1, "symbol_limit": 3}, "open_orders": 4180, "lag": 0,
                     "batch_duration_ms": 2100, "last_second": 1_795_334_445,
                     "gap_first": 1_795_330_000, "gap_last": 1_795_330_099})
    assert sample(registry, "marketstream_orderbook_batches_total") == 2
    assert sample(registry, "marketstream_orderbook_events_read_total") == 9500
    assert sample(registry, "marketstream_orderbook_snapshots_published_total") == 46
    assert sample(registry, "marketstream_orderbook_seconds_recovered_total") == 44
    assert sample(registry, "marketstream_orderbook_seconds_missed_total") == 100
    assert sample(registry, "marketstream_orderbook_dead_letters_total", {"reason_code": "bad_json"}) == 3
    assert sample(registry, "marketstream_orderbook_dead_letters_total", {"reason_code": "symbol_limit"}) == 3
    assert sample(registry, "marketstream_orderbook_open_orders") == 4180
    assert sample(registry, "marketstream_orderbook_batch_duration_seconds") == 2.1
    assert sample(registry, "marketstream_orderbook_last_snapshot_second") == 1_795_334_445
    assert b"marketstream_orderbook_snapshot_seconds_since_last" in generate_latest(registry)
