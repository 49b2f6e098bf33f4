"""What pushpool does to a run, as events (issue 26): one ``RunEvent`` per action, kept in a bounded sink.

The use-cases call ``deps.events.emit(RunEvent(...))`` at each action (submitted, job started, job ended, crashed,
cancelled, retried after a transient error, refused). Emitting never blocks and never fails the caller: the sink
holds at most ``capacity`` events (older ones are dropped and counted when nothing drains it, e.g. Prefect is down),
and each listener (the metrics) is called inline with its errors logged and swallowed. Whoever publishes the events
(to Prefect's ``POST /api/events``) drains the sink: ``pushpool serve`` from a thread, the functions at the end of
each invocation.

This module is the shared contract between the use-cases, the publisher and the metrics; it imports nothing of
theirs.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# The actions, as they appear in the event name ``pushpool.run.<action>``.
SUBMITTED = "submitted"
JOB_STARTED = "job-started"
JOB_ENDED = "job-ended"
CRASHED = "crashed"
CANCELLED = "cancelled"
RETRIED = "retried"
REFUSED = "refused"
ACTIONS = (SUBMITTED, JOB_STARTED, JOB_ENDED, CRASHED, CANCELLED, RETRIED, REFUSED)

# The namespace of the events' ids (uuid5): the same action on the same attempt gets the same id in any process.
EVENT_NAMESPACE = uuid.UUID("7d0c3a52-4b8e-5c1f-9a61-2f5d0e6b1c47")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class RunEvent:
    """One thing pushpool did to one run.

    ``attempt`` is the claim's attempt key (the run's ``pushpool.io/attempt`` label; empty when the run was never
    claimed): with the run and the action it makes the event's id, so a retried submit never emits it twice.
    ``reason`` is a short word for automations to match (``max-run-time``, ``start-timeout``, ``vanished``,
    ``refused-job-variables``, ``paused``, ``limit``, ``quota``, ``throttled`` ...); ``payload`` holds the rest
    (region, image, exit code, dispatch latency in seconds, the job's console URL ...). Never a secret.
    """

    action: str
    run_id: str
    attempt: str = ""
    run_name: str | None = None
    pool: str | None = None
    pool_id: str | None = None
    pool_type: str | None = None
    provider: str | None = None
    deployment_id: str | None = None
    flow_id: str | None = None
    job_id: str | None = None
    reason: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    occurred: dt.datetime = field(default_factory=_now)
    # What tells apart repeats of one action in one attempt that are each an event (the give-back number of a run
    # retried after transient errors, whose attempt key is kept); None for actions that happen once per attempt.
    sequence: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown run event action {self.action!r} (known: {', '.join(ACTIONS)})")

    @property
    def name(self) -> str:
        return f"pushpool.run.{self.action}"

    @property
    def id(self) -> str:
        """The event's id, derived from what it is about (run, attempt or job, action, reason, sequence): a retried
        submit, a second monitor, a function invoked twice for the same thing all make the same id, which Prefect
        stores once (``ON CONFLICT DO NOTHING``) and its automations evaluate once."""
        key = "/".join(
            (self.run_id, self.attempt or self.job_id or "", self.action, self.reason or "", str(self.sequence or ""))
        )
        return str(uuid.uuid5(EVENT_NAMESPACE, key))


Listener = Callable[[RunEvent], None]


class EventSink:
    """A bounded, thread-safe buffer of run events with inline listeners. ``emit`` never raises.

    An event whose id this sink has taken recently (the last ``4 * capacity``) is ignored, listeners included: the
    monitor sees a job's end on every tick until the job is cleaned up, and a refusal repeats while the run waits, but
    each is one action.
    """

    def __init__(self, capacity: int = 1000) -> None:
        self._events: collections.deque[RunEvent] = collections.deque()
        self._capacity = capacity
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.dropped = 0

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def emit(self, event: RunEvent) -> None:
        with self._lock:
            if event.id in self._seen:
                return
            self._seen[event.id] = None
            if len(self._seen) > 4 * self._capacity:
                self._seen.popitem(last=False)
            listeners = list(self._listeners)
            if len(self._events) >= self._capacity:
                self._events.popleft()
                self.dropped += 1
            self._events.append(event)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail a submit
                logger.exception("run event listener %r failed on %s", listener, event.name)

    def drain(self, limit: int | None = None) -> list[RunEvent]:
        """Take up to ``limit`` events (all when None), oldest first."""
        with self._lock:
            count = len(self._events) if limit is None else min(limit, len(self._events))
            return [self._events.popleft() for _ in range(count)]

    def requeue(self, events: list[RunEvent]) -> None:
        """Put back events a publisher could not deliver (at the front, oldest first), within the capacity."""
        with self._lock:
            for event in reversed(events):
                if len(self._events) >= self._capacity:
                    self.dropped += 1
                    continue
                self._events.appendleft(event)

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)
