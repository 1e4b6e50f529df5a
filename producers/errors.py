"""Errors the producer SDK surfaces to its callers."""

from __future__ import annotations

from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import DevtrailError


class ProducerError(DevtrailError):
    """Base of producer errors."""


class ProducerClosedError(ProducerError):
    """The producer is not started, its start failed, or it is closing or closed; the message says which."""


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


class PartialDeliveryError(DeliveryError):
    """``emit_many`` could not deliver every event: re-send ``failed`` only.

    Raised once the outcome of every event is known. Each event is in exactly one of the
    two lists, both in the order the caller gave them, as published (with the correlation
    context's ids filled in, so a re-sent copy is the same event).

    Attributes:
        delivered: events the broker acknowledged.
        failed: events that were not, each with its error: a ``DeliveryError`` (its
            bundle was not acknowledged), or what refused it before sending
            (``BufferFullError``, ``ProducerClosedError``, a ``ContractError``).
        retriable: whether every error in ``failed`` is retriable.
    """

    def __init__(self, delivered: list[Envelope], failed: list[tuple[Envelope, DevtrailError]]) -> None:
        total = len(delivered) + len(failed)
        first = failed[0][1] if failed else None
        super().__init__(
            f"{len(failed)} of {total} events were not delivered ({len(delivered)} were); first error: {first}",
            retriable=all(error.retriable for _, error in failed),
        )
        self.delivered = delivered
        self.failed = failed
