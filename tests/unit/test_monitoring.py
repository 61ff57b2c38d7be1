"""monitoring/: the alerting rules and the Grafana dashboard, through promtool (Debian's
prometheus package, `make compose-tools`) and against what the code really exposes.

- every alert of monitoring/alerts.yml fires for its condition and stays silent otherwise
  (monitoring/tests/alerts_test.yml, `promtool test rules`), and that test can fail;
- every alert has its runbook section in docs/monitoring.md;
- every panel query of the dashboard is valid PromQL (promtool, as recording rules) and
  returns data when Prometheus holds what the platform's endpoints expose (each query
  as an alert `count(query) > 0` evaluated by promtool over the series of the real
  exporters: a misspelt metric, suffix or label selector returns nothing and fails);
- the series the rule tests feed are ones the code exposes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, tool

MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "tests" / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "marketstream.json"
RUNBOOK = ROOT / "docs" / "monitoring.md"
# Grafana's range variables, as Grafana would fill them in at a 15 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def panel_queries() -> list[tuple[str, str]]:
    """``(panel title/refId, expr)`` of every query of every panel (rows included)."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    queries = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels for t in p.get("targets", [])]
    assert len(queries) >= 20, "the dashboard lost its queries"
    return queries


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def exposed_series() -> dict[str, float]:
    """``{series: value}`` of every endpoint's exposition after some activity: the
    order-book job's (and the exports' collector), the trade listener's and loader's,
    the order emulator's."""
    from marketstream.energy.listener import ListenerMetrics
    from marketstream.energy.loader import LoaderMetrics
    from marketstream.exports.layout import export_paths, write_atomic
    from marketstream.exports.metrics import ExportCollector
    from marketstream.spark.publish.job_metrics import OrderBookMetrics
    from producer.metrics import ProducerMetrics

    series: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as exports:
        paths = export_paths(exports, datetime(2026, 11, 22, 8, 0, tzinfo=UTC), datetime(2026, 11, 22, 8, 5, tzinfo=UTC))
        write_atomic(paths.data("json"), "[]")
        write_atomic(paths.validation, json.dumps({"status": "passed"}))
        registries = []
        job = CollectorRegistry()
        orderbook = OrderBookMetrics(job)
        orderbook.observe({"num_input_events": 100, "snapshots": 1, "recovered": 1, "open_orders": 40, "lag": 3,
                           "batch_duration_ms": 420, "last_second": 1_795_334_400, "gap_first": 1, "gap_last": 2,
                           "dead_letters": 2, "dead_letters_by_code": {"invalid_json": 2}, "publish_ms": 8,
                           "snapshot_latency_ms": [650]})
        job.register(ExportCollector(exports))
        registries.append(job)
        for metrics in (ListenerMetrics(), LoaderMetrics(), ProducerMetrics()):
            registries.append(metrics.registry)
        for registry in registries:
            for family in text_string_to_metric_families(generate_latest(registry).decode()):
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                    series[f"{sample.name}{{{labels}}}"] = sample.value
    return series


def metric_names(series: dict[str, float]) -> set[str]:
    return {name.split("{")[0] for name in series}


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bmarketstream_[a-z0-9_]+", expr))


# ---------------------------------------------------------------- alerting rules


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_fires_for_its_condition_and_stays_silent_otherwise():
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    cases: dict[str, list[list]] = {}
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            cases.setdefault(check["alertname"], []).append(check.get("exp_alerts") or [])
    for name in alert_rules():
        assert any(cases.get(name, [])), f"{name}: no case where it fires"
        assert any(not expected for expected in cases.get(name, [])), f"{name}: no case where it stays silent"
    assert set(cases) <= set(alert_rules()), f"tests of alerts that do not exist: {set(cases) - set(alert_rules())}"


