"""The monitor's per-run policy, rule by rule (pure: no servers)."""

from __future__ import annotations

import datetime as dt

import pytest
from pushpool.prefect_api.models import FlowRun, State, StateType
from pushpool.providers.base import JobState, JobStatus
from pushpool.usecases.reconcile import RECOVERIES_LABEL, Action, Policy, decide

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
POLICY = Policy(pending_timeout_seconds=60, exit_grace_seconds=30, max_recoveries=3, start_timeout_seconds=600)


def run(
    state: StateType,
    *,
    age: float = 0,
    pid: str | None = "h::r",
    started_ago: float | None = None,
    ended_ago: float | None = None,
    labels: dict | None = None,
) -> FlowRun:
    return FlowRun(
        id="r",
        state=State(type=state, name=state.value.title(), timestamp=NOW - dt.timedelta(seconds=age)),
        infrastructure_pid=pid,
        start_time=None if started_ago is None else NOW - dt.timedelta(seconds=started_ago),
        end_time=None if ended_ago is None else NOW - dt.timedelta(seconds=ended_ago),
        labels=labels or {},
    )


def job(state: JobState, *, code: int | None = None, finished_ago: float | None = None, reason: str = "") -> JobStatus:
    finished = None if finished_ago is None else NOW - dt.timedelta(seconds=finished_ago)
    return JobStatus(state, code, reason, finished_at=finished)


CASES = [
    # no pid
    ("pending fresh, no pid", run(StateType.PENDING, age=5, pid=None), None, False, Action.NONE),
    ("pending stuck, no pid", run(StateType.PENDING, age=61, pid=None), None, False, Action.RECOVER),
    ("pending stuck, job found", run(StateType.PENDING, age=61, pid=None), None, True, Action.ADOPT),
    (
        "pending stuck too often",
        run(StateType.PENDING, age=61, pid=None, labels={RECOVERIES_LABEL: "3"}),
        None,
        False,
        Action.CRASH,
    ),
    ("running, no pid, no job", run(StateType.RUNNING, age=61, pid=None), None, False, Action.CRASH),
    ("cancelling, no pid, no job", run(StateType.CANCELLING, pid=None), None, False, Action.CANCEL),
    ("cancelling, no pid, job found", run(StateType.CANCELLING, pid=None), None, True, Action.ADOPT),
    # pending/running with a job
    ("pending, job pending", run(StateType.PENDING), job(JobState.PENDING), False, Action.NONE),
    ("pending, job never starts", run(StateType.PENDING, age=601), job(JobState.PENDING), False, Action.CRASH_AND_STOP),
    ("pending, job running a while", run(StateType.PENDING, age=90), job(JobState.RUNNING), False, Action.NONE),
    ("running, job running", run(StateType.RUNNING, started_ago=10), job(JobState.RUNNING), False, Action.NONE),
    ("running past max", run(StateType.RUNNING, started_ago=101), job(JobState.RUNNING), False, Action.CRASH_AND_STOP),
    ("running, job failed", run(StateType.RUNNING), job(JobState.FAILED, code=137), False, Action.CRASH),
    ("pending, job failed to start", run(StateType.PENDING), job(JobState.FAILED, code=1), False, Action.CRASH),
    ("running, job vanished", run(StateType.RUNNING), job(JobState.MISSING), False, Action.CRASH),
    ("running, job stopped", run(StateType.RUNNING), job(JobState.STOPPED), False, Action.CRASH),
    (
        "running, clean exit, in grace",
        run(StateType.RUNNING),
        job(JobState.SUCCEEDED, code=0, finished_ago=5),
        False,
        Action.NONE,
    ),
    (
        "running, clean exit, past grace",
        run(StateType.RUNNING),
        job(JobState.SUCCEEDED, code=0, finished_ago=31),
        False,
        Action.CRASH,
    ),
    ("running, unknown job", run(StateType.RUNNING, started_ago=1000), job(JobState.UNKNOWN), False, Action.NONE),
    # cancellation
    ("cancelling, job alive", run(StateType.CANCELLING), job(JobState.RUNNING), False, Action.STOP_AND_CANCEL),
    ("cancelling, job ended", run(StateType.CANCELLING), job(JobState.SUCCEEDED, code=0), False, Action.CANCEL),
    ("cancelled, job alive", run(StateType.CANCELLED, ended_ago=1), job(JobState.RUNNING), False, Action.STOP),
    ("cancelled, job stopped", run(StateType.CANCELLED, ended_ago=1), job(JobState.STOPPED), False, Action.CLEANUP),
    ("cancelled, job cleaned up", run(StateType.CANCELLED, ended_ago=1), job(JobState.MISSING), False, Action.NONE),
    # zombies
    ("completed, job alive in grace", run(StateType.COMPLETED, ended_ago=5), job(JobState.RUNNING), False, Action.NONE),
    (
        "completed, job alive past grace",
        run(StateType.COMPLETED, ended_ago=31),
        job(JobState.RUNNING),
        False,
        Action.STOP,
    ),
    ("crashed, job ended", run(StateType.CRASHED, ended_ago=100), job(JobState.FAILED, code=1), False, Action.CLEANUP),
    ("completed, job cleaned up", run(StateType.COMPLETED, ended_ago=100), job(JobState.MISSING), False, Action.NONE),
]


