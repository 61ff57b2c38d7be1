"""What an alert and a recovery say: what broke, and where to look (the task's log in
Airflow, the dashboard page). Plain text, one fact a line, readable in Slack, any chat
that takes a webhook's ``{"text": ...}``, and email."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

# The incident the order-book job's death and the health check's breaches share: the
# stream of one snapshot a second. Task incidents are keyed "<dag_id>/<task_id>".
STREAM_INCIDENT = "orderbook-stream"
TITLES = {STREAM_INCIDENT: "the order-book stream (one snapshot every second)"}

MAX_ERROR_CHARS = 1500  # of the task's error in an alert (a chat message stays readable)
MAX_DETAILS = 8  # facts from a succeeding task's result in a recovery


@dataclass(frozen=True)
class Signal:
    """One task outcome, as a notifier saw it."""

    incident: str  # the alert key
    dag_id: str
    task_id: str
    run_id: str
    # "failed", "retrying" (failed, Airflow retries it), "restarted" (the job died and its
    # task started it again at once) or "succeeded"
    outcome: str
    at: float  # epoch seconds
    try_number: int = 1
    max_tries: int = 0
    error: str = ""
    log_url: str = ""
    # The succeeding task's result (e.g. the health summary): shown in the recovery.
    details: dict = field(default_factory=dict)
    # For a success: the newest data it saw (e.g. the last snapshot's second). A success
    # about data older than the incident proves nothing and does not close it.
    evidence_time: float | None = None

    @property
    def task(self) -> str:
        return f"{self.dag_id}/{self.task_id}"

    @property
    def what(self) -> str:
        """One line: what happened to the task."""
        if self.outcome == "retrying":
            return f"{self.task} failed on try {self.try_number} of {self.max_tries + 1}; Airflow retries it"
        if self.outcome == "restarted":
            return f"{self.task}: the job died; its task started it again from its checkpoint"
        if self.outcome == "failed":
            tries = f" (try {self.try_number} of {self.max_tries + 1}, no retry left)" if self.max_tries else ""
            return f"{self.task} failed{tries}"
        return f"{self.task} succeeded"


@dataclass(frozen=True)
class Message:
    subject: str
    text: str


def title_of(incident: str) -> str:
    return TITLES.get(incident, incident)


def task_incident(dag_id: str, task_id: str) -> str:
    return f"{dag_id}/{task_id}"


def format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _shorten(text: str, limit: int) -> str:
    """``text`` within about ``limit`` characters: its start and its end, where errors put
    the cause (spark-submit's exception ends with the job's last output and exit code)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head, tail = limit // 3, limit - limit // 3
    return f"{text[:head].rstrip()}\n... ({len(text) - head - tail} characters left out) ...\n{text[-tail:].lstrip()}"


def _where(signal: Signal, dashboard_page_url: str) -> list[str]:
    lines = ["Where to look:"]
    if signal.log_url:
        lines.append(f"  task log   {signal.log_url}")
    lines.append(f"  dashboard  {dashboard_page_url}")
    return lines


def alert_message(incident: str, signal: Signal, dashboard_page_url: str) -> Message:
    title = title_of(incident)
    lines = [f"ALERT marketstream: {title} is broken", f"What broke: {signal.what}"]
    if signal.error:
        lines += ["  " + line for line in _shorten(signal.error, MAX_ERROR_CHARS).splitlines()]
    lines += _where(signal, dashboard_page_url)
    lines.append(f"Incident {incident}, open since {format_time(signal.at)}: no other message until it recovers.")
    return Message(f"[marketstream] ALERT: {title}", "\n".join(lines))


def _details(details: dict) -> str:
    facts = [f"{name} {value}" for name, value in details.items()
             if isinstance(value, (str, int, float, bool)) and value != ""][:MAX_DETAILS]
    return ", ".join(facts)


def recovery_message(incident: str, opened_at: float, cause: str, breaches: int, signal: Signal,
                     dashboard_page_url: str) -> Message:
    title = title_of(incident)
    took = format_duration(signal.at - opened_at)
    facts = _details(signal.details)
    lines = [
        f"RECOVERED marketstream: {title}, after {took}",
        f"{signal.what}{': ' + facts if facts else ''}",
        f"While open: {breaches} failure(s); the first: {cause}",
        *_where(signal, dashboard_page_url),
        f"Incident {incident}, open {format_time(opened_at)} to {format_time(signal.at)}.",
    ]
    return Message(f"[marketstream] RECOVERED: {title} (after {took})", "\n".join(lines))
