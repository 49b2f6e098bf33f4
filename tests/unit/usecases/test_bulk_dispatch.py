"""Bulk claims in the monitor's sweep (issue 25, item 4): a page of due runs claimed with ``bulk_set_state``, each run
still orchestrated on its own — against FakePrefect at 3.8.8 (which has it) and at 3.6.15 (which does not).

What happens "between the listing and the claim" is staged by wrapping the fake's ``propose_states``: the other
claimer, the run that ended, the cancellation act just before the bulk request reaches the server.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from pushpool.clock import FixedClock
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers.base import JobState
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import TickReport, dispatch_due, tick
from pushpool.usecases.submit import SubmitOutcome

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL


def due_runs(fake: FakePrefect, clock: FixedClock, count: int) -> list[str]:
    deployment = fake.add_deployment(POOL)
    return [fake.add_run(deployment, scheduled_at=clock.now() - dt.timedelta(seconds=count - i)) for i in range(count)]


def before_first_bulk_claim(fake: FakePrefect, monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """Run ``act`` once, right before the first bulk Pending claim reaches the fake."""
    real = fake.propose_states
    done: list[bool] = []

    def staged(run_ids, state_type, **kwargs):  # type: ignore[no-untyped-def]
        if not done and state_type is StateType.PENDING and kwargs.get("name") is None:
            done.append(True)
            act()
        return real(run_ids, state_type, **kwargs)

    monkeypatch.setattr(fake, "propose_states", staged)


def jobs_by_run(backend: LatencyBackend) -> Counter:
    return Counter(job.spec.run_id for job in backend.jobs.values())


def test_a_run_taken_or_ended_since_the_listing_is_left_untouched(
    deps: Deps,
    fake: FakePrefect,
    backend: LatencyBackend,
    pool: WorkPool,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of a listed page, a run another claimer took meanwhile is ABORTed and a run that completed meanwhile is not
    even proposed to (Prefect would accept Pending after Completed): neither gets a job or a state; the rest do."""
    runs = due_runs(fake, clock, 6)
    taken, ended = runs[1], runs[4]

    def meanwhile() -> None:
        assert fake.propose_state(taken, StateType.PENDING).accepted
        for step in (StateType.PENDING, StateType.RUNNING, StateType.COMPLETED):
            fake.force_state(ended, step)

    before_first_bulk_claim(fake, monkeypatch, meanwhile)
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 4, SubmitOutcome.NOT_CLAIMED: 2})
    assert fake.history(taken) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]  # the other claimer's only
    assert fake.history(ended)[-1] == ("COMPLETED", "Completed") and len(fake.history(ended)) == 4
    assert jobs_by_run(backend) == Counter({r: 1 for r in runs if r not in (taken, ended)})
    assert fake.calls_by_method["propose_state"] == 1  # the other claimer's: nothing proposed one by one


def test_a_retried_bulk_claim_is_taken_as_accepted_and_starts_one_job_per_run(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """The bulk claim's answer is lost after the server applied it: the retry (same transition id) finds the runs
    Pending under its own claim, which the server answers "already made this state transition" — reported ACCEPT,
    so each run gets exactly one job and one Pending state."""
    runs = due_runs(fake, clock, 5)
    fake.lose_answers(1)
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 5})
    assert jobs_by_run(backend) == Counter({r: 1 for r in runs})
    for run in runs:
        assert fake.history(run) == [
            ("SCHEDULED", "Scheduled"),
            ("PENDING", "Pending"),
            ("PENDING", "InfrastructurePending"),
        ]


