"""The driver's class archive, built the way ``make install`` builds it, is one that
spark-submit's driver JVM maps: with ``-Xshare:on`` a JVM that cannot use it does not start."""

from __future__ import annotations

import subprocess

import pytest

from marketstream.embedded.apache_kafka import ApacheKafka
from marketstream.settings import load_settings
from marketstream.spark.class_archive import build
from marketstream.spark.config import driver_java_options, spark_submit_binary
from tests.support import python_env

pytestmark = pytest.mark.integration


def test_the_built_archive_is_mapped_by_the_driver_jvm(tmp_path):
    archive = build(load_settings(), tmp_path / "classes.jsa", ApacheKafka)
    assert archive.stat().st_size > 10_000_000  # Spark's classes, not an empty shell
    settings = load_settings(spark_class_archive=archive)
    options = driver_java_options(settings)
    assert f"-XX:SharedArchiveFile={archive}" in options
    app = tmp_path / "hello.py"
    app.write_text("print('driver started')\n")
    result = subprocess.run(
        [spark_submit_binary(), "--master", "local[1]", "--conf", f"spark.driver.extraJavaOptions=-Xshare:on {options}",
         str(app)], env=python_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "driver started" in result.stdout, result.stdout + result.stderr
    # The training run left nothing behind next to the archive.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.jsa", "hello.py"]
