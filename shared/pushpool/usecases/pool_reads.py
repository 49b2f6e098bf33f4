"""Pool, queue and deployment reads shared between the runs of the event path for a short, bounded time.

A webhook or event-stream delivery names one run; submitting it needs its pool (template, pause flag, limit), its
queue (pause flag, limit) and its deployment (job variables, name). Runs of one pool and deployment often come
together (a schedule's batch, a burst, an automation firing a deployment), so those reads are kept for
``settings.read_cache_seconds`` (2 s by default; 0 turns this off) and a run then costs its own read, its claim, its
pid and its progress state — 4 orchestration calls instead of 7.

The bound is on staleness, counted from when a read was *sent*: a pool's pause flag, limit or template, a queue's
pause flag or limit, or a deployment's job variables changed at time T are what every run whose submit reads them at
T + ``read_cache_seconds`` or later uses; a run submitted within that window may use the values from before T, as
Prefect's own workers act on runs fetched before a pause. ``pushpool serve`` forgets everything as soon as Prefect's
event stream reports a pool, queue or deployment changed, and a read in flight at that moment is not kept. Prefect
emits ``prefect.deployment.updated``/``deleted`` only in recent versions (3.8.8 and 3.9.1 do, 3.0.11 and 3.4.25 do
not); there, and in the functions, which read no event stream, the bound alone holds.

One read per key at a time: a submit that finds no kept value but a read of it in flight, sent less than
``read_cache_seconds`` ago and after the last ``forget``, waits for that read's answer (or its error) instead of sending
its own — so the share of runs that pay the three reads does not grow when Prefect answers slowly (before, every
arrival during a slow read sent one of its own; a loaded bench run measured 5.2 calls per run, not yet re-measured).

Never kept: concurrency *counts* (admission counts at every claim), the run itself (its state is what the claim is
proposed from), and a pool or deployment that was not found (one created a moment later is found). A queue that was
not found is kept as such: its run is then admitted by its pool's flags and limit alone, as before.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from cachetools import TLRUCache

from pushpool.errors import ObjectNotFoundError
from pushpool.prefect_api.models import Deployment, WorkPool, WorkQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from pushpool.prefect_api.client import PrefectClient

_MISSING = object()


class PoolReads:
    def __init__(self, client: PrefectClient, ttl_seconds: float, timer: Callable[[], float]) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.timer = timer
        # Each entry is (value, when its read was sent) and expires ``ttl`` after that, not after it was answered.
        self._cache: TLRUCache | None = (
            TLRUCache(maxsize=512, ttu=lambda _key, entry, _now: entry[1] + ttl_seconds, timer=timer)
            if ttl_seconds > 0
            else None
        )
        self._forgotten_at = float("-inf")
        self._flights: dict[tuple[str, ...], tuple[float, Future]] = {}  # reads in flight: when sent, their answer
        self._lock = threading.Lock()

    def pool(self, name: str) -> WorkPool:
        """The pool called ``name`` (raises ``ObjectNotFoundError``; a missing pool is never kept)."""
        return self._read(("pool", name), lambda: self.client.read_work_pool(name))  # type: ignore[no-any-return]

    def queue(self, pool_name: str, queue_name: str) -> WorkQueue | None:
        """The queue, or None when it does not exist."""

        def read() -> WorkQueue | None:
            try:
                return self.client.read_work_queue(pool_name, queue_name)
            except ObjectNotFoundError:
                return None

        return self._read(("queue", pool_name, queue_name), read)  # type: ignore[no-any-return]

    def deployment(self, deployment_id: str) -> Deployment:
        """The deployment ``deployment_id`` — its job variables at most ``ttl`` old (raises ``ObjectNotFoundError``;
        a missing deployment is never kept)."""
        key = ("deployment", deployment_id)
        return self._read(key, lambda: self.client.read_deployment(deployment_id))  # type: ignore[no-any-return]

    def _read(self, key: tuple[str, ...], fetch: Callable[[], object]) -> object:
        """The kept value of ``key``; else the answer of its read in flight, if that was sent within ``ttl`` and after
        the last ``forget``; else the answer of a read of its own (kept, and given to those who wait for it)."""
        found = self._get(key)
        if found is not _MISSING:
            return found
        if self._cache is None:
            return fetch()
        with self._lock:
            sent = self.timer()
            flight = self._flights.get(key)
            if flight is not None and sent - flight[0] < self.ttl and flight[0] >= self._forgotten_at:
                joined: Future | None = flight[1]
            else:
                joined, flight = None, (sent, Future())
                self._flights[key] = flight
        if joined is not None:
            return joined.result()  # its error too: the same read, answered once
        try:
            value = fetch()
        except BaseException as exc:
            flight[1].set_exception(exc)
            raise
        else:
            self._put(key, value, sent)
            flight[1].set_result(value)
            return value
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]

    def forget(self) -> None:
        """Drop every kept read, and the answers of reads sent before now that are still in flight."""
        if self._cache is not None:
            with self._lock:
                self._forgotten_at = self.timer()
                self._cache.clear()

    def _get(self, key: tuple[str, ...]) -> object:
        if self._cache is None:
            return _MISSING
        with self._lock:
            entry: Any = self._cache.get(key)
        return _MISSING if entry is None else entry[0]

    def _put(self, key: tuple[str, ...], value: object, sent: float) -> None:
        if self._cache is not None:
            with self._lock:
                if sent >= self._forgotten_at:  # a read sent before a change was reported is not kept
                    self._cache[key] = (value, sent)
