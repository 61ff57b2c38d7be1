"""The embedded Airflow (``make run``): ``airflow standalone`` configured for this project.

Airflow's home is ``<project>/.airflow`` (git-ignored; ``make clean-state`` removes it),
its DAGs folder is ``dags/``, no examples, DAGs unpaused when first seen, the
``spark_default`` connection points at ``SPARK_MASTER`` (``local[2]`` embedded) and
``spark-submit`` / ``PYSPARK_PYTHON`` are the project's venv. Everything comes from
``marketstream.settings``; this module only translates it into Airflow's variables.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from marketstream.settings import PROJECT_ROOT, Settings, get_settings

PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def spark_connection(settings: Settings) -> str:
    """``AIRFLOW_CONN_SPARK_DEFAULT`` (JSON form): the master URL as the host, which the
    Spark provider passes to ``--master`` unchanged (``local[2]``, ``spark://h:7077``)."""
    return json.dumps({"conn_type": "spark", "host": settings.spark_master})


def standalone_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    ui = urlsplit(settings.airflow_ui_url)
    if not ui.hostname or not ui.port:
        raise SystemExit(f"AIRFLOW_UI_URL must be http://HOST:PORT, got {settings.airflow_ui_url!r}")
    venv_bin = str(Path(settings.spark_python).parent)
    env.update(
        AIRFLOW_HOME=str(settings.airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__API__HOST=ui.hostname,
        AIRFLOW__API__PORT=str(ui.port),
        AIRFLOW__API__BASE_URL=settings.airflow_ui_url.rstrip("/"),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=settings.airflow_ui_url.rstrip("/") + "/execution/",
        # A task that starts while the API server is still starting (a loaded machine takes
        # longer than the default's 31 s) waits for it, up to ~4 minutes, instead of failing.
        AIRFLOW__WORKERS__EXECUTION_API_RETRIES=env.get("AIRFLOW__WORKERS__EXECUTION_API_RETRIES", "8"),
        # New DAG files show up within seconds instead of the default 5 minutes.
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="30",
        # ``make run``'s terminal shows every warning: not one access-log line per task
        # heartbeat, nor the retries of Airflow's processes calling its API server while
        # it starts (a call that finally fails is an error, and shows).
        AIRFLOW__LOGGING__NAMESPACE_LEVELS=env.get(
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS", "http.access=WARNING airflow.sdk.api.client=ERROR"),
        # Airflow's in-process execution API uses FastAPI's test client: its deprecation
        # is for Airflow's developers, not for people running the pipeline.
        PYTHONWARNINGS=env.get("PYTHONWARNINGS", "ignore:Using `httpx` with `starlette.testclient`"),
        # Airflow's generated JWT secret is 16 bytes, short of the 64 that HS512 needs (PyJWT
        # warns on every token): a fresh, full-length one for each start of the embedded run.
        AIRFLOW__API_AUTH__JWT_SECRET=env.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(64),
        AIRFLOW_CONN_SPARK_DEFAULT=spark_connection(settings),
        PYSPARK_PYTHON=settings.spark_python,
        PYSPARK_DRIVER_PYTHON=settings.spark_python,
        # The Spark provider runs ``spark-submit`` from PATH: the venv's pyspark one.
        PATH=os.pathsep.join([venv_bin, env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in [str(PROJECT_ROOT), env.get("PYTHONPATH", "")] if p),
    )
    return env


def banner(settings: Settings) -> str:
    return (
        f"Airflow UI: {settings.airflow_ui_url}  (user 'admin', password in "
        f"{settings.airflow_home / PASSWORD_FILE}, written on the first start)\n"
        f"Airflow home: {settings.airflow_home}; DAGs: {PROJECT_ROOT / 'dags'}; "
        f"spark_default -> {settings.spark_master}"
    )


def main() -> int:
    settings = get_settings()
    env = standalone_env(settings)
    airflow = shutil.which("airflow", path=env["PATH"])
    if airflow is None:
        raise SystemExit("the 'airflow' command is not installed in this environment: run 'make install'")
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    print(banner(settings), flush=True)
    os.execve(airflow, [airflow, "standalone"], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
