"""reconcile: bring one in-flight run and its job into agreement (the monitor's per-run policy).

:func:`decide` is a pure function of the run, its job's status and the clock, so every rule is unit-tested;
:func:`apply` carries a decision out against Prefect and the backend.

=================================  ======================================================================
run                                job → action
=================================  ======================================================================
Pending/Running/Cancelling, no pid  look the job up where the run's own configuration put it (a submitter may
                                   have died before writing the pid): found → adopt it (write the pid)
Pending, no pid, no job, > timeout recover: back to Scheduled (nothing ran, so nothing is lost and the
                                   flow's own retries are not consumed), or Crashed after
                                   ``max_recoveries`` attempts so a broken submission cannot loop forever.
                                   Before a recovery, a job of the attempt made but not yet run (a submit
                                   stalled between Cloud Run's CreateJob and RunJob) is withdrawn (deleted as
                                   read); one run meanwhile means the run has a job: not recovered (nor
                                   crashed). Elsewhere a recovery keeps the attempt's key (``ATTEMPT_LABEL``),
                                   as a transient give-back does: a job a stalled submit makes after the lookup
                                   is found by the next claim's submit, never doubled
Running, no pid, no job, > timeout Crashed: a run that says it is running with no job behind it
Cancelling, no pid, no job         Cancelled
Cancelling                         job alive → stop it, then Cancelled; job ended → Cancelled
Pending/Running                    job failed / stopped / vanished → Crashed with the reason and last lines
Pending/Running                    job exited 0 but the run is not final after ``exit_grace`` → Crashed
Pending/Running                    job alive past ``max_run_time_seconds`` counted from when the provider accepted
                                   it (not from the flow's Running state: a pull step that hangs, a package install
                                   count) → Crashed (message says so), stop job
Pending/Running                    job still not started (the provider's PENDING: image pull, provisioning, Modal
                                   scheduling) ``start_timeout`` after it was accepted → Crashed, stop job
Cancelled                          job alive → stop it
Completed/Failed/Crashed           job still alive ``exit_grace`` after the run ended → stop it (zombie)
Crashed by Prefect's runner        job ended → a new Crashed state whose message has the job's last lines (Prefect
  ("Process exited with status     says only the exit code; git's error, a traceback are in the output), then
  code: N")                        cleanup
any final state                    job ended (not yet cleaned up) → clean it up (delete what the provider keeps)
any                                job UNKNOWN (another host, unmapped status) → nothing
=================================  ======================================================================

A job's clock (design rule 9) is the provider's ``accepted_at``; where a provider keeps none, the run's claim (the
Pending state that started the attempt), which precedes the job's acceptance, so a limit is never counted from later
than the job began; failing both, the job's ``started_at`` and then the flow's start.

Each action is one run event (usecases/run_events.py) with its reason in one word (``Decision.cause``: what an
automation matches on): ``crashed``, ``cancelled``, ``retried`` (a recovery); and ``job-started`` / ``job-ended`` as
the monitor first sees them. A Crashed or Cancelled that Prefect ABORTs (the run ended meanwhile) records nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import BackendError, ObjectNotFoundError, PushpoolError, TemplateError
from pushpool.prefect_api.models import (
    Deployment,
    FlowRun,
    OrchestrationResult,
    SetStateStatus,
    StateType,
    WorkPool,
)
from pushpool.providers.base import Backend, JobHandle, JobSpec, JobState, JobStatus, SweepsUnstartedJobs
from pushpool.usecases import run_events
from pushpool.usecases.deps import Deps
from pushpool.usecases.events import CANCELLED, CRASHED, JOB_ENDED, JOB_STARTED, RETRIED
from pushpool.usecases.job_spec import PoolCredentials, build_job_spec, effective_max_run_time
from pushpool.usecases.pool_kind import pool_kind
from pushpool.usecases.run_states import (
    ATTEMPT_LABEL,
    MAX_MESSAGE,
    attach_logs,
    claim_attempt,
    crash_message,
    crash_run,
    finish_cancellation,
    keep_place,
)

log = logging.getLogger("pushpool.usecases.monitor")

RECOVERIES_LABEL = "pushpool.io/recoveries"


class Action(str, enum.Enum):
    NONE = "none"
    ADOPT = "adopt"
    RECOVER = "recover"
    CRASH = "crash"
    CRASH_AND_STOP = "crash-and-stop"  # maximum run time
    STOP_AND_CANCEL = "stop-and-cancel"
    CANCEL = "cancel"
    STOP = "stop"
    CLEANUP = "cleanup"  # the run is final and its job ended: delete what the provider keeps of it
    EXPLAIN = "explain"  # Prefect crashed the run with a bare exit code: add the job's last lines to its state


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    with_logs: bool = False
    # The reason in one word, for the run's event (``max-run-time``, ``start-timeout``, ``vanished`` …): what an
    # automation matches on. Not part of equality: the rules' tests compare actions and messages.
    cause: str = field(default="", compare=False)
    # A recovery's attempt key (the claim that found no job): kept for the next claim (``ATTEMPT_LABEL``).
    attempt: str = field(default="", compare=False)


@dataclass(frozen=True)
class Policy:
    pending_timeout_seconds: float
    exit_grace_seconds: float
    max_recoveries: int
    start_timeout_seconds: float = 600.0  # the backend's own unless PUSHPOOL_START_TIMEOUT is set


def _age(since: dt.datetime | None, now: dt.datetime) -> float:
    return (now - since).total_seconds() if since else 0.0


def decide(
    run: FlowRun,
    status: JobStatus | None,
    *,
    now: dt.datetime,
    policy: Policy,
    max_run_time_seconds: int,
    found_job: bool = False,
    claimed_at: dt.datetime | None = None,
) -> Decision:
    """What to do with ``run`` given its job's ``status`` (None when the run has no pid).

    ``found_job`` says whether a lookup by run id found a job for a run without a pid. ``claimed_at``: when the run's
    current attempt was claimed (its Pending state), for a job whose provider gives no acceptance time (a Pending
    run's own state is its claim).
    """
    state = run.state_type
    since = run.state.timestamp if run.state else None
    if status is None:  # no infrastructure_pid
        if found_job and state in (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING):
            return Decision(Action.ADOPT, "job found by run id; recording it as the run's infrastructure")
        if state is StateType.CANCELLING:
            return Decision(Action.CANCEL, "Cancelled by pushpool: the run has no job to stop.", cause="no-job")
        if state is StateType.PENDING and _age(since, now) > policy.pending_timeout_seconds:
            recoveries = int(run.labels.get(RECOVERIES_LABEL, 0) or 0)
            if recoveries >= policy.max_recoveries:
                return Decision(
                    Action.CRASH,
                    f"pushpool: the run stayed Pending with no job {recoveries + 1} times (submission kept failing).",
                    cause="recoveries-exhausted",
                )
            return Decision(
                Action.RECOVER, "pushpool: the run was Pending with no job; rescheduled.", cause="pending-timeout"
            )
        if state is StateType.RUNNING and _age(since, now) > policy.pending_timeout_seconds:
            return Decision(Action.CRASH, "pushpool: the run is Running but has no job behind it.", cause="no-job")
        return Decision(Action.NONE)

    job = status.state
    if job is JobState.UNKNOWN:
        return Decision(Action.NONE, status.reason)
    alive = job.is_alive

    if state is StateType.CANCELLED:
        if alive:
            return Decision(Action.STOP, "run is Cancelled", cause="cancelled")
        return Decision(Action.NONE) if job is JobState.MISSING else Decision(Action.CLEANUP, "run is Cancelled")
    if state in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED):
        if alive and _age(run.end_time or since, now) > policy.exit_grace_seconds:
            return Decision(Action.STOP, f"run is {run.state_name} but its job is still running")
        if not alive and job is not JobState.MISSING:
            if state is StateType.CRASHED and job in (JobState.FAILED, JobState.SUCCEEDED) and _bare_exit(run):
                return Decision(Action.EXPLAIN, (run.state.message or "") if run.state else "", with_logs=True)
            return Decision(Action.CLEANUP, f"run is {run.state_name} and its job ended")
        return Decision(Action.NONE)
    if state is StateType.CANCELLING:
        if alive:
            return Decision(Action.STOP_AND_CANCEL, "Cancelled by pushpool: the job was stopped.", cause="cancelled")
        ended = f"Cancelled by pushpool: the job had ended ({status.reason or job.value})."
        return Decision(Action.CANCEL, ended, cause="job-ended")
    if state not in (StateType.PENDING, StateType.RUNNING):
        return Decision(Action.NONE)

    if alive:
        accepted = status.accepted_at or claimed_at or (since if state is StateType.PENDING else None)
        if job is JobState.PENDING and _age(accepted, now) > policy.start_timeout_seconds:
            return Decision(
                Action.CRASH_AND_STOP,
                f"The job did not start within {policy.start_timeout_seconds:.0f} s of being accepted "
                f"({status.reason or 'still pending'}); pushpool stopped it.",
                cause="start-timeout",
            )
        if (
            max_run_time_seconds > 0
            and _age(accepted or status.started_at or run.start_time, now) > max_run_time_seconds
        ):
            return Decision(
                Action.CRASH_AND_STOP,
                f"Flow run exceeded the maximum run time of {max_run_time_seconds} s (counted from when its job was "
                f"accepted; the run was {run.state_name or state.value}); pushpool stopped its job.",
                cause="max-run-time",
            )
        return Decision(Action.NONE)
    if job is JobState.SUCCEEDED:
        if _age(status.finished_at or since, now) > policy.exit_grace_seconds:
            return Decision(
                Action.CRASH,
                "Flow run infrastructure exited cleanly, but the run never reported a final state.",
                with_logs=True,
                cause="exited-without-state",
            )
        return Decision(Action.NONE)
    if job is JobState.MISSING:
        why = f"Flow run infrastructure disappeared: {status.reason or 'job not found'}."
        return Decision(Action.CRASH, why, True, cause="vanished")
    if job is JobState.STOPPED:
        return Decision(Action.CRASH, f"Flow run infrastructure was stopped: {status.reason}.", True, cause="stopped")
    code = "" if status.exit_code is None else f" (exit code {status.exit_code})"
    return Decision(Action.CRASH, f"Flow run infrastructure failed{code}: {status.reason}.", True, cause="job-failed")


def apply(
    deps: Deps,
    backend: Backend,
    run: FlowRun,
    decision: Decision,
    handle: JobHandle | None,
    *,
    pool: WorkPool | None = None,
    status: JobStatus | None = None,
) -> str:
    """Carry ``decision`` out; returns the action taken (for the tick report). ``pool`` and ``status`` (the job's, if
    known) go into the run's event."""
    action = decision.action
    if action is Action.NONE:
        return action.value
    done, applied = _act(deps, backend, run, decision, handle)
    if applied:
        _record(deps, run, decision, handle, pool, status)
    return done


def _act(deps: Deps, backend: Backend, run: FlowRun, decision: Decision, handle: JobHandle | None) -> tuple[str, bool]:
    """The action taken, and whether it changed the run (a Crashed or Cancelled that Prefect ABORTed because the run
    had ended meanwhile is no action of pushpool's: no event)."""
    client = deps.orchestrator
    action = decision.action
    applied = True
    if action is not Action.CLEANUP:
        log.info("run %s (%s): %s — %s", run.id, run.state_name, action.value, decision.reason)
    if action is Action.ADOPT and handle is not None:
        client.set_infrastructure_pid(run.id, handle.id)
    elif action is Action.RECOVER:
        fresh = client.read_flow_run(run.id)  # narrow the race with a slow submitter that is just finishing
        if fresh.state_type is not StateType.PENDING or fresh.infrastructure_pid:
            return Action.NONE.value, False
        recoveries = int(run.labels.get(RECOVERIES_LABEL, 0) or 0) + 1
        labels = {RECOVERIES_LABEL: str(recoveries)}
        if decision.attempt:  # the next claim submits under this key: a job a stalled submit makes late is found
            labels[ATTEMPT_LABEL] = decision.attempt
        client.update_flow_run_labels(run.id, labels)
        client.propose_state(run.id, StateType.SCHEDULED, message=decision.reason, state_details=keep_place(run))
    elif action is Action.CRASH:
        lines = _logs(backend, handle) if decision.with_logs else []
        applied = _accepted(crash_run(client, run.id, crash_message(decision.reason, lines)))
        if lines:
            attach_logs(client, deps.clock, run.id, "Last lines of the job's output (from pushpool):", lines)
    elif action is Action.CRASH_AND_STOP and handle is not None:
        applied = _accepted(crash_run(client, run.id, decision.reason))
        _stop(deps, backend, handle)
    elif action is Action.STOP_AND_CANCEL and handle is not None:
        _stop(deps, backend, handle)
        # The engine inside the job may have finished the cancellation itself while it was being stopped.
        if client.read_flow_run(run.id).state_type is StateType.CANCELLING:
            finish_cancellation(client, run.id, decision.reason)
    elif action is Action.CANCEL:
        applied = _accepted(finish_cancellation(client, run.id, decision.reason))
    elif action is Action.STOP and handle is not None:
        _stop(deps, backend, handle)
    elif action is Action.EXPLAIN:
        lines = _logs(backend, handle, lines=200)
        errors = [line for line in lines if _ERROR_LINE.match(line)][-8:]
        # A new Crashed state (forced: the run is final) whose message says what went wrong, in the job's words.
        message = f"Crashed by Prefect's runner ({decision.reason.rstrip('.')})."
        if errors:
            message += " Errors in the job's output:\n" + "\n".join(line[:500] for line in errors)
        else:
            message = crash_message(message, lines)
        client.propose_state(run.id, StateType.CRASHED, force=True, message=message[:MAX_MESSAGE])
        attach_logs(client, deps.clock, run.id, "Last lines of the job's output (from pushpool):", lines[-50:])
    elif action is Action.CLEANUP and handle is not None:
        backend.cleanup(handle)
        log.debug("run %s: job %s cleaned up", run.id, handle.id)
    return action.value, applied


def _accepted(result: OrchestrationResult | None) -> bool:
    return result is not None and result.status is SetStateStatus.ACCEPT


def _record(
    deps: Deps,
    run: FlowRun,
    decision: Decision,
    handle: JobHandle | None,
    pool: WorkPool | None,
    status: JobStatus | None,
) -> None:
    """The run's event for what ``apply`` did (crashed, cancelled, rescheduled), once per action and job."""
    action, job_id, now = decision.action, handle.id if handle is not None else None, deps.clock.now()
    # The message pushpool wrote, never the job's output (a flow may print anything).
    payload: dict[str, Any] = {"message": decision.reason[:500]}
    if status is not None:
        payload["exit_code"] = status.exit_code
        since = status.started_at or status.accepted_at
        if since is not None:
            payload["job_ran_seconds"] = round((now - since).total_seconds(), 3)
    if action in (Action.CRASH, Action.CRASH_AND_STOP):
        run_events.emit(deps, CRASHED, run, pool, job_id=job_id, reason=decision.cause or "crashed", payload=payload)
    elif action in (Action.STOP_AND_CANCEL, Action.CANCEL) or (
        action is Action.STOP and run.state_type is StateType.CANCELLED
    ):
        if action is not Action.CANCEL and "job_ran_seconds" in payload:
            payload["job_stopped_after_seconds"] = payload.pop("job_ran_seconds")
        reason = decision.cause or "cancelled"
        run_events.emit(deps, CANCELLED, run, pool, job_id=job_id, reason=reason, payload=payload)
    elif action is Action.RECOVER:
        recoveries = int(run.labels.get(RECOVERIES_LABEL, 0) or 0) + 1
        attempt = run.state.id if run.state is not None else None  # the Pending claim that found no job
        run_events.emit(
            deps, RETRIED, run, pool, attempt=attempt, reason=decision.cause, sequence=recoveries, payload=payload
        )


# How long after a job started (ended) the monitor still reports it: a monitor that restarted (a cold function) does not
# report again every long-running job it meets, and a tick or two missed still leaves the event.
JOB_EVENT_WINDOW_SECONDS = 600.0


def _job_events(deps: Deps, run: FlowRun, pool: WorkPool, handle: JobHandle | None, status: JobStatus | None) -> None:
    """``job-started`` and ``job-ended`` as the monitor first sees them, within ``JOB_EVENT_WINDOW_SECONDS`` of the
    moment (the same job seen again makes the same event, which the sink and Prefect keep once)."""
    if handle is None or status is None:
        return
    job, now = status.state, deps.clock.now()

    def recent(moment: dt.datetime | None) -> bool:
        return moment is None or _age(moment, now) <= JOB_EVENT_WINDOW_SECONDS

    started = status.started_at or status.accepted_at
    seen_running = job is JobState.RUNNING or (job.is_final and job is not JobState.MISSING and status.started_at)
    if seen_running and recent(started):
        run_events.emit(
            deps,
            JOB_STARTED,
            run,
            pool,
            job_id=handle.id,
            occurred=status.started_at,
            payload={"provider": handle.backend, "started_at": _iso(status.started_at)},
        )
    if job in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED) and recent(status.finished_at):
        run_events.emit(
            deps,
            JOB_ENDED,
            run,
            pool,
            job_id=handle.id,
            reason=job.value.lower(),
            occurred=status.finished_at,
            payload={
                "provider": handle.backend,
                "exit_code": status.exit_code,
                "job_reason": status.reason[:300] if status.reason else None,
                "finished_at": _iso(status.finished_at),
            },
        )


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# The last line of a Python traceback, git's and pip's errors.
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)\b.*:|fatal: |ERROR: )")


