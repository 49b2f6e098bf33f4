"""punctual: a scheduled run's job starts at its scheduled time minus a lead, set off by a one-shot trigger.

Prefect emits no event when a scheduled run becomes due. When pushpool learns of a run that is not due yet (its
Scheduled event, or the monitor's look-ahead), it arms a one-shot trigger for ``scheduled time - lead`` with what its
runtime offers for delayed delivery (``DelayedTrigger``: a timer in ``pushpool serve``, a delayed SQS message on AWS).
When the trigger fires, submit re-reads the run and acts only if it is still Scheduled and due: a run rescheduled,
cancelled or deleted meanwhile makes the trigger a no-op, and a run rescheduled later arms a new one. Nothing is
stored by pushpool; a lost trigger costs at most one monitor tick, whose sweep stays the guarantee.

Many runs of one pool due at the same instant (a schedule's burst), learned from the monitor's listing, get one
trigger for the pool instead (``arm_pool``, where the runtime's trigger offers it: SQS): when it fires, submit sweeps
the pool as a monitor tick does — one listing, then 3 calls per run instead of 5 (1, its pid, plus a share of two
bulk requests per 50 runs on a server with bulk claims: ``bulk_dispatch``) — rather than 200 deliveries each reading
its run. A lost pool trigger also costs at most one tick.

The lead (``lead_seconds``): ``PUSHPOOL_DISPATCH_LEAD`` for every pool if set, else the pool's own
(``dispatch_lead_seconds`` in its base job template's variables, as a default), else the provider's
(``Backend.dispatch_lead_seconds``: about the time from a job accepted to the flow running).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pushpool.errors import PushpoolError
from pushpool.usecases.triggers import PoolTrigger

if TYPE_CHECKING:
    from pushpool.prefect_api.models import FlowRun, WorkPool
    from pushpool.providers.base import Backend
    from pushpool.usecases.deps import Deps

log = logging.getLogger("pushpool.usecases.punctual")


GROUP_RUNS = 8  # runs of one pool due at the same instant from which they share one pool trigger


def lead_seconds(deps: Deps, pool: WorkPool, backend: Backend) -> float:
    """How long before its scheduled time a run of ``pool`` has its job started."""
    if deps.settings.dispatch_lead_seconds is not None:
        return deps.settings.dispatch_lead_seconds
    variables = pool.base_job_template.get("variables") if isinstance(pool.base_job_template, dict) else None
    properties = variables.get("properties") if isinstance(variables, dict) else None
    declared = properties.get("dispatch_lead_seconds") if isinstance(properties, dict) else None
    default = declared.get("default") if isinstance(declared, dict) else None
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default >= 0:
        return float(default)
    return float(backend.dispatch_lead_seconds)


def due_time(run: FlowRun) -> dt.datetime | None:
    """When ``run`` is scheduled to start (its current Scheduled state's time, else its expected start)."""
    return run.next_scheduled_start_time or run.expected_start_time


def dispatch_time(run: FlowRun, lead: float) -> dt.datetime | None:
    """When ``run``'s job should be accepted: its scheduled time minus ``lead`` (None: no time known, so now)."""
    due = due_time(run)
    return due - dt.timedelta(seconds=lead) if due is not None else None


def arm(deps: Deps, run_id: str, at: dt.datetime) -> bool:
    """Arm the runtime's trigger for ``run_id`` at ``at``; False when there is none or ``at`` is beyond its reach
    (the monitor's look-ahead arms it later). A failure to arm is logged and costs at most one monitor tick."""
    trigger = deps.trigger
    if trigger is None or not _within_reach(deps, trigger, at):
        return False
    return _armed(
        lambda: trigger.arm(run_id, at), f"run {run_id}: could not arm its trigger", "the monitor will dispatch it"
    )


def arm_pool(deps: Deps, pool_name: str, at: dt.datetime) -> bool:
    """Arm one trigger that sweeps ``pool_name`` at ``at``; False when the runtime's trigger cannot (the runs are then
    armed one by one), when ``at`` is beyond its reach, or when arming failed (logged; the monitor covers it)."""
    trigger = deps.trigger
    if not isinstance(trigger, PoolTrigger) or not _within_reach(deps, trigger, at):
        return False
    return _armed(
        lambda: trigger.arm_pool(pool_name, at),
        f"pool {pool_name}: could not arm its sweep",
        "its runs are armed one by one",
    )


def _within_reach(deps: Deps, trigger: object, at: dt.datetime) -> bool:
    limit = getattr(trigger, "max_delay_seconds", None)
    return limit is None or (at - deps.clock.now()).total_seconds() <= limit


def _armed(arming: Callable[[], None], failure: str, fallback: str) -> bool:
    try:
        arming()
    except PushpoolError as exc:
        log.warning("%s (%s); %s", failure, exc.one_line(), fallback)
        return False
    return True


def look_ahead_seconds(deps: Deps) -> float:
    """How far past now the monitor arms triggers: two heartbeat intervals (two ticks on AWS; 60 s in serve, whose
    ticks are 5 s), within what the trigger can deliver."""
    if deps.trigger is None:
        return 0.0
    ahead = 2 * deps.settings.heartbeat_interval_seconds
    limit = deps.trigger.max_delay_seconds
    return min(ahead, limit) if limit is not None else ahead
