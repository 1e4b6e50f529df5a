"""Errors of the consumers (processors, sink, aggregators)."""

from __future__ import annotations

import asyncpg

from schemas.errors import ContractError, DevtrailError


class ConsumerError(DevtrailError):
    """Base of consumer errors."""


class EventNotEncodableError(ContractError):
    """A valid event that cannot be written as JSON again (nested deeper than the encoder goes)."""

    kind = "unencodable"


# SQLSTATE classes after which the same transaction may succeed if tried again:
# 08 connection exception, 40 transaction rollback (serialization, deadlock),
# 53 insufficient resources, 57 operator intervention (shutdown, cancel), 58 system error.
RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_retriable_db_error(exc: BaseException) -> bool:
    """Whether a database error is worth retrying, judged by SQLSTATE class, never by text."""
    if isinstance(exc, asyncpg.DataError):  # our input, refused by asyncpg before it was sent
        return False
    if isinstance(exc, (OSError, asyncpg.InterfaceError, TimeoutError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in RETRIABLE_SQLSTATE_CLASSES
    return False
