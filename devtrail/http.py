"""What an operator, Prometheus or a probe asks devtrail over HTTP.

``devtrail up`` (the supervisor, ``serve``) answers for every worker it runs:

* ``/metrics``: every worker's metrics (prometheus-client multiprocess directory), the
  supervisor's own (``devtrail_worker_restarts_total``, ``devtrail_worker_up``) and
  the lag of every pipeline consumer group (``devtrail_consumer_lag``).
* ``/healthz``: JSON with ``status`` ``ok``, ``degraded`` or ``unhealthy`` and why, per
  worker. HTTP 503 only when unhealthy (a worker keeps exiting); a database outage is
  ``degraded`` with HTTP 200, since restarting anything would not bring it back.
* ``/livez``: the status code of ``/healthz``; ``/readyz``: 200 only when ``ok``.

A worker serving its own metrics (``devtrail run ROLE`` with a metrics port, one per pod
in Kubernetes, ``serve_worker``) answers:

* ``/metrics``: its own metrics and the lag of its consumer group.
* ``/livez``: 503 when one of its event loops has not run a callback for ``LOOP_STALL_S``
  (a blocked or wedged loop); never because of the database or Kafka.
* ``/readyz``: 503 when not live, or while its stage waits for the database.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from devtrail.consumers import metrics
from devtrail.lag import LagCollector, LagMonitor, pipeline_groups
from devtrail.settings import StackSettings

if TYPE_CHECKING:
    from devtrail.stack import Stack, WorkerProcess

#: The stage (metrics label) of each worker role.
STAGE_OF_ROLE = {
    "processor": "processor",
    "sink": "sink",
    "writers": "writers",
    "dead-letters": "dead_letters",
    "rules": "rules",
    "notifier": "notifier",
}
#: Every role whose consumer group the supervisor measures, running or not (a stopped consumer's lag grows).
#: The notifier's only when a webhook is configured (``measured_roles``): without one it never runs.
PIPELINE_ROLES = tuple(role for role in STAGE_OF_ROLE if role != "notifier")
#: A worker event loop that ran no callback for this long is stalled: ``/livez`` fails.
LOOP_STALL_S = 30.0

Status = Literal["ok", "degraded", "unhealthy"]


async def serve(stack: Stack, port: int, host: str | None = None) -> web.AppRunner:
    """Serve the stack's metrics, health and lag on ``host:port``; return the runner to stop it.

    Args:
        stack: the running stack (its metrics directory exists).
        port: the TCP port (0: any free one, see ``runner.addresses``).
        host: the address to listen on; ``stack.settings.metrics_host`` by default.
    """
    s = stack.settings
    monitor = LagMonitor(s, pipeline_groups(s, measured_roles(s)), s.lag_check_interval_s)
    workers = MultiProcessCollector(None, path=str(stack.metrics_dir))  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    for collector in (workers, WorkerCollector(stack), LagCollector(monitor)):
        registry.register(collector)

    def health() -> tuple[dict[str, Any], Status]:
        waiting = waiting_stages(workers.collect())  # type: ignore[no-untyped-call]
        return stack_health(stack.workers, waiting, monitor.errors, s.health_restart_limit, s.health_restart_window_s)

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        report, status = health()
        report["lag"] = {"measured_at": monitor.measured_at, "errors": monitor.errors}
        return web.json_response(report, status=503 if status == "unhealthy" else 200)

    async def livez(_: web.Request) -> web.Response:
        status = health()[1]
        return web.json_response({"status": status}, status=503 if status == "unhealthy" else 200)

    async def readyz(_: web.Request) -> web.Response:
        status = health()[1]
        return web.json_response({"status": status}, status=200 if status == "ok" else 503)

    async def measure_lag(_: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop), name="lag-monitor")
        yield
        stop.set()
        await task

    app = web.Application()
    app.cleanup_ctx.append(measure_lag)
    for path, handler in (("/metrics", metrics_page), ("/healthz", healthz), ("/livez", livez), ("/readyz", readyz)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or s.metrics_host, port).start()
    return runner


def measured_roles(settings: StackSettings) -> tuple[str, ...]:
    """The roles whose consumer groups' lag the supervisor measures: ``PIPELINE_ROLES``, and
    the notifier when ``notifier_webhook_url`` is set (the stack runs it then, and only then)."""
    return (*PIPELINE_ROLES, "notifier") if settings.notifier_webhook_url else PIPELINE_ROLES


def stack_health(
    workers: Sequence[WorkerProcess],
    waiting: set[str],
    lag_errors: dict[str, str],
    restart_limit: int,
    restart_window_s: float,
) -> tuple[dict[str, Any], Status]:
    """Judge the stack's health; return the ``/healthz`` document and its status.

    A worker is ``crash_loop`` (the stack ``unhealthy``) once it exited ``restart_limit``
    times within ``restart_window_s``; ``restarting`` while it is down between two
    restarts below that; ``waiting_for_database`` while its stage reports the database
    unavailable. Either of those two, or a consumer group whose lag could not be measured,
    makes the stack ``degraded``.

    Args:
        workers: the supervisor's workers.
        waiting: stages that report ``devtrail_database_available`` 0.
        lag_errors: per consumer group, why its lag could not be measured.
        restart_limit: exits within the window that make a crash loop.
        restart_window_s: that window, in seconds.
    """
    report: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    for worker in workers:
        state, reason = _worker_state(worker, waiting, restart_limit, restart_window_s)
        report[worker.name] = {
            "status": state,
            "alive": worker.alive,
            "pid": worker.pid,
            "restarts": worker.restarts,
            "recent_exits": worker.exits_within(restart_window_s),
            "reason": reason,
        }
        if reason is not None:
            reasons.append(f"{worker.name}: {reason}")
    reasons += [f"consumer lag of {group} not measured: {error}" for group, error in sorted(lag_errors.items())]
    states = {w["status"] for w in report.values()}
    status: Status = "unhealthy" if "crash_loop" in states else "degraded" if reasons else "ok"
    document = {
        "status": status,
        "healthy": status != "unhealthy",
        "reasons": reasons,
        "waiting_for_database": sorted(waiting),
        "workers": report,
    }
    return document, status


def _worker_state(
    worker: WorkerProcess, waiting: set[str], restart_limit: int, restart_window_s: float
) -> tuple[str, str | None]:
    exits = worker.exits_within(restart_window_s)
    if exits >= restart_limit:
        code = worker.exits[-1][1]
        return "crash_loop", f"exited {exits} times in the last {restart_window_s:.0f}s (last exit code {code})"
    if not worker.alive:
        return "restarting", "not running; the supervisor restarts it"
    stage = STAGE_OF_ROLE.get(worker.role, worker.role)
    if stage in waiting:
        return "waiting_for_database", f"stage {stage} waits for the database"
    return "ok", None


def waiting_stages(families: Iterable[Metric]) -> set[str]:
    """Stages whose ``devtrail_database_available`` is 0 in ``families``."""
    return {
        sample.labels["stage"]
        for family in families
        if family.name == "devtrail_database_available"
        for sample in family.samples
        if sample.value == 0
    }


class WorkerCollector(Collector):
    """The supervisor's knowledge of its workers: restarts and whether each runs."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "devtrail_worker_restarts", "Times the supervisor restarted a worker after it exited", labels=["worker"]
        )
        up = GaugeMetricFamily("devtrail_worker_up", "1 while the worker's process runs", labels=["worker", "role"])
        for worker in self._stack.workers:
            restarts.add_metric([worker.name], worker.restarts)
            up.add_metric([worker.name, worker.role], 1 if worker.alive else 0)
        yield restarts
        yield up


