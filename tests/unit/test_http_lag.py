"""The lag arithmetic and its export, without services."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from devtrail.lag import LagCollector, LagMonitor, PartitionLag, pipeline_groups
from devtrail.settings import StackSettings


def test_lag_is_end_minus_next_offset_never_negative() -> None:
    assert PartitionLag("g", "t", 0, end_offset=120, next_offset=100).lag == 20
    # The embedded broker reports the last batch's base offset + 1: a drained partition's
    # committed offset can be past it.
    assert PartitionLag("g", "t", 0, end_offset=2, next_offset=6).lag == 0


def test_groups_and_where_their_offsets_are() -> None:
    settings = StackSettings(topic_prefix="p", sink_group="s", processor_group="f")
    groups = {g.name: g for g in pipeline_groups(settings, ["processor", "sink", "dead-letters"])}
    assert groups["f"].offsets_in == "kafka"
    assert groups["f"].topics == settings.topics.input_topics
    assert groups["s"].offsets_in == "database"
    assert groups["s"].topics == ("p.clean",)
    assert groups[settings.dead_letter_group].topics == ("p.dead-letters",)


def test_the_latest_reading_is_exported_per_group_topic_and_partition() -> None:
    monitor = LagMonitor(StackSettings(), [], interval_s=1)
    monitor.readings = [PartitionLag("sink", "p.clean", 0, 50, 40), PartitionLag("sink", "p.clean", 1, 7, 9)]
    registry = CollectorRegistry()
    registry.register(LagCollector(monitor))
    text = generate_latest(registry).decode()
    assert 'devtrail_consumer_lag{group="sink",partition="0",topic="p.clean"} 10.0' in text
    assert 'devtrail_consumer_lag{group="sink",partition="1",topic="p.clean"} 0.0' in text
