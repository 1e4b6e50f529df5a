"""The topic map: where each family of events is published, and the pipeline's own topics."""

from __future__ import annotations

from dataclasses import dataclass

from devtrail.schemas.envelope import Family


@dataclass(frozen=True)
class TopicMap:
    """Topic names derived from one prefix (``devtrail`` by default).

    Attributes:
        prefix: first dotted component of every topic name.
    """

    prefix: str = "devtrail"

    def input_topic(self, family: Family) -> str:
        """Return the input topic of a family, e.g. ``devtrail.task``."""
        return f"{self.prefix}.{family.value}"

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self.input_topic(family) for family in Family)

    @property
    def clean(self) -> str:
        """Validated, deduplicated events, bundled per partition."""
        return f"{self.prefix}.clean"

    @property
    def dead_letters(self) -> str:
        """Messages and events that failed, with the reason."""
        return f"{self.prefix}.dead-letters"

    @property
    def links(self) -> str:
        """The correlation graph's links, kept for ever: every processor reads all of it."""
        return f"{self.prefix}.links"

    @property
    def all_topics(self) -> tuple[str, ...]:
        return (*self.input_topics, self.clean, self.dead_letters, self.links)
