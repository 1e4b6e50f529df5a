"""The fault matrix: steady load while workers are SIGKILLed and the broker is paused.

One run produces ``unique`` events (plus re-sent copies) at a steady rate through a
stack of its own, applies every fault of the matrix at random moments (seeded), waits
for the pipeline to drain, and checks what a user would check: every event the broker
acknowledged is stored exactly once, and every aggregate equals a GROUP BY over
``events``. ``tests/integration/test_faults.py`` runs one short run in ``make test``;
this program runs many (the soak)::

    python -m devtrail.bench.faults --runs 20 --events 60000 --rate 3000

It prints one line per run (lost / doubled / aggregate mismatches) and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from uuid import UUID

import asyncpg

from devtrail.bench.harness import say
from devtrail.consumers.aggregates.verify import aggregate_mismatches_by_table
from devtrail.producers import EventProducer, Workload
from devtrail.schemas.envelope import Envelope
from devtrail.settings import StackSettings
from devtrail.stack import Stack

#: Every kind of fault a run applies, each at least once, in a seeded random order.
MATRIX = (
    "kill processor-1",
    "kill processor-2",
    "kill both processors",
    "kill sink-1",
    "kill writers-1",
    "pause broker",
    "kill processor-1",
    "kill both processors",
    "terminate processor-2",
)


#: Faults of the database: a crash (immediate shutdown, back after ``database_down_s``),
#: an exclusive lock on ``events`` held for ``lock_s``, and a crash while writers wait on
#: that lock (their COPY stalled: asyncpg did not notice the server had gone).
DATABASE_MATRIX = ("crash database", "lock events", "crash database while events locked", "kill sink-1")


@dataclass
class FaultPlan:
    """What one run does.

    Attributes:
        seed: decides the workload, the copies, the faults and their moments.
        unique: distinct events produced.
        rate: events per second offered (copies included).
        duplicate_rate: share of events re-sent as copies.
        broker_pause_s: how long the broker is stopped (SIGSTOP) when paused.
        drain_timeout_s: how long the pipeline may take to store everything afterwards.
        database_down_s: how long a crashed database stays down.
        lock_s: how long ``events`` stays locked.
        faults: the faults, each applied once at a random moment.
        faults_overlap: whether a fault may start while another lasts (a paused broker,
            a crashed database); otherwise they come one after the other.
    """

    seed: int = 1
    unique: int = 30_000
    rate: float = 1500.0
    duplicate_rate: float = 0.05
    broker_pause_s: float = 8.0
    drain_timeout_s: float = 120.0
    database_down_s: float = 30.0
    lock_s: float = 20.0
    faults: tuple[str, ...] = MATRIX
    faults_overlap: bool = True


@dataclass
class FaultResult:
    """What one run found."""

    seed: int
    acknowledged: int = 0
    unacknowledged: int = 0
    stored_rows: int = 0
    stored_ids: int = 0
    derived: int = 0
    drain_s: float = 0.0
    lost: int = 0
    doubled: int = 0
    aggregate_mismatches: int = 0
    faults: list[str] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    max_rss_mb: dict[str, float] = field(default_factory=dict)
    holes_reread: int = 0
    tails_reread: int = 0
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.aggregate_mismatches == 0

    def line(self) -> str:
        return (
            f"seed {self.seed}: acknowledged {self.acknowledged:,}, lost {self.lost}, doubled {self.doubled}, "
            f"aggregate mismatches {self.aggregate_mismatches}, restarts {self.restarts}, "
            f"holes read again {self.holes_reread} (stalled tails {self.tails_reread}), "
            f"derived by rules {self.derived}, drained in {self.drain_s:.0f}s, "
            f"max RSS MB {self.max_rss_mb}, {self.seconds:.0f}s"
        )


class Chaos:
    """Applies faults to a running stack."""

    def __init__(self, stack: Stack, plan: FaultPlan) -> None:
        self._stack = stack
        self._plan = plan

    async def apply(self, fault: str) -> None:
        if fault == "pause broker":
            await self.pause_broker(self._plan.broker_pause_s)
        elif fault == "crash database":
            await self.crash_database(self._plan.database_down_s)
        elif fault == "lock events":
            await self.lock_events(self._plan.lock_s)
        elif fault == "crash database while events locked":
            locking = asyncio.create_task(self.lock_events(self._plan.lock_s))
            await asyncio.sleep(self._plan.lock_s / 2)
            await self.crash_database(self._plan.database_down_s)
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await locking  # its connection died with the server
        elif fault == "kill both processors":
            for worker in self._stack.workers:
                if worker.role == "processor":
                    worker.kill()
        elif fault.startswith("terminate "):  # SIGTERM: a graceful stop mid-batch (then restarted)
            pid = self._stack.worker(fault.removeprefix("terminate ")).pid
            with contextlib.suppress(ProcessLookupError, TypeError):  # just killed by another fault
                os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
        else:
            self._stack.worker(fault.removeprefix("kill ")).kill()

    async def crash_database(self, seconds: float) -> None:
        await asyncio.to_thread(self._stack.postgres.crash)
        await asyncio.sleep(seconds)
        await self._stack.postgres.start()
        say("database back")

    async def lock_events(self, seconds: float) -> None:
        conn = await asyncpg.connect(self._stack.settings.database_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(seconds)
        finally:
            await conn.close()

    async def pause_broker(self, seconds: float) -> None:
        pid = self._stack.kafka_pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)


class AckedProducer:
    """Produces at a steady rate and remembers which events the broker acknowledged."""

    def __init__(self, producer: EventProducer, rate: float) -> None:
        self._producer = producer
        self._rate = rate
        self.acknowledged: set[UUID] = set()
        self.failed: set[UUID] = set()

    async def run(self, stream: list[Envelope], chunk: int = 100) -> None:
        started = time.monotonic()
        pending: list[asyncio.Task[None]] = []
        for start in range(0, len(stream), chunk):
            part = stream[start : start + chunk]
            pending.append(asyncio.create_task(self._send(part)))
            delay = started + (start + chunk) / self._rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*pending)

    async def _send(self, events: list[Envelope]) -> None:
        futures = [(event.event_id, self._producer.emit_nowait(event)) for event in events]
        for event_id, future in futures:
            try:
                await asyncio.shield(future)
            except Exception:  # noqa: BLE001 - any failure means: not acknowledged
                self.failed.add(event_id)
            else:
                self.acknowledged.add(event_id)


async def sample_rss(stack: Stack, peaks: dict[str, float], every_s: float = 0.5) -> None:
    """Record each worker's largest resident memory (MB) until cancelled."""
    import psutil

    while True:
        for worker in stack.workers:
            with contextlib.suppress(psutil.Error, TypeError):
                rss = psutil.Process(worker.pid).memory_info().rss / 2**20
                peaks[worker.name] = round(max(peaks.get(worker.name, 0.0), rss), 1)
        await asyncio.sleep(every_s)


