"""The parts of docker-compose.yml that run without Docker, run here for real:

- the healthcheck commands of the project's services, taken from the file and run against
  the real processes (the exchange and market-data emulators, the dashboard) on this
  machine: healthy while the process serves, unhealthy once it is gone;
- the Prometheus checks (order emulator, trade listener, trade loader): their contract,
  an HTTP GET of /metrics, against a local endpoint;
- Spark's master and worker with the file's SPARK_DAEMON_JAVA_OPTS: their healthchecks and
  every scrape path monitoring/prometheus.yml asks of them answer in Prometheus' format;
- docker/postgres/init-energy.sh against the test session's PostgreSQL: the desk's role and
  database, then the energy migration as that role (not a superuser).
"""

from __future__ import annotations

import http.server
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCRAPE = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())


def healthcheck(service: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``service``'s healthcheck command from docker-compose.yml with this interpreter."""
    check = COMPOSE["services"][service]["healthcheck"]
    kind, program, *args = check["test"]
    assert kind == "CMD" and program == "python", f"{service}: not a python healthcheck"
    return subprocess.run([sys.executable, *args], env=python_env(**env), capture_output=True, text=True,
                          timeout=int(check["timeout"].rstrip("s")) + 5)


@contextmanager
def process(*argv: str, env: dict[str, str], log: Path):
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *argv], env=python_env(**env), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def assert_healthy_then_not(service: str, argv: list[str], port_variable: str, tmp_path: Path, timeout_s: float = 60):
    port = str(free_port())
    with process(*argv, env={port_variable: port, "DASHBOARD_ADDRESS": "127.0.0.1"}, log=tmp_path / f"{service}.log") as proc:
        wait_for(lambda: proc.poll() is not None or healthcheck(service, **{port_variable: port}).returncode == 0,
                 timeout_s, interval_s=1, what=f"{service} healthy")
        assert proc.poll() is None, (tmp_path / f"{service}.log").read_text()
    result = healthcheck(service, **{port_variable: port})
    assert result.returncode != 0, f"{service}: healthy with its process gone"


def test_exchange_emulator_healthcheck_is_a_websocket_handshake(tmp_path):
    assert_healthy_then_not("exchange-emulator", ["-m", "marketstream.energy.exchange_emulator", "--host", "127.0.0.1"],
                            "EXCHANGE_PORT", tmp_path)


def test_market_data_emulator_healthcheck_asks_its_http_api(tmp_path):
    assert_healthy_then_not("market-data-emulator", ["-m", "marketstream.energy.market_data_emulator", "--host", "127.0.0.1"],
                            "MARKET_DATA_PORT", tmp_path)


def test_dashboard_healthcheck_asks_streamlit(tmp_path):
    assert_healthy_then_not("dashboard", ["-m", "dashboard"], "DASHBOARD_PORT", tmp_path, timeout_s=90)


