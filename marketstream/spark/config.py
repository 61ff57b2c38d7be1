"""How to launch the order-book job: the application path, its Spark settings and its
environment. Pure and cheap (no pyspark import): the Airflow DAG calls these at parse time
for ``SparkSubmitOperator(application=..., conf=..., env_vars=...)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from pydantic import SecretStr

from marketstream.settings import PROJECT_ROOT, Settings

JOB_APPLICATION: Path = PROJECT_ROOT / "spark_apps" / "orderbook_job.py"
LOG_CONFIG: Path = PROJECT_ROOT / "spark_apps" / "log4j2.properties"
QUERY_NAME = "orderbook"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
CHECKPOINT_FILE_MANAGER = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"

# Settings the job reads from its environment (``marketstream.settings`` field names).
_JOB_SETTINGS = (
    "kafka_bootstrap_servers", "orders_topic", "orderbook_topic", "deadletter_topic", "metrics_topic",
    "book_depth", "book_max_symbols", "closed_id_ttl_seconds", "closed_id_max", "snapshot_backfill_max_seconds",
    "orderbook_max_message_bytes", "orderbook_state_partitions", "orderbook_state_server_memory_mb", "spark_master",
    "spark_checkpoint_dir", "spark_index_dir", "spark_max_events_per_batch", "spark_kafka_connector", "spark_read_tasks",
    "spark_ui_enabled", "spark_ui_url", "spark_python", "spark_jvm_options", "orderbook_metrics_port",
    "metrics_address", "kafka_security_protocol", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
    "kafka_ssl_check_hostname", "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password",
)
# What a printed command line shows as a reference to the environment, never the value.
SECRET_ENV = frozenset({"KAFKA_SASL_PASSWORD"})


# With the JIT at C1 (the default ``SPARK_JVM_OPTIONS``) the JVM reserves 48 MB for
# compiled code, and a job at seed load filled it in ~9 minutes: the JVM then disables
# its compiler for good and every batch slows down (docs/deployment.md, "The JIT and the
# code cache").
# The tiered JIT's own default is 240 MB. First, so that ``SPARK_JVM_OPTIONS`` can set another.
CODE_CACHE_OPTION = "-XX:ReservedCodeCacheSize=256m"


def connector_sql_conf(connector: str) -> dict[str, str]:
    """Session settings that depend on the Kafka connector (``job.start_query`` sets
    them before the query starts).

    With the Python source, row projections are built interpreted: its rows pack up to
    5,000 events, so generated code saved nothing, and every task regenerated it (a
    quarter of the JVM's CPU at seed load; docs/deployment.md, "Row projections"). The JVM
    connector (one event a row, not measured here) keeps generated code."""
    return {"spark.sql.codegen.factoryMode": "NO_CODEGEN"} if connector == "python" else {}


def java_options(settings: Settings, *extra: str) -> str:
    """A job JVM's flags: the code cache's size, ``SPARK_JVM_OPTIONS``, then ``extra``, then
    the log configuration (where HotSpot sees a flag twice, the last one counts)."""
    return " ".join([CODE_CACHE_OPTION, *settings.spark_jvm_options.split(), *extra,
                     f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"])


def driver_java_options(settings: Settings, dump_classes_to: Path | None = None) -> str:
    """The driver JVM's flags (``java_options``) with, when built, the class-data-sharing
    archive of the job's classes (``python -m marketstream.embedded.class_archive``, run by
    ``make install``), which a restarted driver maps instead of parsing and verifying
    every class from Spark's jars again: a restart after a crash ~6 s sooner on two cores
    (docs/deployment.md, "Restart time"). ``dump_classes_to``: write such an archive when the JVM
    exits (how it is built)."""
    if dump_classes_to is not None:
        return java_options(settings, f"-XX:ArchiveClassesAtExit={dump_classes_to}")
    if settings.spark_class_archive.is_file():
        return java_options(settings, f"-XX:SharedArchiveFile={settings.spark_class_archive}")
    return java_options(settings)


LOOPBACK = "127.0.0.1"


def embedded(settings: Settings) -> bool:
    """Whether the job runs in one JVM (``local`` master): nothing else needs to reach it."""
    return settings.spark_master.startswith("local")


def spark_conf(settings: Settings, dump_classes_to: Path | None = None) -> dict[str, str]:
    """The ``--conf`` pairs (the job sets the same ones itself when started without them)."""
    # The embedded job listens on loopback only: the driver's RPC and block manager here,
    # the UI through SPARK_LOCAL_IP (``job_env``). On a cluster the executors must reach
    # the driver: the deployment says where (docker-compose.yml, with spark.authenticate).
    network = {"spark.driver.bindAddress": LOOPBACK, "spark.driver.host": LOOPBACK} if embedded(settings) else {}
    # The secret itself goes to the session in the driver (``job.build_session``),
    # never onto a command line.
    if settings.spark_authenticate_secret.get_secret_value():
        network["spark.authenticate"] = "true"
    return network | {
        # The UI shows the job; it must not stop it for whoever reaches the port.
        "spark.ui.killEnabled": "false",
        # transformWithState needs RocksDB; changelog checkpointing writes only each
        # batch's changes instead of uploading state snapshots: shorter batches.
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Checkpoint files through Hadoop's FileSystem API, not FileContext: without
        # Hadoop's native library, FileContext's rename forks `readlink` and `chmod` for
        # every file (~10 processes a second from the driver JVM, ~100 ms of each batch).
        # Local-disk and HDFS renames stay atomic (object stores need their own manager).
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
        # One shuffle partition per state partition of the book (one grouping key each).
        "spark.sql.shuffle.partitions": str(settings.orderbook_state_partitions),
        # Timers need batches without new input (idle seconds still publish a snapshot).
        "spark.sql.streaming.noDataMicroBatches.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "true" if settings.spark_ui_enabled else "false",
        "spark.ui.port": str(urlparse(settings.spark_ui_url).port or 4040),
        # Prometheus: executors at /metrics/executors/prometheus, the driver's metrics
        # (streaming query rates and latencies included) at /metrics/prometheus, both on
        # the UI's port; names under the namespace instead of the application id.
        "spark.ui.prometheus.enabled": "true",
        "spark.metrics.conf.*.sink.prometheusServlet.class": "org.apache.spark.metrics.sink.PrometheusServlet",
        "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
        "spark.sql.streaming.metricsEnabled": "true",
        "spark.metrics.namespace": "orderbook",
        "spark.python.worker.reuse": "true",
        # Spark keeps a pool of Python workers per distinct worker environment, and the
        # read stage's runner adds SPARK_SIMPLIFIED_TRACEBACK where transformWithState's
        # does not: two daemons, four workers on two cores, the second pair started in
        # every job's first batch. Without it both stages share one pool (a Python
        # error's traceback then also shows pyspark's own frames).
        "spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled": "false",
        "spark.pyspark.python": settings.spark_python,
        "spark.pyspark.driver.python": settings.spark_python,
        "spark.driver.extraJavaOptions": driver_java_options(settings, dump_classes_to),
        "spark.executor.extraJavaOptions": java_options(settings),
        # Logs and checkpoints stay small on a long-running job.
        "spark.sql.streaming.minBatchesToRetain": "20",
        **connector_jars(settings),
    }


def connector_jars(settings: Settings) -> dict[str, str]:
    """``spark.jars`` for Spark's own Kafka connector when ``SPARK_KAFKA_CONNECTOR=jvm`` asks
    for it and the project resolved it (``make jvm-deps``); an image with the connector in
    Spark's own jars needs none. Without either the job stops at start and says so."""
    from marketstream.jvm_deps import resolved_jars

    jars = resolved_jars("spark-kafka") if settings.spark_kafka_connector == "jvm" else []
    return {"spark.jars": ",".join(str(jar) for jar in jars)} if jars else {}