def count_in_logs(stack: Stack, role: str, text: str) -> int:
    """Lines of the ``role`` workers' logs that contain ``text``."""
    return sum(
        path.read_text(errors="replace").count(text) for path in stack.log_dir.glob(f"{role}-*.log") if path.is_file()
    )


def workload(plan: FaultPlan) -> list[Envelope]:
    """Unique events with seeded copies among them, some close by, some far behind."""
    rng = random.Random(plan.seed)
    events = list(Workload(f"faults{plan.seed}", seed=plan.seed).events(plan.unique))
    stream = events + rng.sample(events, int(plan.unique * plan.duplicate_rate))
    rng.shuffle(stream)
    return stream


async def run_faults(stack: Stack, plan: FaultPlan) -> FaultResult:
    """Produce ``plan``'s load into a running stack while applying its faults; check the tables."""
    result = FaultResult(plan.seed)
    started = time.monotonic()
    rng = random.Random(plan.seed * 7919)
    stream = workload(plan)
    duration = len(stream) / plan.rate
    chaos = Chaos(stack, plan)
    sampling = asyncio.create_task(sample_rss(stack, result.max_rss_mb))
    async with EventProducer(stack.settings) as producer:
        sender = AckedProducer(producer, plan.rate)
        producing = asyncio.create_task(sender.run(stream))
        slots = sorted(rng.uniform(0.1 * duration, 0.8 * duration) for _ in plan.faults)
        faults = list(plan.faults)
        rng.shuffle(faults)
        applying = []
        for at, fault in zip(slots, faults, strict=True):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            say(f"t={time.monotonic() - started:5.1f}s {fault}")
            if plan.faults_overlap:
                applying.append(asyncio.create_task(chaos.apply(fault)))  # a paused broker holds no kill back
            else:
                await chaos.apply(fault)
            result.faults.append(fault)
        await asyncio.gather(*applying)
        await producing
        sampling.cancel()
    result.acknowledged = len(sender.acknowledged)
    result.unacknowledged = len(sender.failed - sender.acknowledged)
    await _check(stack, sender.acknowledged, plan, result)
    result.restarts = {w.name: w.restarts for w in stack.workers}
    result.holes_reread = count_in_logs(stack, "processor", "reading again from")
    result.tails_reread = count_in_logs(stack, "processor", "nothing of them in progress")
    result.seconds = time.monotonic() - started
    return result


