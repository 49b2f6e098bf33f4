"""Cancellation of Pending and Running runs and the maximum run time act within one tick; the job really stops."""

from __future__ import annotations

import time

import pytest
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.submit import submit_run

from tests.helpers import PrefectHelper, pool_tick, skip_ahead

pytestmark = pytest.mark.integration


def _submitted(deps, prefect: PrefectHelper, pool: str, **variables) -> tuple[str, JobHandle]:
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 60", **variables}))
    client = deps.orchestrator
    outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool))
    return run_id, JobHandle("process", outcome.job_id)


def test_cancel_and_max_run_time_act_within_one_tick(deps, prefect: PrefectHelper, pool: str, report) -> None:
    backend = deps.backend("process")
    pending, pending_job = _submitted(deps, prefect, pool)
    running, running_job = _submitted(deps, prefect, pool)
    prefect.set_state(running, "RUNNING")
    overdue, overdue_job = _submitted(deps, prefect, pool, max_run_time_seconds=1)
    prefect.set_state(overdue, "RUNNING")
    skip_ahead(deps, 1.5)  # the overdue run is past its maximum run time
    prefect.set_state(pending, "CANCELLING")
    prefect.set_state(running, "CANCELLING")
    started = time.monotonic()
    pool_tick(deps, pool)  # one tick
    took = time.monotonic() - started
    expected = {pending: "CANCELLED", running: "CANCELLED", overdue: "CRASHED"}
    jobs = {pending: pending_job, running: running_job, overdue: overdue_job}
    wrong = [r for r, t in expected.items() if prefect.state(r)[0] != t]
    alive = [r for r, h in jobs.items() if backend.status([h])[h.id].state is not JobState.STOPPED]
    report.add(
        "cancel Pending/Running, max run time: one tick",
        runs=3,
        faults=3,
        lost=len(alive),
        stuck=len(wrong),
        longest_repair=took,
    )
    assert wrong == [] and alive == []
    assert "maximum run time of 1 s" in prefect.read_run(overdue)["state"]["message"]
