"""The Airflow side of alerts: notifiers the DAG files wire as task callbacks.

    default_args={"on_failure_callback": OpenIncident(), "on_success_callback": CloseIncident()}

``OpenIncident`` reports a breach (the task failed, or is being retried when wired as
``on_retry_callback``), ``CloseIncident`` a success; ``incident`` names the alert key
(default ``"<dag_id>/<task_id>"``), so several tasks can share one incident: the
order-book job's death and the health check's breaches are both ``STREAM_INCIDENT``.
Callbacks run in the task's own process after the task ended (Airflow 3), and the rules
live in ``marketstream.alerts.incidents``: this module only reads the callback's context.
"""

from __future__ import annotations

import time

from airflow.sdk import BaseNotifier

from marketstream.alerts.messages import STREAM_INCIDENT  # noqa: F401  (DAG files import it from here)


class IncidentNotifier(BaseNotifier):
    """Reports the task's outcome to the incident book (see the module docstring)."""

    opens: bool = True

    def __init__(self, incident: str | None = None, *, dashboard_page: str = "health", evidence: str | None = None,
                 outcome: str | None = None):
        """``dashboard_page``: the dashboard page the messages link to (``health``,
        ``exports``, ``desk``); ``evidence``: for ``CloseIncident``, the field of the
        task's result (a dict) holding the newest data time it saw (UTC text), see
        ``Signal.evidence_time``; ``outcome``: what happened, when the task's state does
        not tell (``"restarted"``: called while the task is still running)."""
        super().__init__()
        self.incident, self.dashboard_page, self.evidence = incident, dashboard_page, evidence
        self.outcome = outcome

    def notify(self, context) -> None:
        from marketstream.alerts.channels import configured_channels
        from marketstream.alerts.incidents import IncidentBook, report_breach, report_recovery
        from marketstream.settings import get_settings

        settings = get_settings()
        signal = self.signal(context)
        book, channels = IncidentBook(settings.alert_state_path), configured_channels(settings)
        page = f"{settings.dashboard_link}/{self.dashboard_page}"
        outcome = (report_breach if self.opens else report_recovery)(book, channels, signal, page)
        self.log.info("incident %s: %s", signal.incident, outcome.value)

    def signal(self, context):
        from marketstream.alerts.messages import Signal, task_incident

        ti = context["ti"]
        max_tries = int(getattr(ti, "max_tries", 0) or 0)
        try_number = int(getattr(ti, "try_number", 1) or 1)
        details: dict = {}
        evidence_time = None
        if self.opens:
            # Airflow sets the state before the callbacks: up_for_retry or failed.
            state = getattr(ti, "state", None)
            outcome = self.outcome or ("retrying" if getattr(state, "value", state) == "up_for_retry" else "failed")
        else:
            outcome = "succeeded"
            result = ti.xcom_pull(task_ids=ti.task_id)
            details = result if isinstance(result, dict) else {}
            if self.evidence:
                evidence_time = _utc_epoch(details.get(self.evidence))
        error = context.get("exception")
        return Signal(
            incident=self.incident or task_incident(ti.dag_id, ti.task_id),
            dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, outcome=outcome, at=time.time(),
            try_number=try_number, max_tries=max_tries, error="" if error is None else str(error),
            log_url=getattr(ti, "log_url", "") or "", details=details, evidence_time=evidence_time,
        )


class OpenIncident(IncidentNotifier):
    opens = True


class CloseIncident(IncidentNotifier):
    opens = False


def _utc_epoch(text) -> float | None:
    """``2026-11-22T08:12:03Z`` (or any ISO-8601 time with a zone) as epoch seconds. A
    success without readable evidence proves nothing: ``-inf``, the incident stays open."""
    from datetime import datetime

    if text is None:
        return float("-inf")
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")
