"""Run the benchmarks, print the figures, write ``bench/results/<time>-<mode>.json``."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from devtrail.bench.drain import PIPELINES, bench_drain, drain_label
from devtrail.bench.harness import peak_rss_mb, say
from devtrail.bench.latency import bench_latency
from devtrail.bench.producer import bench_producer
from devtrail.bench.sink import bench_sink
from devtrail.bench.story_drain import bench_story_drain
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
    stories: int


SIZES = {
    "quick": Sizes(producer=200_000, drain=300_000, sink=200_000, naive=5_000, latency_s=20.0, peer=0, stories=100_000),
    "full": Sizes(
        producer=1_000_000, drain=1_000_000, sink=1_000_000, naive=20_000, latency_s=60.0, peer=200_000, stories=400_000
    ),
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
    """Run the measurements; each one on a stack of its own (fresh broker and PostgreSQL).

    The embedded broker keeps every topic in memory and its fetches get slower as its logs
    grow (``docs/benchmarks.md``): sharing one broker, a stage paid for the data the stages
    before it left (the drain measured ~25 % slower after the producer and sink stages
    than alone). A fresh stack per stage measures each one as ``--only`` would.
    """
    sizes = SIZES[mode]
    results: dict[str, Any] = {"mode": mode, "started_at": datetime.now(UTC).isoformat(), "machine": machine()}
    wanted = only or {"producer", "sink", "drain", "latency", "peer", "stories"}
    stages: list[tuple[str, Callable[[Stack, str], Awaitable[dict[str, Any]]]]] = [
        ("producer", lambda stack, _: bench_producer(stack.settings, sizes.producer)),
        ("sink", lambda stack, admin: bench_sink(stack, admin, sizes.sink, sizes.naive)),
        ("drain", lambda stack, admin: bench_drain(stack, admin, sizes.drain, spine=True)),
        ("drain", lambda stack, admin: bench_drain(stack, admin, sizes.drain)),
        ("drain", lambda stack, admin: bench_drain(stack, admin, sizes.drain, rules=True)),
        ("latency", lambda stack, admin: bench_latency(stack, admin, 10_000, sizes.latency_s)),
        ("latency", lambda stack, admin: bench_latency(stack, admin, 10_000, sizes.latency_s, rules=True)),
        ("stories", lambda stack, admin: bench_story_drain(stack, admin, sizes.stories, full=False)),
        ("stories", lambda stack, admin: bench_story_drain(stack, admin, sizes.stories, full=True)),
        ("stories", lambda stack, admin: bench_story_drain(stack, admin, sizes.stories, False, agent_sessions=True)),
        ("stories", lambda stack, admin: bench_story_drain(stack, admin, sizes.stories, True, agent_sessions=True)),
    ]
    # Opt-in (``--only stages``): the drain of each pipeline of ``PIPELINES``, each adding a
    # stage to the one before, and what each stage adds per event (``stage_costs``).
    if "stages" in wanted:
        stages.extend(("stages", _pipeline_drain(sizes.drain, pipeline)) for pipeline in PIPELINES)
    if sizes.peer:
        from devtrail.bench.peer_quix import bench_quix

        stages.append(("peer", lambda stack, admin: bench_quix(stack, admin, sizes.peer)))
    with tempfile.TemporaryDirectory(prefix="dtb-", dir="/tmp") as data_dir:
        for name, measure in stages:
            if name not in wanted:
                continue
            settings = StackSettings(data_dir=Path(data_dir) / name, metrics_port=0)
            async with Stack(settings, roles=()) as stack:
                results["broker"] = "embedded Tansu 0.6 (memory)" if stack.kafka_embedded else "external"
                results |= await measure(stack, stack.settings.database_url)
    if results.get("drain_spine_events_per_second") and results.get("drain_events_per_second"):
        ratio = results["drain_events_per_second"] / results["drain_spine_events_per_second"]
        results["drain_vs_spine_ratio"] = round(ratio, 3)
        say(f"drain: the default pipeline (correlation + projections) at {ratio:.2f} x the spine-only drain")
    spine_whole = results.get("drain_spine_events_per_second_including_startup")
    if spine_whole and results.get("drain_rules_events_per_second_including_startup"):
        ratio = results["drain_rules_events_per_second_including_startup"] / spine_whole
        results["drain_rules_vs_spine_whole_drain_ratio"] = round(ratio, 3)
        say(f"drain: with the rules worker too, {ratio:.2f} x the spine-only drain from worker start to the end")
    for shape in ("", "agent_"):
        spine, full = (
            results.get(f"stories_{shape}spine_events_per_second"),
            results.get(f"stories_{shape}full_events_per_second"),
        )
        if spine and full:
            ratio = full / spine
            results[f"stories_{shape}full_vs_spine_ratio"] = round(ratio, 3)
            whole = results[f"stories_{shape}spine_seconds"] / results[f"stories_{shape}full_seconds"]
            results[f"stories_{shape}full_vs_spine_whole_drain_ratio"] = round(whole, 3)
            say(
                f"stories{' (agent sessions)' if shape else ''}: correlation + projections drain at {ratio:.2f} x"
                f" the spine-only steady rate ({whole:.2f} x from worker start; target >= 0.8)"
            )
    if "stages" in wanted:
        results["stage_costs"] = stage_costs(results)
    results["peak_rss_mb"] = {"bench": peak_rss_mb(), **_worker_peaks(results)}
    return results


def _pipeline_drain(events: int, pipeline: str) -> Callable[[Stack, str], Awaitable[dict[str, Any]]]:
    return lambda stack, admin: bench_drain(stack, admin, events, pipeline=pipeline)


def stage_costs(results: dict[str, Any]) -> dict[str, Any]:
    """Each pipeline of ``PIPELINES`` against the spine in the same run: its steady rate as a
    ratio, its CPU per event between 10 % and 90 % counted, and what it adds per event by
    program; printed as a table.

    With both cores saturated in that window (``cores_busy`` near 2), a pipeline's rate is
    about the cores over its CPU per event, so a ratio ``r`` to the spine leaves the stages
    added to it ``spine_total * (1 / r - 1)`` microseconds per event: the budget line.
    """
    spine = results.get("drain_spine_steady_cpu_us_per_event") or {}
    spine_rate = results.get("drain_spine_events_per_second")
    if not spine or not spine_rate:
        return {}
    table: dict[str, Any] = {}
    say("what each stage adds to the drain (CPU us per event between 10 % and 90 % counted):")
    say(f"  {'pipeline':<12} {'events/s':>9} {'ratio':>6} {'cores':>6} {'total':>7} {'added':>7}  added by program")
    for pipeline in PIPELINES:
        label = drain_label(pipeline)
        cpu, rate = results.get(f"{label}_steady_cpu_us_per_event"), results.get(f"{label}_events_per_second")
        if not cpu or not rate:
            continue
        programs = (set(cpu) | set(spine)) - {"total", "cores_busy"}
        added = {p: round(cpu.get(p, 0.0) - spine.get(p, 0.0), 1) for p in programs}
        added = {p: v for p, v in sorted(added.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.5}
        row = {
            "events_per_second": rate,
            "ratio_to_spine": round(rate / spine_rate, 3),
            "cores_busy": cpu["cores_busy"],
            "cpu_us_per_event": cpu["total"],
            "added_us_per_event": round(cpu["total"] - spine["total"], 1),
            "added_by_program": added,
        }
        table[pipeline] = row
        shown = ", ".join(f"{p} {v:+.1f}" for p, v in added.items()) if pipeline != "spine" else ""
        say(
            f"  {pipeline:<12} {rate:>9,} {row['ratio_to_spine']:>6.2f} {row['cores_busy']:>6.2f}"
            f" {row['cpu_us_per_event']:>7.1f} {row['added_us_per_event']:>+7.1f}  {shown}"
        )
    for target in (0.8, 0.7):
        budget = round(spine["total"] * (1 / target - 1), 1)
        table[f"budget_us_per_event_at_{target}"] = budget
        say(f"  at {target} x the spine, the stages added to it may cost about {budget} us per event in all")
    return table


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
    parser.add_argument(
        "--only",
        action="append",
        choices=("producer", "sink", "drain", "latency", "peer", "stories", "stages"),
        help="one measurement; 'stages' (not in the default set): the drain of each pipeline from the"
        " spine up to the rules, and what each stage adds per event",
    )
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
