"""``/metrics`` (all worker processes, via prometheus-client multiprocess mode) and ``/healthz``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from devtrail.stack import Stack


async def serve(stack: Stack, port: int) -> web.AppRunner:
    """Serve the stack's metrics and health on ``0.0.0.0:port``; return the runner to stop it."""
    metrics_dir: Path = stack.metrics_dir

    async def metrics(_: web.Request) -> web.Response:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        workers = {w.name: {"alive": w.alive, "pid": w.pid, "restarts": w.restarts} for w in stack.workers}
        healthy = all(w["alive"] for w in workers.values())
        return web.json_response({"healthy": healthy, "workers": workers}, status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - scraped from outside
    return runner
