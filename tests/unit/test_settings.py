import subprocess
import sys

import pytest

from marketstream.settings import SettingsError, load_settings
from tests.support import ROOT, python_env


def test_defaults_describe_the_embedded_stack():
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (settings.orders_topic, settings.orderbook_topic, settings.book_depth) == ("orders", "orderbook", 15)


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092, kafka2:29092")
    monkeypatch.setenv("BOOK_DEPTH", "40")
    settings = load_settings()
    assert settings.bootstrap_list == ["kafka:29092", "kafka2:29092"] and settings.book_depth == 40


@pytest.mark.parametrize(
    "variable, value",
    [("KAFKA_BOOTSTRAP_SERVERS", "no-port"), ("BOOK_DEPTH", "0"), ("ORDERS_TOPIC", "bad topic!"),
     ("EXCHANGE_PORT", "99999"), ("SPARK_KAFKA_CONNECTOR", "carrier-pigeon")],
)
def test_a_bad_setting_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert variable in str(caught.value)


def test_a_bad_setting_stops_a_service_at_startup_with_one_clear_line():
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--stdout", "--max-events", "1"],
        capture_output=True, text=True, cwd=ROOT, env=python_env(BOOK_DEPTH="many"), timeout=60,
    )
    assert result.returncode != 0
    assert "BOOK_DEPTH" in result.stderr and "Traceback" not in result.stderr


def test_settings_whose_largest_snapshot_would_not_fit_the_topic_are_refused(monkeypatch):
    monkeypatch.setenv("BOOK_DEPTH", "1000")
    monkeypatch.setenv("BOOK_MAX_SYMBOLS", "500")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("BOOK_DEPTH", "BOOK_MAX_SYMBOLS", "ORDERBOOK_STATE_PARTITIONS", "ORDERBOOK_MAX_MESSAGE_BYTES"):
        assert name in message
