"""Punctual dispatch (issue 14): a scheduled run's job is accepted at its scheduled time minus the pool's lead, set off
by a one-shot trigger; the monitor arms the runs due within its look-ahead; a stale trigger changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from pushpool.clock import FixedClock
from pushpool.entrypoints.http import handle_run_event
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers import base_job_template
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import ARMED, tick
from pushpool.usecases.punctual import lead_seconds
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend, PoolRecordingTrigger, RecordingTrigger
from tests.unit.usecases.support import POOL, ready_run

S = dt.timedelta(seconds=1)
LEAD = 3.0  # the process provider's default, in its template


@pytest.fixture
def trigger(deps: Deps) -> RecordingTrigger:
    deps.trigger = RecordingTrigger()
    return deps.trigger


def test_the_lead_comes_from_the_settings_then_the_pool_then_the_provider(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    assert lead_seconds(deps, pool, backend) == LEAD  # the pool's template default
    custom = base_job_template("process:push")
    custom["variables"]["properties"]["dispatch_lead_seconds"]["default"] = 12
    assert lead_seconds(deps, fake.add_pool("custom", base_job_template=custom), backend) == 12
    bare = base_job_template("process:push")
    del bare["variables"]["properties"]["dispatch_lead_seconds"]
    backend.dispatch_lead_seconds = 7.5
    assert lead_seconds(deps, fake.add_pool("bare", base_job_template=bare), backend) == 7.5
    deps.settings = deps.settings.replace(dispatch_lead_seconds=1)
    assert lead_seconds(deps, pool, backend) == 1


def test_a_run_not_due_yet_gets_a_trigger_for_its_time_minus_the_lead(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock, trigger: RecordingTrigger
) -> None:
    due = clock.now() + 60 * S
    run = ready_run(fake, scheduled_at=due)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.DEFERRED and "(trigger armed)" in outcome.detail
    assert trigger.calls == [(run.id, due - LEAD * S)]
    assert fake.run(run.id).state_type is StateType.SCHEDULED and backend.calls["submit"] == 0

    clock.advance(60 - LEAD - 0.5)  # not yet: a trigger delivered early changes nothing and re-arms
    assert trigger.deliver_due(clock.now()) == []
    clock.advance(0.5)
    (fired,) = trigger.deliver_due(clock.now())
    answer = handle_run_event(deps, fired, trigger="delayed")
    assert answer["outcome"] == SubmitOutcome.SUBMITTED
    assert answer["dispatch_latency_seconds"] == -LEAD  # accepted LEAD seconds before its scheduled time


def test_a_run_due_within_the_lead_is_submitted_at_once(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, trigger: RecordingTrigger
) -> None:
    run = ready_run(fake, scheduled_at=clock.now() + (LEAD - 1) * S)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.SUBMITTED
    assert trigger.calls == []


def test_without_a_trigger_or_beyond_its_reach_nothing_is_armed(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    run = ready_run(fake, scheduled_at=clock.now() + 60 * S)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.DEFERRED and "armed" not in outcome.detail
    limited = RecordingTrigger()
    limited.max_delay_seconds = 900
    deps.trigger = limited
    far = ready_run(fake, scheduled_at=clock.now() + dt.timedelta(hours=2))
    assert submit_run(deps, far, pool).outcome == SubmitOutcome.DEFERRED
    assert limited.calls == []  # the monitor's look-ahead arms it when it comes within reach


def test_a_stale_trigger_of_a_rescheduled_or_cancelled_run_changes_nothing(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock, trigger: RecordingTrigger
) -> None:
    moved, cancelled = (ready_run(fake, scheduled_at=clock.now() + 30 * S) for _ in range(2))
    for run in (moved, cancelled):
        submit_run(deps, run, pool)
    later = clock.now() + 300 * S
    fake.propose_state(moved.id, StateType.SCHEDULED, force=True, state_details={"scheduled_time": later.isoformat()})
    fake.force_state(cancelled.id, StateType.CANCELLED)
    clock.advance(30)
    outcomes = {
        run_id: handle_run_event(deps, run_id, trigger="delayed") for run_id in trigger.deliver_due(clock.now())
    }
    assert outcomes[moved.id]["outcome"] == SubmitOutcome.DEFERRED
    assert outcomes[cancelled.id]["outcome"] != SubmitOutcome.SUBMITTED
    assert fake.run(cancelled.id).state_type is StateType.CANCELLED
    assert trigger.armed == {moved.id: later - LEAD * S}  # re-armed for its new time
    assert backend.calls["submit"] == 0


def test_the_monitor_arms_runs_due_within_its_look_ahead_and_submits_due_ones(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock, trigger: RecordingTrigger
) -> None:
    deployment = fake.add_deployment(POOL)
    now = clock.now()
    due_now = fake.add_run(deployment, scheduled_at=now + (LEAD - 1) * S)
    soon = fake.add_run(deployment, scheduled_at=now + 90 * S)  # within two ticks (2 x 60 s) plus the lead
    later = fake.add_run(deployment, scheduled_at=now + 600 * S)
    report = tick(deps)
    assert report.errors == []
    assert report.dispatched == {SubmitOutcome.SUBMITTED: 1, ARMED: 1}
    assert fake.run(due_now).state_type is StateType.PENDING
    assert trigger.calls == [(soon, now + (90 - LEAD) * S)]
    assert fake.run(later).state_type is StateType.SCHEDULED and later not in trigger.armed


def test_without_a_trigger_the_monitor_submits_only_what_is_due(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    deployment = fake.add_deployment(POOL)
    fake.add_run(deployment, scheduled_at=clock.now() + 90 * S)
    assert tick(deps).dispatched == {}


def test_a_delayed_message_that_arrives_early_is_waited_out_not_armed_again(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock, trigger: RecordingTrigger
) -> None:
    """SQS delays are whole seconds, rounded down: a message may arrive up to a second before the run's time; submit
    waits out the rest and starts it (no second message); a run moved later meanwhile gets one trigger for its new
    time."""
    import json

    from pushpool.entrypoints.http import handle_delayed_run

    due = clock.now() + 30 * S
    run = ready_run(fake, scheduled_at=due)
    clock.advance(30 - LEAD - 0.8)  # 0.8 s early
    answer = handle_delayed_run(deps, json.dumps({"flow_run_id": run.id}).encode())
    assert answer["outcome"] == SubmitOutcome.SUBMITTED
    assert answer["dispatch_latency_seconds"] == -LEAD  # at its dispatch time, not before
    assert trigger.calls == []

    moved = ready_run(fake, scheduled_at=clock.now() + 600 * S)
    answer = handle_delayed_run(deps, json.dumps({"flow_run_id": moved.id}).encode())
    assert answer["outcome"] == SubmitOutcome.DEFERRED and "(trigger armed)" in answer["detail"]
    assert trigger.calls == [(moved.id, clock.now() + (600 - LEAD) * S)]


def test_a_burst_due_at_one_instant_gets_one_pool_trigger_whose_sweep_submits_them_all(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Runs of one pool due at the same instant (8 or more) share one trigger that sweeps the pool when it fires:
    on AWS one SQS message instead of 200, and a sweep's 3 calls per run instead of 5."""
    import json

    from pushpool.entrypoints.http import handle_delayed_run
    from pushpool.usecases.punctual import GROUP_RUNS

    deps.trigger = trigger = PoolRecordingTrigger()
    deployment = fake.add_deployment(POOL)
    now = clock.now()
    burst = [fake.add_run(deployment, scheduled_at=now + 90 * S) for _ in range(GROUP_RUNS)]
    alone = fake.add_run(deployment, scheduled_at=now + 91 * S)
    few = [fake.add_run(deployment, scheduled_at=now + 100 * S) for _ in range(GROUP_RUNS - 1)]
    report = tick(deps)
    assert report.errors == [] and report.dispatched == {ARMED: 2 * GROUP_RUNS}
    at = now + (90 - LEAD) * S
    assert trigger.pool_calls == [(POOL, at)]
    assert sorted(run_id for run_id, _ in trigger.calls) == sorted([alone, *few])  # the rest one by one

    clock.advance((at - now).total_seconds() - 0.5)  # delivered half a second early: waited out, then swept
    answer = handle_delayed_run(deps, json.dumps({"work_pool": POOL, "at": at.isoformat()}).encode())
    assert answer["outcome"] == "swept" and answer["dispatched"] == {SubmitOutcome.SUBMITTED: GROUP_RUNS}
    assert all(fake.run(r).state_type is StateType.PENDING for r in burst)
    assert fake.run(alone).state_type is StateType.SCHEDULED  # not due yet: its own trigger starts it
    assert not trigger.armed.keys() - {alone, *few}  # the sweep armed nothing more


