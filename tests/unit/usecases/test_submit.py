"""submit_run against FakePrefect and LatencyBackend: each outcome, and what it leaves in Prefect and the backend."""

from __future__ import annotations

import datetime as dt

import pytest
from pushpool.clock import FixedClock
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers.base import JobSpec, JobState
from pushpool.usecases.deps import Deps
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL, ready_run

SCHEDULED = [("SCHEDULED", "Scheduled")]


def test_a_ready_run_gets_one_job_its_pid_and_infrastructure_pending(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A due run is claimed, gets exactly one job for its claim, the job id as pid, and InfrastructurePending."""
    run = ready_run(fake, job_variables={"env": {"GREETING": "hi"}})
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    assert backend.calls["submit"] == 1
    ((job_id, job),) = backend.jobs.items()
    assert outcome.job_id == job_id
    assert outcome.dispatch_latency_seconds == 0.0
    after = fake.run(run.id)
    assert after.infrastructure_pid == job_id
    assert fake.history(run.id) == [*SCHEDULED, ("PENDING", "Pending"), ("PENDING", "InfrastructurePending")]
    claim = fake.runs[run.id].history[1]
    assert job.spec is not None
    assert job.spec.attempt == claim.id  # the job's idempotency key is the claim
    assert job.spec.env["PREFECT__FLOW_RUN_ID"] == run.id
    assert job.spec.env["GREETING"] == "hi"


def test_a_run_not_yet_due_is_deferred_and_left_alone(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock
) -> None:
    """A run scheduled later is left Scheduled for the monitor: no claim, no job."""
    run = ready_run(fake, scheduled_at=clock.now() + dt.timedelta(minutes=5))
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.DEFERRED
    assert fake.history(run.id) == SCHEDULED
    assert backend.calls["submit"] == 0


@pytest.mark.parametrize("paused", ["pool", "queue"])
def test_a_paused_pool_or_queue_changes_nothing(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, paused: str
) -> None:
    """Pause flags are honoured on the webhook path: the run stays Scheduled, no job."""
    run = ready_run(fake)
    if paused == "pool":
        fake.set_pool(POOL, is_paused=True)
    else:
        fake.set_queue(POOL, "default", is_paused=True)
    outcome = submit_run(deps, run, fake.read_work_pool(POOL))
    assert outcome.outcome == SubmitOutcome.PAUSED
    assert paused in outcome.detail
    assert fake.history(run.id) == SCHEDULED
    assert backend.calls["submit"] == 0


def test_a_full_pool_limit_leaves_the_run_waiting(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """With the pool's only slot taken by an in-flight run, the run waits, unclaimed."""
    fake.set_pool(POOL, concurrency_limit=1)
    busy = ready_run(fake)
    fake.force_state(busy.id, StateType.RUNNING)
    run = ready_run(fake)
    outcome = submit_run(deps, run, fake.read_work_pool(POOL))
    assert outcome.outcome == SubmitOutcome.WAITING
    assert "work pool 'push' concurrency limit reached" in outcome.detail
    assert fake.history(run.id) == SCHEDULED
    assert backend.calls["submit"] == 0


def test_a_full_named_queue_limit_leaves_the_run_waiting(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A queue limit holds for runs of a deployment that names its queue."""
    fake.add_queue(POOL, "q2", concurrency_limit=1)
    busy = ready_run(fake, work_queue_name="q2")
    fake.force_state(busy.id, StateType.PENDING)
    run = ready_run(fake, work_queue_name="q2")
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.WAITING
    assert "work queue 'q2'" in outcome.detail
    assert backend.calls["submit"] == 0


def test_a_full_default_queue_limit_leaves_the_run_waiting(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A limit on the default queue holds for runs of a deployment that names no queue (the usual case)."""
    fake.set_queue(POOL, "default", concurrency_limit=1)
    busy = ready_run(fake)
    fake.force_state(busy.id, StateType.PENDING)
    run = ready_run(fake)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.WAITING
    assert backend.calls["submit"] == 0


def test_a_second_claimer_does_nothing(deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool) -> None:
    """When another submitter claimed the run after it was read, this one is ABORTed and starts no job."""
    run = ready_run(fake)
    assert fake.propose_state(run.id, StateType.PENDING).accepted  # the other submitter
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED
    assert outcome.detail.startswith("ABORT: This run is in a PENDING state")
    assert fake.history(run.id) == [*SCHEDULED, ("PENDING", "Pending")]
    assert backend.calls["submit"] == 0


def test_a_template_that_does_not_render_crashes_the_run_with_the_reason(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """Bad job variables crash the run (never left Pending) with the rendering error as its message."""
    run = ready_run(fake, job_variables={"env": "not-a-mapping"})
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.CRASHED
    after = fake.run(run.id)
    assert after.state_type is StateType.CRASHED
    assert after.state.message.startswith("pushpool could not render the job template: ")
    assert "'env' rendered to a str, expected a mapping" in after.state.message
    assert backend.calls["submit"] == 0


def test_a_missing_block_is_a_template_error(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A job variable that references a block that does not exist crashes the run naming the block."""
    run = ready_run(fake, job_variables={"env": {"TOKEN": "{{ prefect.blocks.secret.nope }}"}})
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.CRASHED
    assert "'nope'" in fake.run(run.id).state.message
    assert backend.calls["submit"] == 0


def test_a_block_reference_is_resolved(deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool) -> None:
    """A secret block referenced by a job variable reaches the job's environment."""
    type_id = fake.read_block_type_id("secret")
    fake.create_block_document(
        {"name": "tok", "data": {"value": "s3cr3t"}, "block_type_id": type_id, "block_schema_id": "x"}
    )
    run = ready_run(fake, job_variables={"env": {"TOKEN": "{{ prefect.blocks.secret.tok }}"}})
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.SUBMITTED
    ((job),) = backend.jobs.values()
    assert job.spec.env["TOKEN"] == "s3cr3t"


def test_a_backend_error_crashes_the_run(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A job the backend refuses crashes the run with the backend's reason; no pid is written."""
    run = ready_run(fake, job_variables={"command": "/no/such/program"})
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.CRASHED
    after = fake.run(run.id)
    assert after.state_type is StateType.CRASHED
    assert after.state.message.startswith("Failed to submit flow run to infrastructure (fake): no such program")
    assert after.infrastructure_pid is None
    assert backend.jobs == {}


class CancelledWhileStarting(LatencyBackend):
    """Starts the job, and meanwhile the user cancels the run (``Cancelling``) or something forces it Cancelled."""

    def __init__(self, fake: FakePrefect, to: StateType) -> None:
        super().__init__()
        self.fake, self.to = fake, to

    def submit(self, spec: JobSpec):
        handle = super().submit(spec)
        if self.to is StateType.CANCELLING:
            assert self.fake.propose_state(spec.run_id, StateType.CANCELLING).accepted
        else:
            self.fake.force_state(spec.run_id, StateType.CANCELLED)
        return handle


@pytest.mark.parametrize("to", [StateType.CANCELLING, StateType.CANCELLED])
def test_a_run_cancelled_while_its_job_started_gets_the_job_stopped(
    deps: Deps, fake: FakePrefect, pool: WorkPool, to: StateType
) -> None:
    """The InfrastructurePending answer shows the cancellation: the job is stopped and the run ends Cancelled."""
    backend = CancelledWhileStarting(fake, to)
    deps._backends["process"] = backend
    run = ready_run(fake)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.CANCELLED
    ((job),) = backend.jobs.values()
    assert job.state is JobState.STOPPED
    assert backend.calls["cancel"] == 1
    after = fake.run(run.id)
    assert after.state_type is StateType.CANCELLED
    if to is StateType.CANCELLING:
        assert after.state.message == "Cancelled by pushpool: the run was cancelled while its job started."
    assert ("PENDING", "InfrastructurePending") not in fake.history(run.id)


def test_a_run_whose_deployment_was_deleted_is_cancelled(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A run left behind by a deleted deployment (Prefect keeps AwaitingConcurrencySlot ones) is Cancelled, no job."""
    run = ready_run(fake)
    fake.force_state(run.id, StateType.SCHEDULED, name="AwaitingConcurrencySlot")
    fake.delete_deployment(run.deployment_id)
    outcome = submit_run(deps, fake.read_flow_run(run.id), pool)
    assert outcome.outcome == SubmitOutcome.CANCELLED
    after = fake.run(run.id)
    assert after.state_type is StateType.CANCELLED
    assert after.state.message == f"Deployment {run.deployment_id} no longer exists, cancelled run."
    assert backend.calls["submit"] == 0


def test_prefect_unavailable_after_the_claim_releases_the_run(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A transient failure reading the deployment gives the claimed run back to Scheduled; no job."""
    run = ready_run(fake)
    fake.unavailable("read_deployment")
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.RELEASED
    assert [t for t, _ in fake.history(run.id)] == ["SCHEDULED", "PENDING", "SCHEDULED"]
    assert backend.calls["submit"] == 0


def test_a_run_that_is_not_scheduled_is_not_ready(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """submit only takes Scheduled runs: a Running one is left as it is."""
    run = ready_run(fake)
    fake.force_state(run.id, StateType.RUNNING)
    outcome = submit_run(deps, fake.read_flow_run(run.id), pool)
    assert outcome.outcome == SubmitOutcome.NOT_READY
    assert backend.calls["submit"] == 0
    assert len(fake.history(run.id)) == 2


class SlowSubmit(LatencyBackend):
    """A submit that takes longer than the pending timeout; ``recover``: meanwhile the monitor gave the run back to
    Scheduled and another submitter claimed it again (as when Prefect's SQLite stalls a call for a minute)."""

    def __init__(self, fake: FakePrefect, clock: FixedClock, seconds: float, recover: bool) -> None:
        super().__init__()
        self.fake, self.clock, self.seconds, self.recover = fake, clock, seconds, recover

    def submit(self, spec: JobSpec):  # type: ignore[no-untyped-def]
        self.clock.advance(self.seconds)
        if self.recover:
            self.fake.force_state(spec.run_id, StateType.SCHEDULED, message="pushpool: the run was Pending with no job")
            self.fake.force_state(spec.run_id, StateType.PENDING, name="Pending")  # the next claim
        return super().submit(spec)


def test_a_submit_that_outlived_its_claim_stops_its_late_job(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The fence: a submit slower than the pending timeout whose claim was recovered and claimed again meanwhile
    stops the job it made late, and writes no pid over the new claim's: one job runs the flow, not two."""
    backend = SlowSubmit(fake, clock, deps.settings.pending_timeout_seconds + 1, recover=True)
    deps._backends["process"] = backend
    run = ready_run(fake)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED
    ((job),) = backend.jobs.values()
    assert job.state is JobState.STOPPED
    after = fake.run(run.id)
    assert after.infrastructure_pid is None
    assert (after.state_type, after.state_name) == (StateType.PENDING, "Pending")  # the new claim, untouched


@pytest.mark.parametrize("seconds", [0.0, 1e6])
def test_a_slow_submit_that_still_holds_its_claim_goes_on(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, seconds: float
) -> None:
    """Slow or not, a submit whose claim is still the run's own starts its job as usual; only a slow one pays the
    one read that checks it."""
    backend = SlowSubmit(fake, clock, seconds, recover=False)
    deps._backends["process"] = backend
    run = ready_run(fake)
    reads = fake.calls_by_method["read_flow_run"]
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    assert fake.run(run.id).infrastructure_pid == outcome.job_id
    assert fake.calls_by_method["read_flow_run"] - reads == (1 if seconds else 0)


def test_a_slow_claim_that_lands_on_an_ended_run_gives_it_back(
    deps: Deps,
    fake: FakePrefect,
    backend: LatencyBackend,
    pool: WorkPool,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run was read Scheduled; before this submit's (stalled) claim landed, another claim's job ran and the run
    Crashed. Prefect accepts Pending after Crashed: the submit sees it, puts the Crashed state back, starts nothing."""
    run = ready_run(fake)  # the submitter's view: Scheduled
    fake.force_state(run.id, StateType.PENDING, name="Pending")  # another submitter's claim, its job, then …
    fake.force_state(run.id, StateType.CRASHED, message="Flow run infrastructure exited cleanly")
    propose = fake.propose_state

    def stalled(*args, **kwargs):  # type: ignore[no-untyped-def]  # the claim's call waits on Prefect's database lock
        clock.advance(deps.settings.exit_grace_seconds + 1)
        return propose(*args, **kwargs)

    monkeypatch.setattr(fake, "propose_state", stalled)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED
    assert backend.calls["submit"] == 0
    after = fake.run(run.id)
    assert after.state_type is StateType.CRASHED
    assert after.state.message == "Flow run infrastructure exited cleanly"
