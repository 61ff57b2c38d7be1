"""Wiring only: export the order-book topic for each data interval, then validate it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from marketstream.alerts.notifier import CloseIncident, OpenIncident
from marketstream.exports.asset import ASSET_GROUP, ASSET_NAME, asset_uri
from marketstream.settings import get_settings

DOC = """
### Order-book exports

Every `EXPORT_INTERVAL_MINUTES` minutes (default 5; no catch-up), for the run's data
interval `[start, end)`:

1. **export** reads the snapshots whose snapshot time lies in the interval from the
   output topic and writes `exports/orderbook/<date>/<start>_<end>.json` (array of
   `{snapshot_time, sequence, recovered, book}`), `.csv` and `.parquet` (one row per
   level), atomically. Clearing and re-running an interval rewrites byte-identical files.
   It writes only a **final** interval: one the topic already holds a later snapshot
   for (the job publishes seconds in order, backfilled ones included). It waits up to
   `EXPORT_GRACE_SECONDS` for that, then **fails and is retried** (3 times, 30 s apart),
   so an interval exported while the job was down or catching up is exported complete
   once the job has backfilled it.
   **Skipped** (no files written) when the topic holds no snapshot before the
   interval's end: the order-book job was not running yet, so trigger
   `orderbook_pipeline`. An empty topic is recognised at once, without waiting the
   `EXPORT_GRACE_SECONDS`; `validate` is then skipped too.
2. **validate** checks every exported snapshot (interleaving, sorting,
   `total = price x amount`, running `cum_sum`, positive amounts, depth), one snapshot per
   second (gaps and duplicates listed), that the CSV and Parquet files match the JSON,
   counts the snapshots the job published late (`recovered_snapshots`), and reconciles the
   interval's last snapshot with a replay of the input topic up to the offsets in its
   headers. It writes `<start>_<end>.validation.json` beside the export and **fails** on
   any violation (the report and the task log list them). In the interval where the
   job's stream began (the export opens with `sequence` 1) the seconds before that first
   snapshot are not gaps: the report gives `stream_started` and `seconds_before_stream`.
   Gaps after it, duplicates and sequence jumps (a `sequence` back to 1 after other
   snapshots included) still fail.

3. **prune** (every run, beside the other two) removes interval files whose
   interval ended `EXPORT_RETENTION_DAYS` (30) days ago or more, and daily roll-ups
   `EXPORT_ROLLUP_RETENTION_DAYS` (365) days after their day; 0 keeps them for ever. Only
   files named as the export writes them are touched; the log lists what went.

**Asset.** A passing `validate` records an event of the asset `orderbook_export`
(`file://<EXPORT_DIR>/orderbook`) whose extra names the interval and its files, so DAGs
can be scheduled on new exports (see `orderbook_daily_rollup`).

**Alerts** (`ALERT_WEBHOOK_URL`, see the README): a task that fails for good (after its
retries; at once for a failed validation) sends one alert with its error and log, and
its next success one recovery message.

See `docs/exports.md` for the file formats.
"""

settings = get_settings()
minutes = settings.export_interval_minutes
cron = "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"
# Updated once per interval that passed validation (marketstream.exports.asset: the extra).
exports_asset = Asset(name=ASSET_NAME, uri=asset_uri(settings.export_dir), group=ASSET_GROUP)

with DAG(
    dag_id="orderbook_export",
    # Data-interval timetable: each run covers [previous tick, this tick).
    schedule=CronDataIntervalTimetable(cron, timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    doc_md=DOC,
    tags=["orderbook", "export"],
    # An interval that is not final yet (the job is down or backfilling) is retried:
    # 3 x (30 s apart + the grace period) covers an outage of a minute or two.
    default_args={
        "owner": "market-data", "retries": 3, "retry_delay": timedelta(seconds=30),
        "on_failure_callback": OpenIncident(dashboard_page="exports"),
        "on_success_callback": CloseIncident(dashboard_page="exports"),
    },
) as dag:

    @task(task_id="export")
    def export(data_interval_start=None, data_interval_end=None) -> dict:
        from marketstream.exports.exporter import NothingPublishedYet, export_interval

        try:
            # IntervalNotFinal propagates as is: the task's retries export the interval
            # once the job has published (backfilled) all of it.
            return export_interval(get_settings(), data_interval_start, data_interval_end)
        except NothingPublishedYet as exc:
            # Before the job's first snapshot: nothing to export, nothing wrong.
            raise AirflowSkipException(str(exc)) from exc

    @task(task_id="validate", outlets=[exports_asset])
    def validate(summary: dict, data_interval_start=None, data_interval_end=None, outlet_events=None) -> dict:
        from marketstream.exports.asset import event_extra
        from marketstream.exports.layout import export_paths
        from marketstream.exports.validation import ValidationFailed, validate_interval

        settings = get_settings()
        undecodable = [f"undecodable record on the topic at {where}" for where in summary.get("undecodable", [])]
        try:
            report = validate_interval(settings, data_interval_start, data_interval_end, undecodable)
        except ValidationFailed as exc:
            # The data is wrong, a retry would not change it: fail without retrying.
            report_path = export_paths(settings.export_dir, data_interval_start, data_interval_end).validation
            raise AirflowFailException(f"{exc}\nreport: {report_path}") from exc
        outlet_events[exports_asset].extra = event_extra(
            settings.export_dir, data_interval_start, data_interval_end, report)
        return report

    # Independent of the other two: it runs every interval whatever they do, and their
    # outcome stays the run's.
    @task(task_id="prune")
    def prune(data_interval_end=None) -> dict:
        from marketstream.exports.retention import prune_exports

        settings = get_settings()
        return prune_exports(settings.export_dir, data_interval_end, settings.export_retention_days,
                             settings.export_rollup_retention_days).summary()

    validate(export())
    prune()
