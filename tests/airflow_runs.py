"""Running the project's DAGs as Airflow runs them, for integration tests: a private
Airflow home with its own metadata DB, configured like ``make run`` configures Airflow
(``standalone_env``), ``dag.test()`` in a subprocess, Airflow's scheduler for a few loops,
``airflow tasks test`` on an existing run, and queries of the metadata DB.

Everything Airflow runs in subprocesses: the test process may have imported Airflow with
another home (tests/dags)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from marketstream.embedded.airflow_standalone import standalone_env
from marketstream.settings import load_settings
from tests.support import ROOT, python_env, wait_for

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

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


def airflow_env(overrides: dict) -> dict[str, str]:
    """The environment ``make run`` gives Airflow, with the test's settings (``overrides``:
    settings fields, ``airflow_home`` among them); its metadata DB created."""
    settings = load_settings(**overrides)
    env = standalone_env(settings, python_env(**{k.upper(): str(v) for k, v in overrides.items()}))
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return env


def run_dag(env: dict[str, str], dag_id: str, log_path: Path, logical_date: str | None = None,
            timeout_s: float = 240) -> int:
    """One ``dag.test()`` run to its end; its exit code (0: the run succeeded)."""
    with log_path.open("w") as log:
        done = subprocess.run([sys.executable, "-c", RUN_DAG, str(ROOT / "dags"), dag_id, *filter(None, [logical_date])],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    return done.returncode


def airflow(env: dict[str, str], *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)


def query(env: dict[str, str], code: str):
    """Run ``code`` against the metadata DB (``session`` open, ``select`` and the models
    imported); it sets ``result``, returned as JSON."""
    script = textwrap.dedent("""
        import json, sys
        from sqlalchemy import select
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        result = None
        with create_session() as session:
        {code}
        sys.stdout.write("\\nRESULT " + json.dumps(result, default=str))
    """).format(code=textwrap.indent(textwrap.dedent(code), "    "))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rsplit("\nRESULT ", 1)[1])


def queue_pipeline_run(env: dict[str, str]) -> str:
    """A queued ``orderbook_pipeline`` run, as the UI's trigger button makes one (no
    scheduler runs it): for the health check, the pipeline has been started. Its run id."""
    assert airflow(env, "dags", "reserialize").returncode == 0
    done = airflow(env, "dags", "trigger", "orderbook_pipeline", "--output", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("[{"):])[0]["dag_run_id"]


@contextmanager
def api_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Airflow's API server on ``env``'s home and port (as ``make run`` serves it; the
    simple auth manager writes the admin's password into the home) until the block ends;
    yields its URL."""
    url = f"http://{env['AIRFLOW__API__HOST']}:{env['AIRFLOW__API__PORT']}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/v2/version", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with log_path.open("w") as log:
        server = subprocess.Popen([AIRFLOW, "api-server", "--workers", "1"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: answers() or server.poll() is not None, 180, 1.0, "Airflow's API server")
            assert server.poll() is None, log_path.read_text()[-3000:]
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