class LoopWatch:
    """When each watched event loop last ran a callback (a beat every ``beat_s``).

    A loop that is running but has not beaten for long is blocked (a CPU-bound or
    blocking call on it) or wedged; a loop that is not running is not judged.
    """

    def __init__(self, beat_s: float = 1.0) -> None:
        self._beat_s = beat_s
        self._beats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start beating on ``loop``. Call from the loop's own thread (or before it runs)."""
        self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._beats[loop] = time.monotonic()
        loop.call_later(self._beat_s, self._beat, loop)

    def stalled(self, limit_s: float) -> list[float]:
        """Seconds since the last beat of each running loop that has not beaten for ``limit_s``."""
        now = time.monotonic()
        with self._lock:
            beats = list(self._beats.items())
        return [now - at for loop, at in beats if loop.is_running() and now - at > limit_s]

    def watch_new_loops(self) -> None:
        """Watch every event loop this process creates from now on (``asyncio.run``, Faust's)."""
        asyncio.set_event_loop_policy(_WatchedLoopPolicy(self))


class _WatchedLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, watch: LoopWatch) -> None:
        super().__init__()
        self._watch = watch

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        self._watch.watch(loop)
        return loop


class WorkerProbe:
    """Liveness and readiness of one worker process.

    Args:
        watch: the process's event loops.
        stall_s: how long a loop may run no callback before the process is not live.
    """

    def __init__(self, watch: LoopWatch, stall_s: float = LOOP_STALL_S) -> None:
        self._watch = watch
        self._stall_s = stall_s

    def live(self) -> list[str]:
        """Why the process is not live (empty: it is)."""
        return [f"an event loop has run nothing for {s:.0f}s" for s in self._watch.stalled(self._stall_s)]

    def ready(self) -> list[str]:
        """Why the process is not ready (empty: it is)."""
        waiting = sorted(waiting_stages(metrics.DB_AVAILABLE.collect()))
        return self.live() + [f"stage {stage} waits for the database" for stage in waiting]


