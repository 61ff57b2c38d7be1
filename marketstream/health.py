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
"""

from __future__ import annotations

import logging
import statistics
import time
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
    problems = report.problems
    stale = settings.dashboard_stale_seconds
    if last_snapshot_time is None:
        problems.append(f"no snapshot has ever been published on {settings.orderbook_topic}: "
                        "trigger the orderbook_pipeline DAG to start the Spark job")
    elif now - last_snapshot_time > stale:
        problems.append(
            f"the last snapshot ({format_snapshot_time(last_snapshot_time)}) is {now - last_snapshot_time:.0f} s old, "
            f"more than {stale:g} s: the job is not publishing (is the orderbook_pipeline run still running?)"
        )
    if last_snapshot_time is not None and report.snapshots_in_window < settings.health_min_snapshots_per_minute:
        problems.append(
            f"only {report.snapshots_in_window} snapshot(s) in the last {WINDOW_SECONDS} s, expected ~{EXPECTED_PER_WINDOW} "
            f"(at least {settings.health_min_snapshots_per_minute}): the one-per-second cadence slipped"
        )
    if report.duplicate_seconds:
        shown = ", ".join(format_snapshot_time(s) for s in report.duplicate_seconds[:5])
        problems.append(f"{len(report.duplicate_seconds)} second(s) with more than one snapshot: {shown}")
    if not rows:
        problems.append(f"no batch metrics on {settings.metrics_topic} in the last {WINDOW_SECONDS} s: "
                        "the streaming query is not running")
    else:
        if report.lag_last > settings.health_max_lag and report.lag_last > report.lag_first:
            problems.append(
                f"consumer lag grows: {report.lag_first} -> {report.lag_last} events over the last {len(rows)} batches "
                f"(limit {settings.health_max_lag}): the job reads slower than orders arrive"
            )
        if report.median_batch_ms > settings.health_max_batch_ms:
            problems.append(
                f"batches take longer than the {settings.health_max_batch_ms} ms trigger: median "
                f"{report.median_batch_ms:.0f} ms, max {report.max_batch_ms} ms over {len(rows)} batches"
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


def check_health(settings: Settings) -> dict:
    """The health task: returns the summary, raises ``HealthCheckFailed`` on a problem."""
    report = collect(settings)
    log.info("order-book health: %s", report.summary())
    if report.problems:
        raise HealthCheckFailed(report)
    return report.summary()
