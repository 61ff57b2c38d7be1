"""The incident rules and the book that keeps them across task processes.

An incident is an alert key that is open. ``report_breach`` (a task failed, the health
check found a breach) opens it and sends the alert to every channel; while it is open,
further breaches only count. ``report_recovery`` (the task succeeded) closes it and sends
the recovery to the channels that got the alert: one message when it breaks, one when it
ends, however many runs fail in between.

- A success may carry evidence (``Signal.evidence_time``, e.g. the newest snapshot the
  health check saw): when that predates the incident's opening, the success is about the
  time before the breach (a check that read the topic before the job died) and closes
  nothing.
- A channel that fails keeps its message pending: the next signal of the incident tries
  it again; a delivered message is never sent again. An incident whose alert reached no
  channel closes without a recovery (nobody was told it broke).

The book is one SQLite file (``ALERT_STATE_PATH``): each decision, delivery included, is
one ``BEGIN IMMEDIATE`` transaction, so two task processes reporting at once (the job's
retry and a health check) cannot both send the alert. One row per open incident; keys
come from the DAGs' wiring, and ``MAX_OPEN_INCIDENTS`` bounds the file anyway.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator, Sequence

from marketstream.alerts.channels import Channel
from marketstream.alerts.messages import Message, Signal, alert_message, recovery_message

log = logging.getLogger(__name__)

MAX_OPEN_INCIDENTS = 500
# Another process may hold the book while it delivers (webhook 10 s, SMTP up to 30 s).
LOCK_TIMEOUT_SECONDS = 120.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    key TEXT PRIMARY KEY,
    opened_at REAL NOT NULL,
    cause TEXT NOT NULL,              -- the first breach, one line
    breaches INTEGER NOT NULL,        -- breaches reported while open
    alert TEXT NOT NULL,              -- the alert message (JSON: subject, text)
    alerted TEXT NOT NULL,            -- JSON list of channels that got it
    closed_at REAL,                   -- set once a success closed it
    recovery TEXT,                    -- the recovery message (JSON), once closed
    recovered TEXT NOT NULL           -- JSON list of channels that got the recovery
)
"""


class Outcome(str, Enum):
    ALERTED = "alerted"  # opened, alert delivered (to at least one channel)
    STILL_OPEN = "still_open"  # a breach of an open incident: nothing sent
    RECOVERED = "recovered"  # closed, recovery delivered
    NOT_OPEN = "not_open"  # a success without an open incident: nothing sent
    NOT_PROVEN = "not_proven"  # a success about data older than the incident: still open
    UNANNOUNCED = "unannounced"  # opened or closed with no channel that took the message


class AlertNotDelivered(Exception):
    """Some channel refused a message; it stays pending for the incident's next signal."""


@dataclass
class Incident:
    key: str
    opened_at: float
    cause: str
    breaches: int
    alert: Message
    alerted: list[str] = field(default_factory=list)
    closed_at: float | None = None
    recovery: Message | None = None
    recovered: list[str] = field(default_factory=list)


def _message(text: str | None) -> Message | None:
    return None if text is None else Message(**json.loads(text))


def _text(message: Message | None) -> str | None:
    return None if message is None else json.dumps({"subject": message.subject, "text": message.text})


