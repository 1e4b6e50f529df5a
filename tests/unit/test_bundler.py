from __future__ import annotations

import asyncio

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from devtrail.producers import bundler
from devtrail.producers.bundler import Bundle, choose_partition


def test_partition_matches_the_java_client_murmur2() -> None:
    partitions = list(range(12))
    for key in (b"T-1", b"session-42", b"", b"\xff\x00"):
        assert choose_partition(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % 12


def test_murmur2_matches_the_java_client_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit results)
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536, b"abc": 479470107}
    for key, java in vectors.items():
        assert murmur2(key) == java & 0xFFFFFFFF
        assert bundler.murmur2(key) == java & 0xFFFFFFFF


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_the_sdk_partitions_every_key_as_aiokafka_does(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert bundler.murmur2(key) == murmur2(key)
    assert choose_partition(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


async def test_bundle_limits_and_value() -> None:
    loop = asyncio.get_running_loop()
    bundle = Bundle("t", 0, b"k", loop.create_future())
    assert bundle.fits(b"x" * 10_000, max_events=2, max_bytes=100)  # an empty bundle takes anything
    bundle.add(b'{"a":1}')
    assert bundle.value() == b'{"a":1}'
    assert bundle.fits(b'{"b":2}', max_events=2, max_bytes=100)
    bundle.add(b'{"b":2}')
    assert bundle.value() == b'[{"a":1},{"b":2}]'
    assert not bundle.fits(b"{}", max_events=2, max_bytes=100)
    big = Bundle("t", 0, b"k", loop.create_future())
    big.add(b"x" * 60)
    assert not big.fits(b"y" * 60, max_events=10, max_bytes=100)
