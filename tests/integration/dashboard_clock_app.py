"""A Streamlit script for the dashboard's browser test: the real health page
(``views.health_page``) at a fixed moment, 2026-12-05 23:59:40 UTC, with a job that
published every second and a batch a second of the last five minutes. The page's own
code draws it; only the clock and the data are the test's.

    python -m streamlit run tests/integration/dashboard_clock_app.py
"""

import json
from datetime import UTC, datetime

import streamlit as st

from dashboard import views
from dashboard.model import health
from dashboard.sources import HealthData

NOW = int(datetime(2026, 12, 5, 23, 59, 40, tzinfo=UTC).timestamp())
WINDOW_S = 300

st.set_page_config(page_title="marketstream", layout="wide")
seconds = range(NOW - WINDOW_S - 60, NOW - 1)
snapshots = [health.SnapshotMeta(second, number) for number, second in enumerate(seconds, start=1)]
metrics = health.metrics_view(json.dumps({
    "query": "orderbook", "batch_id": number, "timestamp": datetime.fromtimestamp(second, tz=UTC).isoformat(),
    "num_input_events": 100_000, "input_events_per_second": 123_456.7, "processed_events_per_second": 150_000.0,
    "batch_duration_ms": 812, "state_rows": 4_174_000, "start_offsets": {}, "end_offsets": {}, "latest_offsets": {},
    "lag": 1_234_567}) for number, second in enumerate(seconds))
data = HealthData(snapshots, metrics, {"orders.deadletter": (0, []), "energy.deals.deadletter": (0, [])}, [])
views.health_page(lambda: data, WINDOW_S, "http://127.0.0.1:18080", "http://127.0.0.1:14040",
                  refresh_seconds=None, clock=lambda: NOW)
