"""Wiring only: the example consumer of the exports' asset, a daily roll-up."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Asset, task
from airflow.sdk.exceptions import AirflowFailException

from marketstream.alerts.notifier import CloseIncident, OpenIncident
from marketstream.exports.asset import ASSET_GROUP, ASSET_NAME, asset_uri
from marketstream.settings import get_settings

DOC = """
### Order-book daily roll-up (example asset consumer)

Scheduled on the asset `orderbook_export`: a run starts when `orderbook_export` has
validated a new interval (it gets the events since the previous run, up to the one that
queued it; one recorded while it was queued goes with the next run). For
each UTC day the events' intervals fall in, **rollup** rewrites
`exports/orderbook-daily/<YYYY-MM-DD>.parquet`: the rows of every interval of that day
whose validation passed, in time order, with the interval Parquet files' columns
(one row per level). Intervals left out (not validated, failed, overlapping) are listed in
the result with the reason. Idempotent (a re-run writes the same bytes) and atomic (temp
file + rename). A manual run rolls up today (UTC).

Logic: `marketstream/exports/rollup.py`; the asset and its extra:
`marketstream/exports/asset.py`. Copy this DAG to consume the exports your own way.
"""

settings = get_settings()
exports_asset = Asset(name=ASSET_NAME, uri=asset_uri(settings.export_dir), group=ASSET_GROUP)

with DAG(
    dag_id="orderbook_daily_rollup",
    schedule=[exports_asset],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    doc_md=DOC,
    tags=["orderbook", "export", "example"],
    default_args={
        "owner": "market-data", "retries": 0,
        "on_failure_callback": OpenIncident(dashboard_page="exports"),
        "on_success_callback": CloseIncident(dashboard_page="exports"),
    },
) as dag:

    @task(task_id="rollup")
    def rollup(triggering_asset_events=None) -> dict:
        from marketstream.exports.asset import BadAssetEvent
        from marketstream.exports.retention import cutoff
        from marketstream.exports.rollup import rollup_for_events

        settings = get_settings()
        now = datetime.now(UTC)
        events = triggering_asset_events[exports_asset] if exports_asset in triggering_asset_events else []
        try:
            return rollup_for_events(settings.export_dir, [event.extra for event in events], today=now,
                                     pruned_before=cutoff(now, settings.export_retention_days))
        except BadAssetEvent as exc:
            raise AirflowFailException(str(exc)) from exc

    rollup()
