"""A hostile run creator forges the label that keeps a run's idempotency key across transient give-backs
(``pushpool.io/attempt``, issue 23 item 2) to make its run adopt another run's job, or re-use its own finished one.

The key is taken from the label only when it names a claim in the run's *own* history with nothing but Scheduled
states and claims since (nothing ran), and every backend keys its jobs by run id and attempt together: a forged label
changes nothing — the run gets its own new job, the other run's job is untouched. A real Prefect server, the real
process backend.
"""

from __future__ import annotations

import pytest
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.run_states import ATTEMPT_LABEL

from tests.helpers import PrefectHelper, submit

pytestmark = pytest.mark.integration


def _claims(prefect: PrefectHelper, run_id: str) -> list[str]:
    states = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    return [s["id"] for s in sorted(states, key=lambda s: s["timestamp"]) if s["name"] == "Pending"]


def test_a_forged_attempt_label_never_reaches_another_runs_job(deps, prefect: PrefectHelper, pool: str) -> None:
    backend = deps.backend("process")
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 600"})
    victim = prefect.create_run(dep)
    victim_job = submit(deps, victim).job_id
    (victim_claim,) = _claims(prefect, victim)
    handles: list[JobHandle] = [JobHandle("process", victim_job)]
    try:
        for forged in (victim_claim, victim_job, "../../etc"):
            attacker = prefect.create_run(dep, labels={ATTEMPT_LABEL: forged})
            outcome = submit(deps, attacker)
            assert outcome.outcome == "submitted", outcome
            handles.append(JobHandle("process", outcome.job_id))
            (own_claim,) = _claims(prefect, attacker)
            assert outcome.job_id.endswith(f"::{attacker}_{own_claim}")  # its own run, its own claim
            assert outcome.job_id != victim_job
        assert prefect.read_run(victim)["infrastructure_pid"] == victim_job
        assert backend.status(handles[:1])[victim_job].state is JobState.RUNNING  # untouched
    finally:
        for handle in handles:
            backend.cancel(handle, grace_seconds=1)


def test_a_forged_label_naming_the_runs_own_earlier_attempt_does_not_reuse_its_job(
    deps, prefect: PrefectHelper, pool: str
) -> None:
    """After the run's first job ran (Running, then the flow's own retry), a label naming that first claim is not a
    kept key: the retry is a new attempt with its own job."""
    backend = deps.backend("process")
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 600"}))
    first = submit(deps, run_id).job_id
    handles = [JobHandle("process", first)]
    try:
        (first_claim,) = _claims(prefect, run_id)
        prefect.set_state(run_id, "RUNNING", force=True)
        prefect.set_state(run_id, "SCHEDULED", force=True, name="AwaitingRetry")
        prefect.json("PATCH", f"/flow_runs/{run_id}/labels", json={ATTEMPT_LABEL: first_claim})
        outcome = submit(deps, run_id)
        assert outcome.outcome == "submitted", outcome
        handles.append(JobHandle("process", outcome.job_id))
        assert outcome.job_id != first
        assert outcome.job_id.endswith(f"_{_claims(prefect, run_id)[-1]}")
    finally:
        for handle in handles:
            backend.cancel(handle, grace_seconds=1)
