"""``make demo``: trigger ``orderbook_pipeline`` through Airflow's REST API and wait for
the first snapshot on the output topic (with ``make run`` running in another terminal).

Credentials: ``AIRFLOW_USERNAME`` / ``AIRFLOW_PASSWORD`` from the environment, else the
admin password that ``airflow standalone`` generated in the embedded Airflow home.
"""

from __future__ import annotations

import sys
import time

import httpx

from marketstream.kafka_io import topic_end_offsets
from marketstream.embedded.run import apply_dotenv
from marketstream.pipeline_state import PIPELINE_DAG_ID as DAG_ID
from marketstream.pipeline_state import credentials
from marketstream.settings import Settings, get_settings


class DemoError(SystemExit):
    pass


def api_client(settings: Settings, timeout_s: float = 120.0) -> httpx.Client:
    """A client with a bearer token, waiting for the API server to come up."""
    base = settings.airflow_api_base
    try:
        user, password = credentials(settings)
    except LookupError as exc:
        raise DemoError(str(exc)) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=10)
            break
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise DemoError(f"Airflow API at {base} does not answer ({exc}): is 'make run' running?") from None
            time.sleep(2)
    if response.status_code >= 400:
        raise DemoError(f"Airflow refused the login for {user!r}: HTTP {response.status_code} {response.text[:200]}")
    token = response.json()["access_token"]
    return httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def trigger(client: httpx.Client, timeout_s: float = 120.0) -> str:
    """Trigger the pipeline unless a run is already active; returns the run id."""
    deadline = time.monotonic() + timeout_s
    while True:  # the DAG appears a few seconds after Airflow starts (DAG processor)
        found = client.get(f"/dags/{DAG_ID}")
        if found.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise DemoError(f"DAG {DAG_ID} is not known to Airflow: HTTP {found.status_code} {found.text[:200]}")
        time.sleep(3)
    if found.json().get("is_paused"):
        client.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    active = client.get(f"/dags/{DAG_ID}/dagRuns", params={"state": ["queued", "running"]})
    active.raise_for_status()
    runs = active.json().get("dag_runs", [])
    if runs:
        print(f"{DAG_ID} is already running (run {runs[0]['dag_run_id']}); not triggering another.")
        return runs[0]["dag_run_id"]
    created = client.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
    if created.status_code >= 400:
        raise DemoError(f"could not trigger {DAG_ID}: HTTP {created.status_code} {created.text[:300]}")
    run_id = created.json()["dag_run_id"]
    print(f"triggered {DAG_ID}: run {run_id}")
    return run_id


def snapshot_count(settings: Settings) -> int:
    return sum(topic_end_offsets(settings, settings.orderbook_topic).values())


def wait_for_snapshots(settings: Settings, client: httpx.Client, run_id: str, timeout_s: float = 180.0) -> int:
    before = snapshot_count(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = snapshot_count(settings)
        if now > before:
            return now - before
        state = client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json().get("state")
        if state == "failed":
            raise DemoError(f"run {run_id} failed: see the orderbook_job task log in the Airflow UI")
        time.sleep(2)
    raise DemoError(f"no snapshot on {settings.orderbook_topic} within {timeout_s:.0f} s; see the task log in the UI")


def main() -> int:
    apply_dotenv()  # the settings ``make run`` started the stack with
    settings = get_settings()
    client = api_client(settings)
    run_id = trigger(client)
    print(f"waiting for the Spark job's first snapshot on {settings.orderbook_topic} (takes ~20-60 s) ...", flush=True)
    wait_for_snapshots(settings, client, run_id)
    print(f"snapshots are arriving. Airflow: {settings.airflow_ui_url}/dags/{DAG_ID}; dashboard: "
          f"http://127.0.0.1:{settings.dashboard_port}; exports every {settings.export_interval_minutes} min "
          f"under {settings.export_dir / 'orderbook'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
