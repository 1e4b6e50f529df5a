"""Month arithmetic, the retention cut-off and the ``devtrail db retention`` command line."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime

import pytest

from devtrail.cli import _parser, cmd_db_retention
from devtrail.consumers.partitions import (
    CreatedPartition,
    Partition,
    add_months,
    month_range,
    months_ahead_of,
    partition_name,
    uncovered_months,
)
from devtrail.consumers.retention import MaintenanceReport, expired_partitions, retention_cutoff
from devtrail.errors import SetupError
from devtrail.settings import StackSettings


def utc(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def month_partition(year: int, month: int) -> Partition:
    lower, upper = month_range(date(year, month, 1))
    return Partition(partition_name(date(year, month, 1)), lower, upper)


def test_months_roll_over_years_both_ways() -> None:
    assert add_months(date(2026, 11, 1), 3) == date(2027, 2, 1)
    assert add_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert add_months(date(2026, 12, 1), 13) == date(2028, 1, 1)
    assert months_ahead_of(date(2026, 11, 26), 2) == [date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)]


def test_a_months_partition_spans_utc_midnights_and_is_named_like_the_migrations() -> None:
    assert month_range(date(2027, 12, 15)) == (utc(2027, 12), utc(2028, 1))
    assert partition_name(date(2027, 3, 31)) == "events_2027_03"


def test_months_held_by_any_partition_are_not_created_again() -> None:
    partitions = [
        month_partition(2026, 11),
        Partition("events_old", None, utc(2020, 1)),  # FROM (MINVALUE)
        Partition("events_mid_december", utc(2026, 12, 15), utc(2027, 1)),
    ]
    months = [date(2026, 11, 1), date(2026, 12, 1), date(2019, 6, 1), date(2027, 1, 1), date(2027, 1, 1)]
    assert uncovered_months(months, partitions) == [date(2027, 1, 1)]


def test_cutoff_is_midnight_utc_and_zero_or_none_keeps_everything() -> None:
    assert retention_cutoff(date(2027, 3, 10), 9) == utc(2027, 3, 1)
    assert retention_cutoff(date(2027, 3, 10), 0) is None
    assert retention_cutoff(date(2027, 3, 10), None) is None


def test_only_partitions_wholly_older_than_the_cutoff_expire() -> None:
    partitions = [
        month_partition(2027, 1),
        month_partition(2027, 2),  # ends exactly at the cut-off: every row is older
        month_partition(2027, 3),  # holds the cut-off: kept whole
        Partition("events_rest", utc(2027, 4), None),
    ]
    assert [p.name for p in expired_partitions(partitions, utc(2027, 3))] == ["events_2027_01", "events_2027_02"]
    assert [p.name for p in expired_partitions(partitions, utc(2027, 3, 2))] == ["events_2027_01", "events_2027_02"]


def test_the_report_says_what_was_dropped_or_would_be() -> None:
    done = MaintenanceReport(
        utc(2027, 3),
        created=[CreatedPartition("events_2024_05", date(2024, 5, 1), 3)],
        dropped=[Partition("events_2024_05", utc(2024, 5), utc(2024, 6), 2_500_000)],
    )
    assert done.lines() == [
        "created events_2024_05 (moved 3 rows from events_default)",
        "retention cut-off: 2027-03-01 00:00 UTC",
        "dropped events_2024_05 [2024-05-01, 2024-06-01) 2.5 MB",
    ]
    plan = MaintenanceReport(utc(2027, 3), default_rows_to_drop={date(2001, 2, 1): 7}, dry_run=True)
    assert plan.lines()[-1].startswith("would drop 7 rows of events_default from 2001-02")
    assert MaintenanceReport(utc(2027, 3)).lines()[-1] == "nothing is older than the cut-off"
    assert MaintenanceReport(None).lines() == ["retention is off: nothing dropped"]


def test_retention_days_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert StackSettings().retention_days is None
    monkeypatch.setenv("DEVTRAIL_RETENTION_DAYS", "400")
    assert StackSettings().retention_days == 400
    monkeypatch.setenv("DEVTRAIL_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="retention_days"):
        StackSettings()


def test_retention_needs_a_database_and_an_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVTRAIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("DEVTRAIL_RETENTION_DAYS", raising=False)
    args = _parser().parse_args(["db", "retention", "--older-than", "30"])
    with pytest.raises(SetupError, match="DEVTRAIL_DATABASE_URL"):
        cmd_db_retention(args)
    args = _parser().parse_args(["db", "retention", "--database-url", "postgresql://h/db"])
    with pytest.raises(SetupError, match="--older-than DAYS or set DEVTRAIL_RETENTION_DAYS"):
        cmd_db_retention(args)


def test_older_than_must_be_a_positive_number_of_days(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["db", "retention", "--older-than", "0"])
    assert "must be between 1 and 36500 days" in capsys.readouterr().err
    args = _parser().parse_args(["db", "retention", "--older-than", "90", "--dry-run"])
    assert isinstance(args, argparse.Namespace)
    assert (args.older_than, args.dry_run) == (90, True)
