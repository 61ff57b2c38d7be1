"""Airflow reads its configuration at import: point it at a private home first."""

from __future__ import annotations

import os
import tempfile

from tests.support import ROOT

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
