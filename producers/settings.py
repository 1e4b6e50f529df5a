"""Settings of the producer SDK (environment prefix ``DEVTRAIL_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from devtrail import running
from devtrail.schemas.settings import KafkaSettings


class ProducerSettings(KafkaSettings):
    """How the producer bundles, buffers and acknowledges.

    Attributes:
        producer_linger_ms: how long a partition's bundle may wait for more events. A full
            bundle leaves at once; the wait only matters at low rates, where it trades up
            to this much latency for fewer, larger Kafka batches. 50 ms because the
            embedded broker's fetches cost more with every batch it holds (at 5 ms, 10,000
            events/s made ~1,600 batches/s and p99 latency drifted past 2 s within a
            minute; at 50 ms it stayed under 0.6 s, docs/benchmarks.md).
        producer_bundle_max_events: events per bundle (one Kafka message) at most.
        producer_bundle_max_bytes: encoded bytes per bundle at most (an event larger than
            this travels alone).
        producer_max_pending_events: bound of events accepted but not yet acknowledged.
        producer_overflow: ``block`` waits for room, ``raise`` raises ``BufferFullError``.
            Events are never dropped.
        producer_acks: broker acknowledgement level (``all`` is the durable choice).
        producer_enable_idempotence: Kafka idempotent producer, for brokers that support
            it (the embedded broker does not). Correctness never depends on it.
        data_dir: where a local ``devtrail up`` records its addresses (``up.json``). With
            ``DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS`` unset, a producer publishes to the broker of a
            ``devtrail up`` running from there (whatever port it took), else to
            127.0.0.1:9092, ``devtrail up``'s default.
    """

    producer_linger_ms: float = Field(default=50.0, ge=0)
    producer_bundle_max_events: int = Field(default=500, ge=1, le=100_000)
    producer_bundle_max_bytes: int = Field(default=256 * 1024, ge=1024, le=8 * 1024 * 1024)
    producer_max_pending_events: int = Field(default=200_000, ge=1)
    producer_overflow: Literal["block", "raise"] = "block"
    producer_acks: Literal["all", "1", "0"] = "all"
    producer_enable_idempotence: bool = False
    data_dir: Path = Path(".devtrail")
    producer_request_timeout_ms: int = Field(default=30_000, ge=1000)

    @model_validator(mode="after")
    def _broker_of_a_running_up(self) -> Self:
        """Unset, the bootstrap servers are those of the ``devtrail up`` running from ``data_dir``."""
        if "kafka_bootstrap_servers" not in self.model_fields_set:
            found = running.find(self.data_dir)
            if found is not None and isinstance(found.get("kafka_bootstrap_servers"), str):
                self.__dict__["kafka_bootstrap_servers"] = found["kafka_bootstrap_servers"]
        return self
