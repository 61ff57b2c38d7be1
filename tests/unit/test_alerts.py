"""The incident rules (marketstream.alerts): one alert per incident, one recovery when it
ends, delivered to a real HTTP webhook, state in a real SQLite file shared by processes."""

from __future__ import annotations

import email
import logging
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import warnings

import pytest

from marketstream.alerts import incidents
from marketstream.alerts.channels import WebhookChannel, configured_channels
from marketstream.alerts.incidents import AlertNotDelivered, IncidentBook, Outcome, report_breach, report_recovery
from marketstream.alerts.messages import STREAM_INCIDENT, Message, Signal, format_duration
from marketstream.settings import load_settings
from tests.support import ROOT, python_env
from tests.webhook_receiver import WebhookReceiver

T0 = 1_800_000_000.0
PAGE = "http://dash.example:8501/health"
LOG_URL = "http://airflow.example:8080/dags/orderbook_health/runs/scheduled__x/tasks/check_health?try_number=1"


def failure(at: float, incident: str = STREAM_INCIDENT, error: str = "order-book job unhealthy:\n  - the last snapshot is 12 s old",
            outcome: str = "failed", **kwargs) -> Signal:
    return Signal(incident=incident, dag_id="orderbook_health", task_id="check_health", run_id="scheduled__x",
                  outcome=outcome, at=at, error=error, log_url=LOG_URL, **kwargs)


def success(at: float, incident: str = STREAM_INCIDENT, evidence: float | None = None) -> Signal:
    return Signal(incident=incident, dag_id="orderbook_health", task_id="check_health", run_id="scheduled__y",
                  outcome="succeeded", at=at, log_url=LOG_URL, evidence_time=evidence,
                  details={"last_snapshot": "2027-01-15T08:00:58Z", "snapshots_last_minute": 60, "problems": []})


class Recording:
    """A channel that keeps what it was sent, and fails while ``down``."""

    def __init__(self, name: str):
        self.name, self.sent, self.down = name, [], False

    def send(self, message: Message) -> None:
        if self.down:
            raise ConnectionError(f"{self.name} is down")
        self.sent.append(message)


@pytest.fixture
def book(tmp_path) -> IncidentBook:
    return IncidentBook(tmp_path / "state" / "alerts.sqlite")


def test_one_alert_per_incident_and_one_recovery(book):
    chat = Recording("webhook")
    assert report_breach(book, [chat], failure(T0), PAGE) is Outcome.ALERTED
    for minute in range(1, 5):  # the check keeps failing every minute: nothing more is sent
        assert report_breach(book, [chat], failure(T0 + 60 * minute), PAGE) is Outcome.STILL_OPEN
    assert report_recovery(book, [chat], success(T0 + 330, evidence=T0 + 328), PAGE) is Outcome.RECOVERED
    assert report_recovery(book, [chat], success(T0 + 390, evidence=T0 + 388), PAGE) is Outcome.NOT_OPEN
    alert, recovery = chat.sent
    assert book.open_incidents() == []

    # The alert says what broke and where to look.
    assert alert.subject == "[marketstream] ALERT: the order-book stream (one snapshot every second)"
    assert "What broke: orderbook_health/check_health failed" in alert.text
    assert "the last snapshot is 12 s old" in alert.text
    assert f"task log   {LOG_URL}" in alert.text and f"dashboard  {PAGE}" in alert.text
    assert "Incident orderbook-stream, open since 2027-01-15T08:00:00Z" in alert.text
    # The recovery: how long, what proved it, how many failures it took.
    assert recovery.subject.endswith("(after 5 min 30 s)")
    assert "orderbook_health/check_health succeeded: last_snapshot 2027-01-15T08:00:58Z, snapshots_last_minute 60" in recovery.text
    assert "While open: 5 failure(s); the first: orderbook_health/check_health failed" in recovery.text
    assert "open 2027-01-15T08:00:00Z to 2027-01-15T08:05:30Z" in recovery.text


