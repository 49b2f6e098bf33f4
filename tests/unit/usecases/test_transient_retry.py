"""A transient backend error at submit gives the run back to Scheduled with backoff, under the same idempotency key,
and crashes it only past the bound (issue 23, item 2). Against FakePrefect and a LatencyBackend that fails on cue."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from pushpool.clock import FixedClock
from pushpool.errors import BackendError, BackendUnavailableError, QuotaExceededError
from pushpool.prefect_api.client import PAGE_SIZE
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers.base import JobHandle, JobSpec, JobState
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick
from pushpool.usecases.reconcile import reconcile_one
from pushpool.usecases.run_states import ATTEMPT_LABEL, BACKOFF_STATE
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL, ready_run

LEAD = 3.0  # the process:push template's dispatch lead: a run is tried this long before its scheduled time


class Flaky(LatencyBackend):
    """Fails the next submits with ``errors`` (None: succeeds). ``accepted``: the cloud made the job before the
    error reached us (a timeout after acceptance). A submit with ``new_attempt`` does not look for an earlier job of
    its key (the contract lets a backend rely on its API's token then): a kept key sent as new would double the job."""

    def __init__(self, errors: list[BackendError | None], *, accepted: bool = False) -> None:
        super().__init__()
        self.errors, self.accepted = list(errors), accepted
        self.specs: list[JobSpec] = []

    def submit(self, spec: JobSpec):  # type: ignore[no-untyped-def]
        self.specs.append(spec)
        error = self.errors.pop(0) if self.errors else None
        if error is not None and not self.accepted:
            raise error
        if spec.new_attempt:
            self._by_attempt.pop((spec.run_id, spec.attempt), None)
        handle = super().submit(spec)
        if error is not None:
            raise error
        return handle


def throttled(what: str = "429 Too Many Requests", retry_after: float | None = None) -> BackendUnavailableError:
    return BackendUnavailableError(f"Cloud Run throttled ({what})", backend="fake", retry_after=retry_after)


def use(deps: Deps, backend: LatencyBackend) -> LatencyBackend:
    deps._backends["process"] = backend
    return backend


def again(deps: Deps, fake: FakePrefect, clock: FixedClock, pool: WorkPool, run_id: str) -> SubmitOutcome:
    """Let the run's backoff pass and submit it again, as the monitor's sweep or its armed trigger does."""
    run = fake.read_flow_run(run_id)
    assert (run.state_type, run.state_name) == (StateType.SCHEDULED, BACKOFF_STATE)
    clock.advance((run.next_scheduled_start_time - clock.now()).total_seconds())
    return submit_run(deps, fake.read_flow_run(run_id), pool)


def test_a_throttled_submit_gives_the_run_back_and_its_retry_makes_one_job(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """A 429 gives the run back, saying why and when, backed off; not before then, the retry makes exactly one job,
    under the first claim's key."""
    backend = use(deps, Flaky([throttled()]))
    run = ready_run(fake)
    started = clock.now()
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.RELEASED
    after = fake.run(run.id)
    assert (after.state_type, after.state_name) == (StateType.SCHEDULED, BACKOFF_STATE)
    assert re.fullmatch(
        r"pushpool: Cloud Run throttled \(429 Too Many Requests\); retry 1 of 5 at \d\d:\d\d:\d\d UTC",
        after.state.message,
    )
    waited = (after.next_scheduled_start_time - started).total_seconds() - LEAD
    assert 5.0 <= waited <= 10.0  # the first backoff: 10 s with jitter, never under half
    assert outcome.dispatch_at == started + dt.timedelta(seconds=waited)
    assert after.infrastructure_pid is None and backend.jobs == {}
    first_claim = fake.runs[run.id].history[1]
    assert after.labels[ATTEMPT_LABEL] == first_claim.id

    assert submit_run(deps, fake.read_flow_run(run.id), pool).outcome == SubmitOutcome.DEFERRED  # no hammering
    assert len(backend.specs) == 1

    outcome = again(deps, fake, clock, pool, run.id)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    ((job_id, job),) = backend.jobs.items()
    assert outcome.job_id == job_id == fake.run(run.id).infrastructure_pid
    assert job.spec is not None and job.spec.attempt == first_claim.id
    assert fake.history(run.id) == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("SCHEDULED", BACKOFF_STATE),
        ("PENDING", "Pending"),
        ("PENDING", "InfrastructurePending"),
    ]


def test_a_timeout_after_the_cloud_accepted_the_job_is_found_by_the_retry_not_doubled(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The first submit's job exists although its answer was lost: the retry keeps the key, does not call it new,
    and finds that job. One job runs the flow."""
    backend = use(deps, Flaky([throttled("read timed out")], accepted=True))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    ((first_job),) = backend.jobs
    outcome = again(deps, fake, clock, pool, run.id)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    assert list(backend.jobs) == [first_job] == [outcome.job_id]
    assert [spec.new_attempt for spec in backend.specs] == [True, False]
    assert backend.specs[0].attempt == backend.specs[1].attempt


def test_after_the_bound_the_run_is_crashed_with_every_attempts_error(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """Five give-backs (PUSHPOOL_TRANSIENT_RETRIES), each saying which retry it is; the sixth failure crashes the run
    with the whole story, one line per attempt. No job was made."""
    backend = use(deps, Flaky([throttled(f"503 number {i}") for i in range(1, 7)]))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    for retry in range(2, 6):
        assert fake.run(run.id).state.message.split("; ")[-1].startswith(f"retry {retry - 1} of 5 at ")
        assert again(deps, fake, clock, pool, run.id).outcome == SubmitOutcome.RELEASED
    outcome = again(deps, fake, clock, pool, run.id)
    assert outcome.outcome == SubmitOutcome.CRASHED
    after = fake.run(run.id)
    assert after.state_type is StateType.CRASHED
    message = after.state.message
    assert message.startswith("Failed to submit flow run to infrastructure (fake): still failing after 6 attempts")
    story = message.split("Attempts:\n", 1)[1].splitlines()
    assert len(story) == 6
    for number, line in enumerate(story, 1):
        assert re.fullmatch(rf"{number}\. \d\d:\d\d:\d\d UTC: Cloud Run throttled \(503 number {number}\)", line)
    assert backend.jobs == {} and len(backend.specs) == 6
    assert len({spec.attempt for spec in backend.specs}) == 1  # one key throughout


def test_at_the_bound_a_job_the_cloud_made_after_all_is_taken_not_left_under_a_crashed_run(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """Every answer was lost although the cloud made the job at the first call: at the bound the job is found and
    becomes the run's, rather than running the flow under a run Crashed for want of a job."""
    backend = use(deps, Flaky([throttled("read timed out")] * 6, accepted=True))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    for _ in range(4):
        assert again(deps, fake, clock, pool, run.id).outcome == SubmitOutcome.RELEASED
    outcome = again(deps, fake, clock, pool, run.id)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    ((job_id),) = backend.jobs
    after = fake.run(run.id)
    assert outcome.job_id == job_id == after.infrastructure_pid
    assert (after.state_type, after.state_name) == (StateType.PENDING, "InfrastructurePending")


def test_the_time_bound_crashes_the_run_even_with_retries_left(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """Past PUSHPOOL_TRANSIENT_RETRY_SECONDS since the first attempt, the next transient failure crashes the run."""
    deps.settings = deps.settings.replace(transient_retry_seconds=5)
    use(deps, Flaky([throttled("first"), throttled("second")]))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    assert again(deps, fake, clock, pool, run.id).outcome == SubmitOutcome.CRASHED  # 5-10 s later
    story = fake.run(run.id).state.message.split("Attempts:\n", 1)[1].splitlines()
    assert [line.split(": ", 1)[1] for line in story] == ["Cloud Run throttled (first)", "Cloud Run throttled (second)"]


@pytest.mark.parametrize("error", [throttled(), QuotaExceededError("no capacity in the region", backend="fake")])
def test_every_retryable_error_is_retried(deps: Deps, fake: FakePrefect, pool: WorkPool, error: BackendError) -> None:
    use(deps, Flaky([error]))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    assert fake.run(run.id).state_name == BACKOFF_STATE


def test_a_non_retryable_backend_error_still_crashes_the_run_at_once(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    """A refusal that retrying cannot fix (a bad image, a denied permission) crashes on the first attempt."""
    use(deps, Flaky([BackendError("ClientException: no such image", backend="fake")]))
    run = ready_run(fake)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.CRASHED
    after = fake.run(run.id)
    assert after.state.message == "Failed to submit flow run to infrastructure (fake): ClientException: no such image"
    assert fake.history(run.id) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending"), ("CRASHED", "Crashed")]
    assert ATTEMPT_LABEL not in after.labels


def test_retry_after_is_honoured(deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock) -> None:
    use(deps, Flaky([throttled(retry_after=120)]))
    run = ready_run(fake)
    started = clock.now()
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    assert fake.run(run.id).next_scheduled_start_time == started + dt.timedelta(seconds=120 + LEAD)


def test_the_flows_own_retry_is_a_new_attempt_with_a_new_key(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The kept key lasts only while nothing ran: after the job ran the flow and the flow asked for a retry
    (AwaitingRetry), the next claim is a new attempt with its own key and gets its own job."""
    backend = use(deps, Flaky([throttled()]))
    run = ready_run(fake)
    submit_run(deps, run, pool)
    first = again(deps, fake, clock, pool, run.id)
    assert first.outcome == SubmitOutcome.SUBMITTED
    fake.force_state(run.id, StateType.RUNNING)
    fake.force_state(run.id, StateType.SCHEDULED, name="AwaitingRetry")
    second = submit_run(deps, fake.read_flow_run(run.id), pool)
    assert second.outcome == SubmitOutcome.SUBMITTED
    assert second.job_id != first.job_id and len(backend.jobs) == 2
    new_claim = [s for s in fake.runs[run.id].history if s.name == "Pending"][-1]
    assert backend.specs[-1].attempt == new_claim.id and backend.specs[-1].new_attempt


def test_the_monitor_adopts_the_job_of_the_kept_key(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The first submit's job was accepted after all; the retry's submitter died after its claim. The monitor looks
    under the kept key, finds that job and adopts it, rather than rescheduling the run for a second job."""
    backend = use(deps, Flaky([throttled("read timed out")], accepted=True))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    ((job_id),) = backend.jobs
    clock.advance((fake.run(run.id).next_scheduled_start_time - clock.now()).total_seconds())
    assert fake.propose_state(run.id, StateType.PENDING).accepted  # the retry's claim; its submitter died
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    report = tick(deps)
    assert report.errors == []
    assert report.reconciled["adopt"] == 1
    assert fake.run(run.id).infrastructure_pid == job_id
    assert list(backend.jobs) == [job_id]


# -- the monitor's own calls -------------------------------------------------------------------------------------------


class ThrottledStatus(LatencyBackend):
    """Answers ``status`` only for the jobs not in ``throttled`` (a region or batch whose call was throttled gets no
    answer); ``everything``: the whole call fails."""

    def __init__(self) -> None:
        super().__init__()
        self.throttled: set[str] = set()
        self.everything = False

    def status(self, handles):  # type: ignore[no-untyped-def]
        if self.everything:
            raise throttled("DescribeTasks: ThrottlingException")
        return super().status([h for h in handles if h.id not in self.throttled])


def test_a_throttled_status_leaves_its_runs_alone_and_the_others_are_reconciled(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """A job no status came back for is unknown, never gone: its Running run is not crashed as "no job behind it";
    the failed job of another run crashes that run as usual."""
    backend = use(deps, ThrottledStatus())
    quiet, failing = ready_run(fake), ready_run(fake)
    for run in (quiet, failing):
        assert submit_run(deps, run, pool).outcome == SubmitOutcome.SUBMITTED
        fake.force_state(run.id, StateType.RUNNING)
    backend.throttled.add(fake.run(quiet.id).infrastructure_pid)
    backend.exit(JobHandle("fake", fake.run(failing.id).infrastructure_pid), 1, ["boom"])
    clock.advance(deps.settings.pending_timeout_seconds + deps.settings.exit_grace_seconds + 1)
    report = tick(deps)
    assert report.errors == []
    assert fake.run(quiet.id).state_type is StateType.RUNNING
    assert fake.run(failing.id).state_type is StateType.CRASHED


def test_a_failed_status_call_still_lets_the_runs_without_a_job_be_reconciled(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The backend's whole status call fails (throttled): its runs with a job wait for the next tick, untouched; a
    Cancelling run without a job is still Cancelled and a Pending one without a job still recovered."""
    backend = use(deps, ThrottledStatus())
    running, cancelling, stuck = ready_run(fake), ready_run(fake), ready_run(fake)
    assert submit_run(deps, running, pool).outcome == SubmitOutcome.SUBMITTED
    fake.force_state(running.id, StateType.RUNNING)
    fake.force_state(cancelling.id, StateType.CANCELLING)
    assert fake.propose_state(stuck.id, StateType.PENDING).accepted  # its submitter died before making a job
    backend.everything = True
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    report = tick(deps)
    assert report.errors == ["backend fake: Cloud Run throttled (DescribeTasks: ThrottlingException)"]
    assert fake.run(running.id).state_type is StateType.RUNNING
    assert fake.run(cancelling.id).state_type is StateType.CANCELLED
    assert fake.run(stuck.id).state_type is StateType.SCHEDULED


class BrokenFor(LatencyBackend):
    """Raises an exception nobody translated (a bug, an SDK error the boundary does not know) for one run."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def submit(self, spec: JobSpec):  # type: ignore[no-untyped-def]
        if spec.run_id == self.run_id:
            raise RuntimeError("an SDK error nobody translated")
        return super().submit(spec)


def test_one_runs_unexpected_failure_does_not_hold_back_the_pools_other_runs(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The failing run is reported; every other due run, also those on the listing's next page, gets its job."""
    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment, scheduled_at=clock.now() - dt.timedelta(seconds=i)) for i in range(PAGE_SIZE + 5)]
    broken = runs[-1]  # the oldest: on the first page
    backend = use(deps, BrokenFor(broken))
    report = tick(deps)
    assert report.errors == [f"run {broken}: unexpected RuntimeError"]
    assert sorted(job.spec.run_id for job in backend.jobs.values()) == sorted(r for r in runs if r != broken)


def test_the_webhooks_fast_path_leaves_a_cancelling_run_alone_when_its_jobs_status_is_throttled(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    """reconcile_one (a Cancelling event): no status for the job is not "no job", so the run is not marked Cancelled
    while its job may still run; the next look stops the job first."""
    backend = use(deps, ThrottledStatus())
    run = ready_run(fake)
    job_id = submit_run(deps, run, pool).job_id
    fake.force_state(run.id, StateType.RUNNING)
    assert fake.propose_state(run.id, StateType.CANCELLING).accepted
    backend.throttled.add(job_id)
    assert reconcile_one(deps, fake.read_flow_run(run.id), pool)["detail"] == "none"
    assert fake.run(run.id).state_type is StateType.CANCELLING
    backend.throttled.clear()
    assert reconcile_one(deps, fake.read_flow_run(run.id), pool)["detail"] == "stop-and-cancel"
    assert fake.run(run.id).state_type is StateType.CANCELLED
    assert backend.jobs[job_id].state is JobState.STOPPED


# -- a slow submit overtaken by a later claim --------------------------------------------------------------------------


class Overtaken(LatencyBackend):
    """The first submit is overtaken while its call is in flight (``meanwhile``: the monitor recovers its run and a
    later claim starts that run's job), then fails with ``error`` (``accepted``: its job made all the same); every
    later submit succeeds."""

    def __init__(self, error: BackendError, *, accepted: bool = False) -> None:
        super().__init__()
        self.error, self.accepted = error, accepted
        self.meanwhile = lambda: None
        self.submits = 0

    def submit(self, spec: JobSpec):  # type: ignore[no-untyped-def]
        self.submits += 1
        if self.submits > 1:
            return super().submit(spec)
        self.meanwhile()
        if self.accepted:  # the stalled call landed after the monitor looked: the cloud made it, the answer was lost
            super().submit(spec)
        raise self.error


def _overtake(
    deps: Deps, fake: FakePrefect, clock: FixedClock, pool: WorkPool, run_id: str, *, reclaim: bool = True
) -> None:
    """What the monitor (and another submitter, if ``reclaim``) do while the first submit is stalled past the pending
    timeout."""
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    assert tick(deps).reconciled.get("recover") == 1  # Pending, no pid, no job of its attempt: rescheduled
    if reclaim:
        assert submit_run(deps, fake.read_flow_run(run_id), pool).outcome == SubmitOutcome.SUBMITTED


@pytest.mark.parametrize(
    "error", [throttled(), BackendError("image not found", backend="fake")], ids=["retryable", "not-retryable"]
)
def test_a_slow_submit_failing_after_a_later_claim_took_the_run_leaves_the_run_to_it(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, error: BackendError
) -> None:
    """Its give-back would reschedule a run whose job is running (the next claim starts a second job: the duplicate of
    a loaded Cloud Run storm), its crash would end it: the stale submit changes nothing."""
    backend = use(deps, Overtaken(error))
    run = ready_run(fake)
    backend.meanwhile = lambda: _overtake(deps, fake, clock, pool, run.id)
    outcome = submit_run(deps, run, pool)
    ((job_id),) = backend.jobs  # the later claim's job, the only one
    after = fake.run(run.id)
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED, outcome
    assert (after.state_type, after.state_name, after.infrastructure_pid) == (
        StateType.PENDING,
        "InfrastructurePending",
        job_id,
    )
    clock.advance(600)
    tick(deps)
    assert list(backend.jobs) == [job_id]


def test_a_job_the_cloud_made_after_all_for_the_overtaken_claim_is_the_later_claims_own(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The stalled call's job was accepted after all (the answer lost) while the monitor recovered the run and another
    submitter claimed it: the recovery kept the attempt's key, so the later claim submitted under it and the cloud's one
    job of that attempt is the run's — left running, never stopped, never doubled."""
    backend = use(deps, Overtaken(throttled("read timed out"), accepted=True))
    run = ready_run(fake)
    backend.meanwhile = lambda: _overtake(deps, fake, clock, pool, run.id)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.NOT_CLAIMED
    ((job_id),) = backend.jobs
    assert fake.run(run.id).infrastructure_pid == job_id
    assert backend.status([JobHandle("process", job_id)])[job_id].state is JobState.RUNNING


@pytest.mark.parametrize("accepted", [False, True], ids=["no-job", "job-made-after-all"])
def test_a_slow_submit_failing_after_the_monitor_recovered_its_run_neither_crashes_it_nor_leaves_a_job(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, accepted: bool
) -> None:
    """The monitor rescheduled the run, nobody claimed it yet: a non-retryable error of the stale submit (its job
    deleted under it, say) must not crash a run that is to be tried again; the next claim keeps the recovered attempt's
    key, so it finds a job the stale call made after all instead of making a second: one live job either way."""
    backend = use(deps, Overtaken(BackendError("job not found", backend="fake"), accepted=accepted))
    run = ready_run(fake)
    backend.meanwhile = lambda: _overtake(deps, fake, clock, pool, run.id, reclaim=False)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.NOT_CLAIMED
    assert fake.run(run.id).state_type is StateType.SCHEDULED
    assert submit_run(deps, fake.read_flow_run(run.id), pool).outcome == SubmitOutcome.SUBMITTED
    ((job_id),) = backend.jobs
    assert fake.run(run.id).infrastructure_pid == job_id
    assert backend.status([JobHandle("process", job_id)])[job_id].state is JobState.RUNNING


def test_the_job_of_a_kept_key_is_left_to_the_later_claim_of_that_attempt(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The stale submit was a retry under a kept key, and the later claim kept it too (only Scheduled states came
    between): the job the stale call made after all is that claim's own job, and stays running."""
    use(deps, Flaky([throttled()]))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED  # the key is kept in the run's label
    backend = use(deps, Overtaken(throttled("read timed out"), accepted=True))
    backend.meanwhile = lambda: _overtake(deps, fake, clock, pool, run.id)
    clock.advance((fake.run(run.id).next_scheduled_start_time - clock.now()).total_seconds())
    assert submit_run(deps, fake.read_flow_run(run.id), pool).outcome == SubmitOutcome.NOT_CLAIMED
    ((job_id),) = backend.jobs  # one job for the one attempt: the later claim's, which the stale call also reached
    assert fake.run(run.id).infrastructure_pid == job_id
    assert backend.status([JobHandle("process", job_id)])[job_id].state is JobState.RUNNING
