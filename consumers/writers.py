"""The writers the writer host runs on the clean topic: projections and aggregates.

Adding one is a module with a ``Writer`` (``consumers.checkpoint.host``) and one line
here; ``devtrail run writers`` runs them all in one consumer, in this order, each in its
own savepoint. A writer added to a running deployment starts from the host's offsets:
fill its tables from ``events`` first (``devtrail projections rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.aggregator import HourlyEventCounts
from consumers.checkpoint import Writer
from consumers.clean import CleanRow
from consumers.projections import PROJECTIONS

WRITERS: dict[str, Callable[[], Writer[CleanRow]]] = {
    HourlyEventCounts.name: HourlyEventCounts,
    **{projection.name: projection for projection in PROJECTIONS},
}


def build_writers(selection: str = "all") -> list[Writer[CleanRow]]:
    """The writers named in ``selection`` (comma-separated, or ``all``), in registry order.

    Raises:
        ValueError: a name that is not a registered writer (the message lists them).
    """
    if selection.strip() == "all":
        return [factory() for factory in WRITERS.values()]
    wanted = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in WRITERS]
    if unknown or not wanted:
        raise ValueError(f"DEVTRAIL_WRITERS: unknown writer(s) {unknown or selection!r}; known: {', '.join(WRITERS)}")
    return [factory() for name, factory in WRITERS.items() if name in wanted]
