"""Crash windows: submit dies after each step; within two monitor ticks every run is right and no job is orphaned."""

from __future__ import annotations

import time

import pytest
from pushpool.prefect_api.models import StateType
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.job_spec import build_job_spec

from tests.helpers import PrefectHelper, pool_tick, skip_ahead

pytestmark = pytest.mark.integration

WINDOWS = ["after the claim", "after the job, before the pid", "after the pid, before the progress state"]


def _die_at(deps, prefect: PrefectHelper, pool: str, window: str) -> str:
    # 600 s, stopped at the end: a job that ended during a slow tick (SQLite stalls up to 60 s) would read as lost.
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 600"}))
    client = deps.orchestrator
    claim = client.propose_state(run_id, StateType.PENDING)
    assert claim.accepted
    if window == WINDOWS[0]:
        return run_id
    run = client.read_flow_run(run_id)
    spec = build_job_spec(
        settings=deps.settings,
        client=client,
        run=run,
        pool=client.read_work_pool(pool),
        deployment=client.read_deployment(run.deployment_id),
        attempt=claim.state.id,
    )
    handle = deps.backend("process").submit(spec)
    if window == WINDOWS[2]:
        client.set_infrastructure_pid(run_id, handle.id)
    return run_id


@pytest.mark.parametrize("window", WINDOWS)
def test_submit_dies(deps, prefect: PrefectHelper, pool: str, window: str, report) -> None:
    runs = [_die_at(deps, prefect, pool, window) for _ in range(3)]
    fault_at = time.monotonic()
    skip_ahead(deps, deps.settings.pending_timeout_seconds + 0.2)
    for _ in range(2):  # within two ticks
        pool_tick(deps, pool)
    backend = deps.backend("process")
    lost = stuck = 0
    repaired = time.monotonic() - fault_at
    for run_id in runs:
        run = prefect.read_run(run_id)
        pid = run["infrastructure_pid"]
        state = run["state"]["type"]
        alive = pid is not None and backend.status([JobHandle("process", pid)])[pid].state is JobState.RUNNING
        if state in ("PENDING", "RUNNING", "CANCELLING") and not alive:
            lost += 1
        if not (state == "PENDING" and alive):
            stuck += 1
    report.add(
        f"submit dies {window}", runs=len(runs), faults=len(runs), lost=lost, stuck=stuck, longest_repair=repaired
    )
    assert lost == 0 and stuck == 0
    # No job is left whose run is final or unknown: every job belongs to a live, in-flight run.
    for run_id in runs:
        backend.cancel(JobHandle("process", prefect.read_run(run_id)["infrastructure_pid"]), grace_seconds=1)
