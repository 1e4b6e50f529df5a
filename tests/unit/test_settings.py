from __future__ import annotations

from pathlib import Path

import pytest

from devtrail.cli import _redact
from devtrail.settings import StackSettings


def test_settings_come_from_devtrail_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("DEVTRAIL_DEDUP_WINDOW_S", "30")
    settings = StackSettings()
    assert settings.kafka_bootstrap_servers == "k1:9092"
    assert settings.dedup_window_s == 30
    assert not settings.embedded_kafka
    assert settings.embedded_postgres


def test_bad_settings_fail_fast_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVTRAIL_PARTITIONS", "0")
    with pytest.raises(ValueError, match="partitions"):
        StackSettings()


def test_worker_environment_round_trips() -> None:
    settings = StackSettings(kafka_bootstrap_servers="k:1", topic_prefix="x", sink_group="g")
    env = settings.worker_environment()
    assert env["DEVTRAIL_TOPIC_PREFIX"] == "x"
    assert env["DEVTRAIL_SINK_GROUP"] == "g"


def test_passwords_are_not_printed() -> None:
    assert _redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert _redact("postgresql://postgres:@/devtrail?host=/tmp/x") == "postgresql://postgres:@/devtrail?host=/tmp/x"


def test_kafka_security_reaches_every_client() -> None:
    import faust

    from devtrail.consumers.processor.app import credentials as faust_credentials
    from devtrail.consumers.settings import ProcessorSettings

    settings = ProcessorSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    assert settings.aiokafka_security()["sasl_plain_password"] == "pw"
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("svc", "pw")
    assert faust_credentials(ProcessorSettings()) is None


def test_compression_is_zstd_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert StackSettings().compression == "zstd"
    monkeypatch.setenv("DEVTRAIL_KAFKA_COMPRESSION_TYPE", "none")
    assert StackSettings().compression is None
    monkeypatch.setenv("DEVTRAIL_KAFKA_COMPRESSION_TYPE", "brotli")
    with pytest.raises(ValueError, match="kafka_compression_type"):
        StackSettings()


def test_the_processor_compresses_what_it_produces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from devtrail.consumers.processor.app import build_app

    assert build_app(StackSettings(processor_data_dir=tmp_path)).conf.producer_compression_type == "snappy"
    monkeypatch.setenv("DEVTRAIL_KAFKA_SHARED_COMPRESSION_TYPE", "gzip")
    monkeypatch.setenv("DEVTRAIL_KAFKA_COMPRESSION_TYPE", "lz4")  # the SDK's: not what the processor publishes
    settings = StackSettings(processor_data_dir=tmp_path)
    assert build_app(settings).conf.producer_compression_type == "gzip"
    assert settings.compression == "lz4"