@pytest.mark.parametrize("mutation", [
    ("marketstream_orderbook_snapshot_seconds_since_last > 15", "marketstream_orderbook_snapshot_seconds_since_last > 60"),
    ("expr: marketstream_listener_connected == 0\n        for: 1m", "expr: marketstream_listener_connected == 0"),
    ("marketstream_loader_lag_deals > 100\n", "marketstream_loader_lags_deals > 100\n"),
])
def test_the_rule_tests_fail_when_a_rule_changes(tmp_path, mutation):
    """A threshold, a `for` or a metric name changed in the rules: promtool's test fails."""
    shutil.copytree(MONITORING, tmp_path / "monitoring")
    rules = tmp_path / "monitoring" / "alerts.yml"
    before, after = mutation
    assert before in rules.read_text()
    rules.write_text(rules.read_text().replace(before, after))
    result = promtool("test", "rules", str(tmp_path / "monitoring" / "tests" / "alerts_test.yml"))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_runbook_section():
    headings = {re.sub(r"[^a-z0-9]", "", line.lstrip("#").strip().lower())
                for line in RUNBOOK.read_text().splitlines() if line.startswith("### ")}
    for name, rule in alert_rules().items():
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/monitoring.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/monitoring.md has no '### {name}' section"
        assert rule["labels"]["severity"] in ("critical", "warning"), name


def test_the_rules_and_their_tests_use_what_the_code_exposes():
    exposed = metric_names(exposed_series())
    for name, rule in alert_rules().items():
        assert names_in(rule["expr"]) <= exposed, f"{name}: {names_in(rule['expr']) - exposed} not exposed"
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in case["input_series"]:
            assert names_in(series["series"]) <= exposed, f"{case['name']}: {series['series']} is not exposed"


def test_prometheus_loads_the_rules():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert [MONITORING / path for path in config["rule_files"]] == [ALERTS]


# ---------------------------------------------------------------- the dashboard


def test_every_panel_query_is_valid_promql(tmp_path):
    queries = panel_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": promql(expr)} for n, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: one unbalanced parenthesis is refused.
    rules["groups"][0]["rules"][0]["expr"] += ")"
    path.write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", str(path)).returncode != 0


def dashboard_data_test(tmp_path, queries: list[tuple[str, str]]) -> subprocess.CompletedProcess:
    """promtool evaluates ``count(query) > 0`` for each query over ten minutes of the
    exposed series (each growing, so rates are non-zero) and expects it to hold."""
    alerts = [{"alert": f"Query{n}", "expr": f"count({promql(expr)}) > 0"} for n, (_, expr) in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": alerts}]}))
    inputs = [{"series": name, "values": f"{value:g}+{max(abs(value), 1):g}x40"}
              for name, value in exposed_series().items()]
    test = {"rule_files": ["queries.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": inputs,
        "alert_rule_test": [{"eval_time": "10m", "alertname": rule["alert"],
                             "exp_alerts": [{"exp_labels": {}, "exp_annotations": {}}]} for rule in alerts]}]}
    (tmp_path / "queries_test.yml").write_text(yaml.safe_dump(test))
    return promtool("test", "rules", "queries_test.yml", cwd=tmp_path)


def test_every_panel_query_returns_data_from_the_platforms_endpoints(tmp_path):
    queries = panel_queries()
    result = dashboard_data_test(tmp_path, queries)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a query whose metric is misspelt, or whose suffix is wrong, returns nothing.
    broken = [("typo", "sum(rate(marketstream_orderbook_snapshot_published_total[$__rate_interval]))"),
              ("suffix", "histogram_quantile(0.5, sum by (le) (rate(marketstream_orderbook_batch_duration_seconds[1m])))")]
    result = dashboard_data_test(tmp_path, broken)
    assert result.returncode != 0
    assert "alertname: Query0" in result.stdout + result.stderr and "alertname: Query1" in result.stdout + result.stderr


def test_the_dashboard_reads_the_provisioned_data_source_and_shows_what_the_issue_names():
    dashboard = json.loads(DASHBOARD.read_text())
    source = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    queries = " ".join(expr for _, expr in panel_queries())
    for name in ("snapshots_published_total", "snapshot_latency_seconds_bucket", "batch_duration_seconds_bucket",
                 "publish_duration_seconds_bucket", "input_lag_events", "dead_letters_total",
                 "listener_deals_received_total", "loader_deals_stored_total",
                 "export_oldest_interval_start_timestamp_seconds"):
        assert name in queries, f"the dashboard does not show {name}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
