"""Errors the producer SDK surfaces to its callers."""

from __future__ import annotations

from schemas.errors import DevtrailError


class ProducerError(DevtrailError):
    """Base of producer errors."""


class ProducerClosedError(ProducerError):
    """``emit`` was called on a producer that is not started or already closed."""


class BufferFullError(ProducerError):
    """The bounded buffer is full and the overflow policy is ``raise``."""

    retriable = True


class DeliveryError(ProducerError):
    """The broker did not acknowledge a bundle; every event in it gets this error.

    Attributes:
        retriable: copied from the Kafka error, when it says.
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
