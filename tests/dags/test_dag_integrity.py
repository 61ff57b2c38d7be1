"""Every DAG in dags/ imports cleanly, without any network call at parse time, and has
the tasks, edges and metadata the operators rely on."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from tests.support import ROOT

# Every DAG in dags/, with the owner and tag its family shares.
DAGS = {
    "orderbook_pipeline": ("market-data", "orderbook"),
    "orderbook_export": ("market-data", "orderbook"),
    "orderbook_health": ("market-data", "orderbook"),
    "orderbook_daily_rollup": ("market-data", "orderbook"),
    "energy_reference_prices": ("power-desk", "energy"),
}


class NetworkAtParseTime(AssertionError):
    pass


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise NetworkAtParseTime(f"network call while parsing DAGs: {args!r}")

    # Any Kafka, Spark REST, database or connection lookup at parse time opens a socket.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    return bag


def test_no_import_errors_and_every_dag_is_covered(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{f}: {e}" for f, e in dagbag.import_errors.items())
    # A new DAG file must be added to DAGS (and get its shape test) to pass.
    assert set(dagbag.dag_ids) == set(DAGS)
    assert len(list((ROOT / "dags").glob("*.py"))) == len(DAGS)


@pytest.mark.parametrize("dag_id", sorted(DAGS))
def test_dag_metadata(dagbag, dag_id):
    owner, tag = DAGS[dag_id]
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and len(dag.doc_md) > 100
    assert dag.tags and tag in dag.tags
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == owner


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_pipeline_shape(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import (
        SparkSubmitOperator,
    )

    from marketstream.settings import get_settings
    from marketstream.spark.config import JOB_APPLICATION, job_env

    dag = dagbag.dags["orderbook_pipeline"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual trigger only
    assert {t.task_id for t in dag.tasks} == {"create_topics", "orderbook_job"}
    assert edges(dag) == {("create_topics", "orderbook_job")}
    job = dag.get_task("orderbook_job")
    assert isinstance(job, SparkSubmitOperator)
    assert job.application == str(JOB_APPLICATION) and JOB_APPLICATION.exists()
    assert job._conn_id == "spark_default"
    assert job.env_vars == job_env(get_settings())
    assert job.retries >= 1 and job.execution_timeout is None


def test_export_shape(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["orderbook_export"]
    # A data-interval timetable: each run covers the 5 minutes before it.
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "*/5 * * * *"
    assert {t.task_id for t in dag.tasks} == {"export", "validate", "prune"}
    # Retention runs every interval, whatever the export does.
    assert edges(dag) == {("export", "validate")}
    # An interval that is not final yet is exported by a retry: a minute or two of
    # outage (the grace period plus three retries 30 s apart) heals.
    export = dag.get_task("export")
    assert export.retries >= 3 and export.retry_delay.total_seconds() == 30


def test_export_before_the_stream_is_skipped_not_failed(dagbag, monkeypatch):
    """The export task maps ``NothingPublishedYet`` to a skip; ``validate`` (all_success)
    is then skipped by Airflow instead of failing on an empty export."""
    from datetime import UTC, datetime

    from airflow.sdk.exceptions import AirflowSkipException

    import marketstream.exports.exporter as export

    dag = dagbag.dags["orderbook_export"]
    end = datetime(2026, 11, 22, 8, 15, tzinfo=UTC)

    def nothing_yet(settings, start, end):
        raise export.NothingPublishedYet("orderbook", end, "the topic is empty")

    monkeypatch.setattr(export, "export_interval", nothing_yet)
    with pytest.raises(AirflowSkipException, match="trigger orderbook_pipeline"):
        dag.get_task("export").python_callable(data_interval_start=end.replace(minute=10), data_interval_end=end)
    assert dag.get_task("validate").trigger_rule == "all_success"


def test_export_of_an_interval_that_is_not_final_is_retried(dagbag, monkeypatch):
    """``IntervalNotFinal`` leaves the task as an ordinary failure, which Airflow retries
    (not ``AirflowFailException``, which would not be, nor a skip)."""
    from datetime import UTC, datetime

    import marketstream.exports.exporter as export

    dag = dagbag.dags["orderbook_export"]
    end = datetime(2026, 11, 22, 8, 15, tzinfo=UTC)

    def not_final(settings, start, end):
        raise export.IntervalNotFinal("orderbook", end, int(end.timestamp()) - 40, 30.0)

    monkeypatch.setattr(export, "export_interval", not_final)
    with pytest.raises(export.IntervalNotFinal, match="a retry exports the interval"):
        dag.get_task("export").python_callable(data_interval_start=end.replace(minute=10), data_interval_end=end)


def test_prune_removes_what_retention_says_as_of_the_runs_interval(dagbag, monkeypatch, tmp_path):
    from datetime import UTC, datetime

    from marketstream.exports.layout import export_paths, write_atomic
    from marketstream.settings import get_settings

    monkeypatch.setenv("EXPORT_DIR", str(tmp_path))
    monkeypatch.setenv("EXPORT_RETENTION_DAYS", "2")
    get_settings.cache_clear()
    old = export_paths(tmp_path, datetime(2026, 11, 19, 8, 0, tzinfo=UTC), datetime(2026, 11, 19, 8, 5, tzinfo=UTC))
    kept = export_paths(tmp_path, datetime(2026, 11, 21, 8, 0, tzinfo=UTC), datetime(2026, 11, 21, 8, 5, tzinfo=UTC))
    for paths in (old, kept):
        write_atomic(paths.data("json"), "[]")
    try:
        result = dagbag.dags["orderbook_export"].get_task("prune").python_callable(
            data_interval_end=datetime(2026, 11, 22, 8, 15, tzinfo=UTC))
    finally:
        get_settings.cache_clear()
    assert result["interval_files_removed"] == 1 and result["folders_removed"] == ["orderbook/2026-11-19"]
    assert not old.data("json").exists() and kept.data("json").exists()


def test_reference_prices_shape(dagbag):
    from datetime import timedelta

    dag = dagbag.dags["energy_reference_prices"]
    assert dag.timetable.expression == "*/10 * * * *"
    assert [t.task_id for t in dag.tasks] == ["fetch_reference_prices"]
    # The next run fetches everything again: no retries, and a run ends before the next.
    assert dag.get_task("fetch_reference_prices").retries == 0
    assert dag.dagrun_timeout == timedelta(minutes=9)


def test_health_shape(dagbag):
    dag = dagbag.dags["orderbook_health"]
    assert dag.timetable.expression == "* * * * *"
    assert [t.task_id for t in dag.tasks] == ["check_health"]
    assert dag.get_task("check_health").retries == 0


def test_export_interval_is_configurable(monkeypatch):
    """EXPORT_INTERVAL_MINUTES changes the schedule (the DAG file reads settings only)."""
    from marketstream.settings import get_settings

    monkeypatch.setenv("EXPORT_INTERVAL_MINUTES", "15")
    get_settings.cache_clear()
    try:
        spec = importlib.util.spec_from_file_location("export_dag_15", ROOT / "dags" / "orderbook_export.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        get_settings.cache_clear()
    assert module.dag.timetable.expression == "*/15 * * * *"


def test_daily_rollup_is_scheduled_on_the_exports_asset(dagbag):
    """The example consumer runs on the asset the export's ``validate`` task updates."""
    from airflow.sdk import Asset

    from marketstream.exports.asset import ASSET_NAME, asset_uri
    from marketstream.settings import get_settings

    expected = Asset(name=ASSET_NAME, uri=asset_uri(get_settings().export_dir))
    validate = dagbag.dags["orderbook_export"].get_task("validate")
    assert [(a.name, a.uri) for a in validate.outlets] == [(expected.name, expected.uri)]
    assert expected.uri.startswith("file:///") and expected.uri.endswith("/exports/orderbook")
    # Only validate: an export that fails validation is no new asset version.
    assert dagbag.dags["orderbook_export"].get_task("export").outlets == []

    dag = dagbag.dags["orderbook_daily_rollup"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [(a.name, a.uri) for a in dag.timetable.asset_condition.objects] == [(expected.name, expected.uri)]
    assert [t.task_id for t in dag.tasks] == ["rollup"]


def notifiers(task, kind: str) -> list:
    callbacks = getattr(task, f"on_{kind}_callback") or []
    return callbacks if isinstance(callbacks, list) else [callbacks]


def test_every_task_alerts_through_the_incident_notifiers(dagbag):
    """Each task opens an incident when it fails for good and closes it when it succeeds
    (its own, "<dag_id>/<task_id>"); the job's death and the health check share the
    order-book stream incident, which only the health check closes, with evidence."""
    from marketstream.alerts.notifier import STREAM_INCIDENT, CloseIncident, OpenIncident

    shared = {("orderbook_pipeline", "orderbook_job"), ("orderbook_health", "check_health")}
    for dag_id in DAGS:
        for task in dagbag.dags[dag_id].tasks:
            [opens] = notifiers(task, "failure")
            assert isinstance(opens, OpenIncident), (dag_id, task.task_id)
            if (dag_id, task.task_id) in shared:
                assert opens.incident == STREAM_INCIDENT
                continue
            assert opens.incident is None  # the task's own incident
            [closes] = notifiers(task, "success")
            assert isinstance(closes, CloseIncident) and closes.incident is None, (dag_id, task.task_id)

    job = dagbag.dags["orderbook_pipeline"].get_task("orderbook_job")
    [on_retry] = notifiers(job, "retry")
    assert isinstance(on_retry, OpenIncident) and on_retry.incident == STREAM_INCIDENT
    assert notifiers(job, "success") == []  # stopping the job by hand recovers nothing
    health = dagbag.dags["orderbook_health"].get_task("check_health")
    [closes] = notifiers(health, "success")
    assert isinstance(closes, CloseIncident) and closes.incident == STREAM_INCIDENT
    assert closes.evidence == "last_snapshot"
    # The pages the messages link to exist on the dashboard.
    pages = (ROOT / "dashboard" / "app.py").read_text()
    for dag_id in DAGS:
        for task in dagbag.dags[dag_id].tasks:
            for notifier in notifiers(task, "failure") + notifiers(task, "success"):
                assert f'url_path="{notifier.dashboard_page}"' in pages, (dag_id, task.task_id)
