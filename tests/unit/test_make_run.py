"""``make run`` as a user starts it (its Makefile recipe and honcho), with a one-line
Procfile in place of the stack: what the stack writes is its user's alone."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

from tests.support import ROOT


def test_make_run_writes_files_and_directories_for_its_user_only(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".venv").symlink_to(sys.prefix)  # this venv, honcho included
    (tmp_path / "exports").mkdir(mode=0o755)  # left by an earlier run, open to everyone
    (tmp_path / "exports").chmod(0o755)
    (tmp_path / ".airflow").mkdir(mode=0o755)  # Airflow's home with its generated password file
    (tmp_path / ".airflow").chmod(0o755)
    (tmp_path / "Procfile").write_text("probe: echo secret > var/energy.db && mkdir var/airflow && touch exports/book.csv\n")
    result = subprocess.run(["make", "-o", "install", "run"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode)
             for name in ("var", "exports", ".airflow", "var/energy.db", "var/airflow", "exports/book.csv")}
    assert modes == {"var": 0o700, "exports": 0o700, ".airflow": 0o700, "var/energy.db": 0o600, "var/airflow": 0o700,
                     "exports/book.csv": 0o600}
