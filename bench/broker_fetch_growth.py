"""How the embedded broker's CPU grows with its log: the cause of the latency drift.

Produces 800 KB a second to one partition for 30 s, as 400 record batches of 2 KB or as
40 of 20 KB, with and without one consumer tailing the partition, and prints the broker's
CPU (percent of a core) every 5 s. Run: ``python -m devtrail.bench.broker_fetch_growth``.

Measured on the 2-core machine of ``docs/benchmarks.md``: with a tailing consumer, 400
batches/s take the broker from 10 % to 50-67 % of a core within 30 s, while the same bytes
in 40 batches/s stay at 1-5 %; produce only stays flat. Each fetch costs more as the
number of batches in the in-memory log grows, whatever their size.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devtrail.bench.harness import cpu_seconds
from devtrail.embedded import EmbeddedKafka

SECONDS, EVERY = 30, 5
BYTES_PER_SECOND = 800_000


async def measure(with_consumer: bool, batches_per_second: int) -> list[int]:
    """Percent of a core the broker used in each ``EVERY``-second window."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedKafka(Path(tmp) / "broker.log")
        servers = await broker.start()
        pid = broker.pid
        size = BYTES_PER_SECOND // batches_per_second
        producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=0, max_batch_size=size + 1024)
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
            for _ in range(batches_per_second):  # one at a time: one record batch each
                await producer.send_and_wait("growth", b"y" * size, partition=0)
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
    for with_consumer, batches in ((False, 400), (True, 400), (True, 40)):
        usage = asyncio.run(measure(with_consumer, batches))
        what = f"{batches} batches/s, " + ("1 tailing consumer" if with_consumer else "produce only")
        sys.stdout.write(f"{what:38} broker CPU, % of a core, every {EVERY}s: {usage}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
