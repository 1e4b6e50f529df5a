"""Order-independent merges: a projection row is the join of its events' patches.

A *patch* is what one event (or a batch's events, already reduced) says about one row: a
dict of column values. A ``Table`` lists its columns' *rules*; each rule merges patches so
that the result does not depend on their order, and applying a patch twice changes nothing
(a join semilattice: commutative, associative, idempotent). The same rule does it twice:

* in Python (``Table.merge``), to reduce a batch to one patch per row first;
* in SQL (``Table.upsert_sql``), as ``INSERT ... ON CONFLICT DO UPDATE`` against the stored row,
  one statement per table per batch (the patches sent as one JSON text), rows in key order
  (two workers lock rows in the same order, so they never deadlock), updating only rows the
  patch changes (a replayed batch writes nothing).

Rules: ``Least`` and ``Greatest`` (a time), ``Latest`` (values carried by the event with the
greatest ``(occurred_at, event_id)`` key; ``Latest(..., earliest=True)`` keeps the least key
instead), ``IdSet`` (a set of event ids), ``Strongest`` (a label ranked by a fixed order).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import asyncpg
import orjson

Patch = dict[str, Any]


class EventKey(NamedTuple):
    """Orders events: ``occurred_at``, then ``event_id`` (canonical UUID text sorts as the uuid does)."""

    at: datetime
    event_id: str


@dataclass(frozen=True)
class Column:
    """A projection column.

    Args:
        name: the column's name.
        sql_type: its type in PostgreSQL.
        param_type: the element type it is sent as, when not ``sql_type`` (cast on insert).
        convert: SQL turning the sent value ``{}`` into the column's, when a cast does not.
    """

    name: str
    sql_type: str
    param_type: str | None = None
    convert: str = ""

    @property
    def sent_as(self) -> str:
        return self.param_type or self.sql_type

    @property
    def select(self) -> str:
        """The value as inserted, from the unnested batch ``b``."""
        if self.convert:
            return self.convert.format(f"b.{self.name}")
        return f"b.{self.name}::{self.sql_type}" if self.param_type else f"b.{self.name}"


def text(name: str) -> Column:
    return Column(name, "text")


def stamp(name: str) -> Column:
    return Column(name, "timestamptz")


class Rule(ABC):
    """How one or more columns of a row merge; the same in Python and in SQL."""

    columns: tuple[Column, ...]

    @abstractmethod
    def merge(self, row: Patch, patch: Patch) -> None:
        """Fold ``patch``'s values of these columns into ``row`` (in place)."""

    @abstractmethod
    def assignments(self) -> list[str]:
        """``SET`` items of the upsert (``t``: the stored row, ``EXCLUDED``: the batch's)."""

    @abstractmethod
    def changes(self) -> str:
        """SQL true when ``EXCLUDED`` changes the stored row ``t`` (NULL counts as no)."""

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    @abstractmethod
    def trigger(self) -> str:
        """The column a patch must hold for ``merge`` to change anything (absent: a no-op)."""


@dataclass(frozen=True)
class _Extreme(Rule):
    """The most extreme value seen: the least (``Least``) or the greatest (``Greatest``)."""

    column: Column
    #: Whether the least wins (else the greatest).
    least: ClassVar[bool]

    @cached_property
    def columns(self) -> tuple[Column, ...]:  # type: ignore[override]
        return (self.column,)

    @property
    def trigger(self) -> str:
        return self.column.name

    def merge(self, row: Patch, patch: Patch) -> None:
        name = self.column.name
        new = patch.get(name)
        if new is not None and (row.get(name) is None or (new < row[name] if self.least else new > row[name])):
            row[name] = new

    def assignments(self) -> list[str]:
        c = self.column.name
        return [f"{c} = {'LEAST' if self.least else 'GREATEST'}(t.{c}, EXCLUDED.{c})"]

    def changes(self) -> str:
        c = self.column.name
        operator = "<" if self.least else ">"
        return f"EXCLUDED.{c} {operator} t.{c} OR (t.{c} IS NULL AND EXCLUDED.{c} IS NOT NULL)"


@dataclass(frozen=True)
class Least(_Extreme):
    """The smallest value seen (a first time)."""

    least = True


@dataclass(frozen=True)
class Greatest(_Extreme):
    """The greatest value seen (a last time)."""

    least = False


