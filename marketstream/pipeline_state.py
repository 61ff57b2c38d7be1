"""Whether the order-book pipeline (the ``orderbook_pipeline`` DAG) has been started and
runs now: the health check, the terminal's banner and the dashboard say so instead of
reporting a job that nobody started as broken.

Airflow knows: the health task asks through its Task SDK (``skip_reason``), everything
else through Airflow's REST API (``read_pipeline_state``) as ``AIRFLOW_USERNAME`` with
``AIRFLOW_PASSWORD``, or the password the embedded Airflow generated in its home.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from marketstream.embedded.airflow_standalone import PASSWORD_FILE
from marketstream.settings import Settings

log = logging.getLogger(__name__)

PIPELINE_DAG_ID = "orderbook_pipeline"
ACTIVE_STATES = ("queued", "running")
NOT_STARTED = "pipeline not started: trigger it in the Airflow UI or run `make demo`"
STOPPED = ("pipeline stopped: no orderbook_pipeline run is queued or running "
           "(trigger it again in the Airflow UI or run `make demo`)")


def skip_reason(pipeline_runs: int, active_runs: int) -> str | None:
    """Why the health check has nothing to judge, or None when it should check. A run
    that is queued or running (its job may be restarting) is checked; with none, the
    pipeline was never started or was stopped: its own DAG reports a job that died."""
    if active_runs:
        return None
    return NOT_STARTED if pipeline_runs == 0 else STOPPED


class PipelineStateUnknown(Exception):
    """Airflow's API did not answer (still starting, or no credentials)."""


@dataclass(frozen=True)
class PipelineRun:
    run_id: str
    state: str
    start: datetime | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class PipelineState:
    runs: tuple[PipelineRun, ...]  # newest first
    total: int

    @property
    def active(self) -> PipelineRun | None:
        return next((run for run in self.runs if run.active), None)

    def started_before(self, moment: datetime) -> PipelineRun | None:
        """The active run if it began before ``moment`` (a previous ``make run``'s)."""
        run = self.active
        return run if run is not None and run.start is not None and run.start < moment else None

    def active_age(self, now: datetime) -> float | None:
        """Seconds since the active run started (0 while it waits in the queue: its job has
        not begun); None without an active run."""
        run = self.active
        if run is None:
            return None
        return 0.0 if run.start is None else max(0.0, (now - run.start).total_seconds())

    def sentence(self) -> str:
        if self.total == 0:
            return NOT_STARTED
        run = self.active
        if run is None:
            return STOPPED
        since = f" since {run.start:%Y-%m-%d %H:%M:%S} UTC" if run.start else ""
        return f"pipeline {run.state}: run {run.run_id}{since}"


def credentials(settings: Settings) -> tuple[str, str]:
    """User and password for Airflow's API; ``LookupError`` says what is missing."""
    user = settings.airflow_username
    if password := settings.airflow_password.get_secret_value():
        return user, password
    path = settings.airflow_home / PASSWORD_FILE
    try:
        return user, json.loads(path.read_text())[user]
    except FileNotFoundError:
        raise LookupError(f"no Airflow password file at {path}: is 'make run' running (it creates it on start)?") from None
    except (OSError, KeyError, ValueError):
        raise LookupError(f"{path} has no password for user {user!r}; set AIRFLOW_USERNAME/AIRFLOW_PASSWORD") from None


def read_pipeline_state(settings: Settings, timeout_s: float = 5.0, limit: int = 5) -> PipelineState:
    """The pipeline's newest runs, from Airflow's REST API."""
    base = settings.airflow_api_base
    try:
        with httpx.Client(base_url=base, timeout=timeout_s) as client:
            user, password = credentials(settings)
            login = client.post("/auth/token", json={"username": user, "password": password})
            login.raise_for_status()
            reply = client.get(f"/api/v2/dags/{PIPELINE_DAG_ID}/dagRuns",
                               params={"order_by": "-run_after", "limit": limit},
                               headers={"Authorization": f"Bearer {login.json()['access_token']}"})
            reply.raise_for_status()
            body = reply.json()
    except (httpx.HTTPError, LookupError, ValueError) as exc:
        raise PipelineStateUnknown(f"Airflow's API at {base} did not tell: {exc}") from None
    runs = tuple(
        PipelineRun(run_id=row["dag_run_id"], state=row["state"],
                    start=datetime.fromisoformat(row["start_date"]) if row.get("start_date") else None)
        for row in body.get("dag_runs", [])
    )
    return PipelineState(runs=runs, total=int(body.get("total_entries", len(runs))))


def active_run_age(settings: Settings) -> float | None:
    """Seconds since the pipeline's active run started (0 while it is queued), from
    Airflow's API; None without an active run or when the API does not tell."""
    try:
        state = read_pipeline_state(settings)
    except PipelineStateUnknown as exc:
        log.warning("%s; the pipeline run's age is unknown", exc)
        return None
    return state.active_age(datetime.now(UTC))
