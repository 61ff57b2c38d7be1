"""``sitecustomize``: the interpreters Spark starts import the installed pyspark, not the
zip Spark puts first on their path (no bytecode cache for a zip: ~0.6 s a process)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import py4j
import pyspark

from sitecustomize import prefer_installed_pyspark
from tests.support import ROOT


def installed(site: Path, with_py4j: bool = True) -> Path:
    """A site directory with a pyspark package that bundles its zips, as pip's does."""
    package = site / "pyspark"
    (package / "python" / "lib").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("pyspark.zip", "py4j-0.10.9.9-src.zip"):
        zipfile.ZipFile(package / "python" / "lib" / name, "w").close()
    if with_py4j:
        (site / "py4j").mkdir()
        (site / "py4j" / "__init__.py").write_text("")
    return package / "python" / "lib"


def test_the_installed_packages_own_zips_move_behind_it(tmp_path):
    lib = installed(tmp_path / "site")
    jar, project = str(tmp_path / "spark-core.jar"), str(tmp_path / "project")
    path = [str(lib / "pyspark.zip"), str(lib / "py4j-0.10.9.9-src.zip"), jar, project, str(tmp_path / "site")]
    moved = prefer_installed_pyspark(path)
    assert moved == [str(lib / "pyspark.zip"), str(lib / "py4j-0.10.9.9-src.zip")]
    assert path == [jar, project, str(tmp_path / "site"), *moved]


def test_another_distributions_zips_and_paths_without_zips_stay(tmp_path):
    installed(tmp_path / "site")
    other = tmp_path / "opt" / "spark" / "python" / "lib"
    other.mkdir(parents=True)
    path = [str(other / "pyspark.zip"), str(other / "py4j-0.10.9.9-src.zip"), str(tmp_path / "site")]
    before = list(path)
    assert prefer_installed_pyspark(path) == [] and path == before
    plain = [str(tmp_path / "site"), str(tmp_path)]
    assert prefer_installed_pyspark(plain) == [] and plain == [str(tmp_path / "site"), str(tmp_path)]


def test_without_an_installed_py4j_the_zips_stay(tmp_path):
    lib = installed(tmp_path / "site", with_py4j=False)
    path = [str(lib / "pyspark.zip"), str(lib / "py4j-0.10.9.9-src.zip"), str(tmp_path / "site")]
    before = list(path)
    assert prefer_installed_pyspark(path) == [] and path == before


def test_an_interpreter_started_as_spark_starts_it_imports_the_installed_pyspark():
    lib = Path(pyspark.__file__).parent / "python" / "lib"
    zips = [str(lib / "pyspark.zip"), *map(str, lib.glob("py4j-*-src.zip"))]
    assert all(os.path.isfile(z) for z in zips)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*zips, str(ROOT)]))
    printed = subprocess.run(
        [sys.executable, "-c", "import pyspark.worker, py4j; print(pyspark.worker.__file__); print(py4j.__file__)"],
        env=env, cwd="/", capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    assert printed == [str(Path(pyspark.__file__).parent / "worker.py"), py4j.__file__]