@dataclass(frozen=True)
class Latest(Rule):
    """Values set together by one event; the event with the greatest key wins.

    The key is stored beside them, as ``<prefix>_at`` (its ``occurred_at``: when the values
    were set) and ``<prefix>_event_id``. A patch without the key column leaves them alone.

    Args:
        prefix: names the key columns.
        values: the columns the winning event sets (none: only the key, e.g. last update).
        earliest: the least key wins instead (what was seen first).
        at: the key's time column, when not ``<prefix>_at``.
        rank: ranks of the first value, compared between the time and the event id: of two
            events at the same instant, the higher rank wins (a task completed at the instant
            it started is completed, whichever event id is greater); unlisted values rank 0.
    """

    prefix: str
    values: tuple[Column, ...] = ()
    earliest: bool = False
    at: str = ""
    rank: tuple[tuple[str, int], ...] = ()

    @cached_property
    def at_column(self) -> str:
        return self.at or f"{self.prefix}_at"

    @cached_property
    def id_column(self) -> str:
        return f"{self.prefix}_event_id"

    @cached_property
    def columns(self) -> tuple[Column, ...]:  # type: ignore[override]
        return (*self.values, stamp(self.at_column), Column(self.id_column, "uuid"))

    def set(self, key: EventKey, *values: Any) -> Patch:
        """A patch setting the ``values`` columns (in their order) as of the event ``key``."""
        names = self.value_names
        if len(values) != len(names):
            raise TypeError(f"{self.prefix}: {len(names)} values expected, got {len(values)}")
        patch = dict(zip(names, values))  # noqa: B905 - lengths checked above
        patch[self.at_column] = key[0]
        patch[self.id_column] = key[1]
        return patch

    @cached_property
    def value_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.values)

    @cached_property
    def _ranks(self) -> dict[str, int]:
        return dict(self.rank)

    @property
    def trigger(self) -> str:
        return self.at_column

    def merge(self, row: Patch, patch: Patch) -> None:
        at, event_id = self.at_column, self.id_column
        new_at = patch.get(at)
        if new_at is None:
            return
        old_at = row.get(at)
        if old_at is not None:
            new, old = (new_at, patch[event_id]), (old_at, row[event_id])
            if self.rank and new_at == old_at:  # a tie of times: the ranks, then the ids
                new, old = (self._rank_in(patch), new[1]), (self._rank_in(row), old[1])
            if (new >= old) if self.earliest else (new <= old):
                return
        for name in self.column_names:
            row[name] = patch.get(name)

    def _rank_in(self, values: Patch) -> int:
        """The rank of the first value in ``values`` (``rank``; 0 for a value it does not list)."""
        return self._ranks.get(str(values.get(self.values[0].name)), 0)

    def _wins(self) -> str:
        at, event_id, op = self.at_column, self.id_column, "<" if self.earliest else ">"
        new, old = f"EXCLUDED.{at}, EXCLUDED.{event_id}", f"t.{at}, t.{event_id}"
        if self.rank:
            new = f"EXCLUDED.{at}, {self._rank_of('EXCLUDED')}, EXCLUDED.{event_id}"
            old = f"t.{at}, {self._rank_of('t')}, t.{event_id}"
        return f"EXCLUDED.{at} IS NOT NULL AND (t.{at} IS NULL OR ({new}) {op} ({old}))"

    def _rank_of(self, table: str) -> str:
        """SQL: the rank of ``table``'s first value (``rank``)."""
        cases = " ".join(f"WHEN '{value}' THEN {rank}" for value, rank in self.rank)
        return f"(CASE {table}.{self.values[0].name} {cases} ELSE 0 END)"

    def assignments(self) -> list[str]:
        wins = self._wins()
        return [f"{c.name} = CASE WHEN {wins} THEN EXCLUDED.{c.name} ELSE t.{c.name} END" for c in self.columns]

    def changes(self) -> str:
        return self._wins()


@dataclass(frozen=True)
class IdSet(Rule):
    """A set of event ids (``uuid[]``, sorted); a patch holds a ``frozenset`` of id texts."""

    name: str

    @cached_property
    def columns(self) -> tuple[Column, ...]:  # type: ignore[override]
        return (Column(self.name, "uuid[]", "text"),)

    @property
    def trigger(self) -> str:
        return self.name

    def merge(self, row: Patch, patch: Patch) -> None:
        new = patch.get(self.name)
        if new:
            old = row.get(self.name)
            row[self.name] = old | new if old else new

    def assignments(self) -> list[str]:
        c = self.name
        return [
            f"{c} = CASE WHEN EXCLUDED.{c} IS NULL OR t.{c} @> EXCLUDED.{c} THEN t.{c} ELSE "  # noqa: S608 - names
            f"ARRAY(SELECT DISTINCT i FROM unnest(t.{c} || EXCLUDED.{c}) AS i ORDER BY i) END"
        ]

    def changes(self) -> str:
        c = self.name
        return f"NOT coalesce(t.{c} @> EXCLUDED.{c}, EXCLUDED.{c} IS NULL)"


