"""What services call to publish devtrail events."""

from devtrail.producers.context import caused_by, correlation, current_ids
from devtrail.producers.errors import (
    BufferFullError,
    DeliveryError,
    PartialDeliveryError,
    ProducerClosedError,
    ProducerError,
)
from devtrail.producers.loadgen import Workload, WorkloadShape
from devtrail.producers.producer import EventProducer
from devtrail.producers.settings import ProducerSettings
from devtrail.producers.sync import SyncEventProducer

__all__ = [
    "BufferFullError",
    "DeliveryError",
    "EventProducer",
    "PartialDeliveryError",
    "ProducerClosedError",
    "ProducerError",
    "ProducerSettings",
    "SyncEventProducer",
    "Workload",
    "WorkloadShape",
    "caused_by",
    "correlation",
    "current_ids",
]
