"""Run the benchmarks, print the figures, write ``bench/results/<time>-<mode>.json``."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.drain import bench_drain
from bench.harness import peak_rss_mb, say
from bench.latency import bench_latency
from bench.producer import bench_producer
from bench.sink import bench_sink
from devtrail.settings import StackSettings
from devtrail.stack import Stack


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does."""

    producer: int
    drain: int
    sink: int
    naive: int
    latency_s: float
    peer: int


SIZES = {
    "quick": Sizes(producer=200_000, drain=300_000, sink=200_000, naive=5_000, latency_s=20.0, peer=0),
    "full": Sizes(producer=1_000_000, drain=1_000_000, sink=1_000_000, naive=20_000, latency_s=60.0, peer=200_000),
}
RESULTS_DIR = Path("bench") / "results"  # relative to where it runs: the checkout


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


async def run(mode: str, only: set[str] | None) -> dict[str, Any]:
    sizes = SIZES[mode]
    results: dict[str, Any] = {"mode": mode, "started_at": datetime.now(UTC).isoformat(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="dtb-", dir="/tmp") as data_dir:
        async with Stack(StackSettings(data_dir=Path(data_dir), metrics_port=0), roles=()) as stack:
            admin_url = stack.settings.database_url
            results["broker"] = "embedded Tansu 0.6 (memory)" if stack.kafka_embedded else "external"
            wanted = only or {"producer", "sink", "drain", "latency"}
            if "producer" in wanted:
                results |= await bench_producer(stack.settings, sizes.producer)
            if "sink" in wanted:
                results |= await bench_sink(stack, admin_url, sizes.sink, sizes.naive)
            if "drain" in wanted:
                results |= await bench_drain(stack, admin_url, sizes.drain)
            if "latency" in wanted:
                results |= await bench_latency(stack, admin_url, 10_000, sizes.latency_s)
            if sizes.peer and (only is None or "peer" in only):
                from bench.peer_quix import bench_quix

                results |= await bench_quix(stack, admin_url, sizes.peer)
    results["peak_rss_mb"] = {"bench": peak_rss_mb(), **_worker_peaks(results)}
    return results


def _worker_peaks(results: dict[str, Any]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for key in ("drain_peak_rss_mb", "latency_peak_rss_mb"):
        for name, mb in results.get(key, {}).items():
            peaks[name] = max(peaks.get(name, 0.0), mb)
    return peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtrail bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the two-minute run (default: full)")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    parser.add_argument("--only", action="append", choices=("producer", "sink", "drain", "latency", "peer"))
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    say(f"{mode} run on {os.cpu_count()} CPUs; progress on stderr, figures on stdout")
    results = asyncio.run(run(mode, set(args.only) if args.only else None))
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{mode}.json"
        path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2, default=float) + b"\n")
        say(f"results written to {path}")
    for key, value in results.items():
        if not isinstance(value, dict):
            sys.stdout.write(f"{key:48} {value}\n")
    if args.json:
        sys.stdout.write(orjson.dumps(results, default=float).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
