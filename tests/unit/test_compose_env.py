"""`make compose-env` (docker/compose_env.py): the .env docker-compose.yml requires, with
generated secrets, written by the standard library alone and never overwritten unasked."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from tests.support import ROOT
from tests.unit.test_compose import load_compose_env_script

SCRIPT = ROOT / "docker" / "compose_env.py"
GENERATED = list(load_compose_env_script().GENERATED)


def run(output: Path, *args: str) -> subprocess.CompletedProcess:
    # -I -S: no site-packages, so any import beyond the standard library fails here.
    return subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), "--output", str(output), *args],
                          capture_output=True, text=True, timeout=30)


def values(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", path.read_text(), flags=re.MULTILINE))


def test_writes_every_required_secret_privately(tmp_path):
    env = tmp_path / ".env"
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert "docker compose up" in result.stdout
    written = values(env)
    assert list(written) == GENERATED
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    fernet = Fernet(written["AIRFLOW_FERNET_KEY"].encode())
    assert fernet.decrypt(fernet.encrypt(b"connection")) == b"connection"
    secrets = [v for k, v in written.items() if k != "AIRFLOW_UID"]
    assert len(set(secrets)) == len(secrets), "every secret is drawn on its own"
    for name in ("AIRFLOW_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "ENERGY_DB_PASSWORD"):
        # Long, and safe unescaped in a postgresql:// URL.
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", written[name]), name
    for name in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"):
        assert len(written[name]) >= 64, name
    assert written["AIRFLOW_UID"] == str(os.getuid() or 50000)
    # A second run asks nothing and changes nothing.
    before = env.read_text()
    again = run(env)
    assert again.returncode == 0 and env.read_text() == before
    assert "kept" in again.stdout and "wrote" not in again.stdout


def test_an_existing_env_keeps_its_values_and_gains_what_is_missing(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# mine\nDASHBOARD_PORT=8600\nPOSTGRES_PASSWORD=in-the-volume-already\nAIRFLOW_FERNET_KEY=\n")
    result = run(env)
    assert result.returncode == 0, result.stderr
    after = values(env)
    assert after["POSTGRES_PASSWORD"] == "in-the-volume-already"
    assert after["DASHBOARD_PORT"] == "8600" and env.read_text().startswith("# mine\n")
    assert after["AIRFLOW_FERNET_KEY"], "an empty value is missing, as for compose's :?"
    assert set(GENERATED) <= set(after)
    assert "kept POSTGRES_PASSWORD" in result.stdout


def test_force_replaces_the_generated_values_only(tmp_path):
    env = tmp_path / ".env"
    env.write_text("BIND_ADDRESS=0.0.0.0\nAIRFLOW_ADMIN_PASSWORD=admin\n")
    kept = run(env)
    assert "AIRFLOW_ADMIN_PASSWORD" in kept.stderr and "well-known default" in kept.stderr
    assert values(env)["AIRFLOW_ADMIN_PASSWORD"] == "admin"
    result = run(env, "--force")
    assert result.returncode == 0, result.stderr
    after = values(env)
    assert after["AIRFLOW_ADMIN_PASSWORD"] != "admin" and after["BIND_ADDRESS"] == "0.0.0.0"
    assert set(GENERATED) <= set(after)


def test_the_output_names_the_secrets_never_their_values(tmp_path):
    env = tmp_path / ".env"
    env.write_text("AIRFLOW_ADMIN_PASSWORD=admin\nPOSTGRES_PASSWORD=kept-db-pw-5a91\n")
    shown, secrets = "", set()
    for args in ((), (), ("--force",)):  # written, kept (with a public default), replaced
        result = run(env, *args)
        assert result.returncode == 0, result.stderr
        shown += result.stdout + result.stderr
        secrets |= {v for k, v in values(env).items() if k != "AIRFLOW_UID" and v != "admin"}
    assert "kept" in shown and "wrote" in shown and "well-known default" in shown
    assert "kept-db-pw-5a91" in secrets and len(secrets) > len(GENERATED)  # each run's values
    assert not [secret for secret in secrets if secret in shown]