@pytest.mark.parametrize(("case", "flow_run", "status", "found", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(case: str, flow_run: FlowRun, status: JobStatus | None, found: bool, expected: Action) -> None:
    decision = decide(flow_run, status, now=NOW, policy=POLICY, max_run_time_seconds=100, found_job=found)
    assert decision.action is expected


# What the monitor does for every (run state, job state) pair: a run that just changed state, a job that just ended.
N, C, STOP, SAC, CAN, CLEAN = (
    Action.NONE,
    Action.CRASH,
    Action.STOP,
    Action.STOP_AND_CANCEL,
    Action.CANCEL,
    Action.CLEANUP,
)
COMPLETE = {
    #                     PENDING  RUNNING  SUCCEEDED  FAILED  STOPPED  MISSING  UNKNOWN
    StateType.PENDING: (N, N, N, C, C, C, N),
    StateType.RUNNING: (N, N, N, C, C, C, N),
    StateType.CANCELLING: (SAC, SAC, CAN, CAN, CAN, CAN, N),
    StateType.CANCELLED: (STOP, STOP, CLEAN, CLEAN, CLEAN, N, N),
    StateType.COMPLETED: (N, N, CLEAN, CLEAN, CLEAN, N, N),
}
JOB_COLUMNS = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.STOPPED,
    JobState.MISSING,
    JobState.UNKNOWN,
)


def test_the_table_covers_every_job_state() -> None:
    assert set(JOB_COLUMNS) == set(JobState)  # a new job state must get its row entries here


@pytest.mark.parametrize("run_state", list(COMPLETE))
@pytest.mark.parametrize("job_state", JOB_COLUMNS)
def test_every_run_state_and_job_state_has_its_action(run_state: StateType, job_state: JobState) -> None:
    decision = decide(
        run(run_state, started_ago=1, ended_ago=1),
        job(job_state, code=1, finished_ago=1),
        now=NOW,
        policy=POLICY,
        max_run_time_seconds=100,
    )
    assert decision.action is COMPLETE[run_state][JOB_COLUMNS.index(job_state)]


def test_crash_messages_say_why() -> None:
    d = decide(
        run(StateType.RUNNING, started_ago=101), job(JobState.RUNNING), now=NOW, policy=POLICY, max_run_time_seconds=100
    )
    assert "maximum run time of 100 s" in d.reason
    d = decide(
        run(StateType.RUNNING),
        job(JobState.FAILED, code=137, reason="process ended with exit code 137"),
        now=NOW,
        policy=POLICY,
        max_run_time_seconds=100,
    )
    assert "exit code 137" in d.reason and d.with_logs


# -- the job's clock (issue 23.1): limits count from when the provider accepted the job, whatever the run says ------


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def test_a_pending_run_whose_job_runs_past_the_max_run_time_is_crashed_and_its_job_stopped() -> None:
    # A pull step that hangs, a managed run's package install: the flow never reaches Running.
    status = JobStatus(JobState.RUNNING, accepted_at=ago(101), started_at=ago(100))
    d = decide(run(StateType.PENDING, age=101), status, now=NOW, policy=POLICY, max_run_time_seconds=100)
    assert d.action is Action.CRASH_AND_STOP
    assert "maximum run time of 100 s" in d.reason and "Pending" in d.reason
    fresh = JobStatus(JobState.RUNNING, accepted_at=ago(99), started_at=ago(98))
    assert decide(run(StateType.PENDING, age=99), fresh, now=NOW, policy=POLICY, max_run_time_seconds=100).action is (
        Action.NONE
    )


def test_a_running_run_is_timed_out_from_its_jobs_acceptance_not_from_the_flows_start() -> None:
    status = JobStatus(JobState.RUNNING, accepted_at=ago(150), started_at=ago(140))
    flow = run(StateType.RUNNING, age=10, started_ago=10)  # the flow went Running 10 s ago, its job began 150 s ago
    d = decide(flow, status, now=NOW, policy=POLICY, max_run_time_seconds=100)
    assert d.action is Action.CRASH_AND_STOP and "maximum run time of 100 s" in d.reason


def test_without_an_acceptance_time_the_claim_is_the_clock() -> None:
    flow = run(StateType.RUNNING, age=10, started_ago=10)
    status = JobStatus(JobState.RUNNING)  # Coiled: no acceptance time from the provider
    assert decide(flow, status, now=NOW, policy=POLICY, max_run_time_seconds=100).action is Action.NONE
    d = decide(flow, status, now=NOW, policy=POLICY, max_run_time_seconds=100, claimed_at=ago(101))
    assert d.action is Action.CRASH_AND_STOP
    # A Pending run's own state is its claim.
    assert decide(run(StateType.PENDING, age=101), status, now=NOW, policy=POLICY, max_run_time_seconds=100).action is (
        Action.CRASH_AND_STOP
    )


def test_a_job_still_scheduling_past_the_start_timeout_is_crashed_and_stopped() -> None:
    # Modal: a sandbox waiting for a GPU is PENDING (scheduling) until a worker takes it.
    scheduling = JobStatus(JobState.PENDING, reason="the sandbox is being scheduled", accepted_at=ago(601))
    d = decide(run(StateType.PENDING, age=601), scheduling, now=NOW, policy=POLICY, max_run_time_seconds=10_000)
    assert d.action is Action.CRASH_AND_STOP
    assert "did not start within 600 s" in d.reason and "being scheduled" in d.reason
    # Counted from the job's acceptance: a claim long ago whose job was accepted recently is not timed out.
    recent = JobStatus(JobState.PENDING, accepted_at=ago(30))
    assert decide(
        run(StateType.PENDING, age=601), recent, now=NOW, policy=POLICY, max_run_time_seconds=10_000
    ).action is (Action.NONE)
