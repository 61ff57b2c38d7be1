"""Prints what the embedded stack runs where, once the broker answers, then stays up
(``make run`` supervises it with the other processes; Ctrl-C stops them all)."""

from __future__ import annotations

import signal
import sys

from marketstream.kafka_io import wait_until_ready
from marketstream.prometheus import metrics_url
from marketstream.settings import PROJECT_ROOT, Settings, get_settings


def metrics_rows(s: Settings) -> list[tuple[str, str]]:
    """The Prometheus endpoints, one row each ("off" for a port set to 0)."""
    endpoints = [("order emulator", s.producer_metrics_port), ("trade listener", s.listener_metrics_port),
                 ("trade loader", s.loader_metrics_port), ("order-book job (while it runs)", s.orderbook_metrics_port)]
    rows = [(f"Metrics: {name}", metrics_url(s, port) if port else "off") for name, port in endpoints]
    ui = s.spark_ui_url.rstrip("/")
    return rows + [("Metrics: Spark (while the job runs)",
                    f"{ui}/metrics/prometheus/ (driver, streaming), {ui}/metrics/executors/prometheus")]


def describe() -> str:
    s = get_settings()
    rows = [
        ("Kafka broker (Tansu)", s.kafka_bootstrap_servers),
        ("Topics", f"{s.orders_topic} -> {s.orderbook_topic}; dead letters {s.deadletter_topic}; "
                   f"metrics {s.metrics_topic}; deals {s.deals_topic}"),
        ("Airflow UI", f"{s.airflow_ui_url}  (user admin, password in {PROJECT_ROOT / '.airflow'}/simple_auth_manager_passwords.json.generated)"),
        ("Dashboard", f"http://127.0.0.1:{s.dashboard_port}"),
        ("Spark UI (while the job runs)", s.spark_ui_url),
        ("Exchange websocket", s.exchange_ws_url),
        ("Market-data API", f"{s.market_data_url}/reference-price"),
        ("Exports", str(s.export_dir)),
        *metrics_rows(s),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", "marketstream embedded stack:"] + [f"  {name:<{width}}  {where}" for name, where in rows]
    lines += ["  Trigger the 'orderbook_pipeline' DAG in the Airflow UI (or run 'make demo') to start the Spark job.",
              "  Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def main() -> int:
    wait_until_ready(get_settings(), timeout_s=120)
    print(describe(), flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main())
