"""Pool and queue reads shared between the runs of the event path for a short, bounded time.

A webhook or event-stream delivery names one run; submitting it needs its pool (template, pause flag, limit) and its
queue (pause flag, limit). Runs of one pool often come together (a schedule's batch, a burst), so those two reads are
kept for ``settings.read_cache_seconds`` (2 s by default; 0 turns this off) and a run then costs its own read, its
deployment's, its claim, its pid and its progress state — 5 orchestration calls instead of 7. Deployments are never
kept: a deployment updated a moment ago must give its new job variables. Concurrency *counts* are never kept either
(admission counts at every claim): only a limit's value, a pause flag or a template can be up to that long old — as
with Prefect's own workers, which act on runs fetched before a pause.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from cachetools import TTLCache

from pushpool.errors import ObjectNotFoundError
from pushpool.prefect_api.models import WorkPool, WorkQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from pushpool.prefect_api.client import PrefectClient

_MISSING = object()


class PoolReads:
    def __init__(self, client: PrefectClient, ttl_seconds: float, timer: Callable[[], float]) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self._cache: TTLCache | None = TTLCache(maxsize=512, ttl=ttl_seconds, timer=timer) if ttl_seconds > 0 else None
        self._lock = threading.Lock()

    def pool(self, name: str) -> WorkPool:
        """The pool called ``name`` (raises ``ObjectNotFoundError``; a missing pool is never kept)."""
        found = self._get(("pool", name))
        if isinstance(found, WorkPool):
            return found
        pool = self.client.read_work_pool(name)
        self._put(("pool", name), pool)
        return pool

    def queue(self, pool_name: str, queue_name: str) -> WorkQueue | None:
        """The queue, or None when it does not exist."""
        key = ("queue", pool_name, queue_name)
        found = self._get(key)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        try:
            queue: WorkQueue | None = self.client.read_work_queue(pool_name, queue_name)
        except ObjectNotFoundError:
            queue = None
        self._put(key, queue)
        return queue

    def forget(self) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.clear()

    def _get(self, key: tuple[str, ...]) -> object:
        if self._cache is None:
            return _MISSING
        with self._lock:
            return self._cache.get(key, _MISSING)

    def _put(self, key: tuple[str, ...], value: object) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache[key] = value
