"""monitor.tick against FakePrefect and LatencyBackend: dispatch of due runs, and reconciliation of runs with jobs.

Time moves only through the FixedClock shared by the fake and the use-cases.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest
from pushpool.clock import FixedClock
from pushpool.managed import MANAGED_POOL_TYPE
from pushpool.prefect_api.client import PAGE_SIZE
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases import monitor
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick
from pushpool.usecases.reconcile import RECOVERIES_LABEL
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL, ready_run


def submitted(deps: Deps, fake: FakePrefect, pool: WorkPool, **job_variables: object) -> tuple[str, JobHandle]:
    """A run submitted through submit_run: (run id, its job's handle)."""
    run = ready_run(fake, job_variables=dict(job_variables))
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    return run.id, JobHandle("fake", outcome.job_id or "")


def clean_tick(deps: Deps) -> Counter:
    """One tick that must report no error; its reconcile actions."""
    report = tick(deps)
    assert report.errors == []
    return report.reconciled


# -- dispatch ---------------------------------------------------------------------------------------------------------


def test_a_backlog_larger_than_a_page_drains_in_one_tick(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """More due runs than one page of get_scheduled_flow_runs: one tick gives every run exactly one job."""
    deployment = fake.add_deployment(POOL)
    count = PAGE_SIZE + 25
    runs = [fake.add_run(deployment, scheduled_at=clock.now() - dt.timedelta(seconds=i)) for i in range(count)]
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: count})
    assert backend.calls["submit"] == count
    assert sorted(job.spec.run_id for job in backend.jobs.values()) == sorted(runs)
    assert {fake.run(r).state_name for r in runs} == {"InfrastructurePending"}
    assert {fake.run(r).infrastructure_pid for r in runs} == set(backend.jobs)
    assert tick(deps).dispatched == Counter()  # nothing left, nothing submitted twice
    assert backend.calls["submit"] == count


