"""How the embedded broker's CPU grows with its log: the cause of the latency drift.

Produces 400 messages of 2 KB a second to one partition for 40 s, with and without one
consumer tailing the partition, and prints the broker's CPU (percent of a core) every 5 s.
Run: ``python -m bench.broker_fetch_growth``. Measured on the 2-core machine of
``docs/benchmarks.md``: produce only, flat at 2 %; with a tailing consumer, 2 % -> 9 %
over 40 s. Each fetch costs more as the partition's in-memory log grows.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import cpu_seconds
from devtrail.embedded import EmbeddedKafka

RATE, SIZE, SECONDS, EVERY = 400, 2000, 40, 5


async def measure(with_consumer: bool) -> list[int]:
    """Percent of a core the broker used in each ``EVERY``-second window."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedKafka(Path(tmp) / "broker.log")
        servers = await broker.start()
        pid = broker.pid
        producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=0)
        await producer.start()
        await (await producer.send("growth", b"x", partition=0))
        stop = asyncio.Event()

        async def tail() -> None:
            consumer = AIOKafkaConsumer(
                "growth", bootstrap_servers=servers, group_id="tail", auto_offset_reset="latest", fetch_max_wait_ms=100
            )
            await consumer.start()
            while not stop.is_set():
                await consumer.getmany(timeout_ms=200)
            await consumer.stop()

        tailing = asyncio.create_task(tail()) if with_consumer else None
        usage: list[int] = []
        before, started = cpu_seconds(pid), time.perf_counter()
        for second in range(SECONDS):
            sends = [await producer.send("growth", b"y" * SIZE, partition=0) for _ in range(RATE)]
            await asyncio.gather(*sends)
            await asyncio.sleep(max(0.0, started + second + 1 - time.perf_counter()))
            if (second + 1) % EVERY == 0:
                now = cpu_seconds(pid)
                usage.append(round((now - before) / EVERY * 100))
                before = now
        stop.set()
        if tailing is not None:
            await tailing
        await producer.stop()
        broker.stop()
    return usage


def main() -> int:
    for with_consumer in (False, True):
        usage = asyncio.run(measure(with_consumer))
        what = "produce + 1 tailing consumer" if with_consumer else "produce only"
        sys.stdout.write(f"{what:30} broker CPU, % of a core, every {EVERY}s: {usage}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
