"""Errors of the projections."""

from __future__ import annotations

from devtrail.consumers.errors import ConsumerError


class ProjectionError(ConsumerError):
    """Base of the projections' errors."""


class SinkBehindError(ProjectionError):
    """The sink did not store every event the writers applied in time: a rebuild would lose some.

    Attributes:
        behind: per clean-topic partition, (the sink's next offset or ``None``, the writers').
    """

    def __init__(self, behind: dict[int, tuple[int | None, int]], waited_s: float) -> None:
        self.behind = behind
        self.waited_s = waited_s
        parts = ", ".join(f"partition {p}: sink at {s}, writers at {w}" for p, (s, w) in sorted(behind.items()))
        super().__init__(f"the sink is behind the writers after {waited_s:.0f}s ({parts}); nothing was changed")
