"""What services call to publish devtrail events."""

from producers.context import caused_by, correlation, current_ids
from producers.errors import (
    BufferFullError,
    DeliveryError,
    PartialDeliveryError,
    ProducerClosedError,
    ProducerError,
)
from producers.loadgen import Workload, WorkloadShape
from producers.producer import EventProducer
from producers.settings import ProducerSettings
from producers.sync import SyncEventProducer

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
