"""Secrets are never echoed: not by the settings object, a refused setting, a service that
fails at start, the printed spark-submit command, the terminal's banners, the status
line's warnings, the dashboard's database error or Airflow's API errors.

Each test gives real-looking secret values and looks for them in what a user sees.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from marketstream.settings import Settings, SettingsError, get_settings, load_settings
from tests.support import ROOT, free_port, python_env

DB_PASSWORD = "db-pw-6f0c1d93be"
AIRFLOW_PASSWORD = "airflow-pw-91c2aa07"
SPARK_SECRET = "spark-secret-3e8b5d4471"
SASL_PASSWORD = "sasl-pw-c02f9e61"
WEBHOOK_PATH = "T0SECRET/B0SECRET/webhook-d41e97"
SECRETS = (DB_PASSWORD, AIRFLOW_PASSWORD, SPARK_SECRET, SASL_PASSWORD, WEBHOOK_PATH)

# Every secret the platform reads, as its environment variable.
SECRET_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://energy:{DB_PASSWORD}@127.0.0.1:{free_port()}/energy",
    "AIRFLOW_PASSWORD": AIRFLOW_PASSWORD,
    "SPARK_AUTHENTICATE_SECRET": SPARK_SECRET,
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "desk",
    "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    "ALERT_WEBHOOK_URL": f"https://hooks.slack.com/services/{WEBHOOK_PATH}",
}


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secret(s) shown: {leaked}\n{text}"


@pytest.fixture
def secret_environment(monkeypatch):
    """The environment holds every secret; ``get_settings()`` reads it afresh."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_every_setting_that_holds_a_secret_is_a_secret_type():
    """A new secret setting is added here, and so to every test below."""
    secret_fields = {name for name, field in Settings.model_fields.items() if field.annotation is SecretStr}
    assert secret_fields == {"database_url", "airflow_password", "spark_authenticate_secret", "kafka_sasl_password",
                             "alert_webhook_url"}


def test_the_settings_object_never_shows_a_secret(secret_environment):
    settings = secret_environment
    assert_no_secret(repr(settings) + str(settings) + repr(settings.model_dump()) + settings.model_dump_json())
    # ... while the code that needs a value gets it whole.
    assert settings.database_url.get_secret_value() == SECRET_ENV["DATABASE_URL"]
    assert settings.airflow_password.get_secret_value() == AIRFLOW_PASSWORD
    assert settings.spark_authenticate_secret.get_secret_value() == SPARK_SECRET


@pytest.mark.parametrize("url", [
    f"mysql://energy:{DB_PASSWORD}@db:3306/energy",         # a database the desk does not speak
    f"postgres://energy:{DB_PASSWORD}@db:5432/energy",      # the scheme SQLAlchemy 2 refuses
    f"energy:{DB_PASSWORD}@db:5432/energy",                 # no scheme at all
    f"{DB_PASSWORD}",
    "",
])
def test_a_refused_database_url_names_the_setting_never_the_value(url):
    with pytest.raises(SettingsError) as refused:
        load_settings(database_url=url)
    message = str(refused.value)
    assert message.startswith("Invalid setting(s) in the environment: DATABASE_URL: expected a postgresql://")
    assert "the value itself is not shown" in message
    assert_no_secret(message)


def test_a_database_url_of_either_kind_is_accepted():
    for url in (f"postgresql://energy:{DB_PASSWORD}@db/energy", f"postgresql+psycopg://energy:{DB_PASSWORD}@db/energy",
                "sqlite:///var/energy.db", "sqlite+pysqlite:///:memory:"):
        assert load_settings(database_url=url).database_url.get_secret_value() == url