@pytest.mark.parametrize("service, variable", [
    ("order-emulator", "PRODUCER_METRICS_PORT"),
    ("trade-listener", "LISTENER_METRICS_PORT"),
    ("trade-loader", "LOADER_METRICS_PORT"),
])
def test_metrics_healthchecks_need_a_metrics_page(service, variable):
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            status = 200 if self.path == "/metrics" else 404
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(b"up 1\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = str(server.server_address[1])
    try:
        assert healthcheck(service, **{variable: port}).returncode == 0
        Metrics.do_GET = lambda self: (self.send_response(500), self.end_headers())
        assert healthcheck(service, **{variable: port}).returncode != 0, "a failing endpoint is unhealthy"
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck(service, **{variable: port}).returncode != 0, "nothing listening is unhealthy"


def scrape_paths(service: str) -> list[str]:
    return [job.get("metrics_path", "/metrics") for job in SCRAPE["scrape_configs"]
            for group in job["static_configs"] for target in group["targets"] if target.startswith(service + ":")]


def test_spark_master_and_worker_serve_what_prometheus_scrapes(tmp_path):
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_class = str(spark_home / "bin" / "spark-class")
    master_port, master_ui, worker_ui = free_port(), free_port(), free_port()
    # The daemons authenticate to each other (spark.authenticate) with the secret compose
    # gives both: one generated here.
    env = dict(os.environ, SPARK_HOME=str(spark_home), SPARK_WORKER_DIR=str(tmp_path / "work"),
               SPARK_DAEMON_JAVA_OPTS=COMPOSE["services"]["spark-master"]["environment"]["SPARK_DAEMON_JAVA_OPTS"],
               _SPARK_AUTH_SECRET=secrets.token_hex(32))
    assert env["SPARK_DAEMON_JAVA_OPTS"] == COMPOSE["services"]["spark-worker"]["environment"]["SPARK_DAEMON_JAVA_OPTS"]
    commands = {
        "spark-master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(master_port), "--webui-port", str(master_ui)],
        "spark-worker": [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--webui-port", str(worker_ui), "--cores", "1", "--memory", "512m",
                         f"spark://127.0.0.1:{master_port}"],
    }
    ui = {"spark-master": master_ui, "spark-worker": worker_ui}
    procs = []
    try:
        for name, argv in commands.items():
            log = (tmp_path / f"{name}.log").open("w")
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

        def get(name: str, path: str) -> tuple[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui[name]}{path}", timeout=5) as response:
                return response.headers.get_content_type(), response.read().decode()

        def workers_alive() -> bool:
            # Until its metrics servlets are attached the UI answers every path with HTML.
            try:
                return 'metrics_master_aliveWorkers_Value{type="gauges"} 1' in get("spark-master", "/metrics/master/prometheus/")[1]
            except OSError:
                return False

        wait_for(workers_alive, 90, interval_s=1, what="the worker registered with the master")
        for name in ("spark-master", "spark-worker"):
            healthcheck_url = COMPOSE["services"][name]["healthcheck"]["test"][-1]
            local = healthcheck_url.replace({"spark-master": ":8081", "spark-worker": ":8082"}[name], f":{ui[name]}")
            assert subprocess.run(["curl", "-fsS", "-o", "/dev/null", local], timeout=15).returncode == 0, local
            paths = scrape_paths(name)
            assert paths, f"monitoring/prometheus.yml scrapes nothing on {name}"
            for path in paths:
                content_type, body = get(name, path)
                assert content_type == "text/plain", f"{name}{path}: {content_type}"
                samples = body.splitlines()
                assert samples and all(re.fullmatch(r'metrics_\w+\{type="\w+"\} \S+', line) for line in samples), \
                    f"{name}{path}: {body[:200]!r}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_postgres_init_gives_the_desk_its_own_role_and_database(postgres_url, unique):
    """The script as the postgres image runs it (POSTGRES_USER/POSTGRES_DB set), under
    private names; then the desk's migration runs as the new role, a non-superuser."""
    import sqlalchemy as sa

    from marketstream.energy.db import migrate

    url = sa.engine.make_url(postgres_url)
    role = database = f"energy_{unique}"
    password = "p'a\"s:s;w$rd"  # quoting: SQL and shell metacharacters
    env = dict(os.environ, PGHOST=url.host, PGPORT=str(url.port), POSTGRES_USER=url.username,
               POSTGRES_DB=url.database, ENERGY_DB_USER=role, ENERGY_DB_NAME=database, ENERGY_DB_PASSWORD=password)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        result = subprocess.run(["bash", str(ROOT / "docker" / "postgres" / "init-energy.sh")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with admin.connect() as connection:
            owner, superuser, login = connection.execute(sa.text(
                "SELECT pg_get_userbyid(d.datdba), r.rolsuper, r.rolcanlogin FROM pg_database d "
                "JOIN pg_roles r ON r.rolname = :role WHERE d.datname = :db"), {"role": role, "db": database}).one()
        assert (owner, superuser, login) == (role, False, True)
        desk_url = url.set(username=role, password=password, database=database).render_as_string(hide_password=False)
        migrate(desk_url)
        engine = sa.create_engine(desk_url)
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
        engine.dispose()
        assert {"trades", "reference_prices", "loader_offsets"} <= tables
        # Without the password it refuses to run, naming what to do.
        env.pop("ENERGY_DB_PASSWORD")
        result = subprocess.run(["bash", str(ROOT / "docker" / "postgres" / "init-energy.sh")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "make compose-env" in result.stderr
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
