"""The processor's commit rule: only a run of processed offsets from the committed position."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP

from devtrail.consumers.processor import transport

PARTITION = TP("devtrail.task", 0)


class ConsumerUnderTest(transport._Consumer):
    """The real commit rule, without a broker: assignment and seeks are recorded."""

    def __init__(self, committed: int | None, assigned: bool = True) -> None:
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[PARTITION] = committed
        self._hole_since = {}
        self._behind_since = {}
        self._paused_partitions: set[Any] = set()
        self._assigned = {PARTITION} if assigned else set()
        self.seeks: list[tuple[Any, int]] = []
        self.end: int | None = None  # the partition's end as the last fetch saw it

    def assignment(self) -> set[Any]:
        return self._assigned

    def highwater(self, tp: Any) -> int | None:
        return self.end

    def _is_changelog_tp(self, tp: Any) -> bool:
        return False

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
        monkeypatch.setattr(time, "monotonic", lambda: clock[0])
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


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(time, "monotonic", lambda: self.now)


async def commit_cycles(consumer: ConsumerUnderTest, clock: Clock, seconds: float) -> None:
    """What Faust's commit timer does each second, for ``seconds``."""
    for _ in range(int(seconds)):
        clock.now += 1
        list(consumer._filter_tps_with_pending_acks())
        await asyncio.sleep(0)  # a seek runs as a task


def test_a_dropped_tail_is_read_again_though_nothing_later_is_processed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last messages of a partition dropped (the load had stopped): no later offset is
    ever acknowledged, so the hole check never sees them; the stall check does."""

    async def scenario() -> ConsumerUnderTest:
        clock = Clock(monkeypatch)
        consumer = ConsumerUnderTest(committed=10)
        consumer.end = 25
        await commit_cycles(consumer, clock, transport.HOLE_REREAD_S - 1)
        assert consumer.seeks == []
        await commit_cycles(consumer, clock, 3)
        assert consumer.seeks == [(PARTITION, 10)]
        await commit_cycles(consumer, clock, 3)  # not again at once
        return consumer

    assert asyncio.run(scenario()).seeks == [(PARTITION, 10)]


def test_a_partition_that_progresses_or_is_at_its_end_is_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> ConsumerUnderTest:
        clock = Clock(monkeypatch)
        consumer = ConsumerUnderTest(committed=10)
        consumer.end = 10_000
        for _ in range(3 * int(transport.HOLE_REREAD_S)):  # behind, but committing every second
            await commit_cycles(consumer, clock, 1)
            committed = consumer._committed_offset[PARTITION] or 0
            consumer.processed(committed, committed + 1)
            consumer._committed_offset[PARTITION] = consumer._new_offset(PARTITION)
        consumer.end = consumer._committed_offset[PARTITION]  # caught up: idle at the end
        await commit_cycles(consumer, clock, 3 * transport.HOLE_REREAD_S)
        return consumer

    assert asyncio.run(scenario()).seeks == []


def test_acknowledged_offsets_or_a_paused_partition_are_left_to_the_other_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> ConsumerUnderTest:
        clock = Clock(monkeypatch)
        consumer = ConsumerUnderTest(committed=10)
        consumer.end = 25
        consumer._paused_partitions.add(PARTITION)  # recovering: Faust fetches nothing
        await commit_cycles(consumer, clock, 2 * transport.HOLE_REREAD_S)
        consumer._paused_partitions.clear()
        consumer.processed(12)  # a hole at 10..11: the hole check in _new_offset decides
        await commit_cycles(consumer, clock, transport.HOLE_REREAD_S - 2)
        return consumer

    assert asyncio.run(scenario()).seeks == []


def test_a_seek_runs_on_the_consumer_thread_where_the_fetcher_runs() -> None:
    """Faust ran aiokafka's seek on the worker's thread, racing the fetcher on the consumer's
    (``KeyError`` in ``fetched_records``, the processor exited): it goes through that thread now."""
    where: list[str] = []

    class ConsumerThread:
        def seek(self, partition: Any, offset: int) -> None:
            where.append(f"seek {partition.partition}@{offset} on {threading.current_thread().name}")

        async def call_thread(self, fun: Any, *args: Any) -> Any:
            done: list[Any] = []
            worker = threading.Thread(target=lambda: done.append(fun(*args)), name="consumer-thread")
            worker.start()
            worker.join()
            return done[0]

    consumer = transport._Consumer.__new__(transport._Consumer)
    consumer._thread = ConsumerThread()
    asyncio.run(consumer._seek(PARTITION, 42))
    assert where == ["seek 0@42 on consumer-thread"]