def _logs(backend: Backend, handle: JobHandle | None, *, lines: int = 50) -> list[str]:
    if handle is None:
        return []
    try:
        return backend.logs(handle, lines=lines)
    except BackendError as exc:
        log.info("no job output for %s: %s", handle.id, exc.one_line())
        return []


def _stop(deps: Deps, backend: Backend, handle: JobHandle) -> None:
    backend.cancel(handle, grace_seconds=deps.settings.cancel_grace_seconds)


def policy_from(deps: Deps) -> Policy:
    """The monitor's policy from the settings (without PUSHPOOL_START_TIMEOUT, each backend's start timeout)."""
    return Policy(
        pending_timeout_seconds=deps.settings.pending_timeout_seconds,
        exit_grace_seconds=deps.settings.exit_grace_seconds,
        max_recoveries=deps.settings.max_recoveries,
        start_timeout_seconds=deps.settings.start_timeout_seconds or Policy.start_timeout_seconds,
    )


def reconcile_run(
    deps: Deps,
    backend: Backend,
    pool: WorkPool,
    run: FlowRun,
    status: JobStatus | None,
    *,
    now: dt.datetime,
    policy: Policy,
    cache: dict[str, Deployment | None],
    handle: JobHandle | None = None,
) -> str:
    """Decide and act for one run whose job status (None: no pid) is already known.

    ``handle``: the run's job (its ``infrastructure_pid``) with its pool's credentials (``PoolCredentials``); rendered
    here when not given.
    """
    with run_events.run_context(run.id, pool.name, run.infrastructure_pid):
        return _reconcile_run(deps, backend, pool, run, status, now=now, policy=policy, cache=cache, handle=handle)