class IncidentBook:
    """The open incidents, in a SQLite file shared by every task process."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @contextmanager
    def transaction(self) -> Iterator["_Transaction"]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: decide and deliver alone
            db.execute(SCHEMA)
            yield _Transaction(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def open_incidents(self) -> list[Incident]:
        with self.transaction() as tx:
            return tx.all()


class _Transaction:
    COLUMNS = "key, opened_at, cause, breaches, alert, alerted, closed_at, recovery, recovered"

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    @staticmethod
    def _incident(row: tuple) -> Incident:
        key, opened_at, cause, breaches, alert, alerted, closed_at, recovery, recovered = row
        return Incident(key, opened_at, cause, breaches, _message(alert), json.loads(alerted), closed_at,
                        _message(recovery), json.loads(recovered))

    def get(self, key: str) -> Incident | None:
        row = self.db.execute(f"SELECT {self.COLUMNS} FROM incidents WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._incident(row)

    def all(self) -> list[Incident]:
        rows = self.db.execute(f"SELECT {self.COLUMNS} FROM incidents ORDER BY opened_at").fetchall()
        return [self._incident(row) for row in rows]

    def put(self, incident: Incident) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO incidents ({self.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (incident.key, incident.opened_at, incident.cause, incident.breaches, _text(incident.alert),
             json.dumps(incident.alerted), incident.closed_at, _text(incident.recovery),
             json.dumps(incident.recovered)),
        )

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM incidents WHERE key = ?", (key,))

    def make_room(self) -> None:
        """Keep at most ``MAX_OPEN_INCIDENTS - 1`` rows before a new one: forget the oldest."""
        (count,) = self.db.execute("SELECT count(*) FROM incidents").fetchone()
        if count >= MAX_OPEN_INCIDENTS:
            log.warning("%d open incidents: forgetting the oldest %d", count, count - MAX_OPEN_INCIDENTS + 1)
            self.db.execute("DELETE FROM incidents WHERE key IN (SELECT key FROM incidents ORDER BY opened_at LIMIT ?)",
                            (count - MAX_OPEN_INCIDENTS + 1,))


def _deliver(channels: Sequence[Channel], message: Message) -> tuple[list[str], list[str]]:
    """Send to each channel; the names delivered, and the failures as sentences."""
    delivered, failures = [], []
    for channel in channels:
        try:
            channel.send(message)
            delivered.append(channel.name)
        except Exception as exc:  # any channel error: the others still get the message
            failures.append(f"{channel.name}: {type(exc).__name__}: {exc}")
    return delivered, failures


def _raise_failures(key: str, kind: str, failures: list[str]) -> None:
    if failures:
        raise AlertNotDelivered(f"{kind} of incident {key} not delivered (retried at its next signal): "
                                + "; ".join(failures))


def report_breach(book: IncidentBook, channels: Sequence[Channel], signal: Signal, dashboard_page_url: str) -> Outcome:
    """A breach of ``signal.incident``: open it and alert, or count it if it is open.
    Raises ``AlertNotDelivered`` (after recording what was delivered) when a channel failed."""
    key = signal.incident
    with book.transaction() as tx:
        incident = tx.get(key)
        opened = incident is None or incident.closed_at is not None
        if opened:
            # A new incident. One closed whose recovery some channel has not taken yet is
            # replaced: that channel hears of the new breach rather than of a recovery.
            if incident is None:
                tx.make_room()
            incident = Incident(key, signal.at, signal.what, 1, alert_message(key, signal, dashboard_page_url))
        else:
            incident.breaches += 1
        pending = [c for c in channels if c.name not in incident.alerted]
        delivered, failures = _deliver(pending, incident.alert)
        incident.alerted += delivered
        tx.put(incident)
    if opened:
        log.info("incident %s opened, alert to %s:\n%s", key, delivered or "no channel", incident.alert.text)
    else:
        log.info("incident %s still open (breach %d)%s", key, incident.breaches,
                 f": alert now delivered to {delivered}" if delivered else ": nothing sent")
    _raise_failures(key, "the alert", failures)
    if delivered:
        return Outcome.ALERTED
    if opened and not channels:
        log.warning("no alert channel is configured (ALERT_WEBHOOK_URL, ALERT_EMAIL_TO): nobody was told")
        return Outcome.UNANNOUNCED
    return Outcome.STILL_OPEN


def report_recovery(book: IncidentBook, channels: Sequence[Channel], signal: Signal, dashboard_page_url: str) -> Outcome:
    """A success for ``signal.incident``: close it and send the recovery to the channels
    that got its alert. Raises ``AlertNotDelivered`` when a channel failed."""
    key = signal.incident
    with book.transaction() as tx:
        incident = tx.get(key)
        if incident is None:
            return Outcome.NOT_OPEN
        if incident.closed_at is None:
            if signal.evidence_time is not None and signal.evidence_time < incident.opened_at:
                log.info("incident %s stays open: %s saw data up to %.0f, from before the incident (%.0f)",
                         key, signal.task, signal.evidence_time, incident.opened_at)
                return Outcome.NOT_PROVEN
            incident.closed_at = signal.at
            incident.recovery = recovery_message(key, incident.opened_at, incident.cause, incident.breaches, signal,
                                                 dashboard_page_url)
        names = {c.name for c in channels}
        # Channels that got the alert and are still configured are owed the recovery.
        owed = [name for name in incident.alerted if name in names and name not in incident.recovered]
        delivered, failures = _deliver([c for c in channels if c.name in owed], incident.recovery)
        incident.recovered += delivered
        if all(name in incident.recovered for name in owed):
            tx.delete(key)
        else:
            tx.put(incident)
    log.info("incident %s closed, recovery to %s:\n%s", key, delivered or "no channel", incident.recovery.text)
    _raise_failures(key, "the recovery", failures)
    return Outcome.RECOVERED if incident.recovered else Outcome.UNANNOUNCED
