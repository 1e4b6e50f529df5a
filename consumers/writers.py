"""The writers the writer host runs on the clean topic: projections and aggregates.

Adding one is a module with a ``Writer`` (``devtrail.consumers.checkpoint.host``) and one line
here; ``devtrail run writers`` runs them all in one consumer, in this order, each in its
own savepoint. A writer added to a running deployment starts from the host's offsets:
fill its tables from ``events`` first (``devtrail projections rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable

from devtrail.consumers.aggregates import AggregatesWriter
from devtrail.consumers.aggregator import HourlyEventCounts
from devtrail.consumers.checkpoint import Writer
from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections import PROJECTIONS
from devtrail.consumers.settings import WritersSettings


def _without_settings(factory: Callable[[], Writer[CleanRow]]) -> Callable[[WritersSettings], Writer[CleanRow]]:
    return lambda _: factory()


#: name -> factory of the writer from the host's settings. The aggregates come after the
#: projections: they read none of them, but the views joining both are then never ahead.
WRITERS: dict[str, Callable[[WritersSettings], Writer[CleanRow]]] = {
    HourlyEventCounts.name: lambda s: HourlyEventCounts(s.aggregates_dedup_days),
    **{projection.name: _without_settings(projection) for projection in PROJECTIONS},
    AggregatesWriter.name: lambda s: AggregatesWriter(s.aggregates_dedup_days),
}


def build_writers(selection: str = "all", settings: WritersSettings | None = None) -> list[Writer[CleanRow]]:
    """The writers named in ``selection`` (comma-separated, or ``all``), in registry order.

    Raises:
        ValueError: a name that is not a registered writer (the message lists them).
    """
    settings = settings or WritersSettings()
    if selection.strip() == "all":
        return [factory(settings) for factory in WRITERS.values()]
    wanted = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in WRITERS]
    if unknown or not wanted:
        raise ValueError(f"DEVTRAIL_WRITERS: unknown writer(s) {unknown or selection!r}; known: {', '.join(WRITERS)}")
    return [factory(settings) for name, factory in WRITERS.items() if name in wanted]