async def _check(stack: Stack, acknowledged: set[UUID], plan: FaultPlan, result: FaultResult) -> None:
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        waited = time.monotonic()
        await _wait_drained(conn, acknowledged, plan.drain_timeout_s)
        result.drain_s = time.monotonic() - waited
        await asyncio.sleep(3)  # anything still in flight would show up as a double
        ids = list(acknowledged)
        missing = await conn.fetch(
            "SELECT a.id FROM unnest($1::uuid[]) AS a(id) WHERE NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.event_id = a.id)",
            ids,
        )
        result.lost = len(missing)
        if missing:
            for line in await locate_missing(stack, {str(r["id"]) for r in missing}):
                say(f"lost: {line}")
        row = await conn.fetchrow("SELECT count(*) AS rows, count(DISTINCT event_id) AS ids FROM events")
        result.stored_rows, result.stored_ids = row["rows"], row["ids"]
        result.doubled = result.stored_rows - result.stored_ids
        result.derived = await conn.fetchval("SELECT count(*) FROM events WHERE source LIKE 'devtrail-rules:%'")
        # The rules keep deriving events (timers) and the writers count them a moment after
        # the sink stores them: a mismatch counts only if it stays while the pipeline settles.
        for _ in range(4):
            result.aggregate_mismatches = await aggregate_mismatches(conn)
            if not result.aggregate_mismatches:
                break
            await asyncio.sleep(5)
    finally:
        await conn.close()


async def _wait_drained(conn: asyncpg.Connection, acknowledged: set[UUID], timeout_s: float) -> None:
    """Until every acknowledged event is stored and counted, nothing moved for 30 s, or timeout.

    It looks for the acknowledged ids themselves: a row count would also include what the
    rules derive, and would call the pipeline drained while acknowledged events are in flight.
    """
    ids = list(acknowledged)
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        state = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM unnest($1::uuid[]) AS a(id) WHERE NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.event_id = a.id)) AS missing, "
            "(SELECT count(*) FROM events) AS rows, "
            "(SELECT coalesce(sum(count), 0) FROM event_counts_hourly) AS counted",
            ids,
        )
        if state["missing"] == 0 and state["counted"] >= state["rows"]:
            return
        if tuple(state) != last:
            last, since = tuple(state), time.monotonic()
        elif time.monotonic() - since > 30:
            say(f"no progress for 30 s: {dict(state)} of {len(acknowledged):,} acknowledged")
            return
        await asyncio.sleep(0.5)