def serve_worker(settings: StackSettings, role: str) -> ThreadingHTTPServer:
    """Serve one worker's ``/metrics``, ``/livez`` and ``/readyz`` from a thread, and measure
    its consumer group's lag in another.

    Args:
        settings: ``metrics_host``, ``metrics_port``, and how to reach Kafka and PostgreSQL.
        role: the worker's role (whose group's lag to measure).

    Raises:
        OSError: the port cannot be bound.
    """
    watch = LoopWatch()
    watch.watch_new_loops()
    monitor = LagMonitor(settings, pipeline_groups(settings, [role]), settings.lag_check_interval_s)
    registry = CollectorRegistry()
    registry.register(REGISTRY)  # this process's metrics
    registry.register(LagCollector(monitor))
    server = serve_probes(settings.metrics_host, settings.metrics_port, registry, WorkerProbe(watch))
    threading.Thread(target=_measure_forever, args=(monitor,), name="lag-monitor", daemon=True).start()
    return server


def _measure_forever(monitor: LagMonitor) -> None:
    asyncio.run(monitor.run(asyncio.Event()))  # a daemon thread: ends with the process


Page = tuple[int, str, bytes]


def serve_probes(host: str, port: int, registry: CollectorRegistry, probe: WorkerProbe) -> ThreadingHTTPServer:
    """Serve ``/metrics`` (of ``registry``), ``/livez`` and ``/readyz`` (of ``probe``) from a
    daemon thread; return the server (``server_address``, ``shutdown()``).

    Raises:
        OSError: ``host:port`` cannot be bound.
    """
    routes: dict[str, Callable[[], Page]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        "/livez": lambda: _probe_page("live", probe.live()),
        "/readyz": lambda: _probe_page("ready", probe.ready()),
    }

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.partition("?")[0])
            status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: probes every few seconds would fill the worker's log."""

    server = ThreadingHTTPServer((host, port), Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _probe_page(what: str, reasons: list[str]) -> Page:
    body = orjson.dumps({what: not reasons, "reasons": reasons})
    return (503 if reasons else 200), "application/json", body