def _reconcile_run(
    deps: Deps,
    backend: Backend,
    pool: WorkPool,
    run: FlowRun,
    status: JobStatus | None,
    *,
    now: dt.datetime,
    policy: Policy,
    cache: dict[str, Deployment | None],
    handle: JobHandle | None,
) -> str:
    if deps.settings.start_timeout_seconds is None:
        policy = dataclasses.replace(policy, start_timeout_seconds=backend.start_timeout_seconds)
    if handle is None and run.infrastructure_pid:
        handle = PoolCredentials(deps.settings, deps.orchestrator).handle(backend.name, pool, run.infrastructure_pid)
    found, spec = False, None
    if handle is None and _worth_a_lookup(run, now, policy):
        spec = attempt_spec(deps, pool, run, cache)
        handle = backend.find(spec) if spec is not None else None
        found = handle is not None
    max_run, claimed = 0, None
    if status is not None and status.state.is_alive and run.state_type in (StateType.PENDING, StateType.RUNNING):
        max_run = _max_run_time(deps, pool, run, cache)
        if status.accepted_at is None and run.state_type is StateType.RUNNING:
            claimed = _claimed_at(deps, run)  # a provider without an acceptance time: one read of the run's states
    decision = decide(
        run, status, now=now, policy=policy, max_run_time_seconds=max_run, found_job=found, claimed_at=claimed
    )
    given_up = decision.action is Action.RECOVER or (
        decision.action is Action.CRASH and run.state_type is StateType.PENDING
    )
    if status is None and given_up and spec is not None and not _withdrawn(backend, run, spec):
        decision = Decision(Action.NONE)  # its job was run meanwhile: the next tick finds and adopts it
    if decision.action is Action.RECOVER and spec is not None and not isinstance(backend, SweepsUnstartedJobs):
        # The next claim keeps this attempt's key: a job a stalled submit makes after the lookup is found, not doubled.
        # Not where the attempt's unstarted job was just withdrawn (Cloud Run): under the same key the next claim
        # would make a job of the same name, which the stalled submit's late RunJob would then run a second time.
        decision = dataclasses.replace(decision, attempt=spec.attempt)
    if status is not None:  # before a cleanup removes what it reads (managed: the job's times)
        pool_kind(pool.type).on_status(deps, run, status)
    _job_events(deps, run, pool, handle, status)
    if decision.action is Action.CLEANUP and not backend.keeps_finished_jobs:
        decision = Decision(Action.NONE)  # its finished jobs expire by themselves
    return apply(deps, backend, run, decision, handle, pool=pool, status=status)


