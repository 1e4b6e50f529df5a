"""The stack behind ``devtrail up`` and ``devtrail demo``.

Start order: embedded services (unless external ones are configured), topics,
migrations, then one process per worker (processor(s), sink, writers, dead-letter store,
rules, and the webhook notifier when ``notifier_webhook_url`` is set). Workers that
exit unexpectedly are restarted with backoff; they are crash-safe by design (offsets
follow the data). Stop order is the reverse; workers get SIGTERM and finish their batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import asyncpg
from prometheus_client.multiprocess import mark_process_dead

from devtrail import migrate
from devtrail.consumers.aggregates.verify import rebuild_aggregates
from devtrail.consumers.aggregator import rebuild_hourly_counts
from devtrail.consumers.offsets import forget_offsets
from devtrail.consumers.projections.rebuild import RebuildOptions
from devtrail.embedded import EmbeddedKafka, EmbeddedPostgres
from devtrail.procs import die_with_parent
from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics, max_message_bytes

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX_S = 30.0
#: A worker that ran this long before dying is restarted after the shortest backoff again.
HEALTHY_RUN_S = 30.0
#: Exits remembered per worker (for the crash-loop judgement of ``/healthz``).
EXITS_KEPT = 100
#: The workers a stack runs by default; the notifier joins them when a webhook is configured (``worker_roles``).
ALL_ROLES = ("processor", "sink", "writers", "dead-letters", "rules")


def worker_roles(settings: StackSettings, roles: tuple[str, ...]) -> tuple[str, ...]:
    """The roles a stack asked for ``roles`` starts.

    The default roles (``ALL_ROLES``) get the notifier when ``notifier_webhook_url`` is set;
    without a webhook the notifier never starts (it would only exit, again and again).
    """
    if not settings.notifier_webhook_url:
        return tuple(role for role in roles if role != "notifier")
    return (*roles, "notifier") if roles == ALL_ROLES else roles


class WorkerProcess:
    """One ``devtrail run ROLE`` child, restarted if it dies unexpectedly.

    Args:
        role: ``processor``, ``sink``, ``writers``, ``dead-letters``, ``rules`` or ``notifier``.
        name: label for logs (``processor-1``).
        env: the full environment of the child.
        log_path: where its output goes.
        metrics_dir: the prometheus-client multiprocess directory the child writes to; the
            files of its live gauges are removed whenever it exits.

    Attributes:
        restarts: how often it was restarted after an unexpected exit.
        exits: ``(time.time(), exit code)`` of its latest unexpected exits, oldest first.
    """

    def __init__(
        self, role: str, name: str, env: dict[str, str], log_path: Path, metrics_dir: Path | None = None
    ) -> None:
        self.role = role
        self.name = name
        self._env = env
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._metrics_dir = metrics_dir
        self.restarts = 0
        self.exits: deque[tuple[float, int]] = deque(maxlen=EXITS_KEPT)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def exits_within(self, window_s: float) -> int:
        """How many unexpected exits happened in the last ``window_s`` seconds."""
        since = time.time() - window_s
        return sum(1 for at, _ in self.exits if at >= since)

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name=f"watch-{self.name}")

    async def _spawn(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self._log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtrail", "run", self.role,
            env=self._env, stdout=self._log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    async def _supervise(self) -> None:
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            assert self._process is not None
            started = loop.time()
            code = await self._process.wait()
            self._forget_live_metrics(self._process.pid)
            if self._stopping:
                return
            self.exits.append((time.time(), code))
            if loop.time() - started > HEALTHY_RUN_S:
                backoff = 1.0
            self.restarts += 1
            log.warning("%s exited with %s; restarting in %.0fs (log: %s)", self.name, code, backoff, self._log_path)
            await asyncio.sleep(backoff)
            backoff = min(RESTART_BACKOFF_MAX_S, backoff * 2)
            if not self._stopping:
                await self._spawn()

    def _forget_live_metrics(self, pid: int) -> None:
        """Remove the dead child's live gauges (``livemin`` and co.) from the metrics directory."""
        if self._metrics_dir is not None:
            mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]

    def kill(self, restart: bool = True) -> None:
        """SIGKILL the current process (tests). The supervisor restarts it unless ``restart`` is false."""
        if not restart:
            self._stopping = True
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait for a clean exit, SIGKILL after ``timeout_s``."""
        self._stopping = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout_s)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout_s)
                self._process.kill()
                await self._process.wait()
            self._forget_live_metrics(self._process.pid)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._log is not None:
            self._log.close()
            self._log = None


class Stack:
    """Services, topics, schema and workers, started and stopped together.

    Args:
        settings: the stack's settings; embedded services replace unset addresses.
        roles: which workers to run: ``ALL_ROLES`` by default, plus the notifier when a
            webhook is configured (``worker_roles``).
    """

    def __init__(self, settings: StackSettings, roles: tuple[str, ...] = ALL_ROLES) -> None:
        self.settings = settings
        self._roles = roles
        self._kafka: EmbeddedKafka | None = None
        self._postgres: EmbeddedPostgres | None = None
        self.workers: list[WorkerProcess] = []

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def kafka_embedded(self) -> bool:
        """Whether this stack runs the embedded broker."""
        return self._kafka is not None

    @property
    def postgres(self) -> EmbeddedPostgres:
        """The embedded PostgreSQL server (fault tests crash and restart it)."""
        if self._postgres is None:
            raise RuntimeError("this stack does not run the embedded PostgreSQL")
        return self._postgres

    @property
    def kafka_pid(self) -> int:
        """The embedded broker's process id (fault tests pause it)."""
        if self._kafka is None:
            raise RuntimeError("this stack does not run the embedded broker")
        return self._kafka.pid

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    @property
    def metrics_dir(self) -> Path:
        return self.settings.data_dir / "metrics"

    async def start(self) -> None:
        """Bring everything up; return when the workers are launched."""
        s = self.settings
        updates: dict[str, object] = {}
        fresh_broker = False
        if s.embedded_kafka:
            self._kafka = EmbeddedKafka(self.log_dir / "kafka.log", s.embedded_kafka_port or 0)
            updates["kafka_bootstrap_servers"] = await self._kafka.start()
            fresh_broker = True
        if s.embedded_postgres:
            self._postgres = EmbeddedPostgres(s.data_dir / "postgres")
            updates["database_url"] = await self._postgres.start()
        if updates:
            self.settings = s = s.model_copy(update=updates)
        await migrate.wait_for_database(s.database_url, s.database_wait_s)
        await asyncio.to_thread(migrate.upgrade, s.database_url)
        created = await ensure_topics(s, s.replication_factor, max_message_bytes(s.max_event_bytes))
        if fresh_broker:
            await self._forget_stale_offsets()
        log.info("topics created: %s", ", ".join(created) or "none (all existed)")
        await self.start_workers(worker_roles(s, self._roles))

    async def _forget_stale_offsets(self) -> None:
        """A new in-memory broker has empty topics: offsets stored for the old ones are void,
        and what the old clean topic still held for the aggregator is gone, so its counts
        are recomputed from ``events`` (they match what is stored, nothing more or less)."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await forget_offsets(
                conn,
                [
                    self.settings.sink_group,
                    self.settings.writers_group,
                    self.settings.dead_letter_group,
                    self.settings.rules_group,
                ],
            )
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events)"):
                counted = await rebuild_hourly_counts(conn, self.settings.aggregates_dedup_days)
                await rebuild_aggregates(
                    self.settings.database_url,
                    RebuildOptions(
                        sink_group=self.settings.sink_group,
                        writers_group=self.settings.writers_group,
                        clean_topic=self.settings.topics.clean,
                    ),
                    dedup_days=self.settings.aggregates_dedup_days,
                )
                log.warning(
                    "embedded broker started empty: event_counts_hourly and the analyst aggregates recomputed "
                    "from the %d stored events; "
                    "events the previous broker had acknowledged but the sink had not stored are lost",
                    counted,
                )
        finally:
            await conn.close()

    async def start_workers(self, roles: tuple[str, ...], settings: StackSettings | None = None) -> None:
        """Start worker processes for ``roles`` (``processor``, ``sink``, ``writers``, ``dead-letters``, ``rules``,
        ``notifier``).

        Args:
            roles: which workers.
            settings: their settings, if not the stack's own (benchmarks use fresh topics).
        """
        s = settings or self.settings
        if not self.metrics_dir.exists() or not self.workers:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir.mkdir(parents=True)
        env = {
            **os.environ,
            **s.worker_environment(),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir.resolve()),
            "DEVTRAIL_METRICS_PORT": "0",  # the supervisor serves all workers' metrics
        }
        for role in roles:
            count = {"processor": s.processor_workers, "sink": s.sink_workers, "writers": s.writers_workers}.get(
                role, 1
            )
            for n in range(1, count + 1):
                name = f"{role}-{n}"
                worker_env = {
                    **env,
                    "DEVTRAIL_PROCESSOR_DATA_DIR": str(s.data_dir / "faust" / name),
                    "DEVTRAIL_RULES_DATA_DIR": str(s.data_dir / "faust" / name),
                }
                worker = WorkerProcess(role, name, worker_env, self.log_dir / f"{name}.log", self.metrics_dir)
                await worker.start()
                self.workers.append(worker)

    def worker(self, name: str) -> WorkerProcess:
        """The worker called ``name`` (``sink-1``)."""
        return next(w for w in self.workers if w.name == name)

    async def stop_workers(self) -> None:
        """Stop every worker (SIGTERM: each finishes its batch)."""
        await asyncio.gather(*(w.stop() for w in self.workers))
        self.workers.clear()

    async def stop(self) -> None:
        """Stop workers (SIGTERM, they finish their batch), then embedded services."""
        await self.stop_workers()
        if self._kafka is not None:
            self._kafka.stop()
            self._kafka = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
