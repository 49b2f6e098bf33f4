"""Prefect's event stream (``/api/events/out``) as a trigger for ``pushpool serve``.

Faster than the automation webhook (events arrive in tens of milliseconds, versus 200–300 ms for the webhook, and
cost the server nothing), but it needs a long-lived process, so it exists only in ``serve``. A reconnection asks
Prefect to replay what happened since the last event received (less :data:`REPLAY_MARGIN`; serve acts on each event
id once), so a dropped connection loses no event; the monitor's sweep remains the guarantee.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from cachetools import LRUCache

from pushpool.settings import Settings

log = logging.getLogger("pushpool.entrypoints.event_stream")

SUBMIT_EVENTS = frozenset({"Scheduled", "Late", "AwaitingRetry"})
FINAL_EVENTS = frozenset({"Completed", "Failed", "Crashed", "Cancelled"})
# Events after which the event path's shared reads (usecases/pool_reads.py) are no longer current: any pool or queue
# event, and a deployment updated or deleted (recent servers emit these, e.g. 3.8.8; on others read_cache_seconds
# alone bounds how old a deployment may be).
POOL_EVENT_PREFIXES = (
    "prefect.work-pool.",
    "prefect.work-queue.",
    "prefect.deployment.updated",
    "prefect.deployment.deleted",
)
REPLAY_MARGIN = dt.timedelta(seconds=5)  # events are stored by their `occurred`, which may lag a little
# Prefect stores events in batches (its persister flushes every 5 s): what happened just before a reconnection is not
# yet in the replay, so the gap is read once more through the REST API this long after.
CATCH_UP_DELAY = 7.0


class RunEvent(NamedTuple):
    kind: str  # "submit", "cancel", "final", or "pool-changed" (a pool, queue or deployment changed: see above)
    run_id: str
    pool_name: str
    event_id: str | None  # Prefect's id of the event: the automation's webhook carries the same id


def classify(event: dict[str, Any], pool_types: Collection[str]) -> RunEvent | None:
    """The flow-run event of a pool whose type is in ``pool_types`` (those served), classified; any work-pool or
    work-queue event, and a deployment updated or deleted, as "pool-changed"; None otherwise."""
    name = str(event.get("event", ""))
    if name.startswith(POOL_EVENT_PREFIXES):  # reads shared by earlier runs are no longer current
        event_id = str(event["id"]) if event.get("id") else None
        return RunEvent(
            "pool-changed", "", str((event.get("resource") or {}).get("prefect.resource.name", "")), event_id
        )
    if not name.startswith("prefect.flow-run."):
        return None
    resource_id = str((event.get("resource") or {}).get("prefect.resource.id", ""))
    if not resource_id.startswith("prefect.flow-run."):
        return None
    pool = next(
        (r for r in event.get("related") or [] if r.get("prefect.resource.role") == "work-pool"),
        None,
    )
    if pool is None or pool.get("prefect.work-pool.type") not in pool_types:
        return None
    state_name = name[len("prefect.flow-run.") :]
    run_id = resource_id[len("prefect.flow-run.") :]
    pool_name = str(pool.get("prefect.resource.name", ""))
    event_id = str(event["id"]) if event.get("id") else None
    if state_name in SUBMIT_EVENTS:
        return RunEvent("submit", run_id, pool_name, event_id)
    if state_name == "Cancelling":
        return RunEvent("cancel", run_id, pool_name, event_id)
    if state_name in FINAL_EVENTS:
        return RunEvent("final", run_id, pool_name, event_id)
    return None


class SeenEvents:
    """The ids of the last ``size`` events handled, so that one Prefect event reaching ``serve`` twice (through the
    event stream and through the automation's webhook) is acted on once. Thread-safe."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._ids: LRUCache[str, bool] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def first(self, event_id: str | None) -> bool:
        """True the first time ``event_id`` is offered (always for an event without an id); records it."""
        if not event_id:
            return True
        with self._lock:
            if event_id in self._ids:
                return False
            self._ids[event_id] = True
            return True

    def forget(self, event_id: str | None) -> None:
        """Let a later delivery of ``event_id`` be acted on (its handling failed for a transient reason)."""
        if event_id:
            with self._lock:
                self._ids.pop(event_id, None)


class EventStream(threading.Thread):
    """Subscribes to flow-run events and hands the relevant ones to ``on_event(RunEvent)``."""

    def __init__(
        self, settings: Settings, on_event: Callable[[RunEvent], None], *, pool_types: Collection[str]
    ) -> None:
        super().__init__(name="pushpool-events", daemon=True)
        self.settings = settings
        self.pool_types = frozenset(pool_types)
        self.on_event = on_event
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.connection: Any = None
        self.last_occurred: dt.datetime | None = None  # of the last event received: where a reconnection replays from

    def stop(self) -> None:
        self.stopping.set()

    def _url(self) -> str:
        base = self.settings.prefect_api_url
        scheme = "wss" if base.startswith("https") else "ws"
        return scheme + base[base.index("://") :] + "/events/out"

    def run(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                self._listen()
                delay = 0.5
            except Exception as exc:  # noqa: BLE001 - reconnect on any failure; the monitor covers the gap
                self.connected.clear()
                if self.stopping.is_set():
                    return
                log.info("event stream disconnected (%s); reconnecting in %.1fs", type(exc).__name__, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 15.0)

    def _catch_up_later(self, since: dt.datetime, until: dt.datetime) -> None:
        def catch_up() -> None:
            from pushpool.prefect_api.client import PrefectClient

            event_filter = {
                "occurred": {"since": since.isoformat(), "until": (until + REPLAY_MARGIN).isoformat()},
                "event": {"prefix": ["prefect.flow-run."]},
            }
            settings = self.settings
            try:
                with PrefectClient(
                    settings.prefect_api_url,
                    api_key=settings.prefect_api_key,
                    auth_string=settings.prefect_api_auth_string,
                ) as client:
                    events = client.read_events(event_filter)
            except Exception as exc:  # noqa: BLE001 - the monitor's sweep still covers the gap
                log.warning("could not read the events missed while disconnected: %s", exc)
                return
            for event in events:
                hit = classify(event, self.pool_types)
                if hit is not None and not self.stopping.is_set():
                    self.on_event(hit)

        timer = threading.Timer(CATCH_UP_DELAY, catch_up)
        timer.daemon = True
        timer.start()

    def _note(self, event: dict[str, Any]) -> None:
        try:
            occurred = dt.datetime.fromisoformat(str(event["occurred"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return
        if self.last_occurred is None or occurred > self.last_occurred:
            self.last_occurred = occurred

    def _listen(self) -> None:
        from websockets.sync.client import connect

        with connect(self._url(), subprotocols=["prefect"], open_timeout=10, close_timeout=2) as ws:  # type: ignore[list-item]
            self.connection = ws  # closing it drops the subscription (tests)
            token = self.settings.prefect_api_key or self.settings.prefect_api_auth_string
            ws.send(json.dumps({"type": "auth", "token": token}))
            reply = json.loads(ws.recv(timeout=10))
            if reply.get("type") != "auth_success":
                raise ConnectionError("event stream authentication failed")
            now = dt.datetime.now(dt.timezone.utc)
            replay = self.last_occurred is not None
            since = self.last_occurred - REPLAY_MARGIN if self.last_occurred is not None else now
            event_filter = {
                # Without a future `until` the server delivers nothing live.
                "occurred": {"since": since.isoformat(), "until": (now + dt.timedelta(days=365)).isoformat()},
                "event": {"prefix": ["prefect.flow-run.", *POOL_EVENT_PREFIXES]},
            }
            ws.send(json.dumps({"type": "filter", "filter": event_filter, "backfill": replay}))
            if self.last_occurred is None:  # a reconnection replays from the first subscription at least
                self.last_occurred = now
            else:
                self._catch_up_later(since, now)
            self.connected.set()
            log.info(
                "subscribed to Prefect's event stream%s", f" (replaying from {since.isoformat()})" if replay else ""
            )
            while not self.stopping.is_set():
                try:
                    raw = ws.recv(timeout=1)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                if message.get("type") != "event":
                    continue
                self._note(message.get("event") or {})
                hit = classify(message.get("event") or {}, self.pool_types)
                if hit is not None:
                    self.on_event(hit)
