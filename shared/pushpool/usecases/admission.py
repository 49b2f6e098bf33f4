"""Admission: whether a run may start now under its pool's and queue's pause flags and concurrency limits.

Prefect enforces pause flags and pool/queue limits only inside ``get_scheduled_flow_runs``; a run reaching submit
through a webhook would bypass them, so submit asks here — before its claim (a cheap early answer) and again after it
(the answer that holds under races: each claimer counts with its own claim committed, so of any set of concurrent
claimers at most ``limit`` can see themselves within it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import IN_FLIGHT_STATES, WorkPool, WorkQueue


@dataclass(frozen=True)
class Limit:
    """A concurrency limit: of the pool (``queue`` None) or of one of its queues."""

    pool: str
    queue: str | None
    limit: int

    def describe(self) -> str:
        return f"work queue {self.queue!r}" if self.queue else f"work pool {self.pool!r}"

    def in_flight_filter(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "flow_runs": {"state": {"type": {"any_": [s.value for s in IN_FLIGHT_STATES]}}},
            "work_pools": {"name": {"any_": [self.pool]}},
        }
        if self.queue is not None:
            # By the queue itself: a run whose queue was defaulted has no work_queue_name stored (it reads "default").
            body["work_pool_queues"] = {"name": {"any_": [self.queue]}}
        return body


def paused(pool: WorkPool, queue: WorkQueue | None) -> str | None:
    """Why runs of ``pool``/``queue`` may not start (a pause flag), or None."""
    if pool.is_paused:
        return f"work pool {pool.name!r} is paused"
    if queue is not None and queue.is_paused:
        return f"work queue {queue.name!r} is paused"
    return None


def limits(pool: WorkPool, queue: WorkQueue | None) -> list[Limit]:
    """The concurrency limits that apply to a run of ``pool`` in ``queue``."""
    found = [Limit(pool.name, None, pool.concurrency_limit)] if pool.concurrency_limit is not None else []
    if queue is not None and queue.concurrency_limit is not None:
        found.append(Limit(pool.name, queue.name, queue.concurrency_limit))
    return found


def full(client: PrefectClient, applicable: list[Limit], *, claimed: bool) -> Limit | None:
    """The first limit that leaves no room for the run (None: room in all).

    ``claimed``: the run's own claim is already counted among the in-flight runs.
    """
    for limit in applicable:
        count = client.count_flow_runs(limit.in_flight_filter())
        if (count > limit.limit) if claimed else (count >= limit.limit):
            return limit
    return None