def test_a_success_about_data_from_before_the_incident_does_not_close_it(book):
    """The job died at T0 (its retry opened the incident); a health check that read the
    topic just before says all is well: its newest snapshot predates the incident."""
    chat = Recording("webhook")
    job_died = Signal(incident=STREAM_INCIDENT, dag_id="orderbook_pipeline", task_id="orderbook_job",
                      run_id="manual__z", outcome="retrying", at=T0, try_number=1, max_tries=3,
                      error="Cannot execute: spark-submit ... Error code is: -9.")
    assert report_breach(book, [chat], job_died, PAGE) is Outcome.ALERTED
    assert "What broke: orderbook_pipeline/orderbook_job failed on try 1 of 4; Airflow retries it" in chat.sent[0].text
    assert report_recovery(book, [chat], success(T0 + 2, evidence=T0 - 1), PAGE) is Outcome.NOT_PROVEN
    assert report_recovery(book, [chat], success(T0 + 4, evidence=float("-inf")), PAGE) is Outcome.NOT_PROVEN
    # The health check during the outage counts as a breach of the same incident.
    assert report_breach(book, [chat], failure(T0 + 60), PAGE) is Outcome.STILL_OPEN
    assert report_recovery(book, [chat], success(T0 + 120, evidence=T0 + 118), PAGE) is Outcome.RECOVERED
    assert len(chat.sent) == 2 and "the first: orderbook_pipeline/orderbook_job failed on try 1" in chat.sent[1].text


def test_incidents_are_per_key(book):
    chat = Recording("webhook")
    validate = "orderbook_export/validate"
    report_breach(book, [chat], failure(T0), PAGE)
    assert report_breach(book, [chat], failure(T0 + 5, incident=validate, error="3 violations"), PAGE) is Outcome.ALERTED
    assert report_recovery(book, [chat], success(T0 + 300, incident=validate), PAGE) is Outcome.RECOVERED
    assert [i.key for i in book.open_incidents()] == [STREAM_INCIDENT]
    assert [m.subject.split(": ")[0] for m in chat.sent] == ["[marketstream] ALERT"] * 2 + ["[marketstream] RECOVERED"]


def test_a_failed_channel_is_retried_at_the_next_signal_and_nothing_is_sent_twice(book):
    chat, mail = Recording("webhook"), Recording("email")
    mail.down = True
    with pytest.raises(AlertNotDelivered, match="the alert of incident orderbook-stream not delivered .* email: "
                                                "ConnectionError: email is down"):
        report_breach(book, [chat, mail], failure(T0), PAGE)
    assert len(chat.sent) == 1 and mail.sent == []
    mail.down = False
    assert report_breach(book, [chat, mail], failure(T0 + 60), PAGE) is Outcome.ALERTED
    assert len(chat.sent) == 1 and len(mail.sent) == 1 and mail.sent[0] == chat.sent[0]  # the original alert

    chat.down = True
    with pytest.raises(AlertNotDelivered, match="the recovery"):
        report_recovery(book, [chat, mail], success(T0 + 120), PAGE)
    assert len(mail.sent) == 2 and len(book.open_incidents()) == 1  # closed, recovery owed to the webhook
    chat.down = False
    assert report_recovery(book, [chat, mail], success(T0 + 180), PAGE) is Outcome.RECOVERED
    assert len(chat.sent) == 2 and len(mail.sent) == 2 and chat.sent[1] == mail.sent[1]
    assert book.open_incidents() == []


def test_a_breach_while_a_recovery_is_still_owed_starts_a_new_incident(book):
    chat = Recording("webhook")
    report_breach(book, [chat], failure(T0), PAGE)
    chat.down = True
    with pytest.raises(AlertNotDelivered):
        report_recovery(book, [chat], success(T0 + 100), PAGE)
    chat.down = False
    assert report_breach(book, [chat], failure(T0 + 200), PAGE) is Outcome.ALERTED
    assert [i.opened_at for i in book.open_incidents()] == [T0 + 200]
    assert len(chat.sent) == 2 and all(m.subject.startswith("[marketstream] ALERT") for m in chat.sent)


