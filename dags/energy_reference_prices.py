"""Wiring only: the reference-price ETL (logic in marketstream.energy.reference_prices)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from marketstream.alerts.notifier import CloseIncident, OpenIncident

DOC = """
### Energy reference prices

Every 10 minutes, fetches the market-data API's reference price for every tradable
delivery hour (next hour to the end of the next day, UTC) and every hour that has trades
(last `REFERENCE_PRICE_LOOKBACK_DAYS` days), never faster than
`MARKET_DATA_REQUESTS_PER_MINUTE` (50) requests a minute — a limiter shared by all runs —
retrying 5xx, 429 and network errors with backoff. Each published value is stored once
with its `last_update` in `reference_prices` (history kept; `latest_reference_prices`
is the newest per hour), so a re-run stores nothing new.

The run **fails** after storing everything it could when some hours could not be fetched;
the log and the error name each missing hour and why. The return value (XCom) counts new,
unchanged and missing values. A failed run sends one alert (`ALERT_WEBHOOK_URL`), the
next successful one a recovery message.
"""

with DAG(
    dag_id="energy_reference_prices",
    schedule="*/10 * * * *",  # on the clock, so runs line up with the API's 10-minute updates
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(minutes=9),
    doc_md=DOC,
    tags=["energy", "reference-prices"],
    # The next run fetches everything again in 10 minutes: no task retries needed.
    default_args={"owner": "power-desk", "retries": 0,
                  "on_failure_callback": OpenIncident(dashboard_page="desk"),
                  "on_success_callback": CloseIncident(dashboard_page="desk")},
) as dag:

    @task(task_id="fetch_reference_prices")
    def fetch_reference_prices() -> dict:
        from marketstream.energy.reference_prices import (
            MissingReferencePrices,
            run_and_check,
        )
        from marketstream.settings import get_settings

        try:
            return run_and_check(get_settings())
        except MissingReferencePrices as exc:
            raise AirflowFailException(str(exc)) from exc

    fetch_reference_prices()
