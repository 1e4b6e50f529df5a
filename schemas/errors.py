"""Errors raised by the event contract."""

from __future__ import annotations


class DevtrailError(Exception):
    """Root of every error devtrail raises on purpose.

    Attributes:
        retriable: whether trying the same operation again may succeed.
    """

    retriable: bool = False


class ContractError(DevtrailError):
    """Data does not satisfy the event contract."""


class DecodeError(ContractError):
    """A Kafka message is not a JSON event or a JSON array of events."""

    kind = "decode"


class EventValidationError(ContractError):
    """An event decoded but failed validation against its schema.

    Attributes:
        errors: pydantic-style error list (``loc``, ``msg``, ``type``) that says where and why;
            the first ones only (``devtrail.schemas.reasons.MAX_ERRORS``).
        total: how many errors there were in all.
    """

    kind = "validation"

    def __init__(self, message: str, errors: list[dict[str, object]], total: int | None = None) -> None:
        super().__init__(message)
        self.errors = errors
        self.total = len(errors) if total is None else total


class EventTooLargeError(ContractError):
    """An event's encoded JSON exceeds the configured maximum size."""

    kind = "too_large"
