"""The webhook notifier: every ``alert.raised`` event of the clean topic, POSTed as JSON to a URL.

Runs as a worker of its own (``devtrail run notifier``; ``devtrail up`` starts it when
``DEVTRAIL_NOTIFIER_WEBHOOK_URL`` is set) in its own consumer group, with its offsets in
Kafka. Each alert at or above ``notifier_min_severity`` is one request: the event as one
JSON object (``alert_body``), with the event id as ``Idempotency-Key`` and, when
``notifier_secret`` is set, an HMAC-SHA256 signature of the body (``request_headers``).

Delivery is at least once:

* Each assigned partition has a task of its own that delivers the partition's alerts in
  offset order, one at a time. A message's offset is committed only once every alert in
  it, and every earlier message of the partition, was answered 2xx (or given up, below).
  A crash, a rebalance or a stop before that sends those alerts again; the receiver drops
  the copies by their ``Idempotency-Key``.
* A connection error, a timeout, a 5xx, 408 or 429 is retried until the receiver takes the
  alert, with exponential backoff and jitter, or after ``Retry-After`` when the answer
  says: a receiver that is down holds alerts back, it does not lose them.
* Any other answer (another 4xx, a redirect, which is not followed) is retried
  ``notifier_max_attempts`` times in all; then the alert is given up, logged at ERROR with
  its event id and counted (``devtrail_notifications_total{outcome="failed"}``), and the
  partition goes on.

While alerts wait, fetching from their partition pauses and the consumer keeps polling, so
a long outage neither fills memory nor costs the group membership (a consumer that stops
polling for ``max.poll.interval.ms`` is put out of its group). A new group starts at the
end of the clean topic (``notifier_start``) and commits that position at once, so that
alerts raised while it is down afterwards are not skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from devtrail.consumers import metrics
from devtrail.consumers.clean import CleanRow, CleanRowFormat, row_as_object
from devtrail.consumers.settings import NotifierSettings
from devtrail.schemas.fields import Severity

log = logging.getLogger(__name__)

STAGE = "notifier"
ALERT_TYPE = "alert.raised"
USER_AGENT = "devtrail-notifier"
SIGNATURE_HEADER = "X-Devtrail-Signature"
#: Severities from the least to the most serious; an unknown one counts as the most serious.
SEVERITY_ORDER: dict[str, int] = {severity.value: rank for rank, severity in enumerate(Severity)}
#: Answers retried until the receiver takes the alert (besides 5xx, connection errors and timeouts).
RETRIED_STATUSES = frozenset({408, 429})
#: The longest wait a ``Retry-After`` answer obtains.
RETRY_AFTER_MAX_S = 3600.0
#: Fetching from a partition pauses while this many of its messages, or of their alerts, wait to be sent.
MAX_QUEUED_MESSAGES = 100
MAX_QUEUED_ALERTS = 1000
#: Delivered offsets are committed every this many seconds (and when partitions are revoked, and on stop).
COMMIT_INTERVAL_S = 1.0
#: How long one poll waits for messages.
POLL_TIMEOUT_MS = 500
#: Characters of a refusing answer's body that go to the log.
ANSWER_LOGGED_CHARS = 300

Step = Literal["delivered", "retry", "give_up"]


@dataclass(frozen=True)
class Alert:
    """One ``alert.raised`` event, ready to send.

    Attributes:
        event_id: its event id (the ``Idempotency-Key``).
        severity: its payload's severity.
        body: the request body (``alert_body``).
    """

    event_id: str
    severity: str
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What one attempt at a delivery got.

    Attributes:
        status: the HTTP status; ``None`` when no answer came (connection error, timeout).
        retry_after_s: the answer's ``Retry-After``, in seconds, if it had a usable one.
        detail: what went wrong, for the log (empty for a 2xx).
    """

    status: int | None
    retry_after_s: float | None = None
    detail: str = ""


def severity_passes(severity: str, minimum: str) -> bool:
    """Whether an alert of ``severity`` is sent when ``notifier_min_severity`` is ``minimum``.

    A severity this version does not know passes: an alert is never dropped for being new.
    """
    return SEVERITY_ORDER.get(severity, len(SEVERITY_ORDER)) >= SEVERITY_ORDER[minimum]


