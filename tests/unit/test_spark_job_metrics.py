"""The order-book job's Prometheus figures follow its metrics messages."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from marketstream.spark.publish.job_metrics import OrderBookMetrics


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
    assert sample(registry, "marketstream_orderbook_last_batch_duration_seconds") == 2.1
    assert sample(registry, "marketstream_orderbook_last_snapshot_timestamp_seconds") == 1_795_334_445
    # The old name, served for one more release.
    assert sample(registry, "marketstream_orderbook_last_snapshot_second") == 1_795_334_445
    assert b"marketstream_orderbook_snapshot_seconds_since_last" in generate_latest(registry)


def bucket(registry, name, le):
    return sample(registry, f"{name}_bucket", {"le": le})


def test_every_batch_lands_in_the_histograms():
    """At one batch a second and a 15 s scrape a gauge shows one batch in fifteen: the
    histograms count each batch's time, each on-time snapshot's latency, each publish."""
    registry = CollectorRegistry()
    metrics = OrderBookMetrics(registry)
    base = {"num_input_events": 10, "recovered": 0, "dead_letters_by_code": {}, "lag": 0, "last_second": 1_795_334_400}
    metrics.observe({**base, "snapshots": 1, "batch_duration_ms": 400, "publish_ms": 7, "snapshot_latency_ms": [450]})
    metrics.observe({**base, "snapshots": 2, "batch_duration_ms": 2600, "publish_ms": 30,
                     "snapshot_latency_ms": [2900, 1950]})
    metrics.observe({**base, "snapshots": 0, "last_second": None, "batch_duration_ms": 90, "publish_ms": 0,
                     "snapshot_latency_ms": []})  # published nothing: no publish observed
    batch = "marketstream_orderbook_batch_duration_seconds"
    assert sample(registry, f"{batch}_count") == 3
    assert sample(registry, f"{batch}_sum") == 3.09
    assert (bucket(registry, batch, "0.1"), bucket(registry, batch, "0.5"), bucket(registry, batch, "3.0")) == (1, 2, 3)
    latency = "marketstream_orderbook_snapshot_latency_seconds"
    assert sample(registry, f"{latency}_count") == 3
    assert (bucket(registry, latency, "0.5"), bucket(registry, latency, "2.0"), bucket(registry, latency, "3.0")) == (
        1, 2, 3)
    publish = "marketstream_orderbook_publish_duration_seconds"
    assert sample(registry, f"{publish}_count") == 2
    assert (bucket(registry, publish, "0.01"), bucket(registry, publish, "0.05")) == (1, 2)
    # The last batch's time stays readable as a gauge.
    assert sample(registry, "marketstream_orderbook_last_batch_duration_seconds") == 0.09
