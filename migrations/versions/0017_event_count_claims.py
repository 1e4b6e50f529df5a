"""``event_counts_hourly`` claims bounded: day partitions dropped past the window, as the aggregates'

``aggregate_applied`` held one row per event counted into ``event_counts_hourly``, for ever
(about 70 bytes per event with its index). Its claims now live in
``aggregates.event_count_claims``, partitioned by the day in the event's UUIDv7 id and
dropped once that day is ``DEVTRAIL_AGGREGATES_DEDUP_DAYS`` old, with
``aggregates.event_count_claims_late`` for ids outside that window: the shape and rules of the
analyst aggregates' ``aggregates.claims`` (migration 0008, ``devtrail.consumers.aggregates.claims``).

The claims made so far move over: those whose id was made in the last ``DAYS`` days (or up to
two days ahead) into day partitions created here, the way the writer claims them (so that a
copy arriving now is recognised: the writer looks in its day's partition), the others into
``event_count_claims_late``, claimed today. The writer drops the partitions past its window
at its first pass. ``aggregate_applied`` is dropped. The downgrade puts every claim back.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TABLES = (
    """
CREATE TABLE aggregates.event_count_claims (
    id_day   date NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (id_day, event_id)
) PARTITION BY RANGE (id_day)
""",
    """
CREATE TABLE aggregates.event_count_claims_late (
    event_id   uuid PRIMARY KEY,
    claimed_on date NOT NULL
)
""",
    "CREATE INDEX event_count_claims_late_claimed_on ON aggregates.event_count_claims_late (claimed_on)",
)

#: Days back whose claims move into day partitions (the largest dedup window worth keeping
#: whole; the writer drops what is past its own ``DEVTRAIL_AGGREGATES_DEDUP_DAYS``).
DAYS = 35


def _id_day(column: str) -> str:
    """The UTC day a UUIDv7 id was made, in SQL; NULL for other ids (as the writer reads it)."""
    as_bytes = f"uuid_send({column})"
    millis = " | ".join(f"(get_byte({as_bytes}, {i})::bigint << {8 * (5 - i)})" for i in range(6))
    made = f"(to_timestamp(({millis}) / 1000.0) AT TIME ZONE 'UTC')::date"
    return f"CASE WHEN get_byte({as_bytes}, 6) >> 4 = 7 THEN {made} END"


PARTITIONS = f"""
DO $$
DECLARE day date;
BEGIN
    FOR day IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - {DAYS},
                                      (now() AT TIME ZONE 'UTC')::date + 2, interval '1 day')::date
    LOOP
        EXECUTE format('CREATE TABLE aggregates.%I PARTITION OF aggregates.event_count_claims '
                       'FOR VALUES FROM (%L) TO (%L)', 'event_count_claims_' || to_char(day, 'YYYYMMDD'), day, day + 1);
    END LOOP;
END $$
"""  # noqa: S608 - no input

MOVE = f"""
WITH claimed AS (
    SELECT event_id, {_id_day("event_id")} AS id_day FROM aggregate_applied WHERE aggregate = 'event_counts_hourly'
), window_days AS (
    SELECT (now() AT TIME ZONE 'UTC')::date - {DAYS} AS first, (now() AT TIME ZONE 'UTC')::date + 2 AS last
), kept AS (
    INSERT INTO aggregates.event_count_claims (id_day, event_id)
    SELECT id_day, event_id FROM claimed, window_days WHERE id_day BETWEEN first AND last
)
INSERT INTO aggregates.event_count_claims_late (event_id, claimed_on)
SELECT event_id, (now() AT TIME ZONE 'UTC')::date FROM claimed, window_days
WHERE id_day IS NULL OR id_day NOT BETWEEN first AND last
"""  # noqa: S608 - no input

#: 0001's table.
APPLIED = """
CREATE TABLE aggregate_applied (
    aggregate text NOT NULL,
    event_id  uuid NOT NULL,
    PRIMARY KEY (aggregate, event_id)
)
"""

MOVE_BACK = """
INSERT INTO aggregate_applied (aggregate, event_id)
SELECT 'event_counts_hourly', event_id FROM aggregates.event_count_claims
UNION
SELECT 'event_counts_hourly', event_id FROM aggregates.event_count_claims_late
"""


def upgrade() -> None:
    for statement in TABLES:
        op.execute(statement)
    op.execute(PARTITIONS)
    op.execute(MOVE)
    op.execute("DROP TABLE aggregate_applied")


def downgrade() -> None:
    op.execute(APPLIED)
    op.execute(MOVE_BACK)
    op.execute("DROP TABLE aggregates.event_count_claims_late")
    op.execute("DROP TABLE aggregates.event_count_claims")  # with its day partitions
