"""Errors of the consumers (processors, sink, writers), and the one judge of database errors."""

from __future__ import annotations

import enum

import asyncpg

from devtrail.schemas.errors import ContractError, DevtrailError


class ConsumerError(DevtrailError):
    """Base of consumer errors."""


class EventNotEncodableError(ContractError):
    """A valid event that cannot be written as JSON again (nested deeper than the encoder goes)."""

    kind = "unencodable"


class SecretNotRedactableError(ContractError):
    """An event holding a secret in a field whose format does not accept the redaction."""

    kind = "secret"

    def __init__(self) -> None:
        super().__init__(
            "a secret was found in a field whose format does not accept '[REDACTED:...]' in its place; "
            "the event is not stored (this dead letter's copy is redacted): send it without the secret"
        )


class WrongTopicError(ContractError):
    """A valid event sent to another family's input topic."""

    kind = "wrong_topic"

    def __init__(self, family: str, topic: str, expected: str) -> None:
        super().__init__(
            f"a {family} event on {topic}: each family has its own input topic; send it to {expected} "
            "(the SDK routes by family; `devtrail dlq replay` sends this one there)"
        )


class Verdict(enum.Enum):
    """What a failed database write means, and so what the consumer does about it."""

    RETRY = "retry"  # the database's state: wait for it, then read the batch again
    REFUSED = "refused"  # the data: find the refused rows, dead-letter them, write the rest
    BUG = "bug"  # our code or our schema: stop the worker loudly


# SQLSTATE classes after which the same transaction may succeed if tried again:
# 08 connection exception, 40 transaction rollback (serialization, deadlock),
# 53 insufficient resources, 57 operator intervention (shutdown, cancel), 58 system error.
RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# 22 data exception (a value out of range, invalid text), 23 integrity constraint,
# 54 program limit exceeded (a row or a value too large).
REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def judge(exc: BaseException) -> Verdict:
    """Judge a failed write by the error's type and SQLSTATE class, never by its text.

    A value asyncpg cannot encode for its column (``asyncpg.DataError``) and a row that
    does not hold what it claims (``ContractError``: a clean row from another writer of
    the topic) are refused data too. Anything else a writer raises (``KeyError``,
    ``TypeError``, a missing table) is a bug.
    """
    if isinstance(exc, (asyncpg.DataError, ContractError)):
        return Verdict.REFUSED
    if isinstance(exc, (OSError, asyncpg.InterfaceError, TimeoutError)):
        return Verdict.RETRY
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate_class = (getattr(exc, "sqlstate", None) or "")[:2]
        if sqlstate_class in RETRIABLE_SQLSTATE_CLASSES:
            return Verdict.RETRY
        if sqlstate_class in REFUSED_SQLSTATE_CLASSES:
            return Verdict.REFUSED
    return Verdict.BUG


def is_retriable_db_error(exc: BaseException) -> bool:
    """Whether a database error is worth retrying (``judge`` says ``RETRY``)."""
    return judge(exc) is Verdict.RETRY
