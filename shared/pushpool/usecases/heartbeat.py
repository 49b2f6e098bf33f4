"""heartbeat: show in Prefect that pushpool serves a pool, and stop showing it when pushpool stops.

Prefect shows a pool "Not Ready" until a worker heartbeats into it. pushpool has no worker, so the monitor heartbeats
as one (``settings.worker_name``) on every tick, with its tick interval: the pool is Ready while the monitor runs,
and Prefect's foreman marks it Not Ready three intervals after the last tick. ``stop_serving`` removes the worker at
once, for a ``pushpool serve`` that shuts down. Status is informational only: scheduling never depends on it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from pushpool.errors import ObjectNotFoundError, PushpoolError
from pushpool.prefect_api.models import WorkPool
from pushpool.usecases.deps import Deps

log = logging.getLogger("pushpool.usecases.heartbeat")


def heartbeat(deps: Deps, pools: list[WorkPool]) -> list[str]:
    """Heartbeat into each of ``pools``; the errors, one line each (a failed heartbeat never stops a tick)."""
    settings, errors = deps.settings, []
    for pool in pools:
        try:
            deps.orchestrator.heartbeat_worker(pool.name, settings.worker_name, settings.heartbeat_interval_seconds)
        except PushpoolError as exc:
            errors.append(f"heartbeat into pool {pool.name}: {exc.one_line()}")
    return errors


def stop_serving(deps: Deps, pool_names: list[str]) -> None:
    """Remove pushpool's worker from the pools named (they show Not Ready once Prefect's foreman next runs); a few
    at a time, so that a server with many pools does not hold up a shutdown."""

    def remove(name: str) -> None:
        try:
            deps.orchestrator.delete_worker(name, deps.settings.worker_name)
        except ObjectNotFoundError:
            pass
        except PushpoolError as exc:
            log.warning("could not remove worker %s from pool %s: %s", deps.settings.worker_name, name, exc.one_line())

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pushpool-stop") as executor:
        list(executor.map(remove, pool_names))