def test_without_channels_the_incident_is_tracked_and_closed_quietly(book):
    assert report_breach(book, [], failure(T0), PAGE) is Outcome.UNANNOUNCED
    assert report_breach(book, [], failure(T0 + 60), PAGE) is Outcome.STILL_OPEN
    assert report_recovery(book, [], success(T0 + 120), PAGE) is Outcome.UNANNOUNCED
    assert book.open_incidents() == []
    # Nobody heard of it: a channel configured since gets no recovery out of the blue.
    chat = Recording("webhook")
    report_breach(book, [], failure(T0 + 200), PAGE)
    assert report_recovery(book, [chat], success(T0 + 260), PAGE) is Outcome.UNANNOUNCED
    assert chat.sent == []


def test_the_book_is_bounded(book, monkeypatch):
    monkeypatch.setattr(incidents, "MAX_OPEN_INCIDENTS", 3)
    for number in range(5):
        report_breach(book, [], failure(T0 + number, incident=f"dag/task{number}"), PAGE)
    assert [i.key for i in book.open_incidents()] == ["dag/task2", "dag/task3", "dag/task4"]


def test_the_webhook_gets_slack_json_and_errors_name_the_status():
    message = Message("subject", "ALERT marketstream: x is broken\nWhat broke: y")
    with WebhookReceiver() as receiver:
        WebhookChannel(receiver.url).send(message)
        assert receiver.bodies == [{"text": message.text}]
        receiver.status = 500
        with pytest.raises(RuntimeError, match="webhook answered 500: refused"):
            WebhookChannel(receiver.url).send(message)
    assert len(receiver.bodies) == 1


def test_a_delivered_alert_leaves_the_webhook_url_out_of_the_log(caplog):
    """Airflow keeps a task's INFO lines, shown in its UI: httpx's request line would carry
    the URL, here a secret."""
    with WebhookReceiver() as receiver, caplog.at_level(logging.DEBUG):
        url = f"{receiver.url}/T0SECRET/xoxsecretpart"
        WebhookChannel(url).send(Message("subject", "ALERT marketstream: x is broken"))
        assert receiver.bodies
    assert "xoxsecretpart" not in caplog.text


def _breach_from_another_process(path: str, url: str, at: float, start) -> str:
    start.wait()
    return report_breach(IncidentBook(path), [WebhookChannel(url)], failure(at), PAGE).value


def test_task_processes_reporting_at_once_send_one_alert(tmp_path):
    """The job's retry callback and a health check fail in the same second, in separate
    processes: the book's write lock lets one of them send the alert. The webhook takes
    half a second to answer, so the others report while the first one is delivering."""
    path = str(tmp_path / "alerts.sqlite")
    with WebhookReceiver() as receiver, multiprocessing.get_context("spawn").Manager() as manager:
        receiver.delay_s = 0.5
        start = manager.Event()
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pending = [pool.apply_async(_breach_from_another_process, (path, receiver.url, T0 + i / 10, start))
                       for i in range(4)]
            start.set()
            outcomes = sorted(p.get(timeout=60) for p in pending)
        assert outcomes == ["alerted", "still_open", "still_open", "still_open"]
        assert len(receiver.texts()) == 1
    [row] = sqlite3.connect(path).execute("SELECT breaches FROM incidents").fetchall()
    assert row == (4,)


def test_settings_choose_the_channels_and_refuse_bad_values():
    assert configured_channels(load_settings()) == []
    settings = load_settings(alert_webhook_url="https://hooks.slack.com/services/T0/B0/x", alert_email_to="ops@example.com, desk@example.com")
    assert [c.name for c in configured_channels(settings)] == ["webhook", "email"]
    assert configured_channels(settings)[1].to == ["ops@example.com", "desk@example.com"]
    with pytest.raises(SystemExit, match="ALERT_WEBHOOK_URL: .*expected an http:// or https:// URL"):
        load_settings(alert_webhook_url="hooks.slack.com/services/x")
    with pytest.raises(SystemExit, match="ALERT_EMAIL_TO: .*not an email address: 'ops'"):
        load_settings(alert_email_to="ops")
    assert load_settings(dashboard_url="https://desk.example/").dashboard_link == "https://desk.example"
    assert load_settings(dashboard_port=8600).dashboard_link == "http://127.0.0.1:8600"


def test_durations_read_naturally():
    assert [format_duration(s) for s in (4.4, 65, 3600 + 180)] == ["4 s", "1 min 5 s", "1 h 3 min"]


