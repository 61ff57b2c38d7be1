"""A bad setting reaches Airflow as the DAG files' import error: it names the variable
and never shows a secret's value (the UI shows import errors to every user)."""

from __future__ import annotations

import logging

from marketstream.settings import get_settings
from tests.support import ROOT

DB_PASSWORD = "db-pw-0b7e55c2a1"
WEBHOOK_PATH = "T0SECRET/B0SECRET/webhook-77c1a0"


def test_a_refused_secret_setting_is_an_import_error_without_its_value(monkeypatch, caplog):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("DATABASE_URL", f"mysql://energy:{DB_PASSWORD}@db:3306/energy")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"hooks.slack.com/services/{WEBHOOK_PATH}")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.ERROR):
            errors = DagBag(dag_folder=str(ROOT / "dags")).import_errors
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    # The DAGs that read their settings at parse time fail, each with the one sentence.
    assert errors, "a bad setting must stop the DAG files that read it"
    shown = "\n".join(errors.values()) + caplog.text
    assert "DATABASE_URL: expected a postgresql://" in shown and "ALERT_WEBHOOK_URL: expected an http://" in shown
    assert DB_PASSWORD not in shown and WEBHOOK_PATH not in shown
