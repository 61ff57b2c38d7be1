"""The Airflow DAGs for real, embedded mode: a real Apache Kafka broker, real local Spark started
by ``SparkSubmitOperator``, Airflow's ``dag.test()`` on a private metadata DB.

One pipeline run (one Spark job) serves the module, in order:
1. ``orderbook_pipeline``: the topics appear, the job starts through spark-submit, snapshots
   arrive while the task keeps running;
2. ``orderbook_export`` for a real one-minute data interval: files, validation report,
   byte-identical re-run, a corrupted export fails validation; the run for the minute
   before the job's first snapshot is skipped without files, and the minute in which the
   stream began validates (the seconds before sequence 1 are no gaps);
3. the health check reads the live job;
4. kill -9 of the job: the task starts it again at once and it resumes, and the webhook of ``ALERT_WEBHOOK_URL``
   (a local receiver) gets exactly one alert and, once the health DAG passes, one recovery.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from marketstream.embedded.airflow_standalone import standalone_env
from marketstream.exports.exporter import export_interval
from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import export_paths
from marketstream.kafka_io import read_range
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import load_settings
from marketstream.topics import topic_specs
from marketstream.exports.validation import ValidationFailed, validate_interval
from tests.support import ARTIFACTS, OFFICIAL_CSV, ROOT, python_env, wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

RUN_DAG = """
import sys
from datetime import datetime
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags[sys.argv[2]]
logical_date = datetime.fromisoformat(sys.argv[3]) if len(sys.argv) > 3 else None
run = dag.test(logical_date=logical_date)
print("DAG RUN STATE:", run.state, flush=True)
sys.exit(0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1)
"""


@pytest.fixture(scope="module")
def webhook():
    """Where the DAGs' alerts go (ALERT_WEBHOOK_URL)."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def overrides(broker_bootstrap, tmp_path_factory, webhook) -> dict:
    unique = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("airflow-dags")
    return dict(
        kafka_bootstrap_servers=broker_bootstrap,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        deals_topic=f"deals-{unique}", deals_deadletter_topic=f"deals-dlq-{unique}",
        spark_checkpoint_dir=str(base / "checkpoint"), export_dir=str(base / "exports"),
        airflow_home=str(base / "airflow"), validation_cache_dir=str(base / "validation"), spark_ui_enabled="false", spark_master="local[2,4]",
        orderbook_metrics_port="0", spark_index_dir=str(base / "index"),
        export_interval_minutes="1", export_grace_seconds="20",
        alert_webhook_url=webhook.url, alert_state_path=str(base / "alerts.sqlite"),
    )


@pytest.fixture(scope="module")
def settings(overrides):
    return load_settings(**overrides)


@pytest.fixture(scope="module")
def airflow_env(settings, overrides) -> dict[str, str]:
    """What ``make run`` gives Airflow, on a private home, with the test's settings."""
    env = standalone_env(settings, python_env(**{k.upper(): str(v) for k, v in overrides.items()}))
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    started = time.monotonic()
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=180,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    print(f"airflow db migrate: {time.monotonic() - started:.1f} s")
    return env


