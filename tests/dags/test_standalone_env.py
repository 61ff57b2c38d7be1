"""What ``make run`` hands ``airflow standalone`` (``marketstream.embedded.airflow_standalone``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketstream.embedded.airflow_standalone import banner, spark_connection, standalone_env
from marketstream.settings import load_settings
from tests.support import ROOT


def test_environment_points_airflow_at_the_project(tmp_path):
    settings = load_settings(airflow_home=tmp_path / "af", airflow_ui_url="http://127.0.0.1:18080",
                             spark_master="local[3]")
    env = standalone_env(settings, {"PATH": "/usr/bin"})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "af")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__API__PORT"] == "18080" and env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    # spark-submit and the job's Python come from the project's interpreter directory
    assert env["PATH"].split(":")[0] == str(Path(settings.spark_python).parent)
    assert env["PYSPARK_PYTHON"] == settings.spark_python
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark", "host": "local[3]"}
    assert "simple_auth_manager_passwords.json.generated" in banner(settings)
    # No access log, nor the retries of calls to the API server while it starts, in make run.
    assert env["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] == "http.access=WARNING airflow.sdk.api.client=ERROR"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64  # HS512 wants 64 bytes
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] != standalone_env(settings, {})["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_tasks_wait_minutes_not_seconds_for_an_api_server_that_is_starting(tmp_path):
    """Airflow's task SDK reads the retry count this environment sets: 8 attempts back off
    1, 3, 7, 15, 31, 63, 127 s, a loaded machine's API server start, where 5 give up after 31 s."""
    import subprocess
    import sys

    env = standalone_env(load_settings(airflow_home=tmp_path / "af"), {"PATH": "/usr/bin"})
    read = subprocess.run([sys.executable, "-c", "from airflow.configuration import conf; "
                           "print(conf.getint('workers', 'execution_api_retries'))"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    assert read.stdout.strip().splitlines()[-1] == "8"


def test_spark_connection_resolves_to_the_master_url(monkeypatch):
    """The Spark provider turns the connection back into the --master argument."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    for master in ("local[2]", "spark://spark-master:7077"):
        monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", spark_connection(load_settings(spark_master=master)))
        hook = SparkSubmitHook(conn_id="spark_default")
        assert hook._connection["master"] == master
        assert hook._connection["spark_binary"] == "spark-submit"


def test_bad_ui_url_is_a_clear_error():
    with pytest.raises(SystemExit, match="AIRFLOW_UI_URL must be http://HOST:PORT"):
        standalone_env(load_settings(airflow_ui_url="http://localhost"), {})
