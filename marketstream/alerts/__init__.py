"""Alerts that reach someone: one message when something breaks, one when it recovers.

- ``incidents``: the rules and the incident book. An incident is an alert key that is
  open; the first breach opens it and sends the alert, later breaches while it is open
  send nothing, a success closes it and sends the recovery. The book is a small SQLite
  file (``ALERT_STATE_PATH``) every task process shares, each decision one transaction;
- ``messages``: what an alert and a recovery say (what broke, where to look);
- ``channels``: where messages go: a Slack-compatible webhook (``ALERT_WEBHOOK_URL``) and,
  optionally, email through Airflow's SMTP provider (``ALERT_EMAIL_TO``);
- ``notifier``: the Airflow notifiers the DAG files wire as task callbacks
  (``OpenIncident``, ``CloseIncident``); the only module here that imports Airflow.
"""