def run_dag(env, dag_id: str, log_path: Path, *args: str) -> subprocess.Popen:
    log = log_path.open("w")
    return subprocess.Popen(
        [sys.executable, "-c", RUN_DAG, str(ROOT / "dags"), dag_id, *args], env=env, cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def snapshots(settings) -> list[SnapshotMessage]:
    return [SnapshotMessage.from_record(r.key, r.value, r.headers) for r in read_range(settings, settings.orderbook_topic)]


def existing_topics(settings) -> set[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


@pytest.fixture(scope="module")
def pipeline(settings, airflow_env):
    """``orderbook_pipeline`` running under ``dag.test()``, fed by the order emulator
    replaying the official CSV; stopped (process group) at the end of the module."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "airflow-orderbook-pipeline.log"
    process = run_dag(airflow_env, "orderbook_pipeline", log_path)
    producer = None
    try:
        names = {spec.name for spec in topic_specs(settings)}
        wait_for(lambda: names <= existing_topics(settings) or process.poll() is not None, 90, 1, "the create_topics task")
        assert process.poll() is None, f"the pipeline run ended early: {log_path.read_text()[-3000:]}"
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer", "--bootstrap-servers", settings.kafka_bootstrap_servers,
             "--topic", settings.orders_topic, "--replay", str(OFFICIAL_CSV), "--seed", "7"],
            env=python_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        yield process, log_path
    finally:
        if producer is not None:
            producer.terminate()
            producer.wait(timeout=10)
        stop_group(process)


def test_pipeline_creates_topics_and_starts_the_job(settings, pipeline):
    process, log_path = pipeline
    started = time.monotonic()
    first = wait_for(lambda: snapshots(settings) or process.poll() is not None, 240, 2, "the first snapshot")
    assert process.poll() is None, f"pipeline run ended: {log_path.read_text()[-3000:]}"
    print(f"first snapshot {time.monotonic() - started:.0f} s after the topics appeared")
    assert first[0].sequence == 1
    log = log_path.read_text()
    # The task is the SparkSubmitOperator's, running spark-submit with the project's job.
    assert "spark-submit" in log and "orderbook_job.py" in log
    time.sleep(3)
    assert process.poll() is None, "the orderbook_job task must stay running while the job runs"


def test_export_dag_for_a_real_interval(settings, pipeline, airflow_env):
    process, _ = pipeline
    # The first batches are slow (Python workers start): count from a steady snapshot.
    steady = wait_for(lambda: [m for m in snapshots(settings) if m.sequence >= 5], 180, 2, "five snapshots")
    minute = math.ceil(steady[0].snapshot_time / 60) * 60
    start = datetime.fromtimestamp(minute, timezone.utc)
    end = start + timedelta(minutes=1)

    # Meanwhile, the minute that ended before the job's first snapshot: nothing published
    # yet, so the export task is skipped (validate with it), no file, the run succeeds.
    first = next(m for m in snapshots(settings) if m.sequence == 1)
    began = datetime.fromtimestamp(first.snapshot_time // 60 * 60, timezone.utc)
    before = export_paths(settings.export_dir, began - timedelta(minutes=1), began)
    skip_log = ARTIFACTS / "airflow-orderbook-export-before-stream.log"
    skipped = run_dag(airflow_env, "orderbook_export", skip_log, (began + timedelta(seconds=1)).isoformat())

    time.sleep(max(0.0, minute + 62 - time.time()))
    assert process.poll() is None, "the Spark job stopped before the interval was complete"
    assert skipped.wait(timeout=180) == 0, f"the run before the stream did not succeed: {skip_log.read_text()[-4000:]}"
    assert "trigger orderbook_pipeline" in skip_log.read_text()
    assert not any(p.exists() for p in [*(before.data(f.name) for f in FORMATS), before.validation])

    # The minute in which the stream began (complete by now, before the interval below):
    # the seconds before sequence 1 are not gaps, the report says when it started.
    export_interval(settings, began, began + timedelta(minutes=1))
    began_report = validate_interval(settings, began, began + timedelta(minutes=1))
    assert began_report["status"] == "passed" and began_report["stream_started"] == first.key
    assert began_report["seconds_before_stream"] == first.snapshot_time - int(began.timestamp())
    assert began_report["snapshots"] == began_report["expected_snapshots"] == 60 - began_report["seconds_before_stream"]

    log_path = ARTIFACTS / "airflow-orderbook-export.log"
    export = run_dag(airflow_env, "orderbook_export", log_path, (end + timedelta(seconds=1)).isoformat())
    assert export.wait(timeout=180) == 0, f"orderbook_export failed: {log_path.read_text()[-4000:]}"

    paths = export_paths(settings.export_dir, start, end)
    json_path, csv_path, parquet_path = (paths.data(f) for f in ("json", "csv", "parquet"))
    items = json.loads(json_path.read_text())
    report = json.loads(paths.validation.read_text())
    assert report["status"] == "passed", report["violations"]
    assert report["snapshots"] == len(items) == 60
    assert report["reconciliation"]["matches"] is True
    # Seconds published late (a batch that overran on a loaded machine) are marked; the
    # report counts what the file says.
    assert report["recovered_snapshots"] == sum(1 for i in items if i["recovered"])
    assert [i["snapshot_time"] for i in items][0] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all(b["sequence"] == a["sequence"] + 1 for a, b in zip(items, items[1:]))
    csv_lines = csv_path.read_text().splitlines()
    assert csv_lines[0] == "snapshot_time,sequence,recovered,symbol,side,price,amount,total,cum_sum"
    assert len(csv_lines) - 1 == sum(len(i["book"]) for i in items)
    assert pq.read_table(parquet_path, use_threads=False).num_rows == len(csv_lines) - 1

    # Re-running the interval rewrites identical bytes.
    before = [p.read_bytes() for p in (json_path, csv_path, parquet_path)]
    export_interval(settings, start, end)
    assert [p.read_bytes() for p in (json_path, csv_path, parquet_path)] == before

    # A corrupted export fails validation, naming the broken number.
    text = json_path.read_text()
    first_amount = items[30]["book"][0]["amount"]
    marker = f'"sequence":{items[30]["sequence"]},'
    head, tail = text.split(marker, 1)
    json_path.write_text(head + marker + tail.replace(f'"amount":{first_amount}', '"amount":999', 1))
    with pytest.raises(ValidationFailed) as failure:
        validate_interval(settings, start, end)
    violations = failure.value.report["violations"]
    assert any("total" in v and "x amount 999" in v for v in violations)
    # The second validation replays from the first one's saved state: still reconciles.
    assert not [v for v in violations if "reconciliation" in v], violations
    assert json.loads(paths.validation.read_text())["status"] == "failed"


def test_health_reads_the_live_job(settings, pipeline):
    from marketstream.health import collect

    report = collect(settings)
    summary = report.summary()
    print("health:", summary)
    assert summary["snapshot_age_s"] is not None and summary["snapshot_age_s"] < 5, summary
    assert report.batches > 0 and report.lag_last is not None


@pytest.mark.timeout(900)  # the kill, the restart, then health checks until one passes
def test_job_death_restarts_it_at_once_and_alerts_once(settings, pipeline, airflow_env, webhook):
    """kill -9 of the job (driver JVM and Python): the task starts it again at once, within
    the same try; it resumes from its checkpoint: the sequence continues, the seconds it
    missed are published afterwards (recovered), none twice.

    Alerts: the restart sends exactly one alert to the webhook, and the first passing health
    check after the job is back exactly one recovery."""
    import psutil

    process, log_path = pipeline
    assert webhook.texts() == [], "alerts before the kill"
    before = max(m.sequence for m in snapshots(settings))

    def runs_the_job(child) -> bool:
        try:
            return "orderbook_job.py" in " ".join(child.cmdline())
        except psutil.Error:  # zombies and processes that just ended
            return False

    job = [p for p in psutil.Process(process.pid).children(recursive=True) if runs_the_job(p)]
    assert job, "no running job process under the pipeline's task"
    killed_at = time.time()
    for victim in job:
        victim.kill()
    wait_for(lambda: "restarting it from its checkpoint" in log_path.read_text(), 60, 1, "the restart")
    assert process.poll() is None, "the task ended instead of restarting the job"
    first_new = wait_for(lambda: [m for m in snapshots(settings) if m.sequence > before], 240, 0.5,
                         "snapshots after the restart")
    print(f"kill -9 to the first new snapshot: {time.time() - killed_at:.1f} s")
    wait_for(webhook.texts, 30, 0.5, "the alert")
    log = log_path.read_text()
    assert log.count("Spark-Submit cmd") >= 2, "the job was not started again"
    assert "Marking task as UP_FOR_RETRY" not in log and "Marking task as FAILED" not in log
    messages = snapshots(settings)
    sequences = [m.sequence for m in messages]
    assert sequences == list(range(1, len(sequences) + 1)), "the sequence restarted or skipped"
    seconds = [m.snapshot_time for m in messages]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a second is missing or doubled"
    assert any(m.recovered and m.snapshot_time >= killed_at - 2 for m in messages) or \
        first_new[0].snapshot_time <= int(killed_at) + 1, "the outage's seconds were not filled in"

    # The first batches after the restart are slow: the check may fail a few minutes more
    # on a loaded machine (it fails while the median batch is over the 1 s trigger).
    deadline = time.monotonic() + 480
    attempt = 0
    while health_check(airflow_env, f"back-{attempt}") != 0:
        attempt += 1
        assert time.monotonic() < deadline, "the health check never passed after the restart"
        assert len(webhook.texts()) == 1
        time.sleep(10)
    alert, recovery = webhook.texts()
    print(alert, recovery, sep="\n\n")
    assert alert.startswith("ALERT marketstream: the order-book stream")
    assert "What broke: orderbook_pipeline/orderbook_job: the job died; its task started it again" in alert
    assert "Cannot execute: spark-submit" in alert
    assert "/dags/orderbook_pipeline/runs/" in alert and "/tasks/orderbook_job?try_number=1" in alert
    assert recovery.startswith("RECOVERED marketstream: the order-book stream")
    assert "orderbook_health/check_health succeeded: last_snapshot " in recovery


def health_check(env, name: str) -> int:
    """One ``orderbook_health`` run under ``dag.test()``: 0 when it passed."""
    checker = run_dag(env, "orderbook_health", ARTIFACTS / f"airflow-orderbook-health-{name}.log")
    return checker.wait(timeout=180)
