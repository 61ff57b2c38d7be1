"""The ``orderbook_health`` DAG as Airflow runs it (``dag.test()``) before the pipeline was
ever started: skipped with the reason, no alert; once a pipeline run is queued, it checks
(and, with no job publishing, fails and alerts as before). With Airflow's API server up,
a run that started less than the start-up grace ago is not judged for lack of data; one
that started long ago is."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from marketstream.pipeline_state import NOT_STARTED
from tests.airflow_runs import airflow_env, api_server, query, queue_pipeline_run, run_dag
from tests.support import ARTIFACTS, free_port
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def last_check_state(env) -> str:
    return query(env, """
        result = session.scalars(select(TaskInstance.state).where(TaskInstance.dag_id == "orderbook_health")
                                 .order_by(TaskInstance.start_date.desc())).first()
    """)


def health_env(settings, tmp_path, receiver, **overrides) -> dict[str, str]:
    """Airflow's environment for the health DAG on the test broker, alerting ``receiver``."""
    ARTIFACTS.mkdir(exist_ok=True)
    return airflow_env(dict(
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers, orderbook_topic=settings.orderbook_topic,
        metrics_topic=settings.metrics_topic, airflow_home=tmp_path / "airflow",
        alert_webhook_url=receiver.url, alert_state_path=tmp_path / "alerts.sqlite", **overrides,
    ))


def test_the_check_is_skipped_until_the_pipeline_is_started(kafka_settings, tmp_path):
    with WebhookReceiver() as receiver:
        env = health_env(kafka_settings, tmp_path, receiver)
        log = ARTIFACTS / "airflow-health-not-started.log"
        assert run_dag(env, "orderbook_health", log) == 0, log.read_text()[-3000:]
        assert last_check_state(env) == "skipped"
        assert NOT_STARTED in log.read_text()
        assert receiver.texts() == []

        queue_pipeline_run(env)
        log = ARTIFACTS / "airflow-health-started.log"
        assert run_dag(env, "orderbook_health", log) == 1  # nothing publishes: a real failure
        assert last_check_state(env) == "failed"
        assert "no snapshot has ever been published" in log.read_text()
        assert len(receiver.texts()) == 1


def start_run(env, run_id: str, ago_s: float) -> None:
    """The scheduler's part: the queued pipeline run is running since ``ago_s`` seconds."""
    start = (datetime.now(UTC) - timedelta(seconds=ago_s)).isoformat()
    query(env, f"""
        from datetime import datetime
        run = session.scalars(select(DagRun).where(DagRun.run_id == {run_id!r})).one()
        run.state, run.start_date = "running", datetime.fromisoformat({start!r})
    """)


def test_a_run_that_just_started_is_not_red_for_lack_of_data(kafka_settings, tmp_path):
    with WebhookReceiver() as receiver:
        env = health_env(kafka_settings, tmp_path, receiver, airflow_ui_url=f"http://127.0.0.1:{free_port()}")
        with api_server(env, ARTIFACTS / "airflow-api-server-health.log"):
            run_id = queue_pipeline_run(env)
            start_run(env, run_id, ago_s=30)
            log = ARTIFACTS / "airflow-health-starting.log"
            assert run_dag(env, "orderbook_health", log) == 0, log.read_text()[-3000:]
            assert last_check_state(env) == "skipped"
            text = log.read_text()
            # 30 s and the time Airflow took to run the check, well within the grace.
            assert re.search(r"the pipeline run started \d+ s ago; checks begin after 90 s", text), text[-3000:]
            assert receiver.texts() == []

            start_run(env, run_id, ago_s=600)  # nothing published ten minutes after the start: a stall
            log = ARTIFACTS / "airflow-health-stalled.log"
            assert run_dag(env, "orderbook_health", log) == 1
            assert last_check_state(env) == "failed"
            assert "no snapshot has ever been published" in log.read_text()
            assert len(receiver.texts()) == 1
