"""in_flight: the in-flight runs of push pools, with their jobs and ages (for ``pushpool status``)."""

from __future__ import annotations

from typing import Any

from pushpool.errors import PushpoolError
from pushpool.prefect_api.models import IN_FLIGHT_STATES
from pushpool.providers.base import JobHandle
from pushpool.usecases.deps import Deps
from pushpool.usecases.job_spec import PoolCredentials
from pushpool.usecases.monitor import push_pools


def in_flight(deps: Deps, *, pool: str | None = None) -> list[dict[str, Any]]:
    pools = [p for p in push_pools(deps) if pool is None or p.name == pool]
    if not pools:
        return []
    by_name = {p.name: p for p in pools}
    runs = list(
        deps.orchestrator.filter_flow_runs(
            {
                "flow_runs": {"state": {"type": {"any_": [s.value for s in IN_FLIGHT_STATES]}}},
                "work_pools": {"name": {"any_": list(by_name)}},
                "sort": "START_TIME_DESC",
            }
        )
    )
    now = deps.clock.now()
    handles: dict[str, list[JobHandle]] = {}
    credentials = PoolCredentials(deps.settings, deps.orchestrator)  # each job asked with its pool's credentials
    job_states: dict[str, str] = {}
    for run in runs:
        if run.infrastructure_pid:
            pool = by_name[run.work_pool_name or ""]
            name = deps.provider(pool.type).name
            try:
                handle = credentials.handle(name, pool, run.infrastructure_pid)
            except PushpoolError as exc:
                job_states[run.infrastructure_pid] = f"UNKNOWN ({exc.one_line()})"
                continue
            handles.setdefault(name, []).append(handle)
    job_states.update(
        {
            job_id: status.state.value
            for name, batch in handles.items()
            for job_id, status in deps.backend(name).status(batch).items()
        }
    )
    rows = []
    for run in runs:
        job_state = job_states.get(run.infrastructure_pid or "", "-")
        since = run.start_time or (run.state.timestamp if run.state else None) or now
        rows.append(
            {
                "run_id": run.id,
                "name": run.name,
                "pool": run.work_pool_name,
                "state": run.state_name,
                "age_seconds": max(0.0, (now - since).total_seconds()),
                "job_id": run.infrastructure_pid,
                "job_state": job_state,
            }
        )
    return rows
