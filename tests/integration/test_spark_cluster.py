"""The order-book job on a real Spark standalone cluster: a master and two one-core
workers started with pyspark's own ``spark-class`` (the classes docker-compose runs), the
job submitted by the ``orderbook_pipeline`` DAG's ``SparkSubmitOperator`` under Airflow's
``dag.test()`` (``spark_default`` -> ``spark://127.0.0.1:<port>``), two state partitions,
the order emulator at 200 events/s on a real Apache Kafka broker.

One job serves the module, in order:
1. the app runs on both workers, and every snapshot equals the reference replay of the
   input below its offsets, one per second;
2. ``kill -9`` of one executor JVM: the job goes on without a restart (Spark reschedules
   the tasks, the master starts a new executor), the lost state partitions reload from the
   checkpoint, and over the whole window every second is there once and exact; a second
   published after its batch's time says ``recovered``.

Each worker has a ``TMPDIR`` of its own (where the state partitions' servers listen) and
``SPARK_INDEX_DIR`` (their logs) is relative, so it resolves in each executor's work
directory: what executors keep locally stays per worker, as each compose worker container
has its own disk, so a state partition that moves to the other worker after the kill is
rebuilt from the checkpoint, not picked up from a server the dead executor shared.

Logs of the master, the workers, the executors and the DAG run are kept under
``test-artifacts/spark-cluster/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from marketstream.kafka_io import read_range
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.metrics import parse_metric
from tests.airflow_runs import RUN_DAG, airflow_env
from tests.spark_job import assert_exact_and_one_per_second
from tests.support import ARTIFACTS, ROOT, free_port, python_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEPTH = 10
STATE_PARTITIONS = 2
EVENTS_PER_TICK, TICK_SECONDS = 20, 0.1  # the emulator at 200 events/s
LOGS = ARTIFACTS / "spark-cluster"
SPARK_CLASS = str(Path(sys.executable).with_name("spark-class"))
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
# Relative: in each executor's own work directory (see the module docstring).
INDEX_DIR = "spark-index"
# spark.authenticate, as compose sets it up: the daemons read it from _SPARK_AUTH_SECRET,
# the driver from SPARK_AUTHENTICATE_SECRET (its settings).
AUTH_SECRET = secrets.token_urlsafe(32)
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def stop_group(process: subprocess.Popen, timeout_s: float = 30) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class StandaloneCluster:
    """A Spark standalone master and one-core workers on loopback, each daemon in its own
    process group, logging to ``LOGS``; work and local (shuffle) dirs under ``base``."""

    def __init__(self, base: Path, workers: int):
        self.base = base
        self.master_port, self.master_ui = free_port(), free_port()
        self.worker_uis = [free_port() for _ in range(workers)]
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def work_dir(self, worker: int) -> Path:
        return self.base / f"worker-{worker}" / "work"

    def tmp_dir(self, worker: int) -> Path:
        return self.base / f"worker-{worker}" / "tmp"

    def _spawn(self, name: str, service: str, argv: list[str], **env: str) -> subprocess.Popen:
        # The daemon options compose gives the service; SPARK_LOCAL_IP: the daemons and
        # the executors they start bind to loopback.
        env.update(SPARK_LOCAL_IP="127.0.0.1", _SPARK_AUTH_SECRET=AUTH_SECRET,
                   SPARK_DAEMON_JAVA_OPTS=COMPOSE[service]["environment"]["SPARK_DAEMON_JAVA_OPTS"])
        with (LOGS / f"{name}.log").open("w") as log:
            return subprocess.Popen([SPARK_CLASS, *argv], env=python_env(**env), cwd=self.base, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout_s: float = 120) -> None:
        self.master = self._spawn("master", "spark-master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.master_port),
            "--webui-port", str(self.master_ui)])
        # Workers that find no master retry only after 5-15 s: start them once it answers.
        wait_for(lambda: self._alive(self.master) and self.status() is not None, timeout_s, 0.5, "the Spark master")
        for worker, ui in enumerate(self.worker_uis, 1):
            self.work_dir(worker).mkdir(parents=True)
            self.tmp_dir(worker).mkdir()
            self.workers.append(self._spawn(
                f"worker-{worker}", "spark-worker",
                ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port", str(ui),
                 "--cores", "1", "--memory", "2g", "--work-dir", str(self.work_dir(worker)), self.url],
                SPARK_LOCAL_DIRS=str(self.base / f"worker-{worker}" / "local"), TMPDIR=str(self.tmp_dir(worker))))
        wait_for(lambda: all(self._alive(w) for w in self.workers)
                 and (self.status() or {}).get("aliveworkers") == len(self.workers),
                 timeout_s, 0.5, "both workers registered with the master")
        self.worker_uis = self._bound_worker_uis()

    def _bound_worker_uis(self) -> list[int]:
        """Each worker's UI port as bound. A port picked free can be taken by another
        process before the worker binds it; the worker then binds the next one up, and the
        picked port answers for someone else (seen once in `make test`: every request to a
        worker's UI closed without a response, for the rest of the module)."""
        announced = {int(w["webuiaddress"].rsplit(":", 1)[1]) for w in self.status()["workers"]
                     if w["state"] == "ALIVE"}
        bound = []
        for worker in self.workers:
            listening = {c.laddr.port for c in psutil.Process(worker.pid).net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN}
            [port] = announced & listening
            bound.append(port)
        return bound

    @staticmethod
    def _alive(process: subprocess.Popen) -> bool:
        assert process.poll() is None, f"a Spark daemon exited with {process.returncode}: see {LOGS}"
        return True

    def status(self) -> dict | None:
        """The master's ``/json/`` (workers, active and completed apps); None until it answers."""
        try:
            return get_json(f"http://127.0.0.1:{self.master_ui}/json/")
        except OSError:
            return None

    def worker_status(self, worker: int) -> dict:
        """A worker's ``/json/``: its running ``executors`` and ``finishedexecutors``."""
        return get_json(f"http://127.0.0.1:{self.worker_uis[worker - 1]}/json/")

    def executor_process(self, worker: int) -> psutil.Process | None:
        """The executor JVM a worker runs (the worker's child process)."""
        for child in psutil.Process(self.workers[worker - 1].pid).children(recursive=True):
            try:
                if EXECUTOR_CLASS in child.cmdline():
                    return child
            except psutil.Error:  # ended meanwhile
                continue
        return None

    def stop(self) -> None:
        """Workers (their executors with them), then the master; then anything they started
        that is still there: pyspark's daemons run in process groups of their own, and
        whatever an executor started in its work directory may have outlived it."""
        started = [p for p in [*self.workers, self.master] if p is not None]
        descendants = []
        for process in started:
            try:
                descendants += psutil.Process(process.pid).children(recursive=True)
            except psutil.Error:
                pass
        for process in started:
            stop_group(process)
        strays = self.strays()
        for stray in strays:
            try:
                stray.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(descendants + strays, timeout=10)
        for leftover in alive:
            leftover.kill()

    def strays(self) -> list[psutil.Process]:
        """Processes still running in a directory of the cluster's (executors' work dirs)."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.cwd().startswith(str(self.base)):
                    found.append(process)
            except psutil.Error:  # ended meanwhile, or not ours to look at
                continue
        return found

    def keep_executor_logs(self) -> None:
        """Each executor's stdout/stderr (``work/<app>/<executor>/``) and the logs of what
        it started (the state partitions' servers: ``SPARK_INDEX_DIR``) into ``LOGS``."""
        for worker in range(1, len(self.workers) + 1):
            work = self.work_dir(worker)
            for log in [*work.glob("*/*/std*"), *work.glob(f"*/*/{INDEX_DIR}/*/*.log")]:
                target = LOGS / f"worker-{worker}" / log.relative_to(work)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, target)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2)
    try:
        started = time.monotonic()
        cluster.start()
        print(f"master and 2 workers up in {time.monotonic() - started:.0f} s")
        yield cluster
    finally:
        cluster.stop()
        cluster.keep_executor_logs()


