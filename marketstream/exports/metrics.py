"""The exports as Prometheus figures, read from the export directory when scraped: is
the newest validation passing, and which intervals are on disk (``retention``).

Served by the order-book job's driver endpoint (``ORDERBOOK_METRICS_PORT``), the
long-running process that runs beside the export directory in both deployments (the
export DAG's tasks are short-lived). A scrape reads the newest and the oldest date
folders' names and one report: a few milliseconds, whatever the retention.

- ``marketstream_export_last_validation_passed``: 1 when the newest report passed, 0
  when it failed (absent before the first report);
- ``marketstream_export_last_validated_interval_end_timestamp_seconds``: that
  interval's end;
- ``marketstream_export_oldest_interval_start_timestamp_seconds`` and
  ``marketstream_export_newest_interval_end_timestamp_seconds``: the retained range.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from marketstream.exports.retention import newest_report, retained_range
from marketstream.exports.validation import summarize_report

log = logging.getLogger(__name__)


class ExportCollector(Collector):
    def __init__(self, export_dir: Path | str):
        self.export_dir = Path(export_dir)

    def collect(self):
        try:
            newest = newest_report(self.export_dir)
            retained = retained_range(self.export_dir)
        except OSError as exc:  # the directory unreadable or changing under us: no figures this scrape
            log.warning("export figures unavailable: %s", exc)
            return
        if newest is not None:
            end, report = newest
            try:
                passed = summarize_report(report.read_text(encoding="utf-8")).status == "passed"
            except (OSError, ValueError):
                passed = False  # a report that cannot be read does not say the export is right
            yield GaugeMetricFamily("marketstream_export_last_validation_passed",
                                    "1 when the newest export's validation passed, 0 when it failed", value=int(passed))
            yield GaugeMetricFamily("marketstream_export_last_validated_interval_end_timestamp_seconds",
                                    "End of the newest exported interval with a validation report (Unix time)",
                                    value=end.timestamp())
        if retained is not None:
            yield GaugeMetricFamily("marketstream_export_oldest_interval_start_timestamp_seconds",
                                    "Start of the oldest exported interval on disk (Unix time; EXPORT_RETENTION_DAYS)",
                                    value=retained[0].timestamp())
            yield GaugeMetricFamily("marketstream_export_newest_interval_end_timestamp_seconds",
                                    "End of the newest exported interval on disk (Unix time)",
                                    value=retained[1].timestamp())