def test_a_pool_sweep_message_that_is_malformed_or_names_an_unknown_pool_changes_nothing(
    deps: Deps, fake: FakePrefect, clock: FixedClock
) -> None:
    import json

    from pushpool.entrypoints.http import handle_delayed_run
    from pushpool.errors import InvalidRequestError

    at = clock.now().isoformat()
    for body in ({"work_pool": "no such pool", "at": at}, {"work_pool": POOL}, {"work_pool": POOL, "at": "soon"}):
        with pytest.raises(InvalidRequestError):
            handle_delayed_run(deps, json.dumps(body).encode())
    with pytest.raises(InvalidRequestError):  # a pool that does not exist (ObjectNotFoundError): dropped
        handle_delayed_run(deps, json.dumps({"work_pool": "gone", "at": at}).encode())
    assert fake.calls_by_method["propose_state"] == 0


def test_a_second_sweep_of_a_pool_being_swept_in_this_process_does_nothing(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    """Two ticks may arm the same burst; its two messages arrive together (one SQS batch): the second does not race
    the first's claims."""
    import threading

    from pushpool.usecases.monitor import sweep_pool

    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment, scheduled_at=clock.now()) for _ in range(4)]
    backend.latency = 0.3  # the first sweep is still submitting when the second arrives
    answers: list[dict] = []
    first = threading.Thread(target=lambda: answers.append(sweep_pool(deps, POOL)))
    first.start()
    import time

    waited = time.monotonic()
    while backend.calls["submit"] == 0 and time.monotonic() - waited < 10:
        time.sleep(0.01)
    second = sweep_pool(deps, POOL)
    first.join(10)
    assert second["outcome"] == "duplicate"
    assert answers[0]["dispatched"] == {SubmitOutcome.SUBMITTED: 4}
    assert all(fake.run(r).state_type is StateType.PENDING for r in runs)
    assert sweep_pool(deps, POOL)["outcome"] == "swept"  # once done, the pool can be swept again