async def locate_missing(stack: Stack, missing: set[str]) -> list[str]:
    """Where acknowledged events that were not stored are, one line per input partition
    holding some: their offsets, how far the processor group had committed there, how many
    reached the clean topic, and how far the sink had stored those clean partitions.
    Printed when a run loses events, so that a failure in CI names the stage that lost them."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from devtrail.consumers.offsets import load_offsets

    settings = stack.settings
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.processor_group,
        enable_auto_commit=False,
        **settings.aiokafka_security(),
    )
    await consumer.start()
    inputs: dict[str, tuple[TopicPartition, int]] = {}  # first place each missing id was read
    cleans: dict[str, tuple[TopicPartition, int]] = {}
    committed: dict[TopicPartition, int | None] = {}
    try:
        for topic in (*topics.input_topics, topics.clean):
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                continue
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            found = cleans if topic == topics.clean else inputs
            if found is inputs:
                committed.update({tp: await consumer.committed(tp) for tp in parts})
            deadline = time.monotonic() + 60
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).items():
                    for record in records:
                        for event_id in _ids_in(record.value, clean=found is cleans) & missing:
                            found.setdefault(event_id, (tp, record.offset))
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = await load_offsets(conn, settings.sink_group, [topics.clean])
    finally:
        await conn.close()
    by_input: dict[TopicPartition | None, list[str]] = {}
    for event_id in missing:
        by_input.setdefault(inputs[event_id][0] if event_id in inputs else None, []).append(event_id)
    lines = []
    for tp, lost in sorted(by_input.items(), key=lambda item: str(item[0])):
        if tp is None:
            lines.append(f"{len(lost)} on no input topic")
            continue
        offsets = sorted(inputs[i][1] for i in lost)
        clean = sorted({(cleans[i][0].partition, cleans[i][1]) for i in lost if i in cleans})
        sink = {p: stored.get(TopicPartition(topics.clean, p)) for p, _ in clean}
        lines.append(
            f"{len(lost)} on {tp.topic}[{tp.partition}] offsets {offsets[0]}..{offsets[-1]} "
            f"(processor committed {committed.get(tp)}); {sum(i in cleans for i in lost)} on the clean topic "
            f"at {clean[:3]}{'...' if len(clean) > 3 else ''} (sink stored up to {sink})"
        )
    return lines


def _ids_in(value: bytes | None, clean: bool) -> set[str]:
    """The event ids a clean or input message carries (none if it is malformed)."""
    from devtrail.consumers.clean import EVENT_ID, decode_rows
    from devtrail.schemas.codec import decode_message

    try:
        if clean:
            return {str(row[EVENT_ID]) for row in decode_rows(value)}
        return {str(e.get("event_id")) for e in decode_message(value) if isinstance(e, dict)}
    except Exception:  # noqa: BLE001 - a malformed message holds none of the acknowledged events
        return set()


async def aggregate_mismatches(conn: asyncpg.Connection, analyst: bool = True) -> int:
    """Keys of ``event_counts_hourly`` that differ from a GROUP BY over ``events``, plus, with
    ``analyst`` (the ``aggregates`` writer runs), those of every analyst aggregate
    (``devtrail.consumers.aggregates.verify``)."""
    hourly = int(
        await conn.fetchval(
            """
            WITH truth AS (
                SELECT date_trunc('hour', occurred_at) AS bucket, coalesce(project_id, '') AS project_id,
                       coalesce(agent_id, '') AS agent_id, event_type, count(*) AS count
                FROM events GROUP BY 1, 2, 3, 4
            )
            SELECT count(*) FROM truth FULL JOIN event_counts_hourly c
                USING (bucket, project_id, agent_id, event_type)
            WHERE truth.count IS DISTINCT FROM c.count
            """
        )
    )
    if not analyst:
        return hourly
    by_table = await aggregate_mismatches_by_table(conn)
    if any(by_table.values()):
        say(f"aggregate mismatches by table: {by_table}")
    return hourly + sum(by_table.values())


async def run_embedded_crash(data_dir: Path, plan: FaultPlan) -> FaultResult:
    """``devtrail up`` SIGKILLed mid-load (its broker and workers die; PostgreSQL, a daemon,
    lives on) and started again on the same data directory. The in-memory broker's topics
    are gone: what it had acknowledged but the sink had not stored is lost (counted), and
    the aggregate must still equal a GROUP BY over what was stored."""
    result = FaultResult(plan.seed, faults=["kill devtrail up"])
    stream = workload(plan)
    async with fault_stack(data_dir) as stack, EventProducer(stack.settings) as producer:
        started = time.monotonic()
        crash_at = started + 0.5 * len(stream) / plan.rate
        sender = AckedProducer(producer, plan.rate)
        producing = asyncio.create_task(sender.run(stream))
        await asyncio.sleep(max(0.0, crash_at - time.monotonic()))
        for worker in stack.workers:
            worker.kill(restart=False)
        os.kill(stack.kafka_pid, signal.SIGKILL)
        say(f"t={time.monotonic() - started:5.1f}s killed the broker and every worker")
        await producing
    result.acknowledged = len(sender.acknowledged)
    result.unacknowledged = len(sender.failed - sender.acknowledged)
    async with fault_stack(data_dir) as stack:
        plan.drain_timeout_s = 20  # nothing more can come: the broker lost the rest
        await _check(stack, sender.acknowledged, plan, result)
    result.seconds = time.monotonic() - started
    return result


@contextlib.asynccontextmanager
async def fault_stack(data_dir: Path, **overrides: object) -> AsyncIterator[Stack]:
    """A stack with its own embedded broker (the faults pause it) and two processors."""
    settings = StackSettings(data_dir=data_dir, metrics_port=0, processor_workers=2, **overrides)  # type: ignore[arg-type]
    async with Stack(settings) as stack:
        await asyncio.sleep(8)  # let the processors join their group before the load
        yield stack


async def soak(plans: list[FaultPlan], out: Path | None) -> list[FaultResult]:
    results = []
    for plan in plans:
        data_dir = Path(tempfile.mkdtemp(prefix="dt-faults-", dir="/tmp"))
        if "kill devtrail up" in plan.faults:
            result = await run_embedded_crash(data_dir, plan)
        else:
            async with fault_stack(data_dir) as stack:
                result = await run_faults(stack, plan)
        print(result.line(), flush=True)
        if result.exact:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"  worker logs kept in {data_dir / 'logs'}", flush=True)
        results.append(result)
        if out is not None:
            report = json.dumps([asdict(r) | {"exact": r.exact} for r in results], indent=2)
            await asyncio.to_thread(out.write_text, report)
    exact = sum(r.exact for r in results)
    print(f"{exact} of {len(results)} runs exact; lost {sum(r.lost for r in results)}, "
          f"doubled {sum(r.doubled for r in results)}", flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--broker-pause-s", type=float, default=15.0)
    parser.add_argument("--matrix", choices=("workers", "database", "embedded-crash"), default="workers")
    parser.add_argument("--json", type=Path, default=Path("bench/results/faults.json"))
    args = parser.parse_args()
    faults = {"workers": MATRIX, "database": DATABASE_MATRIX, "embedded-crash": ("kill devtrail up",)}[args.matrix]
    plans = [
        FaultPlan(
            seed=seed,
            unique=args.events,
            rate=args.rate,
            broker_pause_s=args.broker_pause_s,
            faults=faults,
            faults_overlap=faults is MATRIX,
        )
        for seed in range(args.first_seed, args.first_seed + args.runs)
    ]
    results = asyncio.run(soak(plans, args.json))
    raise SystemExit(0 if all(r.exact for r in results) else 1)


if __name__ == "__main__":
    main()
