"""The one place that reads the environment.

Every host, port, topic name and path the platform uses is a field here, read from an
environment variable of the same name (upper case) with a default for the embedded run.
A bad value stops startup with a message naming the variable (see ``load_settings``).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]{0,19})://")
# What the energy desk's code speaks (``marketstream.energy.db``), with any driver.
_DATABASE_URL = re.compile(r"^(postgresql|sqlite)(\+[A-Za-z0-9_]+)?://")
DAY_MS = 24 * 3600 * 1000


def _default_python() -> str:
    venv_python = PROJECT_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _secret_url(value, pattern: re.Pattern, expected: str, empty_ok: bool = False) -> SecretStr:
    """A URL that holds a credential, as a ``SecretStr``; a refusal names at most its scheme."""
    text = (value.get_secret_value() if isinstance(value, SecretStr) else str(value)).strip()
    if (text or not empty_ok) and not pattern.match(text):
        # Only a word that can be a scheme is named: never a fragment of "user:password@...".
        scheme = _SCHEME.match(text)
        raise ValueError(f"expected {expected}; got one with scheme {scheme[1] if scheme else 'none'!r} "
                         "(the value itself is not shown: it holds a secret)")
    return SecretStr(text)


class SettingsError(SystemExit):
    """Raised for an invalid setting; exits with a message naming the variable."""


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError (a settings error Airflow shows as a DAG's
    # import error, a traceback) never quotes a value it was given, a secret or not.
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, hide_input_in_errors=True)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    orders_topic: str = "orders"
    orderbook_topic: str = "orderbook"
    deadletter_topic: str = "orders.deadletter"
    metrics_topic: str = "orderbook.metrics"
    orders_partitions: int = Field(3, ge=1, le=64)
    deals_topic: str = "energy.deals"
    deals_deadletter_topic: str = "energy.deals.deadletter"
    # retention.ms of each topic, set when marketstream.topics creates it (-1: kept for
    # ever). The snapshot topic's bounds how far back a reader finds a second on the topic
    # before it needs the exports; the input's, how long a stopped job can stay stopped
    # without losing input (docs/monitoring.md, "Topic retention").
    orders_retention_ms: int = Field(7 * DAY_MS, ge=-1)
    orderbook_retention_ms: int = Field(7 * DAY_MS, ge=-1)
    deadletter_retention_ms: int = Field(30 * DAY_MS, ge=-1)
    metrics_retention_ms: int = Field(DAY_MS, ge=-1)
    deals_retention_ms: int = Field(7 * DAY_MS, ge=-1)
    # Deals are keyed by deal id: each deal's versions stay in order on any count.
    deals_partitions: int = Field(1, ge=1, le=64)
    # Copies of each partition the topic creation asks for: 1 suits the one-node embedded
    # broker; a managed cluster wants 3. Topics that exist already are left as they are.
    kafka_topic_replication_factor: int = Field(1, ge=1, le=32)

    # How every client of the platform (services, exports, the Spark job and its executors)
    # talks to the brokers. PLAINTEXT is the embedded run's; a managed cluster mostly wants
    # SASL_SSL. Files are PEM paths that must exist wherever a client runs.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # The CA that signed the brokers' certificates; empty: the system's trusted CAs.
    kafka_ssl_cafile: str = ""
    # A client certificate (mutual TLS), and its key unless the certificate file holds it too.
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # Off only for brokers whose certificates do not name the address clients connect to.
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    # Never in a log line, an error or repr(settings) (pydantic shows it as '**********').
    kafka_sasl_password: SecretStr = SecretStr("")

    # Order book
    book_depth: int = Field(15, ge=1, le=1000, description="levels per side in a snapshot")
    # Distinct symbols with open orders, per state partition (see the README's input contract).
    book_max_symbols: int = Field(100, ge=1, le=10_000)
    # A close hides its order id's open for this long in record time, then is forgotten:
    # as long as a duplicate or a late open of the id can still arrive (a producer's
    # retries give up after delivery.timeout.ms, 2 minutes by default). Longer costs
    # memory: ~240 bytes a closed id, 25,000 closes a second keep 7.5 M ids for 300 s.
    closed_id_ttl_seconds: int = Field(300, ge=1)
    # Closed ids remembered at most, whole book (each state partition its share). A close
    # whose id would be one more is refused: dead-lettered (closed_id_limit), its order
    # stays open; raise it, or shorten the TTL, when that happens.
    closed_id_max: int = Field(10_000_000, ge=1)
    # Seconds the job publishes late after an outage; older missed seconds are a reported gap.
    snapshot_backfill_max_seconds: int = Field(3_600, ge=0, le=86_400)
    # The snapshot topic's max.message.bytes: the largest snapshot the depth, the symbol
    # limit and the state partitions allow must fit (checked at startup).
    orderbook_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024, le=256 * 1024 * 1024)

    # Order emulator
    producer_events_per_tick: int = Field(10, ge=1)
    producer_tick_seconds: float = Field(0.1, gt=0)
    producer_symbols: str = "BTC-USDT,ETH-USDT,SOL-USDT"
    producer_close_share: float = Field(0.3, ge=0, le=1)
    producer_max_live_orders: int = Field(5_000, ge=0, description="open orders at most, all symbols; 0 = unbounded")

    # Spark
    # local[cores,attempts]: in local mode Spark gives up on a task at its first failure
    # unless told otherwise; a killed Python worker must cost a retry, not the stream.
    spark_master: str = "local[2,4]"
    # make run's Apache Kafka (marketstream.embedded.broker): its data, kept across restarts,
    # and its KRaft controller's port (loopback, like the broker's own listener).
    embedded_kafka_dir: Path = PROJECT_ROOT / "var" / "kafka"
    embedded_kafka_controller_port: int = Field(9093, ge=1, le=65535)
    spark_checkpoint_dir: Path = PROJECT_ROOT / "var" / "checkpoints" / "orderbook"
    # A backlog batch has fixed costs (two stages, state commits, the driver's publish):
    # 400,000 events a batch drained a 2M backlog 1.37x as fast as 200,000, 600,000 not
    # much faster again (docs/deployment.md, "Scaling out"); one such batch takes 2.5-2.9 s
    # on two cores.
    spark_max_events_per_batch: int = Field(400_000, ge=1)
    spark_kafka_connector: str = Field("auto", pattern="^(auto|python|jvm)$")
    spark_ui_url: str = "http://127.0.0.1:4040"
    # The book's state is split by order id over this many partitions (Spark's shuffle
    # partitions; fixed for the life of a checkpoint): one per core the job gets.
    orderbook_state_partitions: int = Field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 64)), ge=1, le=64)
    spark_ui_enabled: bool = True
    spark_read_tasks: int = Field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 64)), ge=1, le=64)
    # Address space each state partition's server may take (MB; 0: unbounded): the
    # partition's working copy (~180 bytes an open order, ~240 a closed id) and, while it
    # is rebuilt after a restart, about three times that. Past it the batch fails with a
    # message naming this setting. Count it, times the partitions on a host, in the
    # executors' memory (docs/deployment.md, "Memory").
    orderbook_state_server_memory_mb: int = Field(4096, ge=0)
    # Where each executor host's state-partition servers write their logs (a relative
    # path resolves in the executor's working directory; their working copy is in memory).
    spark_index_dir: Path = PROJECT_ROOT / "var" / "spark-index"
    # The driver JVM's class-data-sharing archive (``make install`` builds it with
    # ``python -m marketstream.embedded.class_archive``; the job uses it when the file exists).
    spark_class_archive: Path = PROJECT_ROOT / "var" / "spark" / "orderbook-classes.jsa"
    # Extra flags for the job's JVMs (driver and executors). By default the JIT stops at
    # C1: C2 spends a fifth of two cores compiling Spark's code in a backlog drain and ~0.5
    # core for minutes after a start, and its code was not faster at any measured rate
    # (interleaved runs up to 60,000 events/s; docs/deployment.md, "The JIT and the code
    # cache"). "": the tiered JIT.
    spark_jvm_options: str = Field("-XX:TieredStopAtLevel=1", pattern=r"^\s*(-\S+\s*)*$")
    # The Spark cluster's shared secret (spark.authenticate; docker-compose.yml generates
    # one). Empty: no authentication, for the embedded job, which listens on loopback only.
    spark_authenticate_secret: SecretStr = SecretStr("")
    # The Python the Spark driver and workers run (needs pyspark, protobuf, this package).
    spark_python: str = Field(default_factory=lambda: _default_python())

    # Airflow / exports
    export_dir: Path = PROJECT_ROOT / "exports"
    airflow_ui_url: str = "http://127.0.0.1:8080"
    # Airflow's REST API as this process reaches it, when that is not the URL people open
    # (compose: the API server's service name). Empty: AIRFLOW_UI_URL.
    airflow_api_url: str = ""
    # The embedded run's Airflow home (metadata DB, logs, generated admin password).
    airflow_home: Path = PROJECT_ROOT / ".airflow"
    # Airflow's REST API (``make demo``; the pipeline's state for the terminal and the
    # dashboard): a user of the simple auth manager; an empty password reads the one the
    # embedded Airflow generated in its home.
    airflow_username: str = "admin"
    airflow_password: SecretStr = SecretStr("")
    # orderbook_export runs on a cron of this many minutes (a divisor of 60).
    export_interval_minutes: int = Field(5, ge=1, le=60)
    # The export waits up to this long for its interval to be final (a snapshot for a
    # later second on the topic), then fails so that the task's retry exports it later.
    export_grace_seconds: float = Field(30.0, ge=0)
    # The export DAG's prune task removes interval files whose interval ended this many
    # days ago, and daily roll-ups this many days after their day (0: kept for ever).
    export_retention_days: int = Field(30, ge=0)
    export_rollup_retention_days: int = Field(365, ge=0)
    # orderbook_health thresholds (one snapshot a second, the job's one-second trigger).
    health_min_snapshots_per_minute: int = Field(55, ge=1, le=60)
    health_max_lag: int = Field(1000, ge=0)
    health_max_batch_ms: int = Field(1000, ge=1)
    # For this long after the pipeline run started, a check that finds only what a starting
    # job has anyway (no snapshot yet, a thin window, slow first batches) is skipped, not
    # failed: the job's first snapshot takes ~10-20 s, then the 60 s window must fill.
    health_startup_grace_seconds: int = Field(90, ge=0)
    # ``make run``: each process's whole output, ``<process>.log`` (rotated).
    log_dir: Path = PROJECT_ROOT / "var" / "log"
    # Validation's reference replay state, so each run reads only the new input events.
    validation_cache_dir: Path = PROJECT_ROOT / "var" / "validation"

    # Power-trading desk
    # A PostgreSQL URL carries the database's password: a secret, unwrapped only where an
    # engine is made (``marketstream.energy.db``), shown without its password.
    database_url: SecretStr = SecretStr(f"sqlite:///{PROJECT_ROOT / 'var' / 'energy.db'}")
    exchange_host: str = "127.0.0.1"
    exchange_port: int = Field(5050, ge=1, le=65535)
    exchange_ws_url: str = "ws://127.0.0.1:5050"
    market_data_host: str = "127.0.0.1"
    market_data_port: int = Field(5060, ge=1, le=65535)
    market_data_url: str = "http://127.0.0.1:5060"
    market_data_requests_per_minute: int = Field(50, ge=1)
    market_data_requests_per_hour: int = Field(1000, ge=1)
    # The ETL's request budget is shared by every process through this SQLite file.
    market_data_rate_limit_path: Path = PROJECT_ROOT / "var" / "market_data_rate_limit.sqlite"
    market_data_timeout_seconds: float = Field(10.0, gt=0)
    market_data_max_attempts: int = Field(5, ge=1)  # per hour and run, retries included
    market_data_backoff_seconds: float = Field(1.0, gt=0)  # first retry wait; doubles up to 30 s
    # Hours with trades older than this many days are no longer re-fetched every run.
    reference_price_lookback_days: int = Field(2, ge=0)
    # Listener reconnect backoff cap: the exchange must see us back within seconds.
    exchange_reconnect_max_seconds: float = Field(2.0, gt=0)
    # A pong queues behind every deal the exchange sent before it: when the listener is
    # behind (a burst), a short timeout would drop a live connection and the deals in flight.
    exchange_ping_timeout_seconds: float = Field(60.0, gt=0)
    # A connection that lived this long resets the reconnect backoff; one closed sooner (an
    # exchange that accepts and closes at once) makes the next reconnect wait longer.
    exchange_reconnect_reset_seconds: float = Field(10.0, gt=0)
    loader_batch_size: int = Field(500, ge=1)

    # Prometheus endpoints (http://ADDRESS:PORT/metrics) of the long-running processes; 0 = none.
    producer_metrics_port: int = Field(9101, ge=0, le=65535)
    listener_metrics_port: int = Field(9102, ge=0, le=65535)
    loader_metrics_port: int = Field(9103, ge=0, le=65535)
    # The order-book job's driver (while the job runs); Spark's own endpoints are on its UI.
    orderbook_metrics_port: int = Field(9104, ge=0, le=65535)
    # Where they listen: 0.0.0.0 in containers (Prometheus scrapes them by service name);
    # the embedded run stays on loopback.
    metrics_address: str = "127.0.0.1"

    # Dashboard
    dashboard_port: int = Field(8501, ge=1, le=65535)
    # 0.0.0.0 in containers; the embedded run stays on loopback.
    dashboard_address: str = "127.0.0.1"
    # Snapshots are due every second: older than this, the book page warns it is stale.
    dashboard_stale_seconds: float = Field(5.0, gt=0)
    # How far back the health page charts snapshots and batches.
    dashboard_health_window_seconds: int = Field(300, ge=10, le=3600)
    # Where people open the dashboard (alerts link to its pages); empty: http://127.0.0.1:<DASHBOARD_PORT>.
    dashboard_url: str = ""

    # Alerts (marketstream/alerts): a Slack-compatible webhook ({"text": ...}); empty = none.
    # Its path is the credential: kept as a secret, never shown (not even in an error).
    alert_webhook_url: SecretStr = SecretStr("")
    # Also by email, through Airflow's SMTP provider (the smtp_default connection): comma-separated addresses.
    alert_email_to: str = ""
    # Which incidents are open (one row per open alert key), shared by every task process.
    alert_state_path: Path = PROJECT_ROOT / "var" / "alerts.sqlite"

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_list(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @field_validator(
        "orders_topic", "orderbook_topic", "deadletter_topic", "metrics_topic",
        "deals_topic", "deals_deadletter_topic",
    )
    @classmethod
    def _topic(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise ValueError(f"not a valid Kafka topic name: {value!r}")
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _pem_file(cls, value: str) -> str:
        value = value.strip()
        if value and not os.path.isfile(value):
            raise ValueError(f"no such file: {value!r}")
        return value

    @field_validator("dashboard_url", "airflow_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not _HTTP_URL.match(value):
            raise ValueError(f"expected an http:// or https:// URL (or nothing), got {value!r}")
        return value

    @field_validator("alert_webhook_url", mode="before")
    @classmethod
    def _secret_http_url(cls, value):
        return _secret_url(value, _HTTP_URL, "an http:// or https:// URL (or nothing)", empty_ok=True)

    @field_validator("database_url", mode="before")
    @classmethod
    def _secret_database_url(cls, value):
        return _secret_url(value, _DATABASE_URL, "a postgresql:// (postgresql+DRIVER://) or sqlite:/// URL")

    @field_validator("alert_email_to")
    @classmethod
    def _addresses(cls, value: str) -> str:
        addresses = [a.strip() for a in value.split(",") if a.strip()]
        bad = [a for a in addresses if not _EMAIL.match(a)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(repr(a) for a in bad)}")
        return ",".join(addresses)

    @field_validator("orders_retention_ms", "orderbook_retention_ms", "deadletter_retention_ms", "metrics_retention_ms",
                     "deals_retention_ms")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value != -1 and value < 60_000:
            raise ValueError(f"must be -1 (kept for ever) or at least 60000 (a minute), got {value}")
        return value

    @field_validator("export_interval_minutes")
    @classmethod
    def _divides_hour(cls, value: int) -> int:
        if 60 % value:
            raise ValueError(f"must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), got {value}")
        return value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> "Settings":
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_mechanism:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM "
                             "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if not sasl and self.kafka_sasl_mechanism:
            raise ValueError(f"KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                             "authenticate: use SASL_SSL (or SASL_PLAINTEXT)")
        if not protocol.endswith("SSL") and (self.kafka_ssl_cafile or self.kafka_ssl_certfile):
            raise ValueError(f"KAFKA_SSL_CAFILE/KAFKA_SSL_CERTFILE are set but KAFKA_SECURITY_PROTOCOL={protocol} "
                             "does not use TLS: use SSL or SASL_SSL")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate it belongs to)")
        if protocol == "SASL_PLAINTEXT" and self.kafka_sasl_mechanism == "PLAIN":
            # The password itself would cross the network in the clear.
            raise ValueError("KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT would send "
                             "the password unencrypted: use SASL_SSL")
        return self

    @model_validator(mode="after")
    def _snapshots_fit(self) -> "Settings":
        from marketstream.orderbook.render import largest_snapshot_bytes

        largest = largest_snapshot_bytes(self.book_depth, self.book_max_symbols * self.orderbook_state_partitions)
        if largest > self.orderbook_max_message_bytes:
            raise ValueError(
                f"BOOK_DEPTH={self.book_depth} x BOOK_MAX_SYMBOLS={self.book_max_symbols} x "
                f"ORDERBOOK_STATE_PARTITIONS={self.orderbook_state_partitions} allow a snapshot of {largest:,} bytes, "
                f"more than ORDERBOOK_MAX_MESSAGE_BYTES={self.orderbook_max_message_bytes:,}: lower one of them")
        return self

    @property
    def bootstrap_list(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")

    @property
    def symbols(self) -> list[str]:
        return [s.strip() for s in self.producer_symbols.split(",") if s.strip()]

    @property
    def dashboard_link(self) -> str:
        """The dashboard's address as people open it (``DASHBOARD_URL`` or the local port)."""
        return (self.dashboard_url or f"http://127.0.0.1:{self.dashboard_port}").rstrip("/")

    @property
    def airflow_api_base(self) -> str:
        """Where this process reaches Airflow's REST API (``AIRFLOW_API_URL`` or the UI's address)."""
        return (self.airflow_api_url or self.airflow_ui_url).rstrip("/")

    @property
    def alert_emails(self) -> list[str]:
        return [a for a in self.alert_email_to.split(",") if a]


def load_settings(**overrides) -> Settings:
    """Read settings from the environment; exit with one clear sentence on a bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            # A check across several settings has no single location: its message names them.
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg'].removeprefix('Value error, ')}"
            if err["loc"] else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise SettingsError(f"Invalid setting(s) in the environment: {problems}") from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
