"""Health verdicts from what the topics hold (pure part of marketstream.health)."""

from __future__ import annotations

from marketstream.health import HealthCheckFailed, assess
from marketstream.settings import load_settings

NOW = 1_800_000_000.0
SETTINGS = load_settings()


def metrics(lags, durations):
    return [{"batch_id": i, "lag": lag, "batch_duration_ms": d} for i, (lag, d) in enumerate(zip(lags, durations))]


def healthy_inputs():
    window = list(range(int(NOW) - 63, int(NOW) - 3))
    return int(NOW) - 1, window, metrics([0] * 60, [400] * 60)


def test_healthy_job_has_no_problems():
    last, window, rows = healthy_inputs()
    report = assess(SETTINGS, NOW, last, window, rows)
    assert report.problems == []
    assert report.summary()["snapshots_last_minute"] == 60


def test_stale_snapshot():
    _, window, rows = healthy_inputs()
    [problem] = assess(SETTINGS, NOW, int(NOW) - 12, window, rows).problems
    assert "is 12 s old, more than 5 s: the job is not publishing" in problem


def test_never_started():
    problems = assess(SETTINGS, NOW, None, [], []).problems
    assert problems[0].startswith("no snapshot has ever been published on orderbook")
    assert "no batch metrics on orderbook.metrics in the last 60 s" in problems[1]


def test_missing_and_duplicate_seconds():
    last, window, rows = healthy_inputs()
    thin = window[::2] + [window[0]]
    problems = assess(SETTINGS, NOW, last, thin, rows).problems
    assert "only 30 snapshot(s) in the last 60 s, expected ~60 (at least 55)" in problems[0]
    assert problems[1].startswith("1 second(s) with more than one snapshot")


def test_growing_lag():
    last, window, _ = healthy_inputs()
    problems = assess(SETTINGS, NOW, last, window, metrics([100, 900, 3000], [500] * 3)).problems
    assert problems == ["consumer lag grows: 100 -> 3000 events over the last 3 batches (limit 1000): "
                        "the job reads slower than orders arrive"]
    # a high but shrinking lag (catching up after a restart) is not a failure
    assert assess(SETTINGS, NOW, last, window, metrics([5000, 3000, 1200], [500] * 3)).problems == []


def test_slow_batches():
    last, window, _ = healthy_inputs()
    problems = assess(SETTINGS, NOW, last, window, metrics([0] * 5, [900, 1500, 1600, 1700, 300])).problems
    assert problems == ["batches take longer than the 1000 ms trigger: median 1500 ms, max 1700 ms over 5 batches"]


def test_failure_message_lists_every_problem():
    report = assess(SETTINGS, NOW, None, [], [])
    text = str(HealthCheckFailed(report))
    assert text.startswith("order-book job unhealthy:\n  - no snapshot has ever been published")
    assert "no batch metrics" in text
