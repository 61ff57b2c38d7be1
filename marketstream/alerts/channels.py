"""Where alert messages go, each a ``Channel`` with a stable ``name`` (the incident book
remembers which channels got an incident's alert, so each gets its recovery too):

- ``webhook``: an HTTP POST of ``{"text": ...}`` to ``ALERT_WEBHOOK_URL``, the payload of a
  Slack incoming webhook (Mattermost, Rocket.Chat and most chat tools take it too);
- ``email``: to ``ALERT_EMAIL_TO`` through Airflow's SMTP provider, with the server, login
  and sender of Airflow's ``smtp_default`` connection (e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``).

``send`` raises on failure; the caller records what was delivered and tries the rest at
the next signal.
"""

from __future__ import annotations

import html
import logging
from typing import Protocol

import httpx

from marketstream.alerts.messages import Message
from marketstream.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10.0
SMTP_CONNECTION = "smtp_default"


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, timeout_s: float = WEBHOOK_TIMEOUT_SECONDS):
        self.url, self.timeout_s = url, timeout_s

    def send(self, message: Message) -> None:
        # Two more connection attempts for a blip; an HTTP error is not retried here (the
        # next signal retries the channel).
        with httpx.Client(transport=httpx.HTTPTransport(retries=2), timeout=self.timeout_s) as client:
            response = client.post(self.url, json={"text": message.text})
        if response.is_error:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")


class EmailChannel:
    name = "email"

    def __init__(self, to: list[str], conn_id: str = SMTP_CONNECTION):
        self.to, self.conn_id = to, conn_id

    def send(self, message: Message) -> None:
        # Airflow's own SMTP client and connection: only task processes send email.
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=self.conn_id) as hook:
            hook.send_email_smtp(to=self.to, subject=message.subject,
                                 html_content=f"<pre>{html.escape(message.text)}</pre>")


def configured_channels(settings: Settings) -> list[Channel]:
    channels: list[Channel] = []
    webhook = settings.alert_webhook_url.get_secret_value()
    if webhook:
        channels.append(WebhookChannel(webhook))
    if settings.alert_emails:
        channels.append(EmailChannel(settings.alert_emails))
    return channels
