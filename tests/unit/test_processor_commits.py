"""The processor's commit rule: only a run of processed offsets from the committed position."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP

from devtrail.consumers.processor import transport

PARTITION = TP("devtrail.task", 0)


class ConsumerUnderTest(transport._Consumer):
    """The real commit rule, without a broker: assignment and seeks are recorded."""

    def __init__(self, committed: int | None, assigned: bool = True) -> None:
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._committed_offset = defaultdict(lambda: None)
        self._committed_offset[PARTITION] = committed
        self._hole_since = {}
        self._assigned = {PARTITION} if assigned else set()
        self.seeks: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return self._assigned

    async def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))

    def processed(self, *offsets: int) -> None:
        for offset in offsets:
            self._acked[PARTITION].append(offset)
            self._acked_index[PARTITION].add(offset)


def test_a_run_from_the_committed_position_is_committed() -> None:
    consumer = ConsumerUnderTest(committed=10)
    consumer.processed(12, 10, 11, 13)
    assert consumer._new_offset(PARTITION) == 14
    assert consumer._acked[PARTITION] == []


def test_nothing_is_committed_over_a_hole() -> None:
    consumer = ConsumerUnderTest(committed=10)
    consumer.processed(10, 11, 13, 14)
    assert consumer._new_offset(PARTITION) == 12
    consumer._committed_offset[PARTITION] = 12
    assert consumer._new_offset(PARTITION) is None  # 12 is missing: 13 and 14 wait
    consumer.processed(12)
    assert consumer._new_offset(PARTITION) == 15


@pytest.mark.parametrize("first", [11, 40])
def test_a_run_starting_past_the_committed_position_is_not_committed(first: int) -> None:
    """Faust accepted a run starting one past the committed offset, and counted unread
    offsets as "gaps": the first thing a stale message after a rebalance produced."""
    consumer = ConsumerUnderTest(committed=10)
    consumer.processed(*range(first, first + 5))
    assert consumer._new_offset(PARTITION) is None


def test_offsets_never_read_are_never_recorded_as_gaps() -> None:
    consumer = ConsumerUnderTest(committed=10)
    asyncio.run(consumer._add_gap(PARTITION, 11, 40))
    consumer.processed(40)
    assert consumer._new_offset(PARTITION) is None


def test_no_committed_offset_means_the_partition_starts_at_zero() -> None:
    consumer = ConsumerUnderTest(committed=None)
    consumer.processed(1, 2)
    assert consumer._new_offset(PARTITION) is None
    consumer.processed(0)
    assert consumer._new_offset(PARTITION) == 3


def test_offsets_below_the_committed_position_are_dropped() -> None:
    consumer = ConsumerUnderTest(committed=10)
    consumer.processed(8, 9, 10)
    assert consumer._new_offset(PARTITION) == 11


def test_a_hole_that_stays_is_read_again_from_the_committed_position(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> ConsumerUnderTest:
        clock = [1000.0]
        monkeypatch.setattr(transport.time, "monotonic", lambda: clock[0])
        consumer = ConsumerUnderTest(committed=10)
        consumer.processed(12, 13)
        assert consumer._new_offset(PARTITION) is None
        clock[0] += transport.HOLE_REREAD_S - 1
        assert consumer._new_offset(PARTITION) is None
        assert consumer.seeks == []
        clock[0] += 2
        assert consumer._new_offset(PARTITION) is None
        await asyncio.sleep(0)  # the seek runs as a task
        assert consumer._acked[PARTITION] == []  # read again: acknowledged again
        return consumer

    assert asyncio.run(scenario()).seeks == [(PARTITION, 10)]


def test_acknowledgements_of_a_partition_gone_elsewhere_are_dropped_without_a_seek() -> None:
    consumer = ConsumerUnderTest(committed=10, assigned=False)
    consumer.processed(12)
    assert consumer._new_offset(PARTITION) is None
    assert consumer._acked[PARTITION] == []
    assert consumer.seeks == []