def test_a_validation_error_never_quotes_what_it_was_given():
    """Code that builds ``Settings`` itself gets pydantic's own error text: no input in it
    (for a check across settings pydantic would otherwise print every value given)."""
    attempts = [
        dict(kafka_security_protocol="SASL_SSL", kafka_sasl_password=SASL_PASSWORD, airflow_password=AIRFLOW_PASSWORD,
             spark_authenticate_secret=SPARK_SECRET),
        dict(database_url=f"mysql://energy:{DB_PASSWORD}@db/energy"),
        dict(alert_webhook_url=f"ftp://hooks.slack.com/{WEBHOOK_PATH}"),
    ]
    for given in attempts:
        with pytest.raises(ValidationError) as refused:
            Settings(**given)
        assert_no_secret(str(refused.value) + repr(refused.value))


def run_module(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=python_env(**env))


def test_a_service_refused_at_start_does_not_print_the_database_password():
    result = run_module("marketstream.energy.db", "migrate", DATABASE_URL=f"mysql://energy:{DB_PASSWORD}@db/energy")
    assert result.returncode != 0 and "DATABASE_URL: expected a postgresql://" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_a_database_that_does_not_answer_is_reported_without_its_password():
    # A PostgreSQL URL on a port nobody listens on: SQLAlchemy's traceback, then exit 1.
    result = run_module("marketstream.energy.db", "migrate", DATABASE_URL=SECRET_ENV["DATABASE_URL"])
    assert result.returncode != 0 and "OperationalError" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_the_printed_spark_submit_command_holds_no_secret():
    result = run_module("marketstream.spark", "command", SPARK_MASTER="spark://spark-master:7077", **SECRET_ENV)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert "spark.authenticate=true" in result.stdout  # the secret is set, by the driver, not on the line
    assert 'KAFKA_SASL_PASSWORD="$KAFKA_SASL_PASSWORD"' in result.stdout


def test_the_terminal_banners_show_no_secret(secret_environment):
    from marketstream.embedded.airflow_standalone import banner
    from marketstream.embedded.stack import describe

    text = describe() + banner(secret_environment)
    assert "Airflow UI" in text and "Dashboard" in text
    assert_no_secret(text)


def test_the_status_lines_warning_about_the_database_shows_no_password(secret_environment, caplog):
    from marketstream.embedded.status import UNKNOWN, Figures, deals_text

    with caplog.at_level(logging.WARNING, logger="marketstream.embedded.status"):
        assert Figures().read("the deals", lambda: deals_text(secret_environment)) == UNKNOWN
    assert "status: cannot read the deals: OperationalError" in caplog.text
    assert_no_secret(caplog.text)


def test_the_dashboards_database_error_names_the_database_without_its_password(secret_environment):
    from dashboard.sources import SourceUnavailable, Sources
    from marketstream.energy.db import trades

    with pytest.raises(SourceUnavailable) as unavailable:
        Sources(secret_environment)._query(sa.select(trades))
    message = str(unavailable.value)
    assert "Cannot read the energy database (postgresql+psycopg://energy:***@127.0.0.1:" in message
    assert_no_secret(message)


def test_airflow_api_errors_show_no_password(secret_environment):
    from marketstream.embedded.demo import DemoError, api_client
    from marketstream.pipeline_state import PipelineStateUnknown, credentials, read_pipeline_state

    settings = secret_environment.model_copy(update={"airflow_ui_url": f"http://127.0.0.1:{free_port()}"})
    assert credentials(settings) == ("admin", AIRFLOW_PASSWORD)  # the setting wins over the generated file
    with pytest.raises(PipelineStateUnknown) as unknown:
        read_pipeline_state(settings, timeout_s=2)
    with pytest.raises(DemoError) as refused:
        api_client(settings, timeout_s=0)
    assert "did not tell" in str(unknown.value) and "does not answer" in str(refused.value)
    assert_no_secret(str(unknown.value) + str(refused.value))


def test_a_webhook_that_fails_is_reported_without_its_url():
    url = f"http://127.0.0.1:{free_port()}/services/{WEBHOOK_PATH}"  # nobody listens there
    result = run_module("marketstream.alerts", "test", ALERT_WEBHOOK_URL=url)
    assert result.returncode == 1 and "webhook: FAILED: ConnectError" in result.stderr
    assert_no_secret(result.stdout + result.stderr)
