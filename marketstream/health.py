"""Health of the running order-book job (the ``orderbook_health`` DAG, every minute).

Reads the output topic (freshness, cadence, both by the snapshot time each record
carries) and the metrics topic (one message per Spark micro-batch: lag, batch duration)
and fails with sentences that say what is wrong:
- the last snapshot is older than ``dashboard_stale_seconds`` (5 s): the job is not publishing;
- the last complete minute did not have a snapshot for ~every second (fewer than
  ``health_min_snapshots_per_minute`` seconds with one), or had several snapshot records
  for one second (counted as a consumer sees them, by ``snapshots.count_per_second``,
  like the dashboard's health page);
- the consumer lag grew over the minute and is above ``health_max_lag`` events;
- batches take longer than the job's trigger, one snapshot period (median over the
  minute above ``health_max_batch_ms``): the job falls behind and the cadence slips;
- no batch metrics in the minute at all: the streaming query is not running.

A job that started less than ``health_startup_grace_seconds`` ago has some of these
anyway (no snapshot yet, a window not yet full, slow first batches): with only those,
the check is deferred (``HealthCheckDeferred``), not failed.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from marketstream.kafka_io import offsets_for_time, read_range
from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS, format_snapshot_time
from marketstream.orderbook.metrics import BadMetric, parse_metric
from marketstream.settings import Settings
from marketstream.snapshots import count_per_second, read_seconds, topic_span

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
EXPECTED_PER_WINDOW = WINDOW_SECONDS // SNAPSHOT_CADENCE_SECONDS
# A snapshot for second t is published a little after t+1: the cadence window ends
# this many seconds before now so in-flight seconds are not counted as missing.
SETTLE_SECONDS = 3 * SNAPSHOT_CADENCE_SECONDS


class HealthCheckFailed(Exception):
    def __init__(self, report: HealthReport):
        self.report = report
        super().__init__("order-book job unhealthy:\n  - " + "\n  - ".join(report.problems))


class HealthCheckDeferred(Exception):
    """The job started too recently to judge what the check found."""

    def __init__(self, report: HealthReport, job_age_s: float, grace_s: int):
        self.report = report
        began = f"started {job_age_s:.0f} s ago" if job_age_s >= 1 else "is starting"
        super().__init__(f"the pipeline run {began}; checks begin after {grace_s} s "
                         f"(until then: {'; '.join(report.problems)})")


@dataclass
class HealthReport:
    now: float
    last_snapshot_time: int | None
    snapshots_in_window: int
    duplicate_seconds: list[int]
    batches: int
    lag_first: int | None
    lag_last: int | None
    median_batch_ms: float | None
    max_batch_ms: int | None
    bad_metrics: int = 0
    problems: list[str] = field(default_factory=list)
    # Those of ``problems`` a job that just started has anyway: too little data yet, and
    # first batches slowed by planning and the JVM's warm-up.
    start_up_problems: list[str] = field(default_factory=list)

    def explained_by_start(self) -> bool:
        return all(problem in self.start_up_problems for problem in self.problems)

    def summary(self) -> dict:
        return {
            "last_snapshot": format_snapshot_time(self.last_snapshot_time) if self.last_snapshot_time else None,
            "snapshot_age_s": round(self.now - self.last_snapshot_time, 1) if self.last_snapshot_time else None,
            "snapshots_last_minute": self.snapshots_in_window,
            "batches_last_minute": self.batches,
            "lag_first": self.lag_first, "lag_last": self.lag_last,
            "median_batch_ms": self.median_batch_ms, "max_batch_ms": self.max_batch_ms,
            "problems": self.problems,
        }


def assess(
    settings: Settings,
    now: float,
    last_snapshot_time: int | None,
    window_snapshot_times: list[int],
    metrics: list[dict],
    bad_metrics: int = 0,
) -> HealthReport:
    """Pure: the problems in what was read. ``window_snapshot_times``: the snapshot time of
    every snapshot record (copies included) of the ``WINDOW_SECONDS`` ending
    ``SETTLE_SECONDS`` ago; ``metrics``: parsed metrics rows of the last ``WINDOW_SECONDS``."""
    window_end = int(now) - SETTLE_SECONDS
    seconds = count_per_second(window_snapshot_times, window_end - WINDOW_SECONDS, window_end)
    rows = sorted(metrics, key=lambda m: m["batch_id"])
    durations = [int(m["batch_duration_ms"]) for m in rows]
    report = HealthReport(
        now=now,
        last_snapshot_time=last_snapshot_time,
        snapshots_in_window=seconds.seconds_with_snapshots,
        duplicate_seconds=seconds.duplicates,
        batches=len(rows),
        lag_first=int(rows[0]["lag"]) if rows else None,
        lag_last=int(rows[-1]["lag"]) if rows else None,
        median_batch_ms=statistics.median(durations) if durations else None,
        max_batch_ms=max(durations) if durations else None,
        bad_metrics=bad_metrics,
    )
    stale = settings.dashboard_stale_seconds

    def problem(text: str, start_up: bool = False) -> None:
        report.problems.append(text)
        if start_up:
            report.start_up_problems.append(text)

    if last_snapshot_time is None:
        problem(f"no snapshot has ever been published on {settings.orderbook_topic}: "
                "trigger the orderbook_pipeline DAG to start the Spark job", start_up=True)
    elif now - last_snapshot_time > stale:
        problem(
            f"the last snapshot ({format_snapshot_time(last_snapshot_time)}) is {now - last_snapshot_time:.0f} s old, "
            f"more than {stale:g} s: the job is not publishing (is the orderbook_pipeline run still running?)",
            start_up=True,
        )
    if last_snapshot_time is not None and report.snapshots_in_window < settings.health_min_snapshots_per_minute:
        problem(
            f"only {report.snapshots_in_window} snapshot(s) in the last {WINDOW_SECONDS} s, expected ~{EXPECTED_PER_WINDOW} "
            f"(at least {settings.health_min_snapshots_per_minute}): the one-per-second cadence slipped",
            start_up=True,
        )
    if report.duplicate_seconds:
        shown = ", ".join(format_snapshot_time(s) for s in report.duplicate_seconds[:5])
        problem(f"{len(report.duplicate_seconds)} second(s) with more than one snapshot: {shown}")
    if not rows:
        problem(f"no batch metrics on {settings.metrics_topic} in the last {WINDOW_SECONDS} s: "
                "the streaming query is not running", start_up=True)
    else:
        if report.lag_last > settings.health_max_lag and report.lag_last > report.lag_first:
            problem(
                f"consumer lag grows: {report.lag_first} -> {report.lag_last} events over the last {len(rows)} batches "
                f"(limit {settings.health_max_lag}): the job reads slower than orders arrive"
            )
        if report.median_batch_ms > settings.health_max_batch_ms:
            problem(
                f"batches take longer than the {settings.health_max_batch_ms} ms trigger: median "
                f"{report.median_batch_ms:.0f} ms, max {report.max_batch_ms} ms over {len(rows)} batches",
                start_up=True,
            )
    if bad_metrics:
        log.warning("%d metrics record(s) did not follow the contract and were ignored", bad_metrics)
    return report


def collect(settings: Settings, now: float | None = None) -> HealthReport:
    """Read both topics and assess them."""
    now = time.time() if now is None else now
    window_end = int(now) - SETTLE_SECONDS
    read = read_seconds(settings, window_end - WINDOW_SECONDS, window_end)
    times = [message.snapshot_time for message in read.snapshots]
    metrics, bad = [], 0
    begin = offsets_for_time(settings, settings.metrics_topic, int((now - WINDOW_SECONDS) * 1000))
    for record in read_range(settings, settings.metrics_topic, begin):
        try:
            metrics.append(parse_metric(record.value or b""))
        except BadMetric:
            bad += 1
    return assess(settings, now, topic_span(settings).last, times, metrics, bad)


def judge(settings: Settings, report: HealthReport, job_age_s: Callable[[], float | None]) -> dict:
    """Pure: the summary of a healthy report; ``HealthCheckFailed`` for a report with a
    problem, or ``HealthCheckDeferred`` when the job is younger than the grace and has only
    start-up problems. ``job_age_s``: seconds since the pipeline run started (None:
    unknown, no grace), asked only when something is wrong."""
    if not report.problems:
        return report.summary()
    grace = settings.health_startup_grace_seconds
    if report.explained_by_start() and (age := job_age_s()) is not None and age < grace:
        raise HealthCheckDeferred(report, age, grace)
    raise HealthCheckFailed(report)


def check_health(settings: Settings, job_age_s: Callable[[], float | None] = lambda: None) -> dict:
    """The health task: reads, judges (``judge``) and logs the summary."""
    report = collect(settings)
    log.info("order-book health: %s", report.summary())
    return judge(settings, report, job_age_s)
