"""Wiring only: topic creation, then the long-running Spark order-book job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from marketstream.alerts.notifier import STREAM_INCIDENT, CloseIncident, OpenIncident
from marketstream.settings import get_settings
from marketstream.spark.config import JOB_APPLICATION, QUERY_NAME, job_env, spark_conf
from marketstream.spark.supervision import CrashLoop, RestartPolicy, Supervisor


class RestartingSparkSubmitOperator(SparkSubmitOperator):
    """``SparkSubmitOperator`` whose job is started again at once when it dies, within the
    same try (no scheduler round trip), until it is stopped or in a crash loop
    (``marketstream.spark.supervision``)."""

    def __init__(self, *, restart_policy: RestartPolicy = RestartPolicy(), **kwargs):
        super().__init__(**kwargs)
        self.restart_policy = restart_policy
        self._stopping = False

    def execute(self, context):
        def restarted(error: Exception) -> None:
            OpenIncident(STREAM_INCIDENT, outcome="restarted").notify({**context, "exception": error})

        supervisor = Supervisor(self.restart_policy, on_restart=restarted)
        try:
            supervisor.run(lambda: super(RestartingSparkSubmitOperator, self).execute(context),
                           stopping=lambda: self._stopping)
        except CrashLoop as exc:
            raise AirflowFailException(str(exc)) from exc

    def on_kill(self):
        self._stopping = True
        super().on_kill()

DOC = """
### Order-book pipeline

Triggered by hand (one run at a time). **create_topics** creates the Kafka topics that are
missing (input, snapshots, dead letters, metrics, deals): the same code `make run` uses,
safe to repeat. **orderbook_job** then `spark-submit`s the Spark Structured Streaming
order-book job to the Spark master of the `spark_default` connection (`local[*]` embedded,
the compose Spark master in the full deployment).

The job never ends on its own: the task stays *running* while it runs. When the job dies
(a crash, `kill -9`, a lost host) the task starts it again at once, as often as it takes,
and it resumes from its checkpoint: the seconds it missed are published afterwards,
marked `recovered`, none twice. A job that dies again and again right after starting is
in a crash loop: after 5 such failures in a row the task fails and its log says why.
To stop the job, mark the task failed (or success) in the UI: Airflow kills spark-submit.

Health: see the `orderbook_health` DAG and the dashboard's health page.

**Alerts** (`ALERT_WEBHOOK_URL`, see the README): the job's death, restarted or not, opens
the `orderbook-stream` incident and sends one alert with the task's error and log; the
health check closes it (one recovery message) once snapshots flow again. A failed
`create_topics` is an incident of its own, closed by its next success.
"""

settings = get_settings()  # reads the environment only: nothing touches Kafka or Spark here

with DAG(
    dag_id="orderbook_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    doc_md=DOC,
    tags=["orderbook", "spark", "streaming"],
    default_args={
        "owner": "market-data", "retries": 3, "retry_delay": timedelta(seconds=5),
        "on_failure_callback": OpenIncident(), "on_success_callback": CloseIncident(),
    },
) as dag:

    @task(task_id="create_topics", doc_md="Create missing Kafka topics (idempotent).")
    def create_topics() -> dict[str, bool]:
        from marketstream.topics import ensure_topics

        return ensure_topics(get_settings())

    job = RestartingSparkSubmitOperator(
        task_id="orderbook_job",
        doc_md="The streaming job; runs until stopped, started again at once when it dies (it resumes from its "
               "checkpoint); fails after a crash loop. Airflow's retries cover the task's own process dying.",
        conn_id="spark_default",
        application=str(JOB_APPLICATION),
        name=QUERY_NAME,
        conf=spark_conf(settings),
        env_vars=job_env(settings),
        # A long-running stream: no execution timeout.
        execution_timeout=None,
        # A death is an outage of the stream, whether Airflow restarts the job or not; the
        # health check tells when it is over (the job "succeeds" only when stopped by hand).
        on_retry_callback=OpenIncident(STREAM_INCIDENT),
        on_failure_callback=OpenIncident(STREAM_INCIDENT),
        on_success_callback=[],
    )

    create_topics() >> job
