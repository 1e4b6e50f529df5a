"""What a checkpointed consumer needs to know about the rows of the topic it reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from devtrail.consumers.clean import Malformed

R = TypeVar("R")


class RowFormat(Protocol[R]):
    """Turns a topic's messages into rows of type ``R`` and rows back into JSON."""

    def decode(self, topic: str, partition: int, offset: int, value: bytes | None) -> Sequence[R | Malformed]:
        """The rows one message carries; what cannot be read is ``Malformed`` (dead-lettered)."""
        ...

    def occurred_at(self, row: R) -> datetime | None:
        """When the row's event happened (for the end-to-end latency), if known."""
        ...

    def as_object(self, row: R) -> dict[str, Any]:
        """The row as a JSON-encodable object (the original of a dead letter)."""
        ...