SEND_EMAIL = """
from marketstream.alerts.channels import EmailChannel
from marketstream.alerts.messages import Message
EmailChannel(["ops@example.com", "desk@example.com"]).send(
    Message("[marketstream] ALERT: the order-book stream", "ALERT marketstream: x is broken\\nWhat broke: <y>"))
"""


def test_email_goes_through_airflows_smtp_connection(tmp_path):
    """A real SMTP server on loopback, the ``smtp_default`` connection from the environment
    as compose sets it, Airflow's SMTP provider sending (in a process of its own, like a task)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd  # the stdlib's SMTP server (Python 3.11): enough for one test

    received = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append((mailfrom, rcpttos, data.decode()))

    server = Server(("127.0.0.1", 0), None)
    port = server.socket.getsockname()[1]
    loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1, "count": 600}, daemon=True)
    loop.start()
    try:
        env = python_env(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW_CONN_SMTP_DEFAULT=(
            f"smtp://127.0.0.1:{port}?from_email=alerts%40example.com&disable_tls=true&disable_ssl=true"))
        done = subprocess.run([sys.executable, "-c", SEND_EMAIL], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.close()
    [(sender, recipients, data)] = received
    assert sender == "alerts@example.com" and recipients == ["ops@example.com", "desk@example.com"]
    mail = email.message_from_string(data)
    assert mail["Subject"] == "[marketstream] ALERT: the order-book stream"
    [html_part] = [part for part in mail.walk() if part.get_content_type() == "text/html"]
    body = html_part.get_payload(decode=True).decode()
    assert body == "<pre>ALERT marketstream: x is broken\nWhat broke: &lt;y&gt;</pre>"  # the text, escaped


def test_the_test_command_reaches_each_channel_and_says_so():
    command = [sys.executable, "-m", "marketstream.alerts", "test"]
    with WebhookReceiver() as receiver:
        sent = subprocess.run(command, env=python_env(ALERT_WEBHOOK_URL=receiver.url, ALERT_EMAIL_TO=""), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert (sent.returncode, sent.stdout) == (0, "webhook: sent\n")
        assert receiver.texts()[0].startswith("TEST marketstream: alerts from ")
        receiver.status = 404
        refused = subprocess.run(command, env=python_env(ALERT_WEBHOOK_URL=receiver.url, ALERT_EMAIL_TO=""), cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "webhook: FAILED: RuntimeError: webhook answered 404" in refused.stderr
    none = subprocess.run(command, env=python_env(ALERT_WEBHOOK_URL="", ALERT_EMAIL_TO=""), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "set ALERT_WEBHOOK_URL" in none.stderr


def test_a_long_error_keeps_its_start_and_its_end(book):
    """spark-submit's exception starts with the whole command line and ends with the job's
    last output and exit code: both ends stay in the alert."""
    chat = Recording("webhook")
    error = "Cannot execute: spark-submit " + "--conf x=y " * 800 + "\nLast output: Error code is: -9."
    report_breach(book, [chat], failure(T0, error=error), PAGE)
    text = chat.sent[0].text
    assert "Cannot execute: spark-submit --conf" in text and text.count("Error code is: -9.") == 1
    assert "characters left out" in text and len(text) < 2500


def test_the_webhook_url_is_a_secret_never_shown_not_even_when_it_is_wrong(capsys):
    secret_path = "T0SECRET/B0SECRET/xoxsecretpart"
    settings = load_settings(alert_webhook_url=f"https://hooks.slack.com/services/{secret_path}")
    assert secret_path not in repr(settings) and secret_path not in str(settings)
    assert configured_channels(settings)[0].url == f"https://hooks.slack.com/services/{secret_path}"
    with pytest.raises(SystemExit) as refused:
        load_settings(alert_webhook_url=f"hooks.slack.com/services/{secret_path}")
    message = str(refused.value)
    assert "ALERT_WEBHOOK_URL" in message and "expected an http:// or https:// URL" in message
    assert secret_path not in message
    with pytest.raises(SystemExit) as refused:
        load_settings(alert_webhook_url=f"ftp://hooks.slack.com/services/{secret_path}")
    assert secret_path not in str(refused.value) and "'ftp'" in str(refused.value)
