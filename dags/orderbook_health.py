"""Wiring only: a minute-by-minute health check of the running order-book job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from marketstream.alerts.notifier import STREAM_INCIDENT, CloseIncident, OpenIncident

DOC = """
### Order-book health

Every minute, reads the snapshot topic (by the snapshot time each record carries) and the
job's metrics topic (one message per Spark micro-batch) and **fails** with a sentence
saying what is wrong when:

- the last snapshot is older than `DASHBOARD_STALE_SECONDS` (5 s) — the job is not publishing;
- the last minute had fewer than `HEALTH_MIN_SNAPSHOTS_PER_MINUTE` (55) seconds with a
  snapshot, or two snapshot records for one second (counted as a consumer of the topic
  sees them, exactly as the dashboard's health page counts them);
- the consumer lag grew over the minute and exceeds `HEALTH_MAX_LAG` events;
- the median batch duration exceeds the job's one-second trigger (`HEALTH_MAX_BATCH_MS`);
- there were no batch metrics at all (the streaming query is down).

Only while `orderbook_pipeline` has a queued or running run: before it was ever started,
or once it was stopped (no run queued or running), the check is **skipped** with that
reason, opens no incident and sends no alert (a job that died is reported by the pipeline
DAG itself). For `HEALTH_STARTUP_GRACE_SECONDS` (90 s) after the run started, a check
that finds only what a starting job has anyway (no snapshot yet, a minute not yet full,
slow first batches) is skipped too, saying when checks begin; duplicates or a growing lag
fail at once. The dashboard's health page charts the same figures.

**Alerts** (`ALERT_WEBHOOK_URL`, see the README): a failed check opens the
`orderbook-stream` incident, which the order-book job's death opens too, and sends one
alert with the problems; later failed checks send nothing. The first passing check whose
last snapshot is newer than the incident's start closes it with one recovery message.
"""

with DAG(
    dag_id="orderbook_health",
    schedule="* * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(seconds=55),
    doc_md=DOC,
    tags=["orderbook", "health"],
    # A health verdict is for this minute: retrying it later would answer another question.
    default_args={"owner": "market-data", "retries": 0},
) as dag:

    @task(
        task_id="check_health",
        on_failure_callback=OpenIncident(STREAM_INCIDENT),
        # A pass closes the incident only with a snapshot published after it began.
        on_success_callback=CloseIncident(STREAM_INCIDENT, evidence="last_snapshot"),
    )
    def check_health(ti=None) -> dict:
        from marketstream.health import HealthCheckDeferred, HealthCheckFailed, check_health
        from marketstream.pipeline_state import ACTIVE_STATES, PIPELINE_DAG_ID, active_run_age, skip_reason
        from marketstream.settings import get_settings

        reason = skip_reason(ti.get_dr_count(dag_id=PIPELINE_DAG_ID),
                             ti.get_dr_count(dag_id=PIPELINE_DAG_ID, states=list(ACTIVE_STATES)))
        if reason:
            raise AirflowSkipException(reason)
        settings = get_settings()
        try:
            return check_health(settings, job_age_s=lambda: active_run_age(settings))
        except HealthCheckDeferred as exc:
            raise AirflowSkipException(str(exc)) from exc
        except HealthCheckFailed as exc:
            raise AirflowFailException(str(exc)) from exc

    check_health()