@dataclass(frozen=True)
class Strongest(Rule):
    """A label; the strongest in ``order`` (weakest first) wins. SQL ranks with ``array_position``."""

    name: str
    order: tuple[str, ...]

    @cached_property
    def columns(self) -> tuple[Column, ...]:  # type: ignore[override]
        return (text(self.name),)

    def rank(self, label: str | None) -> int:
        return -1 if label is None else self.order.index(label)

    @property
    def trigger(self) -> str:
        return self.name

    def merge(self, row: Patch, patch: Patch) -> None:
        new = patch.get(self.name)
        if new is not None and self.rank(new) > self.rank(row.get(self.name)):
            row[self.name] = new

    def _stronger(self) -> str:
        labels = ", ".join(f"'{label}'" for label in self.order)
        position = "array_position(ARRAY[" + labels + "], {}.{})"
        return f"{position.format('EXCLUDED', self.name)} > coalesce({position.format('t', self.name)}, 0)"

    def assignments(self) -> list[str]:
        c = self.name
        return [f"{c} = CASE WHEN {self._stronger()} THEN EXCLUDED.{c} ELSE t.{c} END"]

    def changes(self) -> str:
        return self._stronger()


@dataclass(frozen=True)
class Table:
    """A projection table: its key columns and the rules of its other columns.

    Args:
        name: schema-qualified table name.
        key: the primary key's columns.
        rules: how every other column merges.
    """

    name: str
    key: tuple[Column, ...]
    rules: tuple[Rule, ...]
    _columns: tuple[Column, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = self.key + tuple(c for rule in self.rules for c in rule.columns)
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a column belongs to two rules: {names}")
        object.__setattr__(self, "_columns", columns)

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    def merge(self, row: Patch, patch: Patch) -> None:
        """Fold ``patch`` into ``row`` by every rule that has a value in it."""
        for trigger, merge in self._mergers:
            if trigger in patch:
                merge(row, patch)

    @cached_property
    def _mergers(self) -> tuple[tuple[str, Callable[[Patch, Patch], None]], ...]:
        """Per rule, the column without which a patch leaves that rule's columns alone, and its merge.

        A patch names few of a table's rules (a ``task.completed`` sets the status and the
        summary, not the title): skipping the others without calling them halves a merge.
        """
        return tuple((rule.trigger, rule.merge) for rule in self.rules)

    @cached_property
    def upsert_sql(self) -> str:
        """One statement merging a batch (``encode``: a JSON array of rows, ``$1``) into the table."""
        names = ", ".join(c.name for c in self.columns)
        record = ", ".join(f"{c.name} {c.sent_as}" for c in self.columns)
        selects = ", ".join(c.select for c in self.columns)
        key = ", ".join(c.name for c in self.key)
        sets = ",\n    ".join(a for rule in self.rules for a in rule.assignments())
        changed = "\n   OR ".join(f"({rule.changes()})" for rule in self.rules)
        return (
            f"INSERT INTO {self.name} AS t ({names})\n"
            f"SELECT {selects} FROM json_to_recordset($1::json) AS b({record})\n"
            f"ON CONFLICT ({key}) DO UPDATE SET\n    {sets}\n"
            f"WHERE {changed}\n"
            f"RETURNING {key}"
        )

    @cached_property
    def _key_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.key)

    def encode(self, rows: dict[Any, Patch]) -> str:
        """The rows as a JSON array of objects, in key order; a key is a tuple of the key columns' values.

        One text parameter, serialised in C (``orjson``) and read by ``json_to_recordset``:
        much cheaper for both ends than one array parameter per column. A patch's absent
        column is NULL; an ``IdSet``'s ids are sent as an array literal.
        """
        names = self._key_names
        records = []
        for key in sorted(rows):
            record = dict(zip(names, key, strict=True))
            record.update(rows[key])
            records.append(record)
        return orjson.dumps(records, default=_array_literal).decode()


def _array_literal(value: Any) -> str | None:
    """``orjson``'s fallback: a set of ids (``IdSet``) as a PostgreSQL array literal, sorted; none: NULL."""
    if isinstance(value, frozenset | set):
        return "{" + ",".join(sorted(value)) + "}" if value else None
    raise TypeError(f"a projection value of type {type(value).__name__} cannot be sent")


class Reduction:
    """A batch reduced to one patch per row of ``table``, with how many events each folds.

    Args:
        table: the table the patches are for.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.rows: dict[Hashable, Patch] = {}
        self.events: dict[Hashable, int] = {}

    def add(self, key: tuple[Any, ...], patch: Patch, events: int = 1) -> None:
        """Fold ``patch`` (which becomes the reduction's own) into the row of ``key``."""
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = patch
            self.events[key] = events
        else:
            self.table.merge(row, patch)
            self.events[key] += events

    async def apply(self, conn: asyncpg.Connection, encoded: str) -> int:
        """Upsert the rows, already encoded (``table.encode(self.rows)``); return how many of the
        batch's events went into rows that changed."""
        if not self.rows:
            return 0
        changed = await conn.fetch(self.table.upsert_sql, encoded)
        events = self.events
        return sum(events[tuple(record)] for record in changed)


def merged(table: Table, patches: Iterable[Patch]) -> Patch:
    """All ``patches`` folded into one (for tests and tools)."""
    row: Patch = {}
    for patch in patches:
        table.merge(row, dict(patch))
    return row