def find_job(
    deps: Deps, backend: Backend, pool: WorkPool, run: FlowRun, cache: dict[str, Deployment | None]
) -> JobHandle | None:
    """The job of the run's current attempt, looked for where the run's own configuration put it (:func:`attempt_spec`);
    None when it has none."""
    spec = attempt_spec(deps, pool, run, cache)
    return backend.find(spec) if spec is not None else None


def _withdrawn(backend: Backend, run: FlowRun, spec: JobSpec) -> bool:
    """Before a Pending run whose attempt's job was not found is given back (or crashed, out of recoveries): whether
    no job of that attempt can run any more. A backend whose submit is two calls (create, then run: Cloud Run) may
    hold a job its stalled submit has not run yet — found by nobody, yet run late beside the next claim's job; it is
    withdrawn (deleted as it was read, so a job run meanwhile stays). False: the job was run meanwhile — the run has a
    job and is left as it is (the next tick finds and adopts it)."""
    if not isinstance(backend, SweepsUnstartedJobs):
        return True  # no job of this provider exists without having been started
    if backend.withdraw_unstarted(spec):
        return True
    log.info("run %s: its attempt's job was started meanwhile; not rescheduled (adopted next)", run.id)
    return False


def attempt_spec(deps: Deps, pool: WorkPool, run: FlowRun, cache: dict[str, Deployment | None]) -> JobSpec | None:
    """The run's current attempt rendered again exactly as submit rendered it (deployment and run job variables,
    blocks, variables), so a deployment that sends its jobs to another cluster, region, project or resource group is
    searched there. None: the run has no claim, or its configuration no longer renders (no job can have been started
    from it).
    """
    attempt = claim_attempt(deps.orchestrator, run)
    if attempt is None:
        return None
    try:
        return build_job_spec(
            settings=deps.settings,
            client=deps.orchestrator,
            run=run,
            pool=pool,
            deployment=_deployment(deps, run, cache),
            attempt=attempt,
        )
    except TemplateError as exc:
        log.info("run %s: no job can be found (its configuration does not render: %s)", run.id, exc.one_line())
        return None


