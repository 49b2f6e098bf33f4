"""pushpool's actions as run events (issue 26): one event per action, where the action happens, with the reason an
automation matches on; ids stable across a retried submit. Against FakePrefect and a LatencyBackend."""

from __future__ import annotations

import logging
from collections import Counter

from pushpool.clock import FixedClock
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers.base import JobHandle
from pushpool.usecases import run_events
from pushpool.usecases.deps import Deps
from pushpool.usecases.events import EventSink, RunEvent
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import ready_run
from tests.unit.usecases.test_transient_retry import Flaky, again, throttled, use


def _events(deps: Deps) -> list[RunEvent]:
    return deps.events.drain()


def _actions(events: list[RunEvent]) -> list[tuple[str, str | None]]:
    return [(e.action, e.reason) for e in events]


def test_a_submit_emits_one_submitted_event_with_where_the_job_went(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    run = ready_run(fake)
    clock.advance(4)  # the job is accepted 4 s after the run was due
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    (event,) = _events(deps)
    claim = fake.runs[run.id].history[1]
    assert (event.action, event.run_id, event.attempt, event.job_id) == ("submitted", run.id, claim.id, outcome.job_id)
    assert (event.pool, event.pool_id, event.pool_type, event.provider) == (
        pool.name,
        pool.id,
        "process:push",
        "process",
    )
    assert event.deployment_id == run.deployment_id and event.flow_id == run.flow_id
    assert event.payload["dispatch_latency_seconds"] == 4.0
    assert event.payload["job_id"] == outcome.job_id
    # The run's progress state says where the job went.
    assert fake.run(run.id).state.message == f"pushpool submitted job {outcome.job_id} to fake"


def test_a_retried_submit_emits_retried_then_one_submitted_under_the_first_claims_key(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, settings
) -> None:
    """A timeout after the cloud accepted the job: retried (with its backoff), then submitted once under the key of
    the first claim. The same event recorded by another process (another sink: a second function instance) has the
    same id, which Prefect stores once."""
    use(deps, Flaky([throttled("read timed out")], accepted=True))
    run = ready_run(fake)
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.RELEASED
    (retried,) = _events(deps)
    first_claim = fake.runs[run.id].history[1]
    assert (retried.action, retried.reason, retried.attempt, retried.sequence) == (
        "retried",
        "transient",
        first_claim.id,
        1,
    )
    assert 5.0 <= retried.payload["backoff_seconds"] <= 10.0
    assert retried.payload["error"] == "Cloud Run throttled (read timed out)"
    assert again(deps, fake, clock, pool, run.id).outcome == SubmitOutcome.SUBMITTED
    (submitted,) = _events(deps)
    assert submitted.action == "submitted" and submitted.attempt == first_claim.id

    other = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    run_events.emit(other, "submitted", fake.read_flow_run(run.id), pool, attempt=first_claim.id, job_id="x")
    (again_elsewhere,) = other.events.drain()
    assert again_elsewhere.id == submitted.id
    assert len({submitted.id, retried.id}) == 2


def test_paused_and_limited_runs_are_refused_once_per_state_they_wait_in(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    run = ready_run(fake)
    paused = pool.model_copy(update={"is_paused": True})
    assert submit_run(deps, run, paused).outcome == SubmitOutcome.PAUSED
    assert submit_run(deps, run, paused).outcome == SubmitOutcome.PAUSED  # the next tick: the same refusal
    limited = pool.model_copy(update={"concurrency_limit": 0})
    assert submit_run(deps, run, limited).outcome == SubmitOutcome.WAITING
    events = _events(deps)
    assert _actions(events) == [("refused", "paused"), ("refused", "limit")]
    assert {e.attempt for e in events} == {run.state.id}


def test_a_template_that_does_not_render_crashes_the_run_with_its_event(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    run = ready_run(fake, job_variables={"max_run_time_seconds": "not a number"})
    assert submit_run(deps, run, pool).outcome == SubmitOutcome.CRASHED
    assert _actions(_events(deps)) == [("crashed", "template")]


def _submitted(deps: Deps, fake: FakePrefect, pool: WorkPool, **job_variables: object) -> tuple[str, str]:
    run = ready_run(fake, job_variables=job_variables or None)
    outcome = submit_run(deps, run, pool)
    assert outcome.outcome == SubmitOutcome.SUBMITTED
    deps.events.drain()
    return run.id, str(outcome.job_id)


def _ticks(deps: Deps, times: int = 2) -> Counter:
    found: Counter = Counter()
    for _ in range(times):
        report = tick(deps)
        assert not report.errors, report.errors
        found.update(report.reconciled)
    return found


def test_the_monitor_crashes_a_run_over_its_maximum_run_time_with_one_event(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock
) -> None:
    run_id, job_id = _submitted(deps, fake, pool, max_run_time_seconds=60)
    assert fake.propose_state(run_id, StateType.RUNNING).accepted
    clock.advance(61)
    assert _ticks(deps, 3)["crash-and-stop"] == 1
    events = _events(deps)
    crashed = [e for e in events if e.action == "crashed"]
    assert [(e.reason, e.job_id, e.run_id) for e in crashed] == [("max-run-time", job_id, run_id)]
    assert crashed[0].payload["message"].startswith("Flow run exceeded the maximum run time of 60 s")
    # the job was seen running, then ended (stopped): each once over three ticks
    assert Counter(e.action for e in events) == {"crashed": 1, "job-started": 1, "job-ended": 1}
    assert [e.reason for e in events if e.action == "job-ended"] == ["stopped"]


def test_a_failed_job_gives_job_ended_with_its_exit_code_and_crashed_with_its_reason(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    run_id, job_id = _submitted(deps, fake, pool)
    backend.exit(_handle(job_id), 3, ["boom"])
    _ticks(deps)
    events = _events(deps)
    ended = [e for e in events if e.action == "job-ended"]
    assert [(e.reason, e.payload["exit_code"]) for e in ended] == [("failed", 3)]
    assert [(e.action, e.reason) for e in events if e.action == "crashed"] == [("crashed", "job-failed")]
    assert "boom" not in str([e.payload for e in events])  # never the job's output (a flow may print anything)
    assert {e.run_id for e in events} == {run_id}


def _handle(job_id: str) -> JobHandle:
    return JobHandle("fake", job_id)


def test_a_vanished_job_and_a_cancelled_run_say_so(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    gone, gone_job = _submitted(deps, fake, pool)
    cancelled, cancelled_job = _submitted(deps, fake, pool)
    backend.vanish(_handle(gone_job))
    assert fake.propose_state(cancelled, StateType.CANCELLING).accepted
    _ticks(deps)
    events = [e for e in _events(deps) if e.action in ("crashed", "cancelled")]
    assert sorted((e.run_id, e.action, e.reason) for e in events) == sorted(
        [(gone, "crashed", "vanished"), (cancelled, "cancelled", "cancelled")]
    )
    (stop,) = [e for e in events if e.action == "cancelled"]
    assert stop.job_id == cancelled_job and "job_stopped_after_seconds" in stop.payload


def test_a_pending_run_without_a_job_is_retried_by_the_monitor_once_per_recovery(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    run = ready_run(fake)
    assert fake.propose_state(run.id, StateType.PENDING).accepted  # a submitter that died before its job
    clock.advance(deps.settings.pending_timeout_seconds + 1)
    _ticks(deps)
    assert _actions([e for e in _events(deps) if e.action == "retried"]) == [("retried", "pending-timeout")]


def test_the_sink_keeps_an_event_once_and_its_bound(settings) -> None:
    sink = EventSink(capacity=3)
    seen: list[str] = []
    sink.add_listener(lambda e: seen.append(e.action))
    first = RunEvent("crashed", "r1", attempt="a", reason="vanished")
    sink.emit(first)
    sink.emit(RunEvent("crashed", "r1", attempt="a", reason="vanished"))  # the same action seen again
    assert len(sink) == 1 and seen == ["crashed"]
    for n in range(4):
        sink.emit(RunEvent("submitted", f"r{n + 2}", attempt="a"))
    assert len(sink) == 3 and sink.dropped == 2


def test_log_lines_about_a_run_carry_its_run_pool_and_job(caplog) -> None:
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    run_events.install_log_fields(handler)
    run_events.install_log_fields(handler)  # idempotent
    logger = logging.getLogger("pushpool.usecases.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with run_events.run_context("run-1", "pool-a"):
            logger.info("claimed")
            run_events.bind_job("job-9")
            logger.info("submitted")
            logger.info("own", extra={"job_id": "given"})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    fields = [{k: getattr(r, k, None) for k in run_events.LOG_FIELDS} for r in records]
    assert fields == [
        {"flow_run_id": "run-1", "work_pool": "pool-a", "job_id": None},
        {"flow_run_id": "run-1", "work_pool": "pool-a", "job_id": "job-9"},
        {"flow_run_id": "run-1", "work_pool": "pool-a", "job_id": "given"},
        {"flow_run_id": None, "work_pool": None, "job_id": None},
    ]
    assert len(handler.filters) == 1
    line = run_events.RunFieldsFormatter("%(message)s").format(records[1])
    assert line == "submitted [run=run-1 pool=pool-a job=job-9]"


def test_a_crash_prefect_aborts_because_the_run_ended_meanwhile_is_no_event(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool
) -> None:
    from pushpool.usecases.reconcile import Action, Decision, apply

    run_id, job_id = _submitted(deps, fake, pool)
    listed = fake.read_flow_run(run_id)  # as the monitor listed it: Pending
    assert fake.propose_state(run_id, StateType.RUNNING).accepted
    assert fake.propose_state(run_id, StateType.COMPLETED).accepted  # the engine finished meanwhile
    decision = Decision(Action.CRASH, "Flow run infrastructure failed (exit code 1): x.", cause="job-failed")
    assert apply(deps, backend, listed, decision, _handle(job_id), pool=pool) == "crash"
    assert fake.run(run_id).state_type is StateType.COMPLETED
    assert [e for e in _events(deps) if e.action == "crashed"] == []


def test_a_monitor_that_restarts_does_not_report_long_running_jobs_again(
    deps: Deps, fake: FakePrefect, backend: LatencyBackend, pool: WorkPool, clock: FixedClock, settings
) -> None:
    """A cold function's monitor meets every in-flight job: only those started within the last ten minutes are
    reported as started (10,000 jobs running for hours are not 10,000 events per cold start)."""
    run_id, _ = _submitted(deps, fake, pool)
    _ticks(deps, 1)
    assert [e.action for e in _events(deps)] == ["job-started"]
    clock.advance(601)
    restarted = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    restarted._backends["process"] = backend
    _ticks(restarted, 1)
    assert restarted.events.drain() == []
    assert fake.run(run_id).state_type is StateType.PENDING