def test_dispatch_respects_the_pool_limit_and_leaves_later_runs(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """With a pool limit of 2, one tick starts two jobs; runs due later and the rest stay Scheduled."""
    fake.set_pool(POOL, concurrency_limit=2)
    deployment = fake.add_deployment(POOL)
    now = clock.now()
    due = [fake.add_run(deployment, scheduled_at=now - dt.timedelta(seconds=10 - i)) for i in range(4)]
    future = fake.add_run(deployment, scheduled_at=now + dt.timedelta(hours=1))
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched[SubmitOutcome.SUBMITTED] == 2
    assert [fake.run(r).state_type for r in due] == [StateType.PENDING] * 2 + [StateType.SCHEDULED] * 2
    assert fake.run(future).state_type is StateType.SCHEDULED
    assert len(backend.jobs) == 2


def test_a_paused_pool_is_not_dispatched(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """Due runs of a paused pool stay Scheduled."""
    run = ready_run(fake)
    fake.set_pool(POOL, is_paused=True)
    assert clean_tick(deps) == Counter()
    assert fake.run(run.id).state_type is StateType.SCHEDULED
    assert backend.jobs == {}


class _HeldBackend(LatencyBackend):
    """Holds the submits of ``held`` runs until a run of another pool has been submitted (or 10 s have passed)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.other_submitted = threading.Event()
        self.waited_for_the_other: list[bool] = []

    def submit(self, spec):  # type: ignore[no-untyped-def]
        if spec.run_id in self.held:
            self.waited_for_the_other.append(self.other_submitted.wait(timeout=10))
        else:
            self.other_submitted.set()
        return super().submit(spec)


def test_a_slow_pool_does_not_hold_back_the_other_pools(fake: FakePrefect, settings, clock: FixedClock) -> None:
    """Pools are dispatched side by side: while one pool's backend call hangs, another pool's due run gets its job."""
    backend = _HeldBackend()
    deps = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    deps._backends["process"] = backend
    slow = fake.add_pool("slow", "process:push", base_job_template=base_job_template("process:push"))
    quick = fake.add_pool("quick", "process:push", base_job_template=base_job_template("process:push"))
    held = fake.add_run(fake.add_deployment("slow"), scheduled_at=clock.now())
    other = fake.add_run(fake.add_deployment("quick"), scheduled_at=clock.now())
    backend.held.add(held)
    report = tick(deps, pools=[slow, quick])  # the slow pool first: one after another, quick would wait for it
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 2})
    assert backend.waited_for_the_other == [True]
    assert {fake.run(r).state_name for r in (held, other)} == {"InfrastructurePending"}


def test_managed_pools_are_dispatched_one_after_another(deps: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    """The managed pools share the workspace's limit: never two of them dispatching at once (claimers over a limit at
    the same time would all give their slots back); the other pools go side by side."""
    active: Counter = Counter()
    most: Counter = Counter()
    lock = threading.Lock()

    def dispatch_due(deps, pool, report, **_):  # type: ignore[no-untyped-def]
        kind = "managed" if pool.type == MANAGED_POOL_TYPE else "other"
        with lock:
            active[kind] += 1
            most[kind] = max(most[kind], active[kind])
        time.sleep(0.2)  # long enough for lanes run side by side to overlap
        with lock:
            active[kind] -= 1
        report.dispatched[pool.name] += 1

    monkeypatch.setattr(monitor, "dispatch_due", dispatch_due)
    pools = [WorkPool(id=f"m{i}", name=f"m{i}", type=MANAGED_POOL_TYPE) for i in range(3)]
    pools += [WorkPool(id=f"p{i}", name=f"p{i}", type="process:push") for i in range(2)]
    report = monitor.TickReport()
    monitor.dispatch_pools(deps, pools, report)
    assert report.dispatched == Counter({p.name: 1 for p in pools})
    assert most["managed"] == 1
    assert most["other"] == 2


# -- reconcile ---------------------------------------------------------------------------------------------------------


def test_a_failed_job_crashes_its_run_with_its_last_lines(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A job that exits 1 crashes its run; the message and the run's logs carry the job's last lines."""
    run_id, handle = submitted(deps, fake, pool)
    backend.exit(handle, 1, ["starting flow", "Traceback (most recent call last):", "ValueError: boom"])
    assert clean_tick(deps)["crash"] == 1
    after = fake.run(run_id)
    assert after.state_type is StateType.CRASHED
    assert after.state.message.startswith("Flow run infrastructure failed (exit code 1)")
    assert after.state.message.endswith("ValueError: boom")
    (record,) = fake.logs_of(run_id)
    assert record["level"] == 40
    assert "ValueError: boom" in record["message"]
    assert clean_tick(deps)["crash"] == 0  # a crashed run is not crashed again


def test_a_clean_exit_without_a_final_state_crashes_after_the_grace(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Exit code 0 with the run still not final: nothing within the exit grace, Crashed after it."""
    run_id, handle = submitted(deps, fake, pool)
    backend.exit(handle, 0, ["bye"])
    clock.advance(deps.settings.exit_grace_seconds - 1)
    assert clean_tick(deps)["crash"] == 0
    assert fake.run(run_id).state_type is StateType.PENDING
    clock.advance(2)
    assert clean_tick(deps)["crash"] == 1
    after = fake.run(run_id)
    assert after.state_type is StateType.CRASHED
    assert "exited cleanly, but the run never reported a final state" in after.state.message


def test_a_vanished_job_crashes_its_run(deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool) -> None:
    """A job the backend no longer has crashes its run at once."""
    run_id, handle = submitted(deps, fake, pool)
    backend.vanish(handle)
    assert clean_tick(deps)["crash"] == 1
    assert "infrastructure disappeared" in fake.run(run_id).state.message


def test_a_cancelling_run_gets_its_live_job_stopped_then_cancelled(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """Cancelling with a live job: the job is stopped and the run Cancelled."""
    run_id, handle = submitted(deps, fake, pool)
    assert fake.propose_state(run_id, StateType.CANCELLING).accepted  # the user cancels
    assert clean_tick(deps)["stop-and-cancel"] == 1
    assert backend.jobs[handle.id].state is JobState.STOPPED
    after = fake.run(run_id)
    assert after.state_type is StateType.CANCELLED
    assert after.state.message == "Cancelled by pushpool: the job was stopped."


def test_a_cancelling_run_without_a_job_is_cancelled(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """A claimed run without pid or job that is Cancelling is simply Cancelled."""
    run = ready_run(fake)
    assert fake.propose_state(run.id, StateType.PENDING).accepted
    assert fake.propose_state(run.id, StateType.CANCELLING).accepted
    assert clean_tick(deps)["cancel"] == 1
    assert fake.run(run.id).state_type is StateType.CANCELLED
    assert backend.calls["cancel"] == 0


def test_a_run_past_its_maximum_run_time_is_crashed_and_its_job_stopped(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """A Running run older than max_run_time_seconds (a job variable) is Crashed and its job stopped."""
    run_id, handle = submitted(deps, fake, pool, max_run_time_seconds=60)
    assert fake.propose_state(run_id, StateType.RUNNING).accepted  # the engine starts
    clock.advance(59)
    assert clean_tick(deps)["crash-and-stop"] == 0
    assert backend.jobs[handle.id].state is JobState.RUNNING
    clock.advance(2)
    assert clean_tick(deps)["crash-and-stop"] == 1
    after = fake.run(run_id)
    assert after.state_type is StateType.CRASHED
    assert after.state.message.startswith("Flow run exceeded the maximum run time of 60 s (counted from when its job")
    assert backend.jobs[handle.id].state is JobState.STOPPED


def test_without_an_acceptance_time_from_the_provider_the_maximum_run_time_counts_from_the_claim(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Issue 23, item 1: a provider that says nothing of when it accepted a job (Coiled): the monitor reads the run's
    claim, which precedes the job, so a flow that went Running late is still stopped on the job's time."""
    backend.acceptance_time = False
    run_id, handle = submitted(deps, fake, pool, max_run_time_seconds=60)
    clock.advance(50)  # the job bootstraps for 50 s before the engine starts
    assert fake.propose_state(run_id, StateType.RUNNING).accepted
    assert backend.status([handle])[handle.id].accepted_at is None
    clock.advance(9)
    assert clean_tick(deps)["crash-and-stop"] == 0
    clock.advance(2)  # 61 s after the claim, 11 s after the flow's start
    assert clean_tick(deps)["crash-and-stop"] == 1
    assert fake.run(run_id).state_type is StateType.CRASHED
    assert backend.jobs[handle.id].state is JobState.STOPPED


def test_a_pending_run_without_a_job_is_rescheduled_then_crashed_after_three_recoveries(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """A claim whose submitter died (Pending, no pid, no job) goes back to Scheduled with a count in its labels;
    the fourth time it is Crashed instead."""
    run = ready_run(fake)
    due = run.next_scheduled_start_time or run.expected_start_time
    timeout = deps.settings.pending_timeout_seconds
    for recoveries in (1, 2, 3):
        assert fake.propose_state(run.id, StateType.PENDING).accepted  # a submitter claims it, then dies
        clock.advance(timeout - 1)
        assert clean_tick(deps)["recover"] == 0
        clock.advance(2)
        assert clean_tick(deps)["recover"] == 1
        after = fake.run(run.id)
        assert after.state_type is StateType.SCHEDULED
        assert after.labels[RECOVERIES_LABEL] == str(recoveries)
        assert after.next_scheduled_start_time == due  # back in its place in the queue, not behind later runs
    assert fake.propose_state(run.id, StateType.PENDING).accepted
    clock.advance(timeout + 1)
    assert clean_tick(deps)["crash"] == 1
    after = fake.run(run.id)
    assert after.state_type is StateType.CRASHED
    assert "stayed Pending with no job 4 times" in after.state.message
    assert backend.calls["submit"] == 0


def test_a_final_run_whose_job_ended_gets_the_job_cleaned_up(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    """The backend keeps finished jobs: once the run is Completed and its job ended, the job is cleaned up once."""
    run_id, handle = submitted(deps, fake, pool)
    for state in (StateType.RUNNING, StateType.COMPLETED):
        assert fake.propose_state(run_id, state).accepted  # the engine runs and finishes
    assert clean_tick(deps)["cleanup"] == 0  # the job has not ended yet (and is within the exit grace)
    backend.exit(handle, 0)
    assert clean_tick(deps)["cleanup"] == 1
    assert handle.id not in backend.jobs
    assert clean_tick(deps)["cleanup"] == 0
    assert backend.calls["cleanup"] == 1
    assert fake.run(run_id).state_type is StateType.COMPLETED


def test_a_zombie_job_of_a_finished_run_is_stopped_after_the_grace(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """A job still alive after its run Completed is stopped once the exit grace has passed."""
    run_id, handle = submitted(deps, fake, pool)
    for state in (StateType.RUNNING, StateType.COMPLETED):
        assert fake.propose_state(run_id, state).accepted
    assert clean_tick(deps)["stop"] == 0
    clock.advance(deps.settings.exit_grace_seconds + 1)
    assert clean_tick(deps)["stop"] == 1
    assert backend.jobs[handle.id].state is JobState.STOPPED


def test_a_job_found_for_the_claim_is_adopted(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """A submitter that died after starting the job but before writing the pid: the monitor finds the job of the
    run's claim and records it; no second job is started."""
    run = ready_run(fake)
    claim = fake.propose_state(run.id, StateType.PENDING)
    assert claim.accepted
    handle = backend.seed(run.id, claim.state.id)
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    assert clean_tick(deps)["adopt"] == 1
    after = fake.run(run.id)
    assert after.infrastructure_pid == handle.id
    assert after.state_type is StateType.PENDING
    assert backend.calls["submit"] == 0
    assert clean_tick(deps)["adopt"] == 0  # the pid is known now: the run is reconciled through it


def test_a_job_of_an_earlier_claim_is_not_adopted(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Only the current claim's job counts: a job of a previous attempt leaves the run to be recovered."""
    run = ready_run(fake)
    old_claim = fake.propose_state(run.id, StateType.PENDING)
    backend.seed(run.id, old_claim.state.id)
    fake.force_state(run.id, StateType.SCHEDULED)
    assert fake.propose_state(run.id, StateType.PENDING).accepted  # a new attempt, whose submitter died
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    reconciled = clean_tick(deps)
    assert (reconciled["adopt"], reconciled["recover"]) == (0, 1)
    assert fake.run(run.id).infrastructure_pid is None


@pytest.mark.parametrize(
    ("server", "proposals"),
    [
        # Bulk claims (3.6.16+): one request claims the 20 runs, one proposes their InfrastructurePending.
        ("3.8.8", {"propose_state": 0, "propose_states": 2, "set_infrastructure_pid": 20}),
        # Older servers: the claim and InfrastructurePending, one call each per run.
        ("3.6.15", {"propose_state": 40, "propose_states": 0, "set_infrastructure_pid": 20}),
    ],
)
def test_a_dispatched_run_costs_its_claim_its_pid_and_its_progress_state(
    deps: Deps,
    fake: FakePrefect,
    backend: LatencyBackend,
    pool: WorkPool,
    clock: FixedClock,
    server: str,
    proposals: dict[str, int],
) -> None:
    """Issue 14, item 2: in the monitor's path, reads are per tick (the listing, the pool's queues, each deployment
    once), never per run: 3 orchestration calls per dispatched run plus a fixed cost per tick — and with bulk claims
    (issue 25, item 4) only its pid plus its share of two bulk requests."""
    fake.server_version = server
    deployments = [fake.add_deployment(POOL) for _ in range(2)]
    runs = [fake.add_run(deployments[i % 2], scheduled_at=clock.now() - dt.timedelta(seconds=i)) for i in range(20)]
    fake.calls_by_method.clear()
    report = tick(deps)
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 20})
    per_run = {m: fake.calls_by_method[m] for m in ("propose_state", "propose_states", "set_infrastructure_pid")}
    assert per_run == proposals
    assert fake.calls_by_method["read_flow_run"] == 0
    assert fake.calls_by_method["read_work_queues"] == 1 and fake.calls_by_method["read_work_queue"] == 0
    # Each deployment once by the dispatch, once by the reconciliation (the in-flight runs' maximum run time).
    assert fake.calls_by_method["read_deployment"] == 4
    assert {fake.run(r).state_name for r in runs} == {"InfrastructurePending"}


def test_a_pending_run_without_a_job_has_its_attempts_unstarted_job_withdrawn_before_it_is_given_back(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """A backend whose submit is two calls (create, then run) may hold a job of the claim that its stalled submit has
    not run yet: the monitor asks it to withdraw that job (the claim's attempt) before giving the run back. When the job
    was run meanwhile (withdraw answers False) the run has a job: it is not given back."""
    withdrawn: list[tuple[str, str]] = []
    answers = [False, True]

    def withdraw_unstarted(spec):  # type: ignore[no-untyped-def]
        withdrawn.append((spec.run_id, spec.attempt))
        return answers.pop(0)

    backend.unstarted_jobs = lambda templates, credentials=(): []  # type: ignore[attr-defined]
    backend.delete_unstarted = lambda job: True  # type: ignore[attr-defined]
    backend.withdraw_unstarted = withdraw_unstarted  # type: ignore[attr-defined]
    run = ready_run(fake)
    claim = fake.propose_state(run.id, StateType.PENDING)
    assert claim.accepted
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    assert clean_tick(deps)["recover"] == 0  # its job was run meanwhile: left Pending (found and adopted next)
    assert fake.run(run.id).state_type is StateType.PENDING
    assert clean_tick(deps)["recover"] == 1  # withdrawn: nothing of the attempt can run any more
    assert fake.run(run.id).state_type is StateType.SCHEDULED
    assert withdrawn == [(run.id, claim.state.id)] * 2
    assert backend.calls["submit"] == 0


def test_a_pending_run_out_of_recoveries_is_not_crashed_while_its_attempts_job_was_run_meanwhile(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Out of recoveries, a Pending run with no job found is Crashed — only once its attempt's unstarted job is
    withdrawn: one run meanwhile (withdraw answers False) means a job serves the run, which is left as it is."""
    answers = [False, True]
    backend.unstarted_jobs = lambda templates, credentials=(): []  # type: ignore[attr-defined]
    backend.delete_unstarted = lambda job: True  # type: ignore[attr-defined]
    backend.withdraw_unstarted = lambda spec: answers.pop(0)  # type: ignore[attr-defined]
    run = ready_run(fake)
    fake.update_flow_run_labels(run.id, {RECOVERIES_LABEL: str(deps.settings.max_recoveries)})
    assert fake.propose_state(run.id, StateType.PENDING).accepted
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    assert clean_tick(deps)["crash"] == 0
    assert fake.run(run.id).state_type is StateType.PENDING
    assert clean_tick(deps)["crash"] == 1
    assert fake.run(run.id).state_type is StateType.CRASHED
