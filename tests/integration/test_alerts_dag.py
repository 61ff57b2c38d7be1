"""Alerts end to end, as Airflow runs them: the ``orderbook_health`` DAG under ``dag.test()``
(its callbacks are the notifiers the DAG wires) against a real broker where a job
publishes one snapshot a second, a local webhook receiver (a real HTTP server) for
``ALERT_WEBHOOK_URL``. The job dies: exactly one alert arrives, however many checks fail;
it comes back: exactly one recovery. Each says what broke and where to look."""

from __future__ import annotations

import time

import pytest

from marketstream.snapshots import topic_span
from tests.airflow_runs import airflow_env, queue_pipeline_run, run_dag
from tests.published_stream import LiveJob
from tests.support import ARTIFACTS, wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DASHBOARD = "http://dashboard.test:8501"
AIRFLOW_UI = "http://127.0.0.1:8080"


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def test_a_dead_job_gives_one_alert_and_one_recovery(kafka_settings, tmp_path, receiver):
    ARTIFACTS.mkdir(exist_ok=True)
    s = kafka_settings
    env = airflow_env(dict(
        kafka_bootstrap_servers=s.kafka_bootstrap_servers, orders_topic=s.orders_topic,
        orderbook_topic=s.orderbook_topic, deadletter_topic=s.deadletter_topic, metrics_topic=s.metrics_topic,
        deals_topic=s.deals_topic, deals_deadletter_topic=s.deals_deadletter_topic,
        export_dir=tmp_path / "exports", airflow_home=tmp_path / "airflow", airflow_ui_url=AIRFLOW_UI,
        alert_webhook_url=receiver.url, alert_state_path=tmp_path / "alerts.sqlite", dashboard_url=DASHBOARD,
    ))
    queue_pipeline_run(env)  # the check judges a started pipeline only
    job = LiveJob(s).start()

    def check(name: str) -> int:
        return run_dag(env, "orderbook_health", ARTIFACTS / f"airflow-health-alerts-{name}.log")

    try:
        assert check("healthy") == 0, "the check of a healthy job failed"
        assert receiver.texts() == []

        job.die()
        stale = s.dashboard_stale_seconds
        wait_for(lambda: time.time() - topic_span(s).last > stale + 1, 30, 0.5, "the last snapshot to go stale")
        assert check("down-1") == 1
        assert check("down-2") == 1  # still down a minute later: no second alert
        assert len(receiver.texts()) == 1

        job.come_back()
        wait_for(lambda: topic_span(s).last >= int(time.time()) - 2, 30, 0.5, "the job to publish again")
        assert check("back") == 0, "the check failed after the job came back"
    finally:
        job.close()

    alert, recovery = receiver.texts()
    print(alert, recovery, sep="\n\n")
    assert alert.startswith("ALERT marketstream: the order-book stream (one snapshot every second) is broken")
    assert "What broke: orderbook_health/check_health failed" in alert
    assert "the job is not publishing" in alert  # the check's own sentence
    assert f"task log   {AIRFLOW_UI}/dags/orderbook_health/runs/" in alert and "/tasks/check_health" in alert
    assert f"dashboard  {DASHBOARD}/health" in alert

    assert recovery.startswith("RECOVERED marketstream: the order-book stream (one snapshot every second), after ")
    assert "orderbook_health/check_health succeeded: last_snapshot " in recovery
    assert "While open: 2 failure(s); the first: orderbook_health/check_health failed" in recovery
    assert f"dashboard  {DASHBOARD}/health" in recovery
