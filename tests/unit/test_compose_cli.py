"""docker-compose.yml and monitoring/prometheus.yml through the real tools, no Docker engine:

- Debian's docker-compose (v1.29) interpolates the file with a .env written by
  `make compose-env`, checks it against its own schema and resolves it (`config`); without
  the .env it must stop with the one sentence that says what to run;
- the Compose Specification's JSON schema (vendored by check-jsonschema, pinned in
  constraints.txt) validates the file as written and as resolved;
- promtool (from Debian's prometheus package) checks the scrape configuration.

`make test` and `make test-unit` install the two Debian tools (`make compose-tools`), so
these tests fail, never skip, where they are missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, tool

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"
COMPOSE_ENV_SCRIPT = ROOT / "docker" / "compose_env.py"
SENTENCE = "run 'make compose-env' to generate .env (see docs/deployment.md)"


def write_env(path: Path, *extra: str) -> Path:
    """A .env as `make compose-env` writes it (standard library only: -I -S), plus ``extra`` lines."""
    subprocess.run([sys.executable, "-I", "-S", str(COMPOSE_ENV_SCRIPT), "--output", str(path)],
                   check=True, capture_output=True, text=True)
    if extra:
        with path.open("a") as handle:
            handle.write("\n".join(extra) + "\n")
    return path


def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    """`docker-compose config` with only ``env_file`` as input: the caller's environment
    (a developer's own POSTGRES_PASSWORD, say) must not fill in what .env lacks."""
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "--project-directory", str(ROOT), "-f", str(COMPOSE),
         "--profile", "monitoring", "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": str(env_file.parent)},
    )


def env_values(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", path.read_text(), flags=re.MULTILINE))


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory) -> Path:
    return write_env(tmp_path_factory.mktemp("compose") / ".env")


@pytest.fixture(scope="module")
def resolved(generated_env) -> dict:
    result = compose_config(generated_env)
    assert result.returncode == 0, result.stderr
    (generated_env.parent / "resolved.yml").write_text(result.stdout)
    return yaml.safe_load(result.stdout)


def published(resolved: dict) -> list[tuple[str, str, int]]:
    """(service, host address, host port) of every published port; v1 prints
    "ip:host:container/proto" strings, v2 the long syntax."""
    out = []
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                out.append((name, port.get("host_ip", ""), int(port["published"])))
            else:
                ip, host, _ = str(port).rsplit(":", 2)
                out.append((name, ip, int(host)))
    return out


def schema_check(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", *map(str, paths)],
        capture_output=True, text=True, timeout=60,
    )


def test_compose_accepts_the_file_with_a_generated_env(resolved, generated_env):
    assert set(resolved["services"]) >= {"kafka", "airflow-scheduler", "prometheus"}
    secrets = env_values(generated_env)
    airflow = resolved["services"]["airflow-scheduler"]["environment"]
    assert airflow["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW_FERNET_KEY"]
    assert airflow["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"]
    assert airflow["AIRFLOW__API__SECRET_KEY"] == secrets["AIRFLOW_API_SECRET_KEY"]
    assert f":{secrets['POSTGRES_PASSWORD']}@postgres:5432/airflow" in airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert airflow["SPARK_JVM_OPTIONS"] == "-XX:TieredStopAtLevel=1"  # the settings' default, unless .env sets it
    for name in ("dashboard", "trade-loader", "airflow-scheduler"):
        url = resolved["services"][name]["environment"]["DATABASE_URL"]
        assert url == f"postgresql+psycopg://energy:{secrets['ENERGY_DB_PASSWORD']}@postgres:5432/energy", name
    assert resolved["services"]["postgres"]["environment"]["ENERGY_DB_PASSWORD"] == secrets["ENERGY_DB_PASSWORD"]
    assert resolved["services"]["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] == secrets["AIRFLOW_ADMIN_PASSWORD"]
    assert resolved["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == secrets["GRAFANA_ADMIN_PASSWORD"]
    assert str(resolved["services"]["airflow-apiserver"]["user"]) == f"{secrets['AIRFLOW_UID']}:0"
    # $${...} is left to the container's shell (config prints it still escaped).
    assert 'chown -R "$${AIRFLOW_UID}:0"' in resolved["services"]["airflow-init"]["command"][-1]
    assert resolved["services"]["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    for name in ("spark-master", "spark-worker"):
        assert resolved["services"][name]["environment"]["_SPARK_AUTH_SECRET"] == secrets["SPARK_AUTHENTICATE_SECRET"]
    assert airflow["SPARK_AUTHENTICATE_SECRET"] == secrets["SPARK_AUTHENTICATE_SECRET"]
    assert str(resolved["services"]["spark-worker"]["user"]) == f"{secrets['AIRFLOW_UID']}:0"
    assert resolved["services"]["dashboard"]["volumes"][0].endswith("/exports:/opt/marketstream/exports:ro")
    # The dashboard and the health task log in to Airflow's API as admin with the generated password.
    for name in ("dashboard", "airflow-scheduler"):
        environment = resolved["services"][name]["environment"]
        assert environment["AIRFLOW_PASSWORD"] == secrets["AIRFLOW_ADMIN_PASSWORD"], name
        assert (environment["AIRFLOW_USERNAME"], environment["AIRFLOW_API_URL"]) == ("admin", "http://airflow-apiserver:8080")
    assert "AIRFLOW_PASSWORD" not in resolved["services"]["trade-loader"]["environment"]
    assert "${" not in re.sub(r"\$\$\{", "", yaml.safe_dump(resolved)), "a variable was not interpolated"


def test_without_env_compose_stops_with_one_sentence(tmp_path):
    empty = tmp_path / ".env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert SENTENCE in result.stderr, result.stderr
    # One secret missing is enough to stop it.
    partial = write_env(tmp_path / "partial.env")
    partial.write_text(re.sub(r"^AIRFLOW_JWT_SECRET=.*$", "AIRFLOW_JWT_SECRET=", partial.read_text(), flags=re.MULTILINE))
    result = compose_config(partial)
    assert result.returncode != 0 and SENTENCE in result.stderr, result.stderr


def test_published_ports_bind_to_loopback_unless_bind_address_says_otherwise(resolved, tmp_path):
    ports = published(resolved)
    assert len(ports) >= 10
    assert {ip for _, ip, _ in ports} == {"127.0.0.1"}, ports
    opened = compose_config(write_env(tmp_path / ".env", "BIND_ADDRESS=0.0.0.0"))
    assert opened.returncode == 0, opened.stderr
    assert {ip for _, ip, _ in published(yaml.safe_load(opened.stdout))} == {"0.0.0.0"}


def test_the_file_follows_the_compose_specification(resolved, generated_env, tmp_path):
    """The schema docker compose v2 validates against, on the file as written and on the
    model docker-compose resolved from it with a generated .env."""
    result = schema_check(COMPOSE, generated_env.parent / "resolved.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a misspelt key in one service is rejected.
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["kafka"]["healthcheck"]["retry"] = 3
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    result = schema_check(tmp_path / "broken.yml")
    assert result.returncode != 0 and "retry" in result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config(tmp_path):
    promtool = tool("promtool")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_CONFIG.read_text().replace("static_configs:", "static_config:", 1))
    result = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
