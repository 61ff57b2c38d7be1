"""Helpers for the energy tests: a private PostgreSQL schema per test."""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import quote

import sqlalchemy as sa


@contextlib.contextmanager
def private_schema(base_url: str):
    """Yield a URL whose connections use a fresh schema (dropped afterwards), so tests can
    migrate and fill the energy tables without seeing each other."""
    schema = f"energy_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def settings_env(settings, **extra) -> dict[str, str]:
    """Environment that makes a subprocess's ``get_settings()`` equal ``settings``' energy part."""
    from tests.support import python_env

    return python_env(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DEALS_TOPIC=settings.deals_topic,
        DEALS_DEADLETTER_TOPIC=settings.deals_deadletter_topic,
        DATABASE_URL=settings.database_url.get_secret_value(),
        EXCHANGE_WS_URL=settings.exchange_ws_url,
        **extra,
    )


class Service:
    """``python -m marketstream.energy.<name>`` as a subprocess logging to a file."""

    def __init__(self, name: str, env: dict[str, str], log_path):
        import subprocess
        import sys

        self.name, self.log_path = name, log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.process = subprocess.Popen([sys.executable, "-m", f"marketstream.energy.{name}"], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def stop(self, timeout_s: float = 15) -> int:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


class TcpProxy:
    """A TCP forwarder we can cut and restore, to take 'the database' away from a service."""

    def __init__(self, target_host: str, target_port: int):
        import socket
        import threading

        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(50)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list = []
        self.enabled = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.enabled:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        import socket

        self.enabled = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.enabled = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def db_deal_ids(url: str) -> list[str]:
    """Deal ids in the trades table, sorted (duplicates would show twice); [] before migration."""
    from marketstream.energy import db

    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(connection.execute(sa.select(db.trades.c.deal_id)).scalars())
    except sa.exc.ProgrammingError:  # tables not migrated yet
        return []
    finally:
        engine.dispose()


class Broker:
    """An Apache Kafka node of this test's own at the settings' address, with empty storage
    in ``workdir``: stopped and started again in a new folder, it is a broker that lost its
    data (a recreated cluster) at the same address."""

    def __init__(self, settings, workdir):
        from marketstream.embedded.apache_kafka import ApacheKafka
        from marketstream.topics import ensure_topics

        host, port = settings.bootstrap_list[0].rsplit(":", 1)
        self.kafka = ApacheKafka(workdir, host=host, port=int(port)).start(timeout_s=120)
        ensure_topics(settings)  # as the listener does at start

    def stop(self) -> None:
        self.kafka.stop()