def _env_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def job_env(settings: Settings) -> dict[str, str]:
    """Environment variables for the job: its settings (the SASL password included: keep
    the result out of logs, see ``SECRET_ENV``) and the Python it runs with."""
    env = {name.upper(): _env_value(getattr(settings, name)) for name in _JOB_SETTINGS}
    if embedded(settings):
        env["SPARK_LOCAL_IP"] = LOOPBACK  # where Spark's UI (and whatever else asks it) binds
    env.update(
        PYSPARK_PYTHON=settings.spark_python,
        PYSPARK_DRIVER_PYTHON=settings.spark_python,
        PYTHONPATH=str(PROJECT_ROOT),
    )
    return env


def spark_submit_binary() -> str:
    """``spark-submit`` next to the running interpreter (the venv's pyspark), else PATH."""
    candidate = Path(sys.executable).with_name("spark-submit")
    return str(candidate) if candidate.exists() else "spark-submit"


def submit_command(settings: Settings, dump_classes_to: Path | None = None) -> list[str]:
    """The full ``spark-submit`` argv (tests, ``make demo``, the Procfile)."""
    argv = [spark_submit_binary(), "--master", settings.spark_master, "--name", QUERY_NAME]
    for key, value in spark_conf(settings, dump_classes_to).items():
        argv += ["--conf", f"{key}={value}"]
    return argv + [str(JOB_APPLICATION)]
