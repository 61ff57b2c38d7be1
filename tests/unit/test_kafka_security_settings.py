"""The Kafka security settings: checked at startup with messages naming the variables, turned
into one set of client arguments (kafka-python) and Spark connector options, and the SASL
password never shown (repr, logs, errors, printed commands)."""

from __future__ import annotations

import copy
import logging
import pickle
import subprocess
import sys

import pytest

from marketstream.kafka_io import HiddenPassword, client_security, security_options, spark_kafka_options
from marketstream.settings import SettingsError, load_settings
from tests.support import ROOT, python_env

PASSWORD = "s3cr3t-\"quoted\\-pass"


@pytest.fixture
def ca_file(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def sasl_settings(ca_file, **extra):
    return load_settings(**{"kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": ca_file,
                            "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "desk",
                            "kafka_sasl_password": PASSWORD, **extra})


def test_defaults_are_plaintext_with_one_copy_of_each_partition():
    settings = load_settings()
    assert settings.kafka_security_protocol == "PLAINTEXT" and settings.kafka_topic_replication_factor == 1
    assert client_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert spark_kafka_options(settings) == {}


def test_the_environment_reaches_every_client_argument(monkeypatch, ca_file):
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": ca_file,
                        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "desk",
                        "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SSL_CHECK_HOSTNAME": "false"}.items():
        monkeypatch.setenv(name, value)
    config = client_security(load_settings())
    assert config == {"security_protocol": "SASL_SSL", "ssl_cafile": ca_file, "ssl_check_hostname": False,
                      "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "desk",
                      "sasl_plain_password": PASSWORD}
    assert isinstance(config["sasl_plain_password"], HiddenPassword)


def test_executors_rebuild_the_same_arguments_from_string_options(ca_file):
    settings = sasl_settings(ca_file, kafka_ssl_check_hostname=False)
    options = security_options(settings)
    assert all(isinstance(v, str) for v in options.values())
    # A Spark data source hands its options over with other keys among them.
    assert client_security({**options, "bootstrap.servers": "b:9093", "topic": "orders"}) == client_security(settings)


@pytest.mark.parametrize("settings, fragment", [
    ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"},
     "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_mechanism": "PLAIN"}, "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "would send the password unencrypted"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nowhere/ca.pem"}, "KAFKA_SSL_CAFILE: no such file: '/nowhere/ca.pem'"),
    ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({"kafka_topic_replication_factor": 0}, "KAFKA_TOPIC_REPLICATION_FACTOR"),
    ({"deals_partitions": 0}, "DEALS_PARTITIONS"),
])
def test_an_incomplete_security_setting_is_refused_naming_the_variables(settings, fragment):
    with pytest.raises(SettingsError) as caught:
        load_settings(**settings)
    assert fragment in str(caught.value)


def test_a_ca_file_without_tls_is_refused(ca_file):
    with pytest.raises(SettingsError, match="KAFKA_SSL_CAFILE.*does not use TLS"):
        load_settings(kafka_ssl_cafile=ca_file)


def test_the_password_is_never_shown(ca_file, caplog):
    settings = sasl_settings(ca_file)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in repr(settings.model_dump())
    config = client_security(settings)
    hidden = config["sasl_plain_password"]
    # kafka-python logs its whole configuration at DEBUG: the dict prints asterisks.
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        logging.getLogger("kafka.admin.client").debug("Starting KafkaAdminClient with configuration: %s", config)
    assert PASSWORD not in caplog.text and "**********" in caplog.text
    assert PASSWORD not in f"{hidden}" and PASSWORD not in "%s %r" % (hidden, hidden)
    # ... while kafka-python's SASL code gets the real bytes, also from a copy.
    assert hidden.encode() == PASSWORD.encode() and "\0".join(["u", hidden]) == "u\0" + PASSWORD
    for clone in (copy.deepcopy(hidden), pickle.loads(pickle.dumps(hidden))):
        assert isinstance(clone, HiddenPassword) and clone.encode() == PASSWORD.encode()
    # A refused setting's message names the problem, not the password.
    with pytest.raises(SettingsError) as caught:
        load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password=PASSWORD)
    assert PASSWORD not in str(caught.value)


def test_a_refused_setting_at_service_start_does_not_print_the_password():
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--stdout", "--max-events", "1"], capture_output=True, text=True,
        cwd=ROOT, timeout=60, env=python_env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_USERNAME="desk",
                                             KAFKA_SASL_PASSWORD=PASSWORD),
    )
    assert result.returncode != 0 and "KAFKA_SASL_MECHANISM" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_printed_spark_submit_command_refers_to_the_password(ca_file):
    env = python_env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SSL_CAFILE=ca_file, KAFKA_SASL_MECHANISM="PLAIN",
                     KAFKA_SASL_USERNAME="desk", KAFKA_SASL_PASSWORD=PASSWORD)
    result = subprocess.run([sys.executable, "-m", "marketstream.spark", "command"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout
    assert 'KAFKA_SASL_PASSWORD="$KAFKA_SASL_PASSWORD"' in result.stdout and "KAFKA_SASL_USERNAME=desk" in result.stdout


def test_the_job_gets_the_security_settings_in_its_environment(ca_file):
    from marketstream.spark.config import job_env

    env = job_env(sasl_settings(ca_file))
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_PASSWORD"] == PASSWORD
    assert env["KAFKA_SSL_CAFILE"] == ca_file and env["KAFKA_SSL_CHECK_HOSTNAME"] == "true"


def test_spark_connector_options(ca_file, tmp_path):
    options = spark_kafka_options(sasl_settings(ca_file))
    assert options == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": ca_file,
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        # JAAS quoting: a backslash and a double quote in the password are escaped.
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                  'username="desk" password="s3cr3t-\\"quoted\\\\-pass";',
    }
    plain = spark_kafka_options(sasl_settings(ca_file, kafka_sasl_mechanism="PLAIN", kafka_ssl_check_hostname=False))
    assert plain["kafka.sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule ")
    assert plain["kafka.ssl.endpoint.identification.algorithm"] == ""

    client_pem = tmp_path / "client.pem"
    client_pem.write_text("key and certificate")
    mutual = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file,
                           kafka_ssl_certfile=str(client_pem))
    assert spark_kafka_options(mutual) == {
        "kafka.security.protocol": "SSL", "kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": ca_file,
        "kafka.ssl.keystore.type": "PEM", "kafka.ssl.keystore.location": str(client_pem)}
    separate_key = mutual.model_copy(update={"kafka_ssl_keyfile": ca_file})
    with pytest.raises(ValueError, match="one PEM file"):
        spark_kafka_options(separate_key)