def reconcile_one(deps: Deps, run: FlowRun, pool: WorkPool) -> dict[str, Any]:
    """Reconcile a single run now (the webhook's fast path for Cancelling runs)."""
    backend = deps.backend_for_pool(pool)
    status, handle = None, None
    if run.infrastructure_pid:  # no answer for its job (a failed call) is unknown, never "no job"
        handle = PoolCredentials(deps.settings, deps.orchestrator).handle(backend.name, pool, run.infrastructure_pid)
        status = backend.status([handle]).get(handle.id) or JobStatus(JobState.UNKNOWN, reason="no status")
    action = reconcile_run(
        deps, backend, pool, run, status, now=deps.clock.now(), policy=policy_from(deps), cache={}, handle=handle
    )
    return {"flow_run_id": run.id, "outcome": "reconciled", "detail": action, "job_id": run.infrastructure_pid}


BARE_EXIT = "Process exited with status code"  # Prefect's runner's message when its flow process failed


def _bare_exit(run: FlowRun) -> bool:
    """Crashed by Prefect's own runner (``prefect flow-run execute``) with only an exit code, e.g. when the
    deployment's pull step failed: the reason (git's message, a traceback) is in the job's output only."""
    return bool(run.state and (run.state.message or "").startswith(BARE_EXIT))


