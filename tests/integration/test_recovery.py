"""Crash windows and zombies: whatever step a submitter dies at, the monitor repairs the run within two ticks."""

from __future__ import annotations

import pytest
from pushpool.prefect_api.models import StateType
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.job_spec import build_job_spec
from pushpool.usecases.reconcile import RECOVERIES_LABEL

from tests.helpers import PrefectHelper, pool_tick, skip_ahead

pytestmark = pytest.mark.integration


def _claimed_run(deps, prefect: PrefectHelper, pool: str, command: str = "sleep 600") -> str:
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": command}))
    assert deps.orchestrator.propose_state(run_id, StateType.PENDING).accepted
    return run_id


def _start_job(deps, run_id: str) -> JobHandle:
    client = deps.orchestrator
    run = client.read_flow_run(run_id)
    pool = client.read_work_pool(run.work_pool_name)
    spec = build_job_spec(
        settings=deps.settings,
        client=client,
        run=run,
        pool=pool,
        deployment=client.read_deployment(run.deployment_id),
        attempt=run.state.id,  # the claim's Pending state, as submit uses
    )
    return deps.backend("process").submit(spec)


def _past_timeout(deps) -> None:
    skip_ahead(deps, deps.settings.pending_timeout_seconds + 0.5)


def test_died_after_the_claim_run_is_rescheduled_and_dispatched_again(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    _past_timeout(deps)
    first = pool_tick(deps, pool)
    assert first.reconciled["recover"] == 1
    run = prefect.read_run(run_id)
    assert run["labels"][RECOVERIES_LABEL] == "1"
    second = pool_tick(deps, pool)  # the rescheduled run is due: dispatched like any other
    assert second.dispatched["submitted"] == 1
    run = prefect.read_run(run_id)
    assert run["state"]["type"] == "PENDING" and run["infrastructure_pid"]
    deps.backend("process").cancel(JobHandle("process", run["infrastructure_pid"]), grace_seconds=1)


def test_died_between_job_and_pid_the_job_is_adopted_not_duplicated(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    handle = _start_job(deps, run_id)  # sleeps 600 s: a stalled SQLite (up to 60 s) cannot let it end by itself
    try:
        _past_timeout(deps)
        assert pool_tick(deps, pool).reconciled["adopt"] == 1
        assert prefect.read_run(run_id)["infrastructure_pid"] == handle.id
        assert prefect.state(run_id)[0] == "PENDING"
        assert deps.backend("process").status([handle])[handle.id].state is JobState.RUNNING
    finally:
        deps.backend("process").cancel(handle, grace_seconds=1)


def test_died_after_pid_before_progress_state_the_run_goes_on(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:hello")
    run_id = prefect.create_run(dep)
    assert deps.orchestrator.propose_state(run_id, StateType.PENDING).accepted
    handle = _start_job(deps, run_id)
    deps.orchestrator.set_infrastructure_pid(run_id, handle.id)
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90, tick=lambda: pool_tick(deps, pool))
    assert run["state"]["type"] == "COMPLETED"


def test_cancelled_while_the_job_starts_the_job_is_stopped(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    handle = _start_job(deps, run_id)
    deps.orchestrator.set_infrastructure_pid(run_id, handle.id)
    prefect.set_state(run_id, "CANCELLING")
    report = pool_tick(deps, pool)
    assert report.reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    assert deps.backend("process").status([handle])[handle.id].state is JobState.STOPPED


def test_cancelling_run_with_no_job_is_cancelled(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    prefect.set_state(run_id, "CANCELLING")
    pool_tick(deps, pool)
    assert prefect.state(run_id)[0] == "CANCELLED"


def test_running_with_no_job_behind_it_is_crashed(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    prefect.set_state(run_id, "RUNNING")
    _past_timeout(deps)
    pool_tick(deps, pool)
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "no job" in state["message"]


def test_a_job_that_outlives_its_run_is_stopped(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    handle = _start_job(deps, run_id)
    deps.orchestrator.set_infrastructure_pid(run_id, handle.id)
    prefect.set_state(run_id, "RUNNING")
    prefect.set_state(run_id, "COMPLETED")
    skip_ahead(deps, deps.settings.exit_grace_seconds + 0.5)
    assert pool_tick(deps, pool).reconciled["stop"] == 1
    assert deps.backend("process").status([handle])[handle.id].state is JobState.STOPPED
    assert prefect.state(run_id)[0] == "COMPLETED"


def test_a_run_forced_cancelled_has_its_job_stopped(deps, prefect: PrefectHelper, pool: str) -> None:
    run_id = _claimed_run(deps, prefect, pool)
    handle = _start_job(deps, run_id)
    deps.orchestrator.set_infrastructure_pid(run_id, handle.id)
    prefect.set_state(run_id, "CANCELLED", force=True)
    pool_tick(deps, pool)
    assert deps.backend("process").status([handle])[handle.id].state is JobState.STOPPED


def test_a_crash_report_for_a_finished_run_changes_nothing(deps, prefect: PrefectHelper, pool: str) -> None:
    from pushpool.usecases.run_states import crash_run

    run_id = _claimed_run(deps, prefect, pool)
    prefect.set_state(run_id, "RUNNING")
    prefect.set_state(run_id, "COMPLETED")
    result = crash_run(deps.orchestrator, run_id, "late report")
    assert result is not None and result.status.value == "ABORT"
    assert prefect.state(run_id)[0] == "COMPLETED"
