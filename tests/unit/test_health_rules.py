"""Health verdicts from what the topics hold (pure part of marketstream.health)."""

from __future__ import annotations

from marketstream.health import HealthCheckDeferred, HealthCheckFailed, assess, judge
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


def judged(report, job_age_s):
    """What ``judge`` makes of ``report``: ("passed", summary), ("deferred"|"failed", message)."""
    try:
        return "passed", judge(SETTINGS, report, lambda: job_age_s)
    except HealthCheckDeferred as exc:
        return "deferred", str(exc)
    except HealthCheckFailed as exc:
        return "failed", str(exc)


def test_a_job_that_just_started_is_not_judged_for_lack_of_data():
    # 40 s after the run started: no snapshot yet, no batch yet.
    verdict, message = judged(assess(SETTINGS, NOW, None, [], []), job_age_s=40.0)
    assert verdict == "deferred"
    assert message.startswith("the pipeline run started 40 s ago; checks begin after 90 s (until then: no snapshot")
    # Queued, its job not begun.
    verdict, message = judged(assess(SETTINGS, NOW, None, [], []), job_age_s=0.0)
    assert verdict == "deferred" and message.startswith("the pipeline run is starting; checks begin after 90 s (")


def test_a_young_job_with_a_thin_window_and_slow_first_batches_is_deferred():
    # The job's first snapshot came 25 s into the window; its first batches planned and warmed up.
    window = list(range(int(NOW) - 38, int(NOW) - 3))
    report = assess(SETTINGS, NOW, int(NOW) - 1, window, metrics([0] * 6, [9000, 4000, 2500, 1200, 900, 700]))
    assert len(report.problems) == 2
    assert judged(report, job_age_s=70.0)[0] == "deferred"
    assert judged(report, job_age_s=90.0)[0] == "failed"  # the grace is over


def test_after_the_grace_a_stall_fails_as_before():
    _, window, rows = healthy_inputs()
    report = assess(SETTINGS, NOW, int(NOW) - 30, window, rows)
    verdict, message = judged(report, job_age_s=600.0)
    assert verdict == "failed" and "is 30 s old, more than 5 s: the job is not publishing" in message


def test_what_a_start_does_not_explain_fails_within_the_grace():
    last, window, rows = healthy_inputs()
    doubled = assess(SETTINGS, NOW, last, window + [window[10]], rows)
    assert judged(doubled, job_age_s=30.0)[0] == "failed"
    # A gap plus a duplicate: the duplicate is not a start-up problem, so the whole check fails.
    thin_and_doubled = assess(SETTINGS, NOW, last, window[30:] + [window[40]], rows)
    verdict, message = judged(thin_and_doubled, job_age_s=30.0)
    assert verdict == "failed" and "only 30 snapshot(s)" in message and "more than one snapshot" in message


def test_an_unknown_run_age_means_no_grace_and_a_healthy_check_asks_nothing():
    assert judged(assess(SETTINGS, NOW, None, [], []), job_age_s=None)[0] == "failed"

    def not_asked():
        raise AssertionError("a healthy check asked for the run's age")

    last, window, rows = healthy_inputs()
    assert judge(SETTINGS, assess(SETTINGS, NOW, last, window, rows), not_asked)["problems"] == []


def test_the_grace_is_a_setting():
    report = assess(SETTINGS, NOW, None, [], [])
    assert judged(report, job_age_s=100.0)[0] == "failed"
    longer = load_settings(health_startup_grace_seconds=180)
    try:
        judge(longer, report, lambda: 100.0)
    except HealthCheckDeferred as exc:
        assert str(exc).startswith("the pipeline run started 100 s ago; checks begin after 180 s")
    else:
        raise AssertionError("not deferred within a 180 s grace")
