"""Development stories: load shaped like real work, with the truth it implies.

A story belongs to one project. Requirements are created and scored, broken into tasks
(some with sub-tasks) linked to Linear issues, with dependencies between them (one attempted
cycle every ``cycle_every`` stories). Agents work each task in sessions whose LLM and tool
calls name only the session and the agent; a task is started once or twice (a retried
attempt), then completed, failed or cancelled. A task with a Linear issue gets a pull request
whose branch names the key in lower case (or, for some, only whose title names it), commits,
and a merge (a failed task's pull request is closed). The last merged change is deployed and
fails; an incident names that deployment; a hotfix task, its pull request and a second
deployment fix it. Requirements whose tasks all completed are completed last.

``Stories.truth`` is recorded from these decisions (``devtrail.producers.story_truth``), never by
reading the events back. Deterministic: the same prefix, seed and start give the same events,
ids included (UUIDv7 built from each event's ``occurred_at`` and the seeded generator).
"""

from __future__ import annotations

import heapq
import random
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from devtrail.producers.story_truth import StoryTruth
from devtrail.producers.story_world import Clock, Emitter, Run, make_projects
from devtrail.producers.story_writer import StoryWriter
from devtrail.schemas.envelope import Envelope

__all__ = ["PREFIX_PATTERN", "Stories", "StoryTruth", "event_types", "shuffled_with_duplicates"]

#: A prefix names the run in every id; it is also the repositories' GitHub owner.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$")
#: About how many events a story holds, to place the default start early enough.
EVENTS_PER_STORY = 150
#: Time after a story's start for it to end, with room to spare (the median story takes 10 hours, the longest a day).
STORY_SPAN = timedelta(days=2)
#: Calls per session of agents that work as coding agents do: dozens of model and tool calls.
AGENT_SESSION_CALLS = (20, 60)
#: By default a story of a project starts this long after the previous one...
STORY_GAP = timedelta(minutes=20)
#: ... or less, for the stories of the first ``events`` call to start within this window.
STARTS_WINDOW = timedelta(days=4)


class Stories:
    """Writes whole development stories, project after project, and records their truth.

    Args:
        prefix: names the run: every id and the source start with it (letters, digits and
            ``-``, at most 39 characters).
        seed: the same prefix, seed and ``start`` give the same events, ids included.
        projects: projects the stories take turns in.
        cycle_every: one story in this many attempts a dependency cycle (the first one does).
        start: when the first story starts; by default, far enough back that the stories
            of the first ``events`` call end in the past (two to six days back).
        story_gap: time between the starts of two stories of one project; by default 20
            minutes, less when the first ``events`` call wants more stories than fit in 4 days.
        session_calls: LLM and tool calls per agent session, least and most. The default
            (3 to 9) makes lifecycle events about 60 % of the load; agent runs of dozens of
            calls, as coding agents make, give about 90 % calls (``AGENT_SESSION_CALLS``).

    Raises:
        ValueError: a prefix not of that form, fewer than one project or ``cycle_every``,
            or a ``session_calls`` range that is not one.
    """

    def __init__(
        self,
        prefix: str,
        seed: int = 0,
        projects: int = 2,
        *,
        cycle_every: int = 5,
        start: datetime | None = None,
        story_gap: timedelta | None = None,
        session_calls: tuple[int, int] = (3, 9),
    ) -> None:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"prefix {prefix!r}: letters, digits and '-', at most 39, starting with no '-'")
        if projects < 1 or cycle_every < 1:
            raise ValueError("projects and cycle_every must be at least 1")
        self._prefix = prefix
        self.source = f"stories/{prefix}"
        ids = random.Random(f"{prefix}/{seed}")  # noqa: S311 - ids differ by prefix, whatever the seed
        decisions = random.Random(seed)  # noqa: S311 - simulation, not security
        if not 0 <= session_calls[0] <= session_calls[1]:
            raise ValueError(f"session_calls {session_calls}: (least, most) with 0 <= least <= most")
        self._run = Run(prefix, decisions, Emitter(ids, self.source), session_calls=session_calls)
        self._projects = make_projects(prefix, projects)
        self._cycle_every = cycle_every
        self._start = start
        self._story_gap = story_gap

    @property
    def project_prefix(self) -> str:
        """Every project id and every agent id of these stories starts with it."""
        return f"{self._prefix}-p"

    @property
    def truth(self) -> StoryTruth:
        """The truth of every event returned so far."""
        return self._run.log.snapshot()

    def events(self, count: int) -> list[Envelope]:
        """Write whole stories until they hold at least ``count`` events.

        Returns:
            Their events in causal order: by ``occurred_at``, the stories interleaved (one
            story's events never share a time).
        """
        rounds = max(1, -(-count // (EVENTS_PER_STORY * len(self._projects))))  # stories per project, about
        if self._story_gap is None:
            self._story_gap = min(STORY_GAP, timedelta(seconds=STARTS_WINDOW.total_seconds() // rounds))
        if self._start is None:
            self._start = datetime.now(UTC).replace(microsecond=0) - rounds * self._story_gap - STORY_SPAN
        stories: list[list[Envelope]] = []
        written = 0
        while written < count:
            stories.append(self._write_story(self._start, self._story_gap))
            written += len(stories[-1])
        return list(heapq.merge(*stories, key=lambda event: event.occurred_at))

    def _write_story(self, start: datetime, gap: timedelta) -> list[Envelope]:
        log, number = self._run.log, self._run.log.stories
        project = self._projects[number % len(self._projects)]
        begins = start + (number // len(self._projects)) * gap + timedelta(minutes=3 * project.index)
        self._run.emitter.clock = Clock(begins)
        events = StoryWriter(self._run, project).write(with_cycle=number % self._cycle_every == 0)
        log.event_counts.update(event_types(events))
        return events


def shuffled_with_duplicates(events: Sequence[Envelope], seed: int, duplicate_rate: float) -> list[Envelope]:
    """The events in a random order, a share of them twice (the same object: same id, identical).

    Args:
        events: the events, each once.
        seed: the order and the copies depend on it alone.
        duplicate_rate: share of the events sent a second time, 0 to 1.

    Raises:
        ValueError: a rate outside 0 to 1.
    """
    if not 0 <= duplicate_rate <= 1:
        raise ValueError(f"duplicate_rate must be between 0 and 1, not {duplicate_rate}")
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    mixed = [*events, *rng.sample(list(events), round(len(events) * duplicate_rate))]
    rng.shuffle(mixed)
    return mixed


def event_types(events: Sequence[Envelope]) -> Counter[str]:
    """Events by type."""
    return Counter(str(type(event).model_fields["event_type"].default) for event in events)
