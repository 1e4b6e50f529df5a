from __future__ import annotations

import os
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


def _record_up(data_dir: Path, bootstrap: str, pid: int) -> None:
    from devtrail import running

    running.record(data_dir, bootstrap, "postgresql://u@127.0.0.1:5/d", None)
    body = (data_dir / running.FILE).read_text().replace(f'"pid": {os.getpid()}', f'"pid": {pid}')
    (data_dir / running.FILE).write_text(body)


def test_a_producer_finds_the_broker_of_a_running_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from devtrail.producers import ProducerSettings

    monkeypatch.delenv("DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:9092"  # nothing runs: up's default port
    _record_up(tmp_path / ".devtrail", "127.0.0.1:19092", os.getpid())  # an up on another port, alive
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:19092"
    # what is set wins, from the environment or the code
    monkeypatch.setenv("DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert ProducerSettings().kafka_bootstrap_servers == "kafka:9092"
    monkeypatch.delenv("DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS")
    assert ProducerSettings(kafka_bootstrap_servers="b:1").kafka_bootstrap_servers == "b:1"
    # the stack's own settings never take it: unset means "embed a broker" there
    stack = StackSettings()
    assert stack.embedded_kafka and stack.kafka_bootstrap_servers == "127.0.0.1:9092"
    # elsewhere, through DEVTRAIL_DATA_DIR
    monkeypatch.chdir("/")
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:9092"
    monkeypatch.setenv("DEVTRAIL_DATA_DIR", str(tmp_path / ".devtrail"))
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:19092"


def test_a_producer_ignores_the_record_of_an_up_that_is_gone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from devtrail.producers import ProducerSettings

    monkeypatch.delenv("DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DEVTRAIL_DATA_DIR", str(tmp_path))
    _record_up(tmp_path, "127.0.0.1:19092", 2**22 + 12345)  # above the kernel's pid_max default: no such process
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:9092"
    (tmp_path / "up.json").write_text("{not json")
    assert ProducerSettings().kafka_bootstrap_servers == "127.0.0.1:9092"
