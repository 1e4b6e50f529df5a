"""Memory of the processors' link graph per million entities, and its cost per event.

``python -m devtrail.bench.graph_memory [--entities N] [--json FILE]`` builds the graph a story of
N tasks would leave (per task: a session, a requirement, a project link, a Linear issue, a
pull request and its head commit; per 10 tasks a deployment), measures what it holds with
``tracemalloc``, then times ``Correlator.observe`` on ``llm.called`` events that carry only
their session (the common case: every one is enriched).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path
from typing import cast

import orjson

from devtrail.consumers.processor.correlate import (
    COMMIT_PR,
    DEPLOYMENT_COMMIT,
    LINEAR_TASK,
    PR_TASK,
    SESSION_AGENT,
    SESSION_PROJECT,
    SESSION_TASK,
    TASK_PROJECT,
    TASK_REQUIREMENT,
    Correlator,
    Link,
)
from devtrail.schemas.events import Event
from tests.factories import llm_called


def build(entities: int) -> Correlator:
    graph = Correlator()
    for i in range(entities):
        task, session, sha = f"task-{i:09d}", f"session-{i:09d}", f"{i:040x}"
        pr = f"acme/service-{i % 50}#{i}"
        for link in (
            Link(SESSION_TASK, session, task),
            Link(SESSION_PROJECT, session, f"project-{i % 20}"),
            Link(SESSION_AGENT, session, f"agent-{i % 100}"),
            Link(TASK_REQUIREMENT, task, f"req-{i // 10:08d}"),
            Link(TASK_PROJECT, task, f"project-{i % 20}"),
            Link(LINEAR_TASK, f"SHOP-{i}", task),
            Link(PR_TASK, pr, task),
            Link(COMMIT_PR, sha, pr),
        ):
            graph.apply(link)
        if i % 10 == 0:
            graph.apply(Link(DEPLOYMENT_COMMIT, f"deploy-{i}", sha))
    return graph


def observe_stories(count: int) -> tuple[float, float]:
    """``observe`` per story event: a fresh graph learning every entity, then the same again."""
    from devtrail.producers.stories import Stories

    events = Stories("graph", seed=1).events(count)
    figures = []
    for _ in range(2):
        graph = Correlator()
        started = time.perf_counter()
        for event in events:
            graph.observe(cast(Event, event))
        figures.append((time.perf_counter() - started) / len(events) * 1e6)
    print(f"  observe(): {figures[0]:.2f} us per story event, learning; {figures[1]:.2f} us warm ({len(events):,})")
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=200_000, help="tasks in the story (default 200,000)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--story-events", type=int, default=100_000, help="story events to observe (0: skip)")
    args = parser.parse_args()
    tracemalloc.start()
    graph = build(args.entities)
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    links = len(graph)
    per_million_tasks = held / args.entities * 1_000_000
    print(f"graph: {args.entities:,} tasks, {links:,} links, {held / 2**20:,.1f} MiB held")
    print(f"  {held / links:,.0f} bytes per link; {per_million_tasks / 2**30:,.2f} GiB per million tasks")
    events = [
        llm_called(session_id=f"session-{i:09d}") for i in range(0, args.entities, max(1, args.entities // 50_000))
    ]
    started = time.perf_counter()
    for event in events:
        graph.observe(event)
    per_event_us = (time.perf_counter() - started) / len(events) * 1e6
    print(f"  observe(): {per_event_us:.2f} us per llm.called enriched through its session ({len(events):,} events)")
    story_us = observe_stories(args.story_events) if args.story_events else None
    if args.json:
        figures = {
            "tasks": args.entities,
            "links": links,
            "bytes_held": held,
            "bytes_per_link": held / links,
            "bytes_per_million_tasks": per_million_tasks,
            "observe_us_per_event": per_event_us,
            "observe_us_per_story_event": story_us,
        }
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