@pytest.fixture(scope="module")
def overrides(broker_bootstrap, cluster, tmp_path_factory) -> dict:
    unique = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("spark-cluster-job")
    return dict(
        kafka_bootstrap_servers=broker_bootstrap,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        deals_topic=f"deals-{unique}", deals_deadletter_topic=f"deals-dlq-{unique}",
        spark_master=cluster.url, orderbook_state_partitions=str(STATE_PARTITIONS), book_depth=str(DEPTH),
        spark_checkpoint_dir=str(base / "checkpoint"), spark_index_dir=INDEX_DIR, spark_ui_enabled="false",
        airflow_home=str(base / "airflow"), export_dir=str(base / "exports"),
        validation_cache_dir=str(base / "validation"),
    )


class Pipeline:
    """``orderbook_pipeline`` under ``dag.test()`` (its process group: the DAG run and the
    spark-submit it starts), and the order emulator feeding it."""

    def __init__(self, settings, run: subprocess.Popen, log_path: Path):
        self.settings, self.run, self.log_path = settings, run, log_path
        self.emulator: subprocess.Popen | None = None

    def assert_running(self) -> None:
        assert self.run.poll() is None, f"the pipeline run ended: {self.log_path.read_text()[-3000:]}"

    def start_emulator(self) -> None:
        with (LOGS / "emulator.log").open("w") as log:
            self.emulator = subprocess.Popen(
                [sys.executable, "-m", "producer", "--bootstrap-servers", self.settings.kafka_bootstrap_servers,
                 "--topic", self.settings.orders_topic, "--seed", "7", "--events-per-tick", str(EVENTS_PER_TICK),
                 "--tick-seconds", str(TICK_SECONDS)],
                env=python_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def stop_emulator(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()  # flushes what it sent and exits
            assert self.emulator.wait(timeout=30) == 0, (LOGS / "emulator.log").read_text()[-2000:]

    def submissions(self) -> int:
        """How many times the task ran spark-submit (1: the job was never restarted)."""
        return self.log_path.read_text().count("Spark-Submit cmd")


@pytest.fixture(scope="module")
def pipeline(cluster, overrides):
    from marketstream.settings import load_settings

    settings = load_settings(**overrides)
    started = time.monotonic()
    env = airflow_env(overrides)
    print(f"airflow db migrate: {time.monotonic() - started:.0f} s")
    # spark-submit (the driver, client mode) on loopback too; alert bookkeeping private to the test.
    env.update(SPARK_LOCAL_IP="127.0.0.1", ALERT_STATE_PATH=str(Path(overrides["airflow_home"]) / "alerts.sqlite"),
               SPARK_AUTHENTICATE_SECRET=AUTH_SECRET)
    log_path = LOGS / "airflow-orderbook-pipeline.log"
    with log_path.open("w") as log:
        run = subprocess.Popen([sys.executable, "-c", RUN_DAG, str(ROOT / "dags"), "orderbook_pipeline"], env=env,
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pipeline = Pipeline(settings, run, log_path)
    try:
        wait_for(lambda: pipeline.assert_running() or orders_topic_exists(settings), 120, 1, "the create_topics task")
        pipeline.start_emulator()
        yield pipeline
    finally:
        if pipeline.emulator is not None and pipeline.emulator.poll() is None:
            pipeline.emulator.kill()
        # At once: on SIGTERM the task fails and dag.test() retries it, starting a second job.
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)


def orders_topic_exists(settings) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    try:
        return settings.orders_topic in admin.list_topics()
    finally:
        admin.close()


def published(settings) -> list[tuple[SnapshotMessage, int]]:
    """Every snapshot on the topic with the time it was published (the record's timestamp, ms)."""
    return [(SnapshotMessage.from_record(r.key, r.value, r.headers), r.timestamp_ms)
            for r in read_range(settings, settings.orderbook_topic)]


def snapshots(settings) -> list[SnapshotMessage]:
    return [m for m, _ in published(settings)]


def batches(settings) -> list[dict]:
    """The job's metrics messages, one per batch."""
    return [parse_metric(r.value) for r in read_range(settings, settings.metrics_topic)]


def app_executors(cluster: StandaloneCluster, app_id: str) -> dict[int, list[int]]:
    """worker -> ids of the app's running executors there."""
    return {w: [e["id"] for e in cluster.worker_status(w)["executors"] if e["appid"] == app_id]
            for w in range(1, len(cluster.workers) + 1)}


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()[1:4])
    except psutil.Error:
        return "(ended)"


def the_app(cluster: StandaloneCluster) -> dict:
    apps = (cluster.status() or {}).get("activeapps", [])
    assert len(apps) <= 1, apps
    return apps[0] if apps else {}


def test_the_job_runs_on_both_workers_and_its_book_is_exact(cluster, pipeline):
    settings = pipeline.settings
    started = time.monotonic()
    app = wait_for(lambda: pipeline.assert_running() or the_app(cluster), 240, 1, "the job's app on the master")
    executors = wait_for(lambda: (lambda e: e if all(e.values()) else None)(app_executors(cluster, app["id"])),
                         120, 1, "an executor of the job on each worker")
    app = the_app(cluster)
    assert app["name"] == "orderbook" and app["cores"] == 2
    first = wait_for(lambda: pipeline.assert_running() or snapshots(settings), 240, 1, "the first snapshot")[0]
    # Past the start (its first batches are slow and backfill): three more batches that published.
    wait_for(lambda: pipeline.assert_running() or sum(1 for b in batches(settings) if b["snapshots"]) >= 4,
             120, 1, "four batches that published snapshots")
    print(f"app {app['id']}, executors {executors}: first snapshot (second {first.snapshot_time}) "
          f"{time.monotonic() - started:.0f} s after the topics appeared")

    messages = snapshots(settings)
    records = list(read_range(settings, settings.orders_topic))
    assert_exact_and_one_per_second(settings, messages, records, DEPTH)
    assert messages[0].sequence == 1
    assert sum(messages[-1].input_offsets.values()) > 0, "no event reached the book"
    assert "--master " + cluster.url in pipeline.log_path.read_text()
    assert pipeline.submissions() == 1
    assert not list(read_range(settings, settings.deadletter_topic)), "the emulator's events are all valid"


def test_executor_killed_the_job_goes_on_exact_without_losing_or_doubling_a_second(cluster, pipeline):
    settings = pipeline.settings
    app = the_app(cluster)
    assert app, "the job's app is not running"
    worker = 1
    [executor_id] = app_executors(cluster, app["id"])[worker]
    process = cluster.executor_process(worker)
    assert process is not None and f"--executor-id {executor_id}" in " ".join(process.cmdline())
    python_workers = process.children(recursive=True)  # pyspark's daemon and the workers it forked

    time.sleep(3)
    killed_at = time.time()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    # The master gives the app a new executor in the freed core; the app stays the same.
    replacement = wait_for(lambda: [i for i in app_executors(cluster, app["id"])[worker] if i != executor_id],
                           120, 0.5, "a new executor on the worker whose executor died")[0]
    replaced_at = time.time()
    # Orphaned, pyspark's daemon and workers notice the dead JVM (their socket closes) and exit.
    _, left = psutil.wait_procs(python_workers, timeout=10)
    print(f"{len(python_workers)} Python processes under the executor; 10 s after its death still running: "
          f"{[command_line(p) for p in left]}")
    wait_for(lambda: pipeline.assert_running() or any(m.snapshot_time >= killed_at + 20 for m in snapshots(settings)),
             180, 1, "snapshots 20 s past the kill")
    pipeline.stop_emulator()
    total = sum(1 for _ in read_range(settings, settings.orders_topic))
    wait_for(lambda: pipeline.assert_running() or sum(snapshots(settings)[-1].input_offsets.values()) >= total,
             120, 1, "the book to catch up with the input")

    pipeline.assert_running()
    log = pipeline.log_path.read_text()
    assert f"Lost executor {executor_id} on 127.0.0.1" in log, "the driver did not see the executor die"
    assert pipeline.submissions() == 1, "the job was restarted instead of riding out the executor's death"
    assert the_app(cluster).get("id") == app["id"]
    finished = {e["id"]: e for e in cluster.worker_status(worker)["finishedexecutors"] if e["appid"] == app["id"]}
    assert executor_id in finished

    messages_at = published(settings)
    messages = [m for m, _ in messages_at]
    records = list(read_range(settings, settings.orders_topic))
    checked = assert_exact_and_one_per_second(settings, messages, records, DEPTH)
    assert messages[0].sequence == 1 and messages[-1].snapshot_time >= killed_at + 20
    assert not list(read_range(settings, settings.deadletter_topic))

    # A recovered second was published after its batch's time had passed it: at least two
    # seconds after the second began (a slow start backfills too, so not only after the kill).
    for message, at_ms in messages_at:
        if message.recovered:
            assert at_ms >= (message.snapshot_time + 2) * 1000, f"second {message.snapshot_time} marked recovered"
    after = [(m, at) for m, at in messages_at if at >= killed_at * 1000]
    gaps = [(b[1] - a[1]) / 1000 for a, b in zip(messages_at, messages_at[1:]) if b[1] >= killed_at * 1000]
    longest = max(gaps)
    backfilled = [m.snapshot_time for m, _ in after if m.recovered]
    if longest > 3:
        assert backfilled, f"no second marked recovered after {longest:.1f} s without a snapshot"
    print(f"killed executor {executor_id} on worker {worker}; replacement {replacement} "
          f"{replaced_at - killed_at:.1f} s later; longest pause between snapshots {longest:.1f} s; "
          f"{len(backfilled)} recovered second(s) published after the kill; {checked} snapshots exact, "
          f"{len(records)} events")
    for batch in batches(settings):
        when = batch["time"].timestamp() - killed_at
        print(f"  batch {batch['batch_id']} started {batch['time']:%H:%M:%S} ({when:+.0f} s from the kill): "
              f"{batch['batch_duration_ms']} ms, {batch['num_input_events']} events, "
              f"{batch['snapshots']} snapshot(s), {batch['recovered']} recovered")