def test_two_sweeps_at_once_give_each_run_one_job(
    settings, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """Two monitors sweep the same pool at the same time (each its own Deps): every run is claimed once, one job."""
    backend = LatencyBackend(latency=0.002, clock=clock)
    runs = due_runs(fake, clock, 120)
    reports = [TickReport(), TickReport()]

    def sweep(report: TickReport) -> None:
        deps = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
        deps._backends["process"] = backend
        dispatch_due(deps, pool, report, arm_ahead=False)

    threads = [threading.Thread(target=sweep, args=(report,)) for report in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.errors for r in reports] == [[], []]
    assert sum(r.dispatched[SubmitOutcome.SUBMITTED] for r in reports) == 120
    assert jobs_by_run(backend) == Counter({r: 1 for r in runs})
    assert {len(fake.history(r)) for r in runs} == {3}


def test_the_pool_limit_is_recounted_after_the_bulk_claim(
    deps: Deps,
    fake: FakePrefect,
    backend: LatencyBackend,
    pool: WorkPool,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pool limit 3: the sweep counts room for 3 and claims 3, but another claimer took 2 slots meanwhile. Counted
    after its claims, the sweep sees 5 in flight and gives back its last 2 claims (AwaitingConcurrencySlot, at their
    due time), starting one job: the limit holds."""
    fake.set_pool(POOL, concurrency_limit=3)
    runs = due_runs(fake, clock, 6)
    later = fake.add_deployment(POOL)
    others = [fake.add_run(later, scheduled_at=clock.now() + dt.timedelta(hours=1)) for _ in range(2)]
    due_at = {r: fake.run(r).next_scheduled_start_time for r in runs}

    def meanwhile() -> None:
        for run in others:
            assert fake.propose_state(run, StateType.PENDING).accepted

    before_first_bulk_claim(fake, monkeypatch, meanwhile)
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 1, SubmitOutcome.WAITING: 2})
    in_flight = [r for r in runs + others if fake.run(r).state_type is StateType.PENDING]
    assert len(in_flight) == 3
    assert list(jobs_by_run(backend)) == [runs[0]]
    for run in runs[1:3]:
        assert fake.history(run)[-1] == ("SCHEDULED", "AwaitingConcurrencySlot")
        assert fake.run(run).next_scheduled_start_time == due_at[run]
    assert [fake.run(r).state_name for r in runs[3:]] == ["Scheduled"] * 3  # never proposed to


def test_a_run_cancelled_while_its_job_started_has_its_job_stopped(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """The bulk InfrastructurePending proposal is each run's re-read after its pid: a run cancelled while its job
    started is answered Cancelling, its job is stopped and the run ends Cancelled; the others go on."""
    runs = due_runs(fake, clock, 3)
    cancelled = runs[1]

    class CancelledMeanwhile(LatencyBackend):
        def submit(self, spec):  # type: ignore[no-untyped-def]
            handle = super().submit(spec)
            if spec.run_id == cancelled:
                assert fake.propose_state(cancelled, StateType.CANCELLING).accepted  # a user, meanwhile
            return handle

    backend = CancelledMeanwhile(clock=clock)
    deps._backends["process"] = backend
    report = TickReport()
    dispatch_due(deps, pool, report)  # the sweep alone: a tick's reconciliation would clean the stopped job up
    assert report.errors == []
    assert report.dispatched[SubmitOutcome.CANCELLED] == 1
    assert fake.run(cancelled).state_type is StateType.CANCELLED
    job = next(job for job in backend.jobs.values() if job.spec.run_id == cancelled)
    assert job.state is JobState.STOPPED
    assert {fake.run(r).state_name for r in runs if r != cancelled} == {"InfrastructurePending"}


def test_an_older_server_is_proposed_to_one_run_at_a_time(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Before 3.6.16 there is no bulk_set_state (the fake refuses it, as the server answers 404): the sweep claims
    each run with its own set_state, with the same outcome."""
    fake.server_version = "3.6.15"
    runs = due_runs(fake, clock, 4)
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 4})
    assert fake.calls_by_method["propose_states"] == 0
    assert fake.calls_by_method["propose_state"] == 8
    assert jobs_by_run(backend) == Counter({r: 1 for r in runs})


def test_a_claim_recovered_while_its_run_waited_for_a_lane_gets_its_late_job_stopped(
    settings, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """A batch's runs wait for a free lane after their claims. While the first one's submit stalls past the pending
    timeout, the monitor recovers the second (Scheduled again) and another submitter claims it. When its turn comes,
    the slow-submit fence counts from its claim, not from its turn: its late job is stopped and no pid written."""
    first, second = due_runs(fake, clock, 2)

    class Stalling(LatencyBackend):
        def submit(self, spec):  # type: ignore[no-untyped-def]
            if spec.run_id == first:
                clock.advance(settings.pending_timeout_seconds + 1)
                assert fake.propose_state(second, StateType.SCHEDULED).accepted  # the monitor's recovery
                assert fake.propose_state(second, StateType.PENDING).accepted  # another submitter's claim
            return super().submit(spec)

    backend = Stalling(clock=clock)
    deps = Deps(settings=settings.replace(dispatch_concurrency=1), orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    deps._backends["process"] = backend
    report = TickReport()
    dispatch_due(deps, pool, report)
    assert report.errors == []
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 1, SubmitOutcome.NOT_CLAIMED: 1})
    late = next(job for job in backend.jobs.values() if job.spec.run_id == second)
    assert late.state is JobState.STOPPED
    assert fake.run(second).infrastructure_pid is None
    assert fake.run(second).state_name == "Pending"  # the other submitter's claim, untouched
