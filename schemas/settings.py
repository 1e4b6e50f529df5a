"""Kafka connection settings shared by every service's settings class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from devtrail.schemas.topics import TopicMap

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient


class KafkaSettings(BaseSettings):
    """How to reach Kafka and name topics. Environment prefix ``DEVTRAIL_``.

    The session and heartbeat defaults (6 s / 1 s) keep consumer-group joins near 3 s;
    Kafka's 45 s default makes every join on some brokers take half of that.

    ``kafka_compression_type`` applies to what the SDK's producers send (the input topics,
    read by the processors only). zstd (level 3) shrinks the JSON ~6-7x for under 1 us of
    CPU an event and needs Kafka >= 2.1; ``none`` turns it off.

    ``kafka_shared_compression_type`` applies to what devtrail's workers publish (the clean
    and dead-letter topics, which other consumers read, and the links and changelog topics):
    snappy by default, which every client library reads (kafkajs with its pure-JavaScript
    ``kafkajs-snappy`` codec; kafkajs cannot read zstd or lz4 without native builds). Snappy
    costs about 0.4 us an event and shrinks the clean bundles ~3x; zstd, where every
    consumer reads it, ~6x for 0.7 us. (aiokafka's gzip is level 9, ~8 us an event; its lz4
    is level 9 too, ~3 us.)
    """

    model_config = SettingsConfigDict(env_prefix="DEVTRAIL_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_session_timeout_s: float = Field(default=6.0, gt=0)
    kafka_heartbeat_interval_s: float = Field(default=1.0, gt=0)
    kafka_compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    kafka_shared_compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "snappy"
    topic_prefix: str = Field(default="devtrail", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)

    @property
    def compression(self) -> str | None:
        """``compression_type`` for aiokafka producers (``None``: uncompressed)."""
        return None if self.kafka_compression_type == "none" else self.kafka_compression_type

    @property
    def shared_compression(self) -> str | None:
        """``compression_type`` for what the workers publish (``None``: uncompressed)."""
        return None if self.kafka_shared_compression_type == "none" else self.kafka_shared_compression_type

    @property
    def topics(self) -> TopicMap:
        return TopicMap(self.topic_prefix)

    def aiokafka_security(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients (security only)."""
        options: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context()
        return options

    async def started_admin(self) -> AIOKafkaAdminClient:
        """An admin client of the broker, started (the caller closes it)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap_servers, **self.aiokafka_security())
        await admin.start()
        return admin

    async def started_reader(self) -> AIOKafkaConsumer:
        """A consumer without a group, started, for offsets and metadata (the caller stops it)."""
        from aiokafka import AIOKafkaConsumer

        reader = AIOKafkaConsumer(
            bootstrap_servers=self.kafka_bootstrap_servers, group_id=None, **self.aiokafka_security()
        )
        await reader.start()
        return reader
