"""Launch configuration, offset capping and record packing of the Spark job (no Spark started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from marketstream.settings import SettingsError, load_settings
from marketstream.spark.config import (
    CODE_CACHE_OPTION, JOB_APPLICATION, LOG_CONFIG, ROCKSDB_PROVIDER, connector_sql_conf, job_env, spark_conf,
    submit_command,
)
from marketstream.spark.source.python_source import (
    InputOffsetsWentBack, InputRecordsLost, cap_offsets, check_no_data_loss,
)
from marketstream.spark.job import checkpoint_state_partitions


def test_config_is_cheap_and_names_the_application():
    # The DAG imports this at parse time: no pyspark import.
    code = "import sys, marketstream.spark.config; sys.exit('pyspark' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert JOB_APPLICATION.is_file() and JOB_APPLICATION.name == "orderbook_job.py"


def test_spark_conf_env_and_command_follow_settings(tmp_path):
    settings = load_settings(
        kafka_bootstrap_servers="kafka:9092", orders_topic="in", spark_master="spark://m:7077",
        spark_checkpoint_dir=tmp_path / "ck", orderbook_state_partitions=3, spark_ui_enabled=False,
    )
    conf = spark_conf(settings)
    assert conf["spark.sql.streaming.stateStore.providerClass"] == ROCKSDB_PROVIDER
    assert conf["spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.sql.streaming.noDataMicroBatches.enabled"] == "true"
    assert conf["spark.ui.enabled"] == "false"
    env = job_env(settings)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092" and env["ORDERS_TOPIC"] == "in"
    assert env["SPARK_CHECKPOINT_DIR"] == str(tmp_path / "ck") and env["SPARK_UI_ENABLED"] == "false"
    assert env["PYSPARK_PYTHON"] == settings.spark_python
    # The env round-trips: the job reads the same settings back.
    assert load_settings(**{k.lower(): v for k, v in env.items() if k.lower() in settings.model_fields}) == settings
    argv = submit_command(settings)
    assert argv[0].endswith("spark-submit") and argv[-1] == str(JOB_APPLICATION)
    assert argv[argv.index("--master") + 1] == "spark://m:7077"
    assert "spark.sql.shuffle.partitions=3" in argv


def test_cap_offsets_shares_the_budget_between_partitions():
    start, latest = {0: 0, 1: 100, 2: 50}, {0: 1000, 1: 110, 2: 1050}
    assert cap_offsets(start, latest, None) == latest
    capped = cap_offsets(start, latest, 300)
    assert sum(capped[p] - start[p] for p in capped) == 300
    assert capped[1] == 110  # the short partition is drained, the rest split fairly
    assert capped[0] - 0 in (145, 146) and capped[2] - 50 in (144, 145)
    assert cap_offsets(start, latest, 10_000) == latest
    assert cap_offsets({}, {0: 5, 3: 2}, 100) == {0: 5, 3: 2}  # a new partition starts at 0


def test_a_topic_behind_the_checkpoint_stops_the_job_with_the_fix():
    check_no_data_loss("orders", {0: 10, 1: 0}, {0: 10, 1: 4})  # caught up, or not yet read: fine
    check_no_data_loss("orders", {}, {0: 0})  # a new query
    with pytest.raises(InputOffsetsWentBack) as caught:
        check_no_data_loss("orders", {0: 5000, 1: 7}, {0: 120, 1: 9})  # the broker restarted empty
    message = str(caught.value)
    assert "partition 0 ends at 120, checkpoint at 5000" in message and "partition 1" not in message
    assert "SPARK_CHECKPOINT_DIR" in message and "make clean-state" in message
    with pytest.raises(InputOffsetsWentBack, match="partition 2 ends at .missing."):
        check_no_data_loss("orders", {2: 3}, {0: 1})


def test_records_deleted_before_the_job_read_them_stop_it_naming_the_loss():
    check_no_data_loss("orders", {0: 10, 1: 4}, {0: 20, 1: 9}, {0: 10, 1: 0})  # retention took only read records
    with pytest.raises(InputRecordsLost) as caught:
        check_no_data_loss("orders", {0: 10, 1: 4}, {0: 20, 1: 9}, {0: 15, 1: 0})
    message = str(caught.value)
    assert "partition 0: offsets 10 to 14 are gone, it now starts at 15" in message and "retention" in message


def test_the_state_partitions_of_an_existing_checkpoint_are_read_from_its_offset_log(tmp_path):
    assert checkpoint_state_partitions(tmp_path) is None  # a new checkpoint
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    (offsets / "0").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{"spark.sql.shuffle.partitions":"4"}}\n{"0":1}\n')
    (offsets / "1").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":2,"conf":{"spark.sql.shuffle.partitions":"3"}}\n{"0":2}\n')
    assert checkpoint_state_partitions(tmp_path) == 3


def test_command_line_entry_prints_the_submit_command_with_its_environment():
    env = {"PATH": "/usr/bin:/bin", "ORDERS_TOPIC": "trades-in", "SPARK_MASTER": "local[1]"}
    result = subprocess.run([sys.executable, "-m", "marketstream.spark", "command"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ORDERS_TOPIC=trades-in" in result.stdout
    assert "--master 'local[1]'" in result.stdout and result.stdout.strip().endswith(str(JOB_APPLICATION))


def test_driver_jvm_maps_the_class_archive_only_when_it_exists(tmp_path):
    archive = tmp_path / "classes.jsa"
    settings = load_settings(spark_class_archive=archive)
    options = spark_conf(settings)["spark.driver.extraJavaOptions"].split()
    assert not any("SharedArchiveFile" in o for o in options)
    assert any(o.startswith("-Dlog4j2.configurationFile=") for o in options)
    archive.write_bytes(b"x")
    assert f"-XX:SharedArchiveFile={archive}" in spark_conf(settings)["spark.driver.extraJavaOptions"].split()
    # Building one: the JVM writes it at exit instead of mapping the old one.
    dumping = spark_conf(settings, dump_classes_to=tmp_path / "new.jsa")["spark.driver.extraJavaOptions"].split()
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}" in dumping
    assert not any("SharedArchiveFile" in o for o in dumping)
    assert "spark.driver.extraJavaOptions=" + " ".join(dumping) in submit_command(settings, tmp_path / "new.jsa")


def test_jvm_options_reach_the_driver_and_the_executors(tmp_path):
    settings = load_settings(spark_class_archive=tmp_path / "none.jsa")
    conf = spark_conf(settings)
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        # by default the JIT stops at C1 (docs/deployment.md says why)
        assert conf[key].split() == [CODE_CACHE_OPTION, "-XX:TieredStopAtLevel=1",
                                     f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"]
    tuned_settings = load_settings(spark_class_archive=tmp_path / "none.jsa", spark_jvm_options="-XX:+UseSerialGC -Xss2m")
    tuned = spark_conf(tuned_settings)
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        assert tuned[key].split()[:3] == [CODE_CACHE_OPTION, "-XX:+UseSerialGC", "-Xss2m"]
        assert "-XX:TieredStopAtLevel=1" not in tuned[key]
    assert job_env(tuned_settings)["SPARK_JVM_OPTIONS"] == "-XX:+UseSerialGC -Xss2m"
    # a size of the user's own comes later, so it is the one HotSpot keeps
    larger = spark_conf(load_settings(spark_class_archive=tmp_path / "none.jsa",
                                      spark_jvm_options="-XX:ReservedCodeCacheSize=512m"))
    flags = larger["spark.executor.extraJavaOptions"].split()
    assert flags.index("-XX:ReservedCodeCacheSize=512m") > flags.index(CODE_CACHE_OPTION)
    tiered = spark_conf(load_settings(spark_class_archive=tmp_path / "none.jsa", spark_jvm_options=""))
    assert tiered["spark.driver.extraJavaOptions"].split() == [CODE_CACHE_OPTION,
                                                               f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"]


def test_a_jvm_option_that_is_not_a_flag_stops_startup():
    with pytest.raises(SettingsError, match="SPARK_JVM_OPTIONS"):
        load_settings(spark_jvm_options="TieredStopAtLevel=1")


def test_only_the_python_source_builds_projections_interpreted():
    # its rows hold up to 5,000 events: generated code per task cost more than it saved
    assert connector_sql_conf("python") == {"spark.sql.codegen.factoryMode": "NO_CODEGEN"}
    assert connector_sql_conf("jvm") == {}  # one event a row, not measured: generated code
    assert "spark.sql.codegen.factoryMode" not in spark_conf(load_settings())


def test_the_embedded_job_binds_loopback_and_a_cluster_job_leaves_it_to_the_deployment():
    local = load_settings(spark_master="local[2,4]")
    conf, env = spark_conf(local), job_env(local)
    assert conf["spark.driver.bindAddress"] == conf["spark.driver.host"] == "127.0.0.1"
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"  # where the UI binds
    assert conf["spark.ui.killEnabled"] == "false"
    cluster = load_settings(spark_master="spark://spark-master:7077")
    assert "spark.driver.bindAddress" not in spark_conf(cluster)
    assert "SPARK_LOCAL_IP" not in job_env(cluster)
    assert spark_conf(cluster)["spark.ui.killEnabled"] == "false"


def test_a_cluster_secret_turns_authentication_on_and_stays_off_the_command_line():
    secret = "s3cr3t-" + "x" * 40
    settings = load_settings(spark_master="spark://spark-master:7077", spark_authenticate_secret=secret)
    assert spark_conf(settings)["spark.authenticate"] == "true"
    assert secret not in " ".join(submit_command(settings))
    assert secret not in " ".join(job_env(settings).values())
    assert secret not in repr(settings)
    assert "spark.authenticate" not in spark_conf(load_settings())
