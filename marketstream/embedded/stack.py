"""Prints what the embedded stack runs where, once the broker answers, then a status line
every 10 seconds (``make run`` supervises it with the other processes and shows its
output; Ctrl-C stops them all). A pipeline run carried over from a previous ``make run``
is named as such once Airflow answers."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime

from marketstream.embedded.airflow_standalone import PASSWORD_FILE
from marketstream.embedded.status import Figures, read_status
from marketstream.kafka_io import quiet_kafka_logs, wait_until_ready
from marketstream.pipeline_state import PipelineStateUnknown, read_pipeline_state
from marketstream.prometheus import metrics_url
from marketstream.settings import Settings, get_settings

STATUS_EVERY_S = 10.0


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
        ("Kafka broker (Apache Kafka)", s.kafka_bootstrap_servers),
        ("Topics", f"{s.orders_topic} -> {s.orderbook_topic}; dead letters {s.deadletter_topic}; "
                   f"metrics {s.metrics_topic}; deals {s.deals_topic}"),
        ("Airflow UI", f"{s.airflow_ui_url}  (user admin, password in {s.airflow_home / PASSWORD_FILE})"),
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
              f"  Logs: every process's whole output in {s.log_dir}/<process>.log ('make logs SERVICE=airflow');",
              "  here: warnings and errors, and a status line every 10 s. Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def carried_over_note(settings: Settings, began: datetime) -> str | None:
    """A sentence naming a pipeline run that was running before this ``make run`` began."""
    run = read_pipeline_state(settings).started_before(began)
    if run is None:
        return None
    return (f"pipeline run {run.run_id} (started {run.start:%Y-%m-%d %H:%M:%S} UTC) is carried over from a previous "
            "'make run': Airflow starts its job again; to stop it, mark its orderbook_job task success in the Airflow UI.")


def main() -> int:
    began = datetime.now(UTC)
    # Warnings only: this process's output is the terminal's banner and status line.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    wait_until_ready(settings, timeout_s=120)
    print(describe(), flush=True)
    figures, told_pipeline = Figures(), False
    while True:
        tick = time.monotonic()
        if not told_pipeline:
            try:
                note = carried_over_note(settings, began)
                told_pipeline = True
                if note:
                    print(note, flush=True)
            except PipelineStateUnknown:
                pass  # Airflow is still starting: asked again at the next status line
        with quiet_kafka_logs():  # an unreadable topic is a "?" and one warning, not a log per try
            status = read_status(settings, figures)
        print(status.line(), flush=True)
        time.sleep(max(0.0, STATUS_EVERY_S - (time.monotonic() - tick)))


if __name__ == "__main__":
    sys.exit(main())
