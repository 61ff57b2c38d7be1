"""The exports as an Airflow asset, with Airflow's own machinery: ``orderbook_export`` runs
under ``dag.test()`` for three real intervals (a real broker holds the job's snapshots and
the input); each one that passes validation records an asset event whose extra names the
interval; Airflow's scheduler (a few loops of ``airflow scheduler``) turns the events into
an asset-triggered run of ``orderbook_daily_rollup``, and that run's task (``airflow tasks
test`` on the run) writes the day's roll-up from exactly the validated intervals.

The interval whose validation fails sends one alert to the webhook; the next passing
validation one recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from marketstream.exports.asset import ASSET_NAME, asset_uri
from marketstream.exports.layout import daily_rollup_path, export_paths
from marketstream.exports.rollup import rollup_metadata
from tests.airflow_runs import airflow, airflow_env, query, run_dag
from tests.published_stream import PublishedStream
from tests.support import ARTIFACTS
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

T0 = int(datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp())
FIRST_SECOND = T0 - 3  # the job's first snapshot (sequence 1)
MINUTE = timedelta(minutes=1)
A, B, C = (datetime.fromtimestamp(T0 + 60 * n, UTC) for n in range(3))  # interval starts
HOLE = range(T0 + 150, T0 + 152)  # two seconds of C the job never published


def test_validated_exports_trigger_the_daily_rollup_through_their_asset(kafka_settings, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    s = kafka_settings
    stream = PublishedStream(s, 200, FIRST_SECOND)
    stream.publish([t for t in range(FIRST_SECOND, T0 + 185) if t not in HOLE])
    stream.close()
    export_dir = tmp_path / "exports"
    with WebhookReceiver() as receiver:
        env = airflow_env(dict(
            kafka_bootstrap_servers=s.kafka_bootstrap_servers, orders_topic=s.orders_topic,
            orderbook_topic=s.orderbook_topic, deadletter_topic=s.deadletter_topic, metrics_topic=s.metrics_topic,
            deals_topic=s.deals_topic, deals_deadletter_topic=s.deals_deadletter_topic,
            export_dir=export_dir, airflow_home=tmp_path / "airflow", validation_cache_dir=tmp_path / "validation",
            export_interval_minutes=1, export_grace_seconds=0,
            alert_webhook_url=receiver.url, alert_state_path=tmp_path / "alerts.sqlite",
        ))

        def export(start: datetime) -> int:
            # A manual run at start + 61 s covers the minute [start, start + 1 min).
            return run_dag(env, "orderbook_export", ARTIFACTS / f"airflow-export-asset-{start:%H%M}.log",
                           (start + MINUTE + timedelta(seconds=1)).isoformat())

        assert export(A) == 0
        assert export(C) == 1  # the hole: validation fails
        assert len(receiver.texts()) == 1
        assert export(B) == 0
        alert, recovery = receiver.texts()
    report_c = export_paths(export_dir, C, C + MINUTE).validation
    assert "What broke: orderbook_export/validate failed" in alert and "gap" in alert and f"report: {report_c}" in alert
    assert "/dags/orderbook_export/runs/" in alert and "/tasks/validate" in alert and "/exports" in alert
    assert recovery.startswith("RECOVERED marketstream: orderbook_export/validate")

    # Two asset events, one per validated interval, the interval in their extra.
    events = query(env, """
        rows = session.execute(select(AssetEvent, AssetModel).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .order_by(AssetEvent.id)).all()
        result = [dict(name=a.name, uri=a.uri, dag=e.source_dag_id, task=e.source_task_id, extra=e.extra) for e, a in rows]
    """)
    assert [(e["name"], e["uri"], e["dag"], e["task"]) for e in events] == \
        [(ASSET_NAME, asset_uri(export_dir), "orderbook_export", "validate")] * 2
    assert [(e["extra"]["interval_start"], e["extra"]["interval_end"]) for e in events] == \
        [(A.isoformat(), (A + MINUTE).isoformat()), (B.isoformat(), (B + MINUTE).isoformat())]
    assert events[0]["extra"]["files"]["parquet"] == "orderbook/2026-03-02/20260302T093000Z_20260302T093100Z.parquet"
    assert events[0]["extra"]["snapshots"] == 60 and events[0]["extra"]["recovered_snapshots"] == 0

    # Airflow's scheduler creates the consumer's run from the events. The default pool has
    # no slot, so the scheduler queues nothing: the run's task is run below, in this test.
    assert airflow(env, "pools", "set", "default_pool", "0", "no executor in this test").returncode == 0
    scheduler = airflow(env, "scheduler", "--num-runs", "3", "--skip-serve-logs")
    assert scheduler.returncode == 0, scheduler.stderr[-3000:]
    runs = query(env, """
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "orderbook_daily_rollup")).all()
        result = [dict(run_id=r.run_id, run_type=r.run_type, consumed=[e.extra for e in r.consumed_asset_events])
                  for r in runs]
    """)
    [run] = runs
    assert run["run_type"] == "asset_triggered"
    # The run consumes the events up to the one that queued it (A's); B's, recorded while
    # it was queued, goes to the next run (Airflow 3.3). The roll-up is rebuilt from the
    # day's files, so it holds B anyway.
    consumed = [e["interval_start"] for e in run["consumed"]]
    assert consumed[0] == A.isoformat() and set(consumed) <= {A.isoformat(), B.isoformat()}

    done = airflow(env, "tasks", "test", "orderbook_daily_rollup", "rollup", run["run_id"])
    (ARTIFACTS / "airflow-daily-rollup.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    state = query(env, f"""
        result = session.scalar(select(TaskInstance.state).where(
            TaskInstance.dag_id == "orderbook_daily_rollup", TaskInstance.run_id == {run["run_id"]!r}))
    """)
    assert state == "success"

    # The roll-up: A then B, row for row; C left out (its validation failed).
    rollup = daily_rollup_path(export_dir, A.date())
    parts = [pq.read_table(export_paths(export_dir, t, t + MINUTE).data("parquet"), use_threads=False) for t in (A, B)]
    table = pq.read_table(rollup, use_threads=False)
    assert table.num_rows == sum(p.num_rows for p in parts) > 0
    assert table.column("snapshot_time").to_pylist() == sum((p.column("snapshot_time").to_pylist() for p in parts), [])
    assert rollup_metadata(rollup) == {"day": "2026-03-02", "intervals": [
        "20260302T093000Z_20260302T093100Z", "20260302T093100Z_20260302T093200Z"]}
