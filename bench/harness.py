"""What every benchmark needs: a stack of real services, fresh names, clocks, memory."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from devtrail import migrate
from devtrail.settings import StackSettings
from devtrail.stack import Stack


def say(text: str) -> None:
    """Progress goes to stderr; stdout is kept for the results."""
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


def fresh_settings(base: StackSettings, database_url: str, **overrides: object) -> StackSettings:
    """Settings with topics and consumer groups of their own."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    return base.model_copy(
        update={
            "topic_prefix": prefix,
            "processor_group": f"{prefix}-processor",
            "sink_group": f"{prefix}-sink",
            "writers_group": f"{prefix}-writers",
            "dead_letter_group": f"{prefix}-dead-letters",
            "rules_group": f"{prefix}-rules",
            "database_url": database_url,
            **overrides,
        }
    )


async def fresh_database(admin_url: str) -> str:
    """Create and migrate a database; return its URL."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = admin_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    await asyncio.to_thread(migrate.upgrade, url)
    return url


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``check`` until true; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(poll_s)


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory of a process (VmHWM), or of this one."""
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def workers_peak_rss(stack: Stack) -> dict[str, float]:
    """Peak RSS of each running worker process, in MB."""
    return {w.name: peak_rss_mb(w.pid) for w in stack.workers if w.pid}


@dataclass
class Timer:
    """Wall-clock and CPU time of a block."""

    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def cpu_seconds(self) -> float:
        return time.process_time() - self.cpu_started


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    return round((int(fields[11]) + int(fields[12])) / ticks, 2)


def machine_cpu_by_program() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process on the machine: ``{pid: (program, seconds)}``.

    Taken before and after a measurement (``cpu_used_between``), the difference shows where
    the CPU went: the broker (``tansu``), PostgreSQL (``postgres``), the workers and the
    benchmark (``python``), the kernel's threads. Exited processes are not counted.
    """
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    usage: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == "2" or name.startswith("kworker"):  # children of kthreadd
            name = "kernel threads"
        usage[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return usage


def cpu_used_between(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float
) -> dict[str, float]:
    """CPU seconds per program between two ``machine_cpu_by_program`` snapshots, with the wall time."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    top = {name: round(s, 2) for name, s in sorted(used.items(), key=lambda kv: -kv[1]) if s >= 0.05}
    return {"wall_seconds": round(wall_s, 2), **top}


def workers_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds of each running worker process."""
    return {w.name: cpu_seconds(w.pid) for w in stack.workers if w.pid}


class Milestones:
    """When a growing count first reached 10 %, 90 % and 100 % of its goal.

    The rate between 10 % and 90 % is the steady-state rate: it leaves out start-up
    (group joins) and the last partial batches, the same way for every system measured.
    """

    def __init__(self, goal: int) -> None:
        self.goal = goal
        self.started = time.perf_counter()
        self.times: dict[int, float] = {}

    def observe(self, count: int) -> bool:
        """Record ``count`` now; return whether the goal is reached."""
        now = time.perf_counter()
        for percent in (1, 10, 90, 100):
            if percent not in self.times and count * 100 >= self.goal * percent:
                self.times[percent] = now
        return 100 in self.times

    @property
    def done(self) -> bool:
        return 100 in self.times

    def milestones(self) -> dict[str, float]:
        """Seconds from the start to each percentage reached."""
        return {f"{percent}%": round(at - self.started, 2) for percent, at in sorted(self.times.items())}

    @property
    def steady_rate(self) -> float:
        return 0.8 * self.goal / (self.times[90] - self.times[10])

    @property
    def overall_rate(self) -> float:
        return self.goal / (self.times[100] - self.started)

    @property
    def startup_seconds(self) -> float:
        return self.times[1] - self.started


async def wait_for_stable_groups(bootstrap: str, members: dict[str, int], timeout_s: float = 120) -> None:
    """Wait until each consumer group is ``Stable`` with the given number of members.

    A measurement at steady load must not include the rebalance of a worker that joined late.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def stable() -> bool:
            for name, count in members.items():  # one group per request: Tansu drops the connection otherwise
                try:
                    [response] = await admin.describe_consumer_groups([name])
                except KafkaError:
                    return False
                [group] = response.groups
                if (group[2], len(group[5])) != ("Stable", count):
                    return False
            return True

        await wait_for(stable, timeout_s, f"consumer groups {sorted(members)} to be stable", poll_s=0.5)
    finally:
        await admin.close()