def _worth_a_lookup(run: FlowRun, now: dt.datetime, policy: Policy) -> bool:
    """A run without a pid is looked up by run id only when it matters (cancelling, or stuck past the timeout)."""
    if run.state_type is StateType.CANCELLING:
        return True
    since = run.state.timestamp if run.state else None
    return since is not None and (now - since).total_seconds() > policy.pending_timeout_seconds


def _deployment(deps: Deps, run: FlowRun, cache: dict[str, Deployment | None]) -> Deployment | None:
    """The run's deployment (read once per tick); None when it has none or it was deleted."""
    if not run.deployment_id:
        return None
    if run.deployment_id not in cache:
        try:
            cache[run.deployment_id] = deps.orchestrator.read_deployment(run.deployment_id)
        except ObjectNotFoundError:
            cache[run.deployment_id] = None
    return cache[run.deployment_id]


def _claimed_at(deps: Deps, run: FlowRun) -> dt.datetime | None:
    """When the run's current attempt was claimed: the latest Pending state named "Pending" (pushpool's claim) in its
    history; None when it has none or the read fails (the monitor then counts from the flow's start)."""
    try:
        history = deps.orchestrator.read_flow_run_states(run.id)
    except PushpoolError as exc:
        log.info("run %s: its states could not be read (%s)", run.id, exc.one_line())
        return None
    claims = [s.get("timestamp") for s in history if s.get("type") == "PENDING" and s.get("name") == "Pending"]
    found = [_parse_time(t) for t in claims if t]
    return max((t for t in found if t is not None), default=None)


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _max_run_time(deps: Deps, pool: WorkPool, run: FlowRun, cache: dict[str, Deployment | None]) -> int:
    own = pool_kind(pool.type).max_run_time(deps, pool)  # managed: the tier's
    if own is not None:
        return own
    try:
        deployment = _deployment(deps, run, cache)
    except PushpoolError:
        deployment = None
    return effective_max_run_time(pool, deployment, run)
