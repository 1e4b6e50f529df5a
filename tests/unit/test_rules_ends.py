"""The clean topic's ends a batch of the rules worker waits for (``devtrail.consumers.rules.ends``)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Mapping

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devtrail.consumers.rules.ends import EndSamples, Sample, ends_after


def test_nothing_until_a_sample_shows_the_batch_readable() -> None:
    samples = [Sample(0.0, 0.1, {0: 5, 1: 3}), Sample(0.2, 0.3, {0: 9, 1: 3})]
    assert ends_after(samples, {0: 10}) is None
    assert ends_after(samples, {0: 9, 1: 4}) is None  # partition 1 not yet at 4


def test_the_first_sample_sent_after_the_covering_one_was_answered() -> None:
    covering = Sample(1.0, 1.5, {0: 10, 1: 7})
    overlapping = Sample(1.2, 1.6, {0: 11, 1: 8})  # sent before ``covering`` was answered
    after = Sample(1.6, 1.7, {0: 12, 1: 9})
    later = Sample(2.0, 2.1, {0: 20, 1: 20})
    assert ends_after([covering, overlapping, after, later], {0: 10}) == {0: 12, 1: 9}
    # The covering sample itself is not enough: another partition may have answered before the batch was readable.
    assert ends_after([covering, overlapping], {0: 10}) is None


def test_a_sample_answered_partly_before_the_batch_was_readable_is_not_used() -> None:
    """Two requests in flight, each partition answered at its own instant: A (partition 0) and B
    (partition 1) appended at 0.5. The first request shows A but answered partition 1 at 0.1;
    the second shows B but answered partition 0 at 0.15. Waiting for either as it stands, A
    would miss B and B would miss A."""
    first = Sample(0.0, 1.0, {0: 1, 1: 0})
    second = Sample(0.05, 1.05, {0: 0, 1: 1})
    third = Sample(1.1, 1.2, {0: 1, 1: 1})
    samples = [first, second, third]
    assert ends_after(samples, {0: 1}) == {0: 1, 1: 1}
    assert ends_after(samples, {1: 1}) == {0: 1, 1: 1}
    assert ends_after(samples[:2], {0: 1}) is None


def test_a_partition_missing_from_a_sample_is_not_covered() -> None:
    samples = [Sample(0.0, 0.1, {0: 5}), Sample(0.2, 0.3, {0: 6, 1: 1})]
    assert ends_after(samples, {1: 1}) is None


def _end_at(appends: list[float], instant: float) -> int:
    """A partition's end at ``instant``: its messages appended before it (append times sorted)."""
    return bisect.bisect_left(appends, instant)


_TIMES = st.integers(0, 20).map(float)


@settings(max_examples=500, deadline=None)
@given(
    appends=st.lists(st.lists(_TIMES, min_size=1, max_size=6).map(sorted), min_size=2, max_size=3),
    requests=st.lists(
        st.tuples(
            _TIMES, st.integers(0, 6).map(float), st.lists(st.sampled_from([0, 0.25, 0.5, 1]), min_size=3, max_size=3)
        ),
        min_size=1,
        max_size=20,
    ),
    a=st.tuples(st.integers(0, 2), st.integers(0, 5)),
    b=st.tuples(st.integers(0, 2), st.integers(0, 5)),
)
@example(  # two requests in flight, each answering one partition before the events and one after
    appends=[[5.0], [5.0]], requests=[(0.0, 6.0, [1, 0, 0]), (1.0, 6.0, [0, 1, 0])], a=(0, 0), b=(1, 0)
)
def test_of_two_events_one_waits_for_the_other(
    appends: list[list[float]],
    requests: list[tuple[float, float, list[float]]],
    a: tuple[int, int],
    b: tuple[int, int],
) -> None:
    """Whatever the timing, the wait of one of two events covers the other (each partition of a
    sample answered at its own instant within the request)."""
    partitions = len(appends)
    (pa, oa), (pb, ob) = a, b
    if pa >= partitions or pb >= partitions or oa >= len(appends[pa]) or ob >= len(appends[pb]):
        return
    samples = []
    for sent, took, where in sorted(requests):
        answered = sent + took
        ends = {p: _end_at(appends[p], sent + where[p] * took) for p in range(partitions)}
        samples.append(Sample(sent, answered, ends))
    for_a: Mapping[int, int] | None = ends_after(samples, {pa: oa + 1})
    for_b: Mapping[int, int] | None = ends_after(samples, {pb: ob + 1})
    if for_a is None or for_b is None:
        return  # that batch samples the ends itself, when it is handled: after both were read
    assert for_a[pb] > ob or for_b[pa] > oa


def test_the_sampler_keeps_sampling_after_a_failed_request() -> None:
    calls = 0
    enough = asyncio.Event()

    async def read_ends() -> dict[int, int]:
        nonlocal calls
        calls += 1
        if calls >= 5:
            enough.set()
        if calls == 2:
            raise ConnectionError("broker away")
        return {0: calls}

    async def scenario() -> list[Sample]:
        ends = EndSamples(read_ends, interval_s=0.001)
        task = asyncio.ensure_future(ends.run())
        await enough.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return list(ends._samples)

    kept = asyncio.run(scenario())
    assert [s.ends[0] for s in kept][:3] == [1, 3, 4]
    assert all(s.sent <= s.answered for s in kept)
