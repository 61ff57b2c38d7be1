"""The ``orderbook_health`` DAG as Airflow runs it (``dag.test()``) before the pipeline was
ever started: skipped with the reason, no alert; once a pipeline run is queued, it checks
(and, with no job publishing, fails and alerts as before)."""

from __future__ import annotations

import pytest

from marketstream.pipeline_state import NOT_STARTED
from tests.airflow_runs import airflow_env, query, queue_pipeline_run, run_dag
from tests.support import ARTIFACTS
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def last_check_state(env) -> str:
    return query(env, """
        result = session.scalars(select(TaskInstance.state).where(TaskInstance.dag_id == "orderbook_health")
                                 .order_by(TaskInstance.start_date.desc())).first()
    """)


def test_the_check_is_skipped_until_the_pipeline_is_started(kafka_settings, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    s = kafka_settings
    with WebhookReceiver() as receiver:
        env = airflow_env(dict(
            kafka_bootstrap_servers=s.kafka_bootstrap_servers, orderbook_topic=s.orderbook_topic,
            metrics_topic=s.metrics_topic, airflow_home=tmp_path / "airflow",
            alert_webhook_url=receiver.url, alert_state_path=tmp_path / "alerts.sqlite",
        ))
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
