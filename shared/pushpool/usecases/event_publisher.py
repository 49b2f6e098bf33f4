"""event_publisher: pushpool's run events (usecases/events.py) into Prefect, as Prefect's own events are shaped, so a
run's page in Prefect's UI shows what pushpool did to it and an automation can trigger on it.

One ``RunEvent`` becomes one Prefect event (``prefect/events/schemas/events.py``):

* ``event``: ``pushpool.run.<action>`` (submitted, job-started, job-ended, crashed, cancelled, retried, refused);
* ``resource``: the flow run — ``prefect.resource.id = prefect.flow-run.<id>`` with its name, as Prefect's own
  ``prefect.flow-run.<State>`` events have it (the run page's feed asks for events whose resource or related
  resource is the run) — plus labels an automation's ``match`` can test: ``pushpool.action``, ``pushpool.reason``,
  ``pushpool.provider`` (a trigger matches labels, not the payload);
* ``related``: the flow (role ``flow``), the deployment (``deployment``), the work pool (``work-pool``, with its name
  and ``prefect.work-pool.type``) as Prefect's worker events name them, the job as ``pushpool.job.<provider>.<id>``
  (role ``infrastructure``, with its console URL), and pushpool itself (role ``creator``);
* ``id``: ``RunEvent.id``, derived from the run, the attempt (or job), the action and its reason: a retried submit
  sends the same id again, and Prefect stores an id once (``ON CONFLICT DO NOTHING``) and lets its automations see it
  once (their ``event_has_been_seen``);
* ``payload``: the event's own fields (``reason``, ``attempt``, and ``RunEvent.payload``: region, image, exit code,
  dispatch latency …), never a secret.

Delivery (``POST /api/events``, every Prefect 3 server: 3.0 to 3.9) never blocks or fails an action: the use-cases
only put events in the bounded sink; :meth:`EventPublisher.flush` takes them out in batches, one attempt each with a
short timeout. Prefect unreachable: the batch goes back into the sink (within its bound; what does not fit is dropped
and counted) and the next flush tries again; that is logged once per outage, with the count dropped when it ends.
Prefect refusing a batch (a 4xx): the batch is dropped and counted, logged once. ``pushpool serve`` flushes from a
thread every second (:meth:`EventPublisher.start`), the cloud functions at the end of each invocation.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pushpool import __version__
from pushpool.errors import OrchestratorError, OrchestratorUnavailableError
from pushpool.prefect_api.client import PrefectClient
from pushpool.usecases.events import EventSink, RunEvent

log = logging.getLogger("pushpool.usecases.event_publisher")

BATCH = 200  # events per POST
FLUSH_TIMEOUT_SECONDS = 5.0  # per POST: a flush at the end of a function's invocation must stay short
CREATOR = {
    "prefect.resource.id": "pushpool",
    "prefect.resource.name": "pushpool",
    "prefect.resource.role": "creator",
    "pushpool.version": __version__,
}


def to_prefect(event: RunEvent) -> dict[str, Any]:
    """The Prefect event (JSON) of ``event``."""
    resource = {"prefect.resource.id": f"prefect.flow-run.{event.run_id}", "pushpool.action": event.action}
    if event.run_name:
        resource["prefect.resource.name"] = event.run_name
    if event.reason:
        resource["pushpool.reason"] = event.reason
    if event.provider:
        resource["pushpool.provider"] = event.provider
    related: list[dict[str, str]] = []
    if event.flow_id:
        related.append({"prefect.resource.id": f"prefect.flow.{event.flow_id}", "prefect.resource.role": "flow"})
    if event.deployment_id:
        related.append(
            {"prefect.resource.id": f"prefect.deployment.{event.deployment_id}", "prefect.resource.role": "deployment"}
        )
    if event.pool_id:
        pool = {"prefect.resource.id": f"prefect.work-pool.{event.pool_id}", "prefect.resource.role": "work-pool"}
        if event.pool:
            pool["prefect.resource.name"] = event.pool
        if event.pool_type:
            pool["prefect.work-pool.type"] = event.pool_type
        related.append(pool)
    if event.job_id:
        job = {
            "prefect.resource.id": f"pushpool.job.{event.provider or 'unknown'}.{event.job_id}",
            "prefect.resource.role": "infrastructure",
            "prefect.resource.name": event.job_id,
        }
        url = event.payload.get("console_url")
        if isinstance(url, str) and url:
            job["pushpool.console-url"] = url
        related.append(job)
    related.append(dict(CREATOR))
    payload: dict[str, Any] = {"action": event.action, **_plain(event.payload)}
    if event.reason:
        payload["reason"] = event.reason
    if event.attempt:
        payload["attempt"] = event.attempt
    if event.job_id:
        payload.setdefault("job_id", event.job_id)
    if event.pool:
        payload.setdefault("work_pool", event.pool)
    return {
        "id": event.id,
        "occurred": event.occurred.isoformat(),
        "event": event.name,
        "resource": resource,
        "related": related,
        "payload": payload,
    }


def _plain(values: Any) -> dict[str, Any]:
    """JSON values only (a datetime becomes its ISO text)."""
    plain: dict[str, Any] = {}
    for key, value in dict(values).items():
        if value is None or isinstance(value, str | int | float | bool):
            plain[str(key)] = value
        elif hasattr(value, "isoformat"):
            plain[str(key)] = value.isoformat()
        else:
            plain[str(key)] = str(value)
    return plain


class EventPublisher:
    """Drains ``sink`` into Prefect through ``client`` (``PrefectClient.emit_events``)."""

    def __init__(
        self,
        sink: EventSink,
        client: PrefectClient,
        *,
        batch: int = BATCH,
        timeout: float = FLUSH_TIMEOUT_SECONDS,
    ) -> None:
        self.sink = sink
        self.client = client
        self.batch = batch
        self.timeout = timeout
        self.delivered = 0
        self.refused = 0  # events Prefect refused (4xx): dropped, never retried
        self._failing = False
        self._dropped_at_failure = 0
        self._refusal_logged = False
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self, *, timeout: float | None = None) -> int:
        """Send the events the sink holds, batch by batch, until it is empty or Prefect cannot be reached; returns how
        many were delivered. Never raises."""
        sent = 0
        with self._flushing:  # one flush at a time: the order of a run's events is kept
            while True:
                events = self.sink.drain(self.batch)
                if not events:
                    break
                try:
                    self.client.emit_events([to_prefect(e) for e in events], timeout=timeout or self.timeout)
                except OrchestratorUnavailableError as exc:
                    self.sink.requeue(events)
                    self._unreachable(exc)
                    break
                except OrchestratorError as exc:
                    self._refused(events, exc)
                    continue
                except Exception:
                    log.exception("run events could not be sent; %d dropped", len(events))
                    self.refused += len(events)
                    continue
                sent += len(events)
                self._reachable()
        self.delivered += sent
        return sent

    def _unreachable(self, exc: OrchestratorError) -> None:
        if not self._failing:
            self._failing, self._dropped_at_failure = True, self.sink.dropped
            log.warning(
                "run events not delivered (%s); %d kept to retry, at most %d (older ones are dropped and counted)",
                exc.one_line(),
                len(self.sink),
                self.sink.capacity,
            )

    def _reachable(self) -> None:
        if self._failing:
            self._failing = False
            lost = self.sink.dropped - self._dropped_at_failure
            log.warning("run events delivered again; %d were dropped while Prefect could not be reached", lost)

    def _refused(self, events: list[RunEvent], exc: OrchestratorError) -> None:
        self.refused += len(events)
        if not self._refusal_logged:
            self._refusal_logged = True
            log.error("Prefect refused %d run events, dropped (%s)", len(events), exc.one_line())

    # -- serve: a thread ------------------------------------------------------------------------------------------

    def start(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds from a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.flush()

        self._thread = threading.Thread(target=loop, name="pushpool-events", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Stop the thread, then one last flush with a short timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout + self.timeout)
        self.flush(timeout=timeout)


# -- the functions: a flush at the end of each invocation ------------------------------------------------------------

_PUBLISHERS: weakref.WeakKeyDictionary[EventSink, EventPublisher] = weakref.WeakKeyDictionary()
_PUBLISHERS_LOCK = threading.Lock()


def publisher_for(sink: EventSink, client: PrefectClient) -> EventPublisher:
    """The one publisher of ``sink`` in this process (a warm function instance keeps its outage state)."""
    with _PUBLISHERS_LOCK:
        if sink not in _PUBLISHERS:
            _PUBLISHERS[sink] = EventPublisher(sink, client)
        return _PUBLISHERS[sink]


def flush_events(sink: EventSink, client: PrefectClient, *, timeout: float = 2.0) -> int:
    """Send the run events an invocation made, at its end, within ``timeout`` per batch; never raises."""
    try:
        return publisher_for(sink, client).flush(timeout=timeout)
    except Exception:
        log.exception("run events could not be flushed")
        return 0


def flushed(deps_of: Callable[[], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A function handler's decorator: when the invocation ends (also by an exception), flush the run events it made.
    ``deps_of()`` gives the runtime's dependencies (``(deps, auth)`` or ``deps``)."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def invoke(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                try:
                    got = deps_of()
                except Exception:  # noqa: BLE001 - no dependencies, no events
                    got = None
                deps = got[0] if isinstance(got, tuple) else got
                if deps is not None:
                    flush_events(deps.events, deps.orchestrator)

        return invoke

    return decorate
