"""Settings of the producer SDK (environment prefix ``DEVTRAIL_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    """

    producer_linger_ms: float = Field(default=50.0, ge=0)
    producer_bundle_max_events: int = Field(default=500, ge=1, le=100_000)
    producer_bundle_max_bytes: int = Field(default=256 * 1024, ge=1024, le=8 * 1024 * 1024)
    producer_max_pending_events: int = Field(default=200_000, ge=1)
    producer_overflow: Literal["block", "raise"] = "block"
    producer_acks: Literal["all", "1", "0"] = "all"
    producer_enable_idempotence: bool = False
    producer_request_timeout_ms: int = Field(default=30_000, ge=1000)
