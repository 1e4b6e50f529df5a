"""What services call to publish devtrail events."""

from producers.errors import BufferFullError, DeliveryError, ProducerClosedError, ProducerError
from producers.loadgen import Workload, WorkloadShape
from producers.producer import EventProducer
from producers.settings import ProducerSettings

__all__ = [
    "BufferFullError",
    "DeliveryError",
    "EventProducer",
    "ProducerClosedError",
    "ProducerError",
    "ProducerSettings",
    "Workload",
    "WorkloadShape",
]
