"""What became of each event of an ``emit_many``: delivered, or failed with its error."""

from __future__ import annotations

import asyncio

from devtrail.producers.errors import DeliveryError, PartialDeliveryError
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import DevtrailError

#: Per event: the future of its bundle, or the error that refused it before sending.
Outcome = asyncio.Future[None] | DevtrailError


async def raise_unless_all_delivered(published: list[Envelope], outcomes: list[Outcome]) -> None:
    """Wait until every event's outcome is known; raise unless all were delivered.

    Args:
        published: the events, in the caller's order.
        outcomes: the outcome of each event of ``published``, in the same order.

    Raises:
        PartialDeliveryError: some events were not delivered; it lists which were and which were not.
    """
    futures = {outcome for outcome in outcomes if isinstance(outcome, asyncio.Future)}
    if futures:
        await asyncio.wait(futures)  # unlike gather, a cancelled wait leaves the shared futures alone
    errors = [error_of(outcome) for outcome in outcomes]
    if not any(errors):
        return
    pairs = list(zip(published, errors, strict=True))
    raise PartialDeliveryError(
        delivered=[event for event, error in pairs if error is None],
        failed=[(event, error) for event, error in pairs if error is not None],
    )


def error_of(outcome: Outcome) -> DevtrailError | None:
    """The error of a settled outcome, ``None`` if it was delivered."""
    if isinstance(outcome, DevtrailError):
        return outcome
    if outcome.cancelled():
        return DeliveryError("its bundle's future was cancelled: whether the broker has it is unknown", retriable=True)
    error = outcome.exception()
    if error is None or isinstance(error, DevtrailError):
        return error
    return DeliveryError(repr(error), retriable=False)
