"""Cost of secret scrubbing in the processors: ``process_batch`` with and without it.

``python -m devtrail.bench.scrub [--events N] [--rounds R] [--json FILE]`` builds three workloads of
``N`` events each, sent in bundles of 50 as producers send them:

* ``loadgen``: the load generator's events (task lifecycles with LLM and tool calls);
* ``stories``: development stories (``devtrail.producers.stories``: pull requests, commits, links...);
* ``leaky``: the stories with a secret (an API key, a password assignment or a bearer
  token) planted in the free text of one event in ten.

Each round times ``process_batch`` over the whole workload with scrubbing on, then off, in
the same process (this machine's speed drifts: only figures of one round compare), and
``scrub_json`` alone over the same payloads. It prints microseconds per event and how many
secrets were replaced.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from devtrail.consumers.clean import PAYLOAD, event_to_row
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.consumers.scrub import scrub_json
from devtrail.producers.loadgen import Workload
from devtrail.producers.stories import Stories
from devtrail.schemas.codec import encode_event

BUNDLE = 50
LEAKS = (
    "using sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 from the vault",
    "connect with password=hunter2hunter2",
    "curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345'",
)


def messages(events: list[Any]) -> list[SourceMessage]:
    """The events as bundles of ``BUNDLE`` (one partition, consecutive offsets)."""
    encoded = [orjson.loads(encode_event(e)) for e in events]
    return [
        SourceMessage("in", 0, i, orjson.dumps(encoded[start : start + BUNDLE]))
        for i, start in enumerate(range(0, len(encoded), BUNDLE))
    ]


def leaky(events: list[Any], seed: int = 3) -> list[Any]:
    """``events`` with a secret in a free-text field of one event in ten (where it has one)."""
    rng = random.Random(seed)
    out = []
    for event in events:
        payload = getattr(event, "payload", None)
        if payload is not None and rng.random() < 0.1:
            for field in ("description", "summary", "title", "error", "message"):
                if isinstance(getattr(payload, field, None), str):
                    leaked = payload.model_copy(update={field: f"{getattr(payload, field)} {rng.choice(LEAKS)}"})
                    event = event.model_copy(update={"payload": leaked})
                    break
        out.append(event)
    return out


def timed(batch: list[SourceMessage], events: int, scrub: bool) -> tuple[float, Counter[str]]:
    """Microseconds per event of ``process_batch`` over ``batch``, and the secrets it replaced.

    The cyclic garbage collector is off while it runs, as in the workers
    (``devtrail.workers.tune_garbage_collector``): on, it made the figures swing by 50 %.
    """
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        outcome = process_batch(batch, DedupIndex(600, max_ids=10 * events), 0.0, scrub=scrub)
        return (time.perf_counter() - started) / events * 1e6, outcome.scrubbed
    finally:
        gc.enable()


def scrub_alone(events: list[Any]) -> float:
    """Microseconds per event of ``scrub_json`` alone over the events' payload texts."""
    payloads = [event_to_row(e)[PAYLOAD] for e in events]
    gc.collect()
    gc.disable()
    try:
        found: Counter[str] = Counter()
        started = time.perf_counter()
        for payload in payloads:
            scrub_json(payload, found)
        return (time.perf_counter() - started) / len(payloads) * 1e6
    finally:
        gc.enable()


def measure(events: int, rounds: int) -> dict[str, Any]:
    stories = Stories("bench", seed=5).events(events)
    workloads = {
        "loadgen": list(Workload(run_id="bench", seed=5).events(events)),
        "stories": stories,
        "leaky": leaky(stories),
    }
    figures: dict[str, Any] = {"events": events, "bundle": BUNDLE, "rounds": rounds}
    for name, batch_events in workloads.items():
        batch = messages(batch_events)
        runs = []
        for _ in range(rounds):
            on, found = timed(batch, len(batch_events), scrub=True)
            off, _ = timed(batch, len(batch_events), scrub=False)
            runs.append({"on_us": round(on, 2), "off_us": round(off, 2), "ratio": round(on / off, 3)})
        best_on, best_off = min(r["on_us"] for r in runs), min(r["off_us"] for r in runs)
        alone = min(scrub_alone(batch_events) for _ in range(rounds))
        figures[name] = {
            "runs": runs,
            "best_on_us": best_on,
            "best_off_us": best_off,
            "scrub_alone_us_per_event": round(alone, 2),
            "secrets_replaced": dict(found),
        }
        print(
            f"{name:<8} process_batch {best_off:6.2f} us/event without scrubbing, {best_on:6.2f} with "
            f"(best of {rounds}); scrub_json alone {alone:5.2f} us/event; "
            f"replaced {sum(found.values())}: {dict(found)}"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = measure(args.events, args.rounds)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
