"""heartbeat: show in Prefect that pushpool serves a pool, and stop showing it when pushpool stops.

Prefect shows a pool "Not Ready" until a worker heartbeats into it. pushpool has no worker, so the monitor heartbeats
as one (``settings.worker_name``) with ``settings.heartbeat_interval_seconds``: the pool is Ready while the monitor
runs, and Prefect's foreman marks it Not Ready three intervals after the last heartbeat. A tick heartbeats into a
pool only when this process has not done so within the interval (less a tenth, for the ticks' jitter): a heartbeat
is a write, and Prefect follows each with background writes (``mark_deployments_ready``,
``mark_work_queues_ready``) that hold SQLite's lock — ``serve`` ticks every 5 s but heartbeats every 30 s, as
Prefect's worker does; a deployed monitor that ticks once per interval heartbeats on every tick. ``stop_serving``
removes the worker at once, for a ``pushpool serve`` that shuts down. Status is informational only: scheduling never
depends on it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from pushpool.errors import ObjectNotFoundError, PushpoolError
from pushpool.prefect_api.models import WorkPool
from pushpool.usecases.deps import Deps

log = logging.getLogger("pushpool.usecases.heartbeat")


def heartbeat(deps: Deps, pools: list[WorkPool]) -> list[str]:
    """Heartbeat into each of ``pools`` not heartbeated into by this process within the interval; the errors, one
    line each (a failed heartbeat never stops a tick, and is tried again on the next)."""
    settings, errors = deps.settings, []
    interval = settings.heartbeat_interval_seconds
    now = deps.clock.now().timestamp()
    for pool in pools:
        last = deps.heartbeats.get(pool.name)
        if last is not None and now - last < 0.9 * interval:
            continue
        try:
            deps.orchestrator.heartbeat_worker(pool.name, settings.worker_name, interval)
            deps.heartbeats[pool.name] = now
        except PushpoolError as exc:
            errors.append(f"heartbeat into pool {pool.name}: {exc.one_line()}")
    return errors


def stop_serving(deps: Deps, pool_names: list[str]) -> None:
    """Remove pushpool's worker from the pools named (they show Not Ready once Prefect's foreman next runs); a few
    at a time, so that a server with many pools does not hold up a shutdown."""

    def remove(name: str) -> None:
        deps.heartbeats.pop(name, None)
        try:
            deps.orchestrator.delete_worker(name, deps.settings.worker_name)
        except ObjectNotFoundError:
            pass
        except PushpoolError as exc:
            log.warning("could not remove worker %s from pool %s: %s", deps.settings.worker_name, name, exc.one_line())

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pushpool-stop") as executor:
        list(executor.map(remove, pool_names))
