"""Apache Kafka's own broker, one KRaft node (broker and controller in one JVM), on
loopback: ``make run``'s broker (``marketstream.embedded.broker``, data kept in
``var/kafka``), and the test suite's and the benchmark's (a throwaway folder, free ports).

The jars come from ``marketstream.jvm_deps`` (set ``kafka-broker``, pinned). Besides the
plaintext listener the node can open a TLS listener and a SASL_SSL listener with
SCRAM-SHA-512 users, from a throwaway certificate authority made for it::

    with ApacheKafka(workdir, tls=True, scram_users={"alice": "secret"}) as kafka:
        kafka.bootstrap          # "127.0.0.1:PORT" (PLAINTEXT)
        kafka.tls_bootstrap      # SSL, kafka.ca_file verifies the broker
        kafka.sasl_bootstrap     # SASL_SSL, SCRAM-SHA-512
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from marketstream.ports import free_port

HEAP = "-Xms256m -Xmx768m"
SCRAM_MECHANISM = "SCRAM-SHA-512"

LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


def make_certificate_authority(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A CA and a server certificate for ``host`` (and localhost), valid two days.

    Returns (ca_file, server_pem): the server PEM holds the unencrypted PKCS#8 key and the
    certificate chain, the form Kafka's ``ssl.keystore.type=PEM`` reads."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=marketstream test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    server_pem = directory / "server.pem"
    server_pem.write_text((directory / "server.key").read_text() + (directory / "server.crt").read_text())
    for path in directory.iterdir():
        path.chmod(0o600)
    return directory / "ca.pem", server_pem


@dataclass
class ApacheKafka:
    """One Apache Kafka node in ``workdir`` (created; removed by ``stop`` unless ``keep``)."""

    workdir: Path
    tls: bool = False
    scram_users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    heap: str = HEAP
    extra_config: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    port: int | None = None  # None: a free port
    controller_port: int | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        self.tls_port = free_port() if self.tls or self.scram_users else None
        self.sasl_port = free_port() if self.scram_users else None
        self.ca_file: Path | None = None
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "broker.log"

    # ------------------------------------------------------------- addresses
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"{self.host}:{self.tls_port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"{self.host}:{self.sasl_port}"

    # ------------------------------------------------------------- config
    def _config(self, server_pem: Path | None) -> dict[str, str]:
        listeners = [f"PLAINTEXT://{self.host}:{self.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.tls_port:
            listeners.append(f"SSL://{self.host}:{self.tls_port}")
            protocol_map.append("SSL:SSL")
        if self.sasl_port:
            listeners.append(f"SASL_SSL://{self.host}:{self.sasl_port}")
            protocol_map.append("SASL_SSL:SASL_SSL")
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join([*listeners, f"CONTROLLER://{self.host}:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protocol_map),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            # One node: the internal topics cannot be replicated; few partitions start fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "2000",
        }
        if server_pem is not None:
            config.update({
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(server_pem),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca_file),
                "ssl.endpoint.identification.algorithm": "https",
            })
        if self.sasl_port:
            config.update({
                "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            })
        config.update(self.extra_config)
        return config

    def _java(self, main_class: str, *args: str) -> list[str]:
        from marketstream.jvm_deps import classpath

        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on PATH (Java 17 or newer is needed)")
        return [java, *self.heap.split(), "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", classpath("kafka-broker"), main_class, *args]

    # ------------------------------------------------------------- lifecycle
    def prepare(self) -> list[str]:
        """Writes the node's configuration, formats its storage unless it was formatted
        before (its data is kept), and returns the command that runs the node."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        server_pem = None
        if self.tls_port:
            self.ca_file, server_pem = make_certificate_authority(self.workdir / "tls", self.host)
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        properties = self.workdir / "server.properties"
        properties.write_text("".join(f"{k}={v}\n" for k, v in self._config(server_pem).items()))
        properties.chmod(0o600)
        if not (self.workdir / "data" / "meta.properties").exists():  # formatted once; its data is kept
            format_args = ["format", "-t", uuid.uuid4().hex[:22], "-c", str(properties)]
            for user, password in self.scram_users.items():
                format_args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
            result = subprocess.run(self._java("kafka.tools.StorageTool", *format_args), capture_output=True,
                                    text=True, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"formatting Kafka's storage failed: {result.stdout}{result.stderr}")
        return self._java("kafka.Kafka", str(properties))

    def start(self, timeout_s: float = 60.0) -> ApacheKafka:
        command = self.prepare()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Apache Kafka exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            except (KafkaError, OSError):
                time.sleep(0.3)
                continue
            try:
                if admin.describe_cluster().get("brokers"):
                    return
            except KafkaError:
                time.sleep(0.3)
            finally:
                admin.close()
        raise TimeoutError(f"Apache Kafka did not answer at {self.bootstrap} within {timeout_s:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
