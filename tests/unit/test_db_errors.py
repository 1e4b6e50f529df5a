"""One judge of database errors: retry, refused data, or a bug that stops the worker."""

from __future__ import annotations

import asyncpg
import pytest

from devtrail.consumers.clean import MalformedRowError
from devtrail.consumers.errors import Verdict, is_retriable_db_error, judge


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (asyncpg.ConnectionDoesNotExistError("gone"), Verdict.RETRY),
        (asyncpg.CannotConnectNowError("starting up"), Verdict.RETRY),
        (asyncpg.DeadlockDetectedError("deadlock"), Verdict.RETRY),
        (asyncpg.AdminShutdownError("shutdown"), Verdict.RETRY),
        (ConnectionResetError(), Verdict.RETRY),
        (TimeoutError(), Verdict.RETRY),
        (asyncpg.UniqueViolationError("dup"), Verdict.REFUSED),
        (asyncpg.CheckViolationError("check"), Verdict.REFUSED),
        (asyncpg.InvalidTextRepresentationError("text"), Verdict.REFUSED),
        (asyncpg.ProgramLimitExceededError("too big"), Verdict.REFUSED),
        (asyncpg.DataError("invalid input for query argument"), Verdict.REFUSED),
        (MalformedRowError("not an event"), Verdict.REFUSED),
        (KeyError("title"), Verdict.BUG),
        (TypeError("unsupported operand"), Verdict.BUG),
        (ValueError("bad"), Verdict.BUG),
        (asyncpg.UndefinedTableError("no such table"), Verdict.BUG),
        (asyncpg.UndefinedColumnError("no such column"), Verdict.BUG),
        (asyncpg.PostgresSyntaxError("syntax"), Verdict.BUG),
    ],
)
def test_errors_are_judged_by_type_and_sqlstate(error: BaseException, verdict: Verdict) -> None:
    assert judge(error) is verdict
    assert is_retriable_db_error(error) is (verdict is Verdict.RETRY)
