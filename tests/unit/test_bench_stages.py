"""The drain's per-stage figures: CPU per event in the steady window, and what each stage adds."""

from __future__ import annotations

from devtrail.bench.drain import PIPELINES, drain_label, steady_cpu_per_event
from devtrail.bench.harness import Milestones
from devtrail.bench.run import stage_costs


def _progress(t10: float, t90: float) -> Milestones:
    progress = Milestones(1_000)
    progress.times = {1: t10 - 1, 10: t10, 90: t90, 100: t90 + 1}
    return progress


def test_steady_cpu_is_per_event_between_the_snapshots_with_workers_named_by_role() -> None:
    before = {10: ("python", 5.0), 11: ("python", 1.0), 12: ("postgres", 2.0), 13: ("python", 0.5)}
    after = {10: ("python", 5.4), 11: ("python", 1.2), 12: ("postgres", 2.2), 13: ("python", 0.6), 14: ("tansu", 0.04)}
    steady = steady_cpu_per_event({10: before, 90: after}, _progress(2.0, 2.4), 1_000, {10: "processor", 11: "sink"})
    # 800 events between 10 % and 90 %: 0.4 CPU-s is 500 us per event.
    assert steady["processor"] == 500.0
    assert steady["sink"] == 250.0
    assert steady["postgres"] == 250.0
    assert steady["python"] == 125.0  # the benchmark's own process, not a worker
    assert "tansu" not in steady  # under 0.05 CPU-s: left out, as cpu_used_between does
    assert steady["total"] == 1125.0
    assert steady["cores_busy"] == 2.25  # 0.9 CPU-s in 0.4 s


def test_steady_cpu_is_empty_without_both_snapshots() -> None:
    assert steady_cpu_per_event({10: {}}, _progress(1.0, 2.0), 1_000) == {}


def test_stage_costs_compare_every_pipeline_with_the_spine() -> None:
    results = {
        "drain_spine_events_per_second": 25_000,
        "drain_spine_steady_cpu_us_per_event": {"processor": 30.0, "postgres": 20.0, "total": 50.0, "cores_busy": 2.0},
        "drain_events_per_second": 10_000,
        "drain_steady_cpu_us_per_event": {
            "processor": 29.8,
            "postgres": 45.0,
            "writers": 50.0,
            "total": 124.8,
            "cores_busy": 1.6,
        },
    }
    table = stage_costs(results)
    assert set(table) == {"spine", "default", "budget_us_per_event_at_0.8", "budget_us_per_event_at_0.7"}
    default = table["default"]
    assert default["ratio_to_spine"] == 0.4
    assert default["added_us_per_event"] == 74.8
    # Changes under half a microsecond are noise and left out; the largest comes first.
    assert default["added_by_program"] == {"writers": 50.0, "postgres": 25.0}
    assert list(default["added_by_program"]) == ["writers", "postgres"]
    assert table["budget_us_per_event_at_0.8"] == 12.5  # 50 * (1 / 0.8 - 1)
    assert table["budget_us_per_event_at_0.7"] == 21.4


def test_stage_costs_need_the_spine() -> None:
    assert stage_costs({"drain_events_per_second": 10_000}) == {}


def test_every_pipeline_has_its_own_label_and_the_old_ones_keep_theirs() -> None:
    labels = [drain_label(p) for p in PIPELINES]
    assert len(set(labels)) == len(labels)
    assert {drain_label("spine"), drain_label("default"), drain_label("rules")} == {
        "drain_spine",
        "drain",
        "drain_rules",
    }
    # Each pipeline adds to the one before: the spine has neither correlation nor writers
    # beyond the hourly counts; the rules pipeline is the default one with the rules worker.
    assert PIPELINES["spine"] == ({"correlation": False, "writers": "event_counts_hourly"}, False)
    assert PIPELINES["rules"] == (PIPELINES["default"][0], True)
