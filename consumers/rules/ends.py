"""How far the projections must have read before a batch's rules run: ends of the clean topic, sampled.

A rule must never see a state older than its event, nor one missing an event on another
partition that the rules worker has already handled (a requirement's other tasks). The
rules worker therefore waits, before a batch, until the projection writers have applied the
clean topic up to its *ends* (every partition's high watermark) as they were at some moment
``t`` after every event of the batch had become readable. Any such moment will do: of two
events A and B handled in that order, either B was readable before A's moment (A's wait
covers it, so A's rule sees B), or B's moment comes after it, hence after A (B's rule sees
A). Taking the ends when the batch is handled is one such moment, and the latest possible:
it makes the batch wait for everything read meanwhile, a whole rules cycle of events.

``EndSamples`` keeps the ends sampled every ``interval_s`` by a background task, with when
each request was sent and answered. For a batch it picks the first sample whose *request*
was sent after a sample already showing every message of the batch had been answered: that
request was sent after each message was readable, so every partition's answer to it (each
from its own leader, perhaps at a slightly different instant) was given at such a moment.
Without one yet, the caller samples the ends itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Ends are sampled this often (one ListOffsets request to the clean topic's leaders).
SAMPLE_INTERVAL_S = 0.025
#: Samples kept: a batch older than this many intervals samples the ends itself.
KEPT = 400


@dataclass(frozen=True)
class Sample:
    """The clean topic's ends (partition -> high watermark) from one request."""

    sent: float
    answered: float
    ends: Mapping[int, int]

    def covers(self, needed: Mapping[int, int]) -> bool:
        """Whether every partition of ``needed`` was at least at its offset."""
        return all(self.ends.get(partition, -1) >= offset for partition, offset in needed.items())


def ends_after(samples: list[Sample], needed: Mapping[int, int]) -> Mapping[int, int] | None:
    """The ends of the first sample sent after a sample covering ``needed`` was answered; none yet.

    Args:
        samples: in the order they were sent.
        needed: per partition, the offset after the batch's last message on it.
    """
    readable_by: float | None = None
    for sample in samples:
        if readable_by is None:
            if sample.covers(needed):
                readable_by = sample.answered
        elif sample.sent >= readable_by:
            return sample.ends
    return None


class EndSamples:
    """Samples the ends of the clean topic in the background (see the module docstring).

    Args:
        read_ends: one request for the ends of every partition.
        interval_s: time between two requests.
    """

    def __init__(
        self, read_ends: Callable[[], Awaitable[Mapping[int, int]]], interval_s: float = SAMPLE_INTERVAL_S
    ) -> None:
        self._read_ends = read_ends
        self._interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=KEPT)

    def ends_after(self, needed: Mapping[int, int]) -> Mapping[int, int] | None:
        """``ends_after`` over the samples kept."""
        return ends_after(list(self._samples), needed)

    async def sample(self) -> Sample:
        """Read the ends once and keep the sample."""
        sent = time.monotonic()
        ends = await self._read_ends()
        found = Sample(sent, time.monotonic(), dict(ends))
        self._samples.append(found)
        return found

    async def run(self) -> None:
        """Sample until cancelled; a failed request is skipped (batches then sample themselves)."""
        failures = 0
        while True:
            try:
                await self.sample()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the wait samples itself meanwhile
                failures += 1
                if failures == 1 or failures % 400 == 0:
                    log.warning("rules: could not read the clean topic's ends (%r); batches read them themselves", exc)
            await asyncio.sleep(self._interval_s)
