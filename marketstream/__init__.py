"""Shared logic of the market-data streaming platform."""

import logging

# kafka-python 3 logs every connection and metadata refresh at INFO; what operators read
# are our own lines. Its warnings and errors still show.
logging.getLogger("kafka").setLevel(logging.WARNING)
# httpx logs every request's URL at INFO, and a URL can be a secret (a chat webhook's):
# Airflow keeps a task's INFO lines in its log, shown in the UI.
logging.getLogger("httpx").setLevel(logging.WARNING)
