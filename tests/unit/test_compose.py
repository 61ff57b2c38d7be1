"""docker-compose.yml, the Dockerfiles, .env.example and monitoring/prometheus.yml, read as
files: every service has a healthcheck that asks its own process, dependencies wait for
health or completion, secrets have no default, published ports bind to BIND_ADDRESS,
Kafka keeps its data on its volume, defaults match settings.py, and every setting the code
reads is set for the containers. tests/unit/test_compose_cli.py runs the real tools."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from marketstream.settings import Settings
from tests.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"
# Services named in docs/deployment.md (its services table).
EXPECTED_SERVICES = {
    "kafka", "postgres", "marketstream-init", "spark-master", "spark-worker",
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "order-emulator", "exchange-emulator", "market-data-emulator", "trade-listener", "trade-loader", "dashboard",
    "prometheus", "grafana",
}
ONE_SHOT = {"marketstream-init", "airflow-init"}
# Settings whose embedded default is right inside the containers too (derived from the
# project root, which is /opt/marketstream there, or Airflow's own AIRFLOW_HOME).
CONTAINER_DEFAULTS = {"airflow_home", "market_data_rate_limit_path", "validation_cache_dir",
                      # make run's own (its log files)
                      "log_dir",
                      # make run's own broker (compose runs the kafka service)
                      "embedded_kafka_dir", "embedded_kafka_controller_port"}
# Settings only the containers that need them get (a secret is no business of the others).
NEED_TO_KNOW = {"spark_authenticate_secret", "airflow_password"}
# Prometheus endpoints of the project's processes: container port settings.
METRICS_PORTS = {"PRODUCER_METRICS_PORT": 9101, "LISTENER_METRICS_PORT": 9102,
                 "LOADER_METRICS_PORT": 9103, "ORDERBOOK_METRICS_PORT": 9104}
# What each long-running service's healthcheck must ask: its own process, on its own port.
PROCESS_PROBES = {
    "order-emulator": "os.environ['PRODUCER_METRICS_PORT'] + '/metrics'",
    "trade-listener": "os.environ['LISTENER_METRICS_PORT'] + '/metrics'",
    "trade-loader": "os.environ['LOADER_METRICS_PORT'] + '/metrics'",
    "exchange-emulator": "connect('ws://127.0.0.1:' + os.environ['EXCHANGE_PORT']",
    "market-data-emulator": "os.environ['MARKET_DATA_PORT'] + '/openapi.yaml'",
    "dashboard": "os.environ['DASHBOARD_PORT'] + '/_stcore/health'",
    "spark-master": "http://127.0.0.1:8081/json/",
    "spark-worker": "http://127.0.0.1:8082/json/",
    "airflow-apiserver": "http://127.0.0.1:8080/api/v2/version",
    "airflow-scheduler": "http://127.0.0.1:8974/health",
    "airflow-dag-processor": 'airflow jobs check --job-type DagProcessorJob --hostname "$${HOSTNAME}"',
    "airflow-triggerer": 'airflow jobs check --job-type TriggererJob --hostname "$${HOSTNAME}"',
    "kafka": "kafka-broker-api-versions.sh --bootstrap-server localhost:9092",
    "postgres": "pg_isready",
    "prometheus": "http://127.0.0.1:9090/-/healthy",
    "grafana": "http://127.0.0.1:3000/api/health",
}
BIND = "${BIND_ADDRESS:-127.0.0.1}:"


def load_compose_env_script():
    """docker/compose_env.py, the stdlib-only script behind `make compose-env`."""
    spec = importlib.util.spec_from_file_location("compose_env", ROOT / "docker" / "compose_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_code() -> str:
    """docker-compose.yml without its comments."""
    return "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))


def services(compose) -> dict:
    return compose["services"]


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_every_documented_service_exists_with_a_healthcheck(compose):
    assert set(services(compose)) == EXPECTED_SERVICES
    for name, service in services(compose).items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
    documented = (ROOT / "docs" / "deployment.md").read_text()
    for name in EXPECTED_SERVICES:
        assert f"`{name}`" in documented, f"{name} missing from docs/deployment.md"


def test_healthchecks_ask_the_process_itself(compose):
    for name, service in services(compose).items():
        text = healthcheck_text(service)
        if name in ONE_SHOT:
            assert service["healthcheck"]["test"] == ["CMD", "true"], name
            continue
        assert PROCESS_PROBES[name] in text, f"{name}: healthcheck {text!r} does not ask its own process"
        if name != "kafka":
            assert "marketstream.broker" not in text and "9092" not in text, f"{name} probes the broker: {text!r}"
        for variable in re.findall(r"os\.environ\['([A-Z_]+)'\]", text):
            assert variable in service["environment"], f"{name}: healthcheck reads {variable}, not set for it"
    # The scheduler's /health answers only with Airflow's health-check server on.
    assert compose["x-airflow-common"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_metrics_ports_are_fixed_and_scraped(compose):
    env = compose["x-marketstream-env"]
    for name, port in METRICS_PORTS.items():
        assert env[name] == str(port), f"{name}={env[name]!r}, expected {port}"
        if name.lower() in Settings.model_fields:  # a port the settings module defines
            assert Settings.model_fields[name.lower()].default == port, name
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        job["job_name"]: (target, job.get("metrics_path", "/metrics"))
        for job in scrape["scrape_configs"] for group in job["static_configs"] for target in group["targets"]
    }
    assert targets["order-emulator"] == (f"order-emulator:{env['PRODUCER_METRICS_PORT']}", "/metrics")
    assert targets["trade-listener"] == (f"trade-listener:{env['LISTENER_METRICS_PORT']}", "/metrics")
    assert targets["trade-loader"] == (f"trade-loader:{env['LOADER_METRICS_PORT']}", "/metrics")
    # The Spark driver runs in the scheduler's container (client mode).
    assert targets["orderbook-job"] == (f"airflow-scheduler:{env['ORDERBOOK_METRICS_PORT']}", "/metrics")
    assert targets["spark-driver"] == ("airflow-scheduler:4040", "/metrics/prometheus/")
    assert targets["spark-executors"] == ("airflow-scheduler:4040", "/metrics/executors/prometheus")
    assert targets["spark-master"] == ("spark-master:8081", "/metrics/master/prometheus/")
    assert targets["spark-applications"] == ("spark-master:8081", "/metrics/applications/prometheus/")
    assert targets["spark-worker"] == ("spark-worker:8082", "/metrics/prometheus/")
    for job, (target, _) in targets.items():
        host = target.split(":")[0]
        assert host == "127.0.0.1" or host in services(compose), f"{job}: {host} is no compose service"
    for name in ("spark-master", "spark-worker"):
        opts = services(compose)[name]["environment"]["SPARK_DAEMON_JAVA_OPTS"]
        assert "sink.prometheusServlet.class=org.apache.spark.metrics.sink.PrometheusServlet" in opts


def test_prometheus_is_optional_pinned_and_local(compose):
    prometheus = services(compose)["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert re.fullmatch(r"prom/prometheus:\$\{PROMETHEUS_VERSION:-v\d+\.\d+\.\d+\}", prometheus["image"])
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    for name, service in services(compose).items():
        assert "prometheus" not in service.get("depends_on", {}), f"{name} must start without the monitoring profile"
    # Prometheus loads the alerting rules beside its configuration.
    assert "./monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    assert yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"] == ["alerts.yml"]


def test_grafana_is_optional_pinned_local_and_provisioned(compose):
    grafana = services(compose)["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    assert re.fullmatch(r"grafana/grafana:\$\{GRAFANA_VERSION:-\d+\.\d+\.\d+\}", grafana["image"])
    assert grafana["ports"] == [BIND + "${GRAFANA_PORT:-3000}:3000"]
    # No well-known admin password, no sign-up.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    assert mounts["/etc/grafana/dashboards"] == "./monitoring/grafana/dashboards"
    # The provisioned data source is the compose Prometheus, under the uid the dashboard uses;
    # the dashboard provider reads the mounted folder, the home dashboard is in it.
    root = ROOT / "monitoring" / "grafana"
    [source] = yaml.safe_load((root / "provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["url"], source["uid"]) == ("prometheus", "http://prometheus:9090", "prometheus")
    [provider] = yaml.safe_load((root / "provisioning/dashboards/marketstream.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/etc/grafana/dashboards/") and (root / "dashboards" / home.rsplit("/", 1)[1]).is_file()


def test_dependencies_wait_for_health_or_completion(compose):
    names = set(services(compose))
    for name, service in services(compose).items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for target, rule in depends.items():
            assert target in names, f"{name} depends on unknown service {target}"
            expected = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {target}: {rule['condition']}"
    for name in ONE_SHOT:
        assert services(compose)[name]["restart"] == "no"
    airflow = {n for n in names if n.startswith("airflow-") and n != "airflow-init"}
    for name in airflow:
        assert "airflow-init" in services(compose)[name]["depends_on"]
        assert "marketstream-init" in services(compose)[name]["depends_on"]


def test_published_ports_bind_to_the_bind_address_and_do_not_clash(compose):
    hosts = []
    for name, service in services(compose).items():
        for mapping in service.get("ports", []):
            assert isinstance(mapping, str) and mapping.startswith(BIND), f"{name}: {mapping!r} not bound to BIND_ADDRESS"
            host_port = re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", mapping[len(BIND):]).split(":")[0]
            hosts.append((name, host_port))
    ports = [p for _, p in hosts]
    assert len(ports) == len(set(ports)), f"clashing host ports: {hosts}"
    assert {("airflow-apiserver", "8080"), ("dashboard", "8501"), ("kafka", "9094"), ("prometheus", "9090")} <= set(hosts)


def test_kafka_keeps_its_data_on_its_volume(compose):
    kafka = services(compose)["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].split(",")
    named = {}
    for volume in kafka["volumes"]:
        source, target = volume.split(":")[:2]
        if source in compose["volumes"]:
            named[target.rstrip("/")] = source
    for log_dir in log_dirs:
        owners = [t for t in named if log_dir == t or log_dir.startswith(t + "/")]
        assert owners, f"KAFKA_LOG_DIRS {log_dir} is on no named volume ({named})"
    assert named[owners[0]] == "kafka-data"
    # KRaft keeps its metadata log in the first log dir unless told otherwise.
    assert "KAFKA_METADATA_LOG_DIR" not in kafka["environment"]


def test_secrets_have_no_default_and_stop_compose_with_one_sentence(compose_code):
    required = re.findall(r"\$\{([A-Z0-9_]+):\?([^}]*)\}", compose_code)
    generated = set(load_compose_env_script().GENERATED)
    assert {name for name, _ in required} == generated, "compose requires exactly what `make compose-env` writes"
    sentences = {message for _, message in required}
    assert len(sentences) == 1, f"one sentence for every missing secret, got {sentences}"
    sentence = sentences.pop()
    assert "make compose-env" in sentence and "$" not in sentence
    for name in generated:
        # $${...} is the container's shell variable, not compose's.
        references = re.findall(r"(?<!\$)\$\{" + name + r"((?::?[-?+])[^}]*)?\}", compose_code)
        assert references and all(r.startswith(":?") for r in references), f"{name} used without :? ({references})"
    # Nothing secret-looking has a fallback value (an optional one may fall back to nothing).
    for name, default in re.findall(r"\$\{([A-Z0-9_]+):?-([^}]*)\}", compose_code):
        assert not (re.search(r"PASSWORD|SECRET|FERNET|TOKEN", name) and default), f"{name} has a default ({default!r})"
    for value in ("admin/admin", "airflow/airflow", "change-me", ":-admin}", "PASSWORD:-"):
        assert value not in compose_code, value


def test_env_example_holds_no_secret(compose_code):
    example = (ROOT / ".env.example").read_text()
    for name in load_compose_env_script().GENERATED:
        values = re.findall(rf"^#? ?{name}=(.*)$", example, flags=re.MULTILINE)
        assert values == [""], f".env.example: {name} must be listed once, empty (got {values})"


def test_compose_defaults_equal_the_code_defaults(compose_code):
    checked = 0
    for name, default in re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", compose_code):
        field = Settings.model_fields.get(name.lower())
        if field is None or field.default_factory is not None:
            continue  # a compose-only variable (ports on the host, image versions)
        code_default = str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
        assert default == code_default, f"{name}: compose default {default!r}, settings.py default {code_default!r}"
        checked += 1
    assert checked >= 30
    # Fixed container ports that healthchecks, URLs and the dashboard rely on.
    env = yaml.safe_load(COMPOSE.read_text())["x-marketstream-env"]
    for name in ("EXCHANGE_PORT", "MARKET_DATA_PORT", "DASHBOARD_PORT"):
        assert env[name] == str(Settings.model_fields[name.lower()].default), name


def test_dockerfiles_and_mounted_files_exist(compose):
    dockerfiles = {s["build"]["dockerfile"] for s in services(compose).values() if "build" in s}
    assert dockerfiles == {"docker/spark.Dockerfile", "docker/airflow.Dockerfile"}
    for dockerfile in dockerfiles:
        text = (ROOT / dockerfile).read_text()
        for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE):
            sources = [p for p in line.split() if not p.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
        # Spark's Python processes run the project root's sitecustomize (PYTHONPATH).
        assert "sitecustomize.py" in text and re.search(r"PYTHONPATH=/opt/marketstream\b", text), dockerfile
    airflow = (ROOT / "docker/airflow.Dockerfile").read_text()
    assert airflow.startswith("#") and "FROM apache/airflow:3.3.2-python3.11" in airflow
    assert "openjdk-17" in airflow and "fetch-kafka-jars.sh" in airflow
    assert "spark-sql-kafka-0-10" in (ROOT / "docker/fetch-kafka-jars.sh").read_text()
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: mounted {source} does not exist"


def test_file_ownership_follows_airflow_uid(compose):
    """Airflow's compose pattern: every Airflow container runs as AIRFLOW_UID:0; the init
    container runs as root and hands what they share (./exports, the checkpoint and auth
    volumes, the logs) to that uid before any of them starts."""
    init = services(compose)["airflow-init"]
    assert init["user"] == "0:0"
    script = init["command"][-1]
    assert "set -euo pipefail" in script
    chown = re.search(r'chown -R "\$\$\{AIRFLOW_UID\}:0" (.+)', script)
    assert chown, "airflow-init hands nothing to AIRFLOW_UID"
    handed = set(chown[1].split())
    shared = {v.split(":")[1] for v in compose["x-airflow-common"]["volumes"]}
    assert shared <= handed, f"not handed to AIRFLOW_UID: {shared - handed}"
    # The password file is written before the chown, readable by its owner only.
    assert script.index("passwords.json") < script.index("chown -R")
    assert "chmod 600 /opt/airflow/auth/passwords.json" in script
    assert init["environment"]["AIRFLOW_UID"].startswith("${AIRFLOW_UID:?")
    for name, service in services(compose).items():
        if name.startswith("airflow-") and name != "airflow-init":
            assert service["user"].startswith("${AIRFLOW_UID:?") and service["user"].endswith("}:0"), name
    dockerfile = (ROOT / "docker/airflow.Dockerfile").read_text()
    assert "chmod -R g+rwX /opt/marketstream/var /opt/marketstream/exports /opt/airflow/auth" in dockerfile


def test_module_commands_exist(compose):
    """Every `python -m X` a service runs is a module of this repository."""
    for name, service in services(compose).items():
        command = service.get("command")
        text = " ".join(command) if isinstance(command, list) else str(command or "")
        for module in re.findall(r"python -m ([\w.]+)", text):
            path = ROOT / module.replace(".", "/")
            assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), f"{name}: no module {module}"


def test_every_setting_is_set_for_the_containers(compose):
    env = compose["x-marketstream-env"]
    names = {n.upper() for n in Settings.model_fields}
    missing = sorted(names - set(env) - {n.upper() for n in CONTAINER_DEFAULTS | NEED_TO_KNOW})
    assert not missing, f"settings not passed to the containers in x-marketstream-env: {missing}"
    # Nothing may point a container at itself or at the embedded defaults.
    for key, value in env.items():
        assert "127.0.0.1" not in str(value) and "local[" not in str(value), f"{key}={value}"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://energy:") and "@postgres:5432/energy" in env["DATABASE_URL"]
    airflow_env = compose["x-airflow-common"]["environment"]
    assert '"spark://spark-master:7077"' in airflow_env["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert airflow_env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/marketstream/dags"
    for name, service in services(compose).items():
        if service.get("image", "").startswith(("${MARKETSTREAM_IMAGE", "${AIRFLOW_IMAGE")):
            assert "KAFKA_BOOTSTRAP_SERVERS" in service["environment"], name


def test_env_example_lists_every_setting_and_variable(compose_code):
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    missing = sorted({n.upper() for n in Settings.model_fields} - listed)
    assert not missing, f".env.example does not list: {missing}"
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)[:}]", compose_code))
    assert not sorted(referenced - listed), f".env.example misses compose variables: {sorted(referenced - listed)}"
    # Only the generated secrets are uncommented (and empty): copying the file changes nothing else.
    active = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert active == set(load_compose_env_script().GENERATED)


def test_spark_authenticates_with_the_generated_secret_given_only_where_needed(compose):
    daemon_options = compose["x-spark-daemon-metrics"].split()
    assert "-Dspark.authenticate=true" in daemon_options
    secret = "${SPARK_AUTHENTICATE_SECRET:?"
    for name in ("spark-master", "spark-worker"):
        environment = services(compose)[name]["environment"]
        assert environment["_SPARK_AUTH_SECRET"].startswith(secret), name  # where Spark's daemons read it
        assert environment["SPARK_DAEMON_JAVA_OPTS"] == compose["x-spark-daemon-metrics"]
    assert compose["x-airflow-common"]["environment"]["SPARK_AUTHENTICATE_SECRET"].startswith(secret)  # the driver
    assert "SPARK_AUTHENTICATE_SECRET" not in compose["x-marketstream-env"]
    for name in ("dashboard", "order-emulator", "trade-loader"):
        assert not any("AUTH" in key for key in services(compose)[name]["environment"]), name
    assert "secret" not in " ".join(daemon_options).lower()  # not on a command line


def test_project_containers_run_unprivileged_read_exports_only_and_have_memory_limits(compose):
    for name, service in services(compose).items():
        assert service.get("mem_limit"), f"{name} has no memory limit"
        image = service.get("image", "")
        if not image.startswith(("${MARKETSTREAM_IMAGE", "${AIRFLOW_IMAGE")) or name == "airflow-init":
            continue
        assert service["user"].startswith("${AIRFLOW_UID:?") and service["user"].endswith("}:0"), name
        exports = [v for v in service.get("volumes", []) if v.split(":")[1] == "/opt/marketstream/exports"]
        writes_exports = name.startswith("airflow-")  # the export DAG's tasks
        assert exports and exports[0].endswith(":ro") != writes_exports, (name, exports)
    assert services(compose)["airflow-init"]["user"] == "0:0"  # hands the shared directories over, then exits
    dockerfile = (ROOT / "docker/spark.Dockerfile").read_text()
    assert re.search(r"^USER marketstream$", dockerfile, flags=re.MULTILINE)
    assert compose["x-marketstream-common"]["build"]["args"]["MARKETSTREAM_UID"].startswith("${AIRFLOW_UID:?")
    assert "SPARK_WORKER_DIR=/opt/marketstream/var/spark-work" in dockerfile  # not under the root-owned SPARK_HOME


@pytest.mark.parametrize("dockerfile", ["airflow.Dockerfile", "spark.Dockerfile"])
def test_the_images_bake_in_the_kafka_connector_the_project_pins(dockerfile):
    """The images fetch Spark's Kafka connector by version (no Ivy in the image): the same
    versions the embedded run resolves and its tests run with (jvm/spark-kafka.lock)."""
    text = (ROOT / "docker" / dockerfile).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    locked = (ROOT / "jvm" / "spark-kafka.lock").read_text()
    scala = args["SCALA_BINARY"]
    for jar in (f"spark-sql-kafka-0-10_{scala}-{args['SPARK_KAFKA_CONNECTOR_VERSION']}.jar",
                f"spark-token-provider-kafka-0-10_{scala}-{args['SPARK_KAFKA_CONNECTOR_VERSION']}.jar",
                f"kafka-clients-{args['KAFKA_CLIENTS_VERSION']}.jar",
                f"commons-pool2-{args['COMMONS_POOL2_VERSION']}.jar"):
        assert f"__{jar}" in locked, f"{dockerfile} fetches {jar}, which jvm/spark-kafka.lock does not pin"


def test_the_dashboard_and_the_health_check_reach_airflows_api_as_admin(compose):
    """The dashboard's pipeline notice and the health check's start-up grace ask Airflow's
    REST API: at the API server's service name, as the one user the simple auth manager
    has, with the password `make compose-env` generated; nobody else gets the password."""
    env = compose["x-marketstream-env"]
    assert env["AIRFLOW_API_URL"] == "http://airflow-apiserver:8080"
    assert "airflow-apiserver" in services(compose)
    user = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]
    assert env["AIRFLOW_USERNAME"] == user
    password = "${AIRFLOW_ADMIN_PASSWORD:?"
    dashboard = services(compose)["dashboard"]["environment"]
    assert dashboard["AIRFLOW_PASSWORD"].startswith(password)
    assert dashboard["AIRFLOW_API_URL"] == env["AIRFLOW_API_URL"]  # the shared block, not replaced
    assert dashboard["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert compose["x-airflow-common"]["environment"]["AIRFLOW_PASSWORD"].startswith(password)
    assert "AIRFLOW_PASSWORD" not in env
    for name in ("order-emulator", "trade-listener", "trade-loader", "exchange-emulator", "spark-worker"):
        assert "AIRFLOW_PASSWORD" not in services(compose)[name]["environment"], name
