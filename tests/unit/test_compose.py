"""docker-compose.yml, the Dockerfiles and .env.example, checked without a Docker engine:
the file parses (and `docker compose config` accepts it where the CLI exists), every
service has a healthcheck, dependencies wait for health or completion, images' files
exist, host ports do not clash, and every setting the code reads is set for containers."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from marketstream.settings import Settings
from tests.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
# Services named in docs/deployment.md (the README's services table).
EXPECTED_SERVICES = {
    "kafka", "postgres", "marketstream-init", "spark-master", "spark-worker",
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "order-emulator", "exchange-emulator", "market-data-emulator", "trade-listener", "trade-loader", "dashboard",
}
ONE_SHOT = {"marketstream-init", "airflow-init"}
# Settings whose embedded default is right inside the containers too (derived from the
# project root, which is /opt/marketstream there, or Airflow's own AIRFLOW_HOME).
CONTAINER_DEFAULTS = {"airflow_home", "market_data_rate_limit_path", "validation_cache_dir"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services(compose) -> dict:
    return compose["services"]


def test_every_documented_service_exists_with_a_healthcheck(compose):
    assert EXPECTED_SERVICES <= set(services(compose))
    for name, service in services(compose).items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
    assert (ROOT / "docs" / "deployment.md").exists()
    documented = (ROOT / "docs" / "deployment.md").read_text()
    for name in EXPECTED_SERVICES:
        assert f"`{name}`" in documented, f"{name} missing from docs/deployment.md"


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


def published_ports(compose) -> list[tuple[str, str]]:
    out = []
    for name, service in services(compose).items():
        for mapping in service.get("ports", []):
            host = re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", str(mapping)).split(":")[0]
            out.append((name, host))
    return out


def test_host_ports_do_not_clash(compose):
    ports = published_ports(compose)
    hosts = [p for _, p in ports]
    assert len(hosts) == len(set(hosts)), f"clashing host ports: {ports}"
    assert ("airflow-apiserver", "8080") in ports and ("dashboard", "8501") in ports
    assert ("kafka", "9094") in ports


def test_dockerfiles_reference_existing_files(compose):
    dockerfiles = {s["build"]["dockerfile"] for s in services(compose).values() if "build" in s}
    assert dockerfiles == {"docker/spark.Dockerfile", "docker/airflow.Dockerfile"}
    for dockerfile in dockerfiles:
        text = (ROOT / dockerfile).read_text()
        for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE):
            sources = [p for p in line.split() if not p.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    airflow = (ROOT / "docker/airflow.Dockerfile").read_text()
    assert airflow.startswith("#") and "FROM apache/airflow:3.3.2-python3.11" in airflow
    assert "openjdk-17" in airflow and "fetch-kafka-jars.sh" in airflow
    assert "spark-sql-kafka-0-10" in (ROOT / "docker/fetch-kafka-jars.sh").read_text()
    for name in ("postgres",):
        for volume in services(compose)[name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: mounted {source} does not exist"


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
    missing = sorted(names - set(env) - {n.upper() for n in CONTAINER_DEFAULTS})
    assert not missing, f"settings not passed to the containers in x-marketstream-env: {missing}"
    # Pass-through settings default to the code's own default.
    for field_name, field in Settings.model_fields.items():
        match = re.fullmatch(r"\$\{([A-Z_]+):-(.*)\}", str(env.get(field_name.upper(), "")))
        if match and field.default_factory is None:
            default = str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
            assert match[2] == default, f"{field_name.upper()}: compose default {match[2]!r}, code default {default!r}"
    # Nothing may point a container at itself or at the embedded defaults.
    for key, value in env.items():
        assert "127.0.0.1" not in str(value) and "local[" not in str(value), f"{key}={value}"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DATABASE_URL"]
    airflow_env = compose["x-airflow-common"]["environment"]
    assert '"spark://spark-master:7077"' in airflow_env["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert airflow_env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/marketstream/dags"
    for name, service in services(compose).items():
        if service.get("image", "").startswith("${MARKETSTREAM_IMAGE") or service.get("image", "").startswith("${AIRFLOW_IMAGE"):
            assert "KAFKA_BOOTSTRAP_SERVERS" in service["environment"], name


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))
    missing = sorted({n.upper() for n in Settings.model_fields} - listed)
    assert not missing, f".env.example does not list: {missing}"
    code = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    referenced = set(re.findall(r"\$\{([A-Z_]+):-", code))
    assert not sorted(referenced - listed), f".env.example misses compose variables: {sorted(referenced - listed)}"


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")), reason="no compose CLI")
def test_compose_cli_accepts_the_file():
    cli = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    result = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    if result.returncode != 0 and "unknown" in result.stderr and cli[0] == "docker":
        pytest.skip("docker CLI without the compose plugin")
    assert result.returncode == 0, result.stderr
