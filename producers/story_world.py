"""What the stories of ``devtrail.producers.stories`` are made of: projects, agents, people, subjects, time and ids."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from devtrail.producers.loadgen import MODELS
from devtrail.producers.story_truth import TruthLog
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.ids import uuid7_from

#: (Linear team key, repository name) of the projects, in turn.
TEAMS = (
    ("SHOP", "shop"),
    ("PAY", "payments"),
    ("AUTH", "auth"),
    ("SRCH", "search"),
    ("INFRA", "infra"),
    ("DOCS", "docs"),
)
#: People: they lead parent tasks, review, merge, deploy, cancel, and write some pull requests.
PERSONS = ("alice", "bob", "carol", "dave", "erin", "frank")
#: Agent names (no digits: a branch starts with its author's name and must not look like a Linear key).
AGENT_NAMES = ("atlas", "beacon", "cipher", "drift", "ember", "flint", "gale")
AGENTS_PER_PROJECT = 3
RUNTIMES = ("claude-code", "codegen")
REQUIREMENTS = (
    "Checkout overhaul",
    "Fraud checks",
    "Faster search",
    "Self-service refunds",
    "Account security",
    "Order tracking",
    "Team billing",
    "Audit trail",
)
#: Task titles; lower-cased and hyphenated they make branch names (no digits, see above).
SUBJECTS = (
    "Fix cart totals",
    "Add coupon codes",
    "Retry failed payments",
    "Cache product search",
    "Validate shipping address",
    "Speed up checkout page",
    "Add audit log entries",
    "Rotate signing keys",
    "Paginate order history",
    "Localize receipt emails",
    "Handle webhook replays",
    "Expire idle sessions",
    "Index search synonyms",
    "Refund partial orders",
)

Model = tuple[str, str, float, float]
E = TypeVar("E", bound=Envelope)


@dataclass(frozen=True)
class Agent:
    """An agent of one project."""

    agent_id: str
    name: str
    runtime: str
    model: Model


@dataclass
class Project:
    """A project: its Linear team, its repository and its agents, and the numbers it hands out."""

    index: int
    project_id: str
    team: str
    repository: str
    agents: tuple[Agent, ...]
    next_key: int
    next_pr: int = 1
    stories: int = 0

    def linear_key(self) -> str:
        """A new Linear issue key of the team."""
        self.next_key += 1
        return f"{self.team}-{self.next_key}"

    def pr_number(self) -> int:
        """A new pull request number in the repository."""
        self.next_pr += 1
        return self.next_pr - 1


def make_projects(prefix: str, count: int) -> list[Project]:
    """``count`` projects; the Linear numbers start at a place that depends on the prefix.

    The repositories are owned by ``prefix``, so two runs never share a pull request; Linear
    keys are global, so each run numbers its issues from its own place.
    """
    key_base = 100 + random.Random(prefix).randrange(9_000) * 10_000  # noqa: S311 - spreading, not security
    return [_project(prefix, index, key_base) for index in range(count)]


def _project(prefix: str, index: int, key_base: int) -> Project:
    team, repository = TEAMS[index % len(TEAMS)]
    suffix = str(index // len(TEAMS)) if index >= len(TEAMS) else ""
    project_id = f"{prefix}-p{index}"
    names = [AGENT_NAMES[(index + k) % len(AGENT_NAMES)] for k in range(AGENTS_PER_PROJECT)]
    agents = tuple(
        Agent(f"{project_id}-agent-{name}", name, RUNTIMES[k % len(RUNTIMES)], MODELS[(index + k) % len(MODELS)])
        for k, name in enumerate(names)
    )
    return Project(index, project_id, team + suffix, f"{prefix}/{repository}{suffix}", agents, key_base)


@dataclass
class Clock:
    """A story's time: it only moves forward, a whole number of seconds at a time."""

    now: datetime

    def advance(self, rng: random.Random, low_s: int, high_s: int) -> datetime:
        """Move forward by ``low_s`` to ``high_s`` seconds (at least one); return the new time."""
        self.now += timedelta(seconds=max(1, rng.randint(low_s, high_s)))
        return self.now


@dataclass
class Emitter:
    """Makes the events of the stories: a UUIDv7 of the event's time, the source, the time.

    Attributes:
        clock: the time of the story being written.
        events: the events of the story being written, in the order made.
    """

    ids: random.Random
    source: str
    clock: Clock = field(default_factory=lambda: Clock(datetime(2026, 1, 1, tzinfo=UTC)))
    events: list[Envelope] = field(default_factory=list)

    def emit(self, cls: type[E], **fields: Any) -> E:
        """Make an event of ``cls`` at the clock's time with ``fields``, and keep it."""
        at = self.clock.now
        event = cls(event_id=uuid7_at(at, self.ids.getrandbits(74)), source=self.source, occurred_at=at, **fields)
        self.events.append(event)
        return event

    def sha(self) -> str:
        """A new commit sha, 40 hexadecimal characters."""
        return f"{self.ids.getrandbits(160):040x}"

    def take(self) -> list[Envelope]:
        """The events made since the last call."""
        events, self.events = self.events, []
        return events


@dataclass
class Run:
    """What the stories of one ``Stories`` share.

    Attributes:
        prefix: starts every id.
        rng: the decisions.
        emitter: makes the events.
        log: the truth so far.
        numbers: the last number handed out, by kind of id.
        session_calls: how many LLM and tool calls an agent session makes before its end, at
            least and at most.
    """

    prefix: str
    rng: random.Random
    emitter: Emitter
    log: TruthLog = field(default_factory=TruthLog)
    numbers: Counter[str] = field(default_factory=Counter)
    session_calls: tuple[int, int] = (3, 9)

    def new_id(self, kind: str, owner: str | None = None) -> str:
        """``<owner>-<kind><n>``, the owner being the prefix unless given, n counting from 1 by kind."""
        self.numbers[kind] += 1
        return f"{owner or self.prefix}-{kind}{self.numbers[kind]}"


def uuid7_at(at: datetime, rand: int) -> uuid.UUID:
    """A UUIDv7 of the millisecond of ``at``, its 74 random bits from ``rand``."""
    return uuid7_from((at - _EPOCH) // timedelta(milliseconds=1), rand)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
