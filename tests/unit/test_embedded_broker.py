"""The one-machine stack's in-memory broker: what a new one clears (no broker started)."""

from __future__ import annotations

from marketstream.embedded.broker import forget_previous_broker
from marketstream.settings import load_settings


def test_a_new_in_memory_broker_forgets_the_previous_ones_offsets(tmp_path):
    settings = load_settings(spark_checkpoint_dir=tmp_path / "checkpoint", validation_cache_dir=tmp_path / "cache",
                             export_dir=tmp_path / "exports")
    (settings.spark_checkpoint_dir / "offsets").mkdir(parents=True)
    (settings.validation_cache_dir).mkdir()
    settings.export_dir.mkdir()
    assert forget_previous_broker(settings) == [str(settings.spark_checkpoint_dir), str(settings.validation_cache_dir)]
    assert not settings.spark_checkpoint_dir.exists() and not settings.validation_cache_dir.exists()
    assert settings.export_dir.exists()  # exports are the user's, never touched
    assert forget_previous_broker(settings) == []