def alert_body(row: CleanRow, payload: dict[str, Any]) -> bytes:
    """The request body: the event as one JSON object.

    The envelope's fields by name (``devtrail.consumers.clean.EVENT_COLUMNS``, ``occurred_at`` in ISO
    8601 UTC), ``payload`` as an object; ``attribution``, JSON text on the clean topic, as an
    object too (``null`` for an event stored as sent).
    """
    event = row_as_object(list(row))
    event["payload"] = payload
    if isinstance(row.attribution, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            event["attribution"] = orjson.loads(row.attribution)
    return orjson.dumps(event)


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Devtrail-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def request_headers(alert: Alert, secret: bytes | None) -> dict[str, str]:
    """The headers of ``alert``'s request (signed when there is a ``secret``)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Idempotency-Key": alert.event_id}
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature(secret, alert.body)
    return headers


def next_step(status: int | None, attempt: int, max_attempts: int) -> Step:
    """What follows attempt number ``attempt`` (from 1) that got ``status`` (``None``: no answer).

    2xx: delivered. No answer, 5xx, 408, 429: retried, without limit. Anything else (4xx,
    3xx, 1xx): retried until ``max_attempts`` attempts were made, then given up.
    """
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status is None or status >= 500 or status in RETRIED_STATUSES:
        return "retry"
    return "retry" if attempt < max_attempts else "give_up"


def backoff_s(
    attempt: int,
    first_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after attempt number ``attempt`` (from 1) failed.

    Exponential with jitter: ``first_s * 2**(attempt - 1)``, at most ``max_s``, of which a
    random half is taken off (so that senders that failed together do not retry together).
    A ``Retry-After`` replaces it, up to ``RETRY_AFTER_MAX_S`` and at least ``first_s``.
    """
    if retry_after_s is not None:
        return min(RETRY_AFTER_MAX_S, max(first_s, retry_after_s))
    ceiling = min(max_s, first_s * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + rng() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (it is seconds, or an HTTP date); ``None`` if unusable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def alerts_in(value: bytes | None, minimum: str, partition: int = 0, offset: int = 0) -> list[Alert]:
    """The ``alert.raised`` events of one clean message that pass ``minimum``, in order.

    Malformed messages and rows are skipped (logged): the sink dead-letters them already.
    """
    if value is None or ALERT_TYPE.encode() not in value:
        return []  # most messages: not decoded at all
    alerts: list[Alert] = []
    for row in CleanRowFormat.decode("", partition, offset, value):
        if not isinstance(row, CleanRow):
            log.warning("%s: skipped a malformed clean row at %d/%d: %s", STAGE, partition, offset, row.reason)
            continue
        if row.event_type != ALERT_TYPE:
            continue
        try:
            payload = orjson.loads(row.payload)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            log.error("%s: alert %s not sent: its payload is not a JSON object", STAGE, row.event_id)
            metrics.NOTIFICATIONS.labels("failed").inc()
            continue
        severity = str(payload.get("severity", Severity.WARNING.value))
        if severity_passes(severity, minimum):
            alerts.append(Alert(row.event_id, severity, alert_body(row, payload)))
    return alerts


def webhook_host(url: str) -> str:
    """The URL without what may be secret in it (path, query, user): for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class Webhook:
    """Sends alerts to the webhook, retrying as ``next_step`` says.

    Args:
        settings: the URL, the secret, the time limit and the retry settings.
        session: the HTTP client session (its time limit is the caller's).
    """

    def __init__(self, settings: NotifierSettings, session: aiohttp.ClientSession) -> None:
        if not settings.notifier_webhook_url:
            raise ValueError("no notifier_webhook_url")
        self._url = settings.notifier_webhook_url
        self._where = webhook_host(self._url)
        self._secret = settings.notifier_secret.get_secret_value().encode() if settings.notifier_secret else None
        self._settings = settings
        self._session = session

    async def deliver(self, alert: Alert) -> bool:
        """Send ``alert`` until the receiver takes it (true) or it is given up (false)."""
        s = self._settings
        attempt = 0
        while True:
            attempt += 1
            answer = await self.attempt(alert)
            step = next_step(answer.status, attempt, s.notifier_max_attempts)
            if step == "delivered":
                metrics.NOTIFICATIONS.labels("delivered").inc()
                return True
            if step == "give_up":
                metrics.NOTIFICATIONS.labels("failed").inc()
                log.error(
                    "%s: gave up on alert %s after %d attempts: %s answered %s",
                    STAGE, alert.event_id, attempt, self._where, answer.detail,
                )  # fmt: skip
                return False
            metrics.NOTIFICATIONS.labels("retried").inc()
            pause = backoff_s(attempt, s.notifier_retry_backoff_s, s.notifier_retry_max_backoff_s, answer.retry_after_s)
            log.warning(
                "%s: alert %s not delivered (attempt %d): %s: %s; retrying in %.3gs",
                STAGE, alert.event_id, attempt, self._where, answer.detail, pause,
            )  # fmt: skip
            await asyncio.sleep(pause)

    async def attempt(self, alert: Alert) -> Answer:
        """One POST of ``alert``; what came back."""
        try:
            async with self._session.post(
                self._url, data=alert.body, headers=request_headers(alert, self._secret), allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return Answer(response.status)
                text = (await response.content.read(ANSWER_LOGGED_CHARS)).decode("utf-8", "replace")
                return Answer(
                    response.status,
                    parse_retry_after(response.headers.get("Retry-After")),
                    f"HTTP {response.status} {text!r}",
                )
        except TimeoutError:
            return Answer(None, detail=f"no answer within {self._settings.notifier_timeout_s}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(None, detail=f"{type(exc).__name__}: {exc}")


class PartitionQueue:
    """The messages of one assigned partition, their alerts delivered in order by a task of its own.

    Args:
        tp: the partition.
        deliver: sends one alert (retrying as it must); its result does not matter here.

    Attributes:
        delivered: the offset after the last message whose alerts are all done (``None``
            before the first): what may be committed.
        committed: the offset committed last by this consumer (``None`` before the first).
        first_offset: the offset of the first message queued (``None`` before it).
        queued_alerts: alerts of queued messages not yet done.
    """

    def __init__(self, tp: TopicPartition, deliver: Callable[[Alert], Awaitable[bool]]) -> None:
        self.tp = tp
        self.delivered: int | None = None
        self.committed: int | None = None
        self.first_offset: int | None = None
        self.queued_alerts = 0
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[int, list[Alert]]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name=f"{STAGE}-{tp.topic}-{tp.partition}")

    def add(self, offset: int, alerts: list[Alert]) -> None:
        """Queue the message at ``offset`` with its alerts (possibly none: its offset still counts)."""
        if self.first_offset is None:
            self.first_offset = offset
        self._queue.put_nowait((offset, alerts))
        self.queued_alerts += len(alerts)

    @property
    def full(self) -> bool:
        """Whether fetching from the partition should pause."""
        return self._queue.qsize() >= MAX_QUEUED_MESSAGES or self.queued_alerts >= MAX_QUEUED_ALERTS

    @property
    def low(self) -> bool:
        """Whether a paused partition may be fetched from again."""
        return self._queue.qsize() < MAX_QUEUED_MESSAGES // 2 and self.queued_alerts < MAX_QUEUED_ALERTS // 2

    async def _run(self) -> None:
        while True:
            offset, alerts = await self._queue.get()
            for alert in alerts:
                await self._deliver(alert)
                self.queued_alerts -= 1
            self.delivered = offset + 1

    async def close(self) -> BaseException | None:
        """Stop delivering (an alert being sent is sent again by the next owner); what the task raised."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            return None
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it
            return exc
        return None


class Notifier:
    """Reads the clean topic in its own group and sends its alerts to the webhook, at least once.

    Args:
        settings: Kafka, the webhook and the notifier's settings.
    """

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._topic = settings.topics.clean
        self._consumer: AIOKafkaConsumer | None = None
        self._webhook: Webhook | None = None
        self._partitions: dict[TopicPartition, PartitionQueue] = {}
        self._unchecked: set[TopicPartition] = set()  # assigned; whether the group has an offset there is unknown
        self._generation = 0  # bumped by every rebalance callback
        self._failure: BaseException | None = None  # what a partition's task raised (a bug): stops the notifier
        self._last_commit = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Send alerts until ``stop`` is set; then commit what was delivered and leave the group.

        Raises:
            Exception: what a partition's delivery raised unexpectedly (a bug).
        """
        s = self._settings
        timeout = aiohttp.ClientTimeout(total=s.notifier_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._webhook = Webhook(s, session)
            self._consumer = self._new_consumer()
            self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
            await self._consumer.start()
            log.info(
                "%s: sending alerts of %s (severity %s and above) to %s, as group %s",
                STAGE, self._topic, s.notifier_min_severity.value, webhook_host(self._webhook_url), s.notifier_group,
            )  # fmt: skip
            try:
                while not stop.is_set():
                    await self._poll_once()
            finally:
                await self._close_partitions(set(self._partitions))
                await self._consumer.stop()
        if self._failure is not None:
            raise self._failure

    @property
    def _webhook_url(self) -> str:
        return self._settings.notifier_webhook_url or ""

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=s.notifier_group,
            enable_auto_commit=False,
            auto_offset_reset=s.notifier_start,
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            **s.aiokafka_security(),
        )

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        self._raise_failures()
        if self._unchecked:
            await self._commit_starting_positions()
        self._resume_drained()
        fetched = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=500)
        # aiokafka returns records of the current assignment only, from its current positions, and
        # moves the positions past them: every one must be queued (one dropped is never fetched again).
        minimum = self._settings.notifier_min_severity.value
        for tp, messages in fetched.items():
            queue = self._queue(tp)
            for message in messages:
                queue.add(message.offset, alerts_in(message.value, minimum, tp.partition, message.offset))
            if queue.full:
                self._consumer.pause(tp)
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            await self._commit(self._partitions)

    def _queue(self, tp: TopicPartition) -> PartitionQueue:
        """The queue of an assigned partition, created on its first record or on its assignment,
        whichever comes first: aiokafka may return a new assignment's records before it has
        called ``on_partitions_assigned``."""
        queue = self._partitions.get(tp)
        if queue is None:
            assert self._webhook is not None
            queue = self._partitions[tp] = PartitionQueue(tp, self._webhook.deliver)
        return queue

    def _raise_failures(self) -> None:
        for queue in self._partitions.values():
            if queue.task.done() and not queue.task.cancelled() and queue.task.exception() is not None:
                self._failure = queue.task.exception()
        if self._failure is not None:
            raise self._failure

    def _resume_drained(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.paused():
            queue = self._partitions.get(tp)
            if queue is None or queue.low:
                self._consumer.resume(tp)

    async def _commit(self, partitions: dict[TopicPartition, PartitionQueue]) -> None:
        """Commit the delivered offsets of ``partitions`` that moved; a failed commit is retried later."""
        assert self._consumer is not None
        self._last_commit = time.monotonic()
        offsets = {tp: q.delivered for tp, q in partitions.items() if q.delivered not in (None, q.committed)}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance (the new owner resends from the last commit), or the broker
            log.info("%s: offset commit skipped: %s", STAGE, exc)
            return
        metrics.LAST_COMMIT_TIMESTAMP.labels(STAGE).set_to_current_time()
        for tp, offset in offsets.items():
            queue = partitions.get(tp)  # a rebalance during the commit may have dropped it
            if queue is not None:
                queue.committed = offset
            metrics.COMMITTED_OFFSET.labels(STAGE, tp.topic, str(tp.partition)).set(offset)

    async def _commit_starting_positions(self) -> None:
        """Commit where a partition without a committed offset starts (``notifier_start``).

        Without it, a notifier that starts at ``latest`` and stops before its first alert
        would start at the (new) end again: the alerts raised meanwhile would be skipped.
        The start is the first offset queued, if any was (the position is past it).
        """
        assert self._consumer is not None
        generation = self._generation
        starts: dict[TopicPartition, int] = {}
        try:
            for tp in sorted(self._unchecked):
                if await self._consumer.committed(tp) is None:
                    queue = self._partitions.get(tp)
                    first = queue.first_offset if queue is not None else None
                    starts[tp] = first if first is not None else await self._consumer.position(tp)
            if generation == self._generation and starts:
                await self._consumer.commit(starts)
                log.info("%s: group %s starts at %s", STAGE, self._settings.notifier_group, starts)
        except KafkaError as exc:
            log.warning("%s: could not commit the starting positions %s: %s", STAGE, starts, exc)
        if generation == self._generation:
            self._unchecked.clear()

    async def _close_partitions(self, tps: set[TopicPartition]) -> None:
        """Stop delivering to ``tps``, commit what was delivered there, forget them."""
        closing = {tp: self._partitions[tp] for tp in tps if tp in self._partitions}
        for queue in closing.values():
            failure = await queue.close()
            self._failure = self._failure or failure
        if self._consumer is not None and self._consumer.assignment():
            await self._commit(closing)
        for tp in closing:
            del self._partitions[tp]

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what was delivered from partitions about to go; drop the rest (the next owner resends it)."""
        self._generation += 1
        self._unchecked -= revoked
        await self._close_partitions(revoked)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start delivering from newly assigned partitions (they are read from their committed offsets)."""
        self._generation += 1
        for tp in assigned:
            self._queue(tp)
        self._unchecked |= assigned
        log.info("%s: assigned %s", STAGE, sorted(assigned))


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Notifier) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)
