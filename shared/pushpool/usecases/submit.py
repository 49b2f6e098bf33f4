"""submit: turn one ready flow run into one job (design.md correctness rules 1–7).

Order of work, and why:

1. The pool's provider is resolved first: a type this deployment does not serve, or whose SDK cannot load, is
   refused before anything changes. Only Scheduled-type runs are submitted; a run whose job is not due yet (its
   scheduled time minus the pool's lead) gets a trigger armed for that time (``punctual``), and the monitor's
   sweep stays the guarantee.
2. Pool and queue pause flags and concurrency limits are checked (``admission``: Prefect enforces them only inside
   ``get_scheduled_flow_runs``; the webhook path must not bypass them), and those of a wrapping pool type
   (``usecases/pool_kind.py``; for a managed pool the workspace's pool limit — a pool over it is not served — and its
   concurrency limit: ``usecases/managed.py``).
3. Propose PENDING without force. ACCEPT = this invocation owns the run; ABORT or a REJECT to another state =
   someone else owns it or the server decided otherwise (deployment concurrency): do nothing.
4. Concurrency is re-checked after the claim: a claimer that then sees more in-flight runs than the limit gives its
   slot back (Scheduled/AwaitingConcurrencySlot, at its original due time so it keeps its place in the queue)
   without starting anything. Each claimer counts after its own claim
   is committed, so of any set of concurrent claimers at most ``limit`` can see themselves within it — the limit
   holds under any race (when two claim at once both may yield; the monitor dispatches them one at a time).
   A managed run is then Cancelled, with the reason, if its workspace has used up the month's compute hours;
   otherwise it is tagged ``pushpool:managed`` (what compute hours count: the tag outlives the run's pool).
5. Render the job into the provider's typed configuration (a managed run: the operator's provider, image and limits;
   job variables a managed pool does not take are refused, the run crashed with the reason, nothing started). A
   template that does not render, or a field of the wrong type, crashes the run with the reason (never left Pending).
6. Submit to the backend (idempotent per attempt: the run plus its claim), record ``infrastructure_pid``, then
   propose the ``InfrastructurePending`` progress state; its answer doubles as the re-read: a run that became
   Cancelling or Cancelled meanwhile gets its job stopped at once. A non-retryable backend error crashes the run with
   the reason. A retryable one (throttled, 5xx, a timeout, no capacity: ``BackendError.retryable``) gives the run
   back instead (see below).

Transient backend errors (Prefect never retries a Crashed run, so crashing on a cloud's brief 429 or 503 loses the
run). The run is given back to Scheduled, in a state of its own (``AwaitingInfrastructure``, whose message says what
failed and when it is retried) at ``now + backoff``: exponential with jitter, capped, at least the cloud's
``Retry-After``, never before the time it was scheduled for. Backing off moves the run behind runs that became due
meanwhile, as Prefect's own AwaitingRetry and AwaitingConcurrencySlot do: keeping its first place (``keep_place``)
would put a run the cloud refuses at the head of the queue on every tick, and Prefect marks such an overdue run Late,
dropping the message. Its key is kept: the next claim submits under the first claim's attempt (``Episode``, the run's
``pushpool.io/attempt`` label), so a job the cloud accepted after all (a timeout after acceptance) is found, not
doubled. After ``transient_retries`` give-backs, or ``transient_retry_seconds`` after the first attempt, the run is
Crashed with every attempt's error, one line each.

Fences for a slow submit (a call stalled past half the shorter of ``pending_timeout`` and ``exit_grace``: Prefect's
SQLite can stall a call for a minute), one read each, paid only when slow: after the claim, a claim that landed on a run
that had ended meanwhile (Prefect accepts Pending after Crashed) gives the final state back and starts nothing; after
the job is made, a claim whose attempt is no longer the run's gets the late job stopped and writes no pid (a
recovery by the monitor keeps the attempt's key, so its late job is the next claim's — except on Cloud Run, whose
recovery withdraws the attempt's job and starts a new key); and a submit whose backend call failed after the run moved
on from its claim (recovered by the monitor, maybe claimed again) neither gives it back nor crashes it (another claim's
job may be running: a give-back would have the next claim start a second job, as a loaded Cloud Run duplicate storm
showed). A submit that
stalls after these checks is what the monitor's adopt rule and its re-read before a recovery cover. The monitor's runs
are as fresh as its listing; only the time since ``submit_run`` was called counts.

What submit did is recorded where it happened, one run event each (usecases/run_events.py, docs/events.md):
``submitted`` (with where the job went, its console URL and the dispatch latency; the ``InfrastructurePending``
message carries the link too), ``refused`` (paused, limit, quota, not served), ``crashed`` (refused job variables,
template, backend error), ``cancelled`` and ``retried`` (a transient backend error, with its backoff).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pushpool.errors import (
    BackendError,
    JobRefusedError,
    ObjectNotFoundError,
    OrchestratorUnavailableError,
    TemplateError,
)
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import TERMINAL_STATES, FlowRun, OrchestrationResult, StateType, WorkPool
from pushpool.providers.base import Backend, JobHandle, JobSpec
from pushpool.usecases import admission, run_events
from pushpool.usecases.deps import Deps
from pushpool.usecases.events import CANCELLED, CRASHED, REFUSED, RETRIED, SUBMITTED
from pushpool.usecases.job_spec import build_job_spec
from pushpool.usecases.pool_kind import pool_kind
from pushpool.usecases.punctual import arm, dispatch_time, due_time, lead_seconds
from pushpool.usecases.run_states import (
    ATTEMPT_LABEL,
    BACKOFF_STATE,
    Episode,
    claim_attempt,
    crash_run,
    episode_of,
    finish_cancellation,
    keep_place,
    state_time,
)

log = logging.getLogger("pushpool.usecases.submit")

# Reads that do not depend on each other overlap (the queue and the deployment are fetched while the pool is read,
# and the deployment while the run is claimed): fewer round trips between the trigger and the job. Threads suit
# Lambda too.
_PREFETCH = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pushpool-prefetch")

PROGRESS_STATE = "InfrastructurePending"
WAITING_STATE = "AwaitingConcurrencySlot"
TERMINAL_TYPES = frozenset(state.value for state in TERMINAL_STATES)  # as the states API gives them
BACKOFF_BASE_SECONDS = 10.0  # the first transient give-back waits 5-10 s, doubling to at most BACKOFF_CAP_SECONDS
BACKOFF_CAP_SECONDS = 300.0
_JITTER = random.Random()


@dataclass(frozen=True)
class SubmitOutcome:
    """What happened to one run. ``outcome`` is one of the constants below."""

    run_id: str
    outcome: str
    detail: str = ""
    job_id: str | None = None
    dispatch_latency_seconds: float | None = None  # scheduled start → job accepted, for submitted runs
    dispatch_at: dt.datetime | None = None  # for deferred runs: when the job is to be accepted

    SUBMITTED = "submitted"
    NOT_READY = "not-ready"  # not Scheduled (already claimed, running or final)
    DEFERRED = "deferred"  # scheduled later: the monitor dispatches it when due
    PAUSED = "paused"
    WAITING = "waiting"  # a concurrency limit is full
    NOT_CLAIMED = "not-claimed"  # another submitter won the claim, or the server refused it
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back to Scheduled after a transient failure
    NOT_SERVED = "not-served"  # a managed pool over its workspace's pool limit: nothing changed

    def as_dict(self) -> dict[str, str | float | None]:
        return {
            "flow_run_id": self.run_id,
            "outcome": self.outcome,
            "detail": self.detail,
            "job_id": self.job_id,
            "dispatch_latency_seconds": self.dispatch_latency_seconds,
            "dispatch_at": self.dispatch_at.isoformat() if self.dispatch_at else None,
        }


@dataclass(frozen=True)
class Reads:
    """The reads submit needs besides the run and its pool, started together so that their round trips overlap."""

    queue: Future | None  # WorkQueue | None (None: the run's queue does not exist)
    deployment: Future | None  # Deployment

    @classmethod
    def start(cls, deps: Deps, run: FlowRun) -> Reads:
        """Both reads, through the event path's short-lived shared reads (``usecases/pool_reads.py``: a deployment's
        job variables are at most ``read_cache_seconds`` old)."""
        reads = deps.pool_reads
        queue = (
            _PREFETCH.submit(reads.queue, run.work_pool_name, run.work_queue_name)
            if run.work_pool_name and run.work_queue_name
            else None
        )
        deployment = _PREFETCH.submit(reads.deployment, run.deployment_id) if run.deployment_id else None
        return cls(queue, deployment)


def not_ready(deps: Deps, run: FlowRun, lead: float = 0.0) -> SubmitOutcome | None:
    """Why ``run`` is not to be submitted now (from the run alone), or None when it is.

    ``lead``: seconds before its scheduled time a run is ready (``punctual.lead_seconds`` of its pool).
    """
    if run.state_type is not StateType.SCHEDULED:
        return SubmitOutcome(run.id, SubmitOutcome.NOT_READY, f"run is {run.state_name}")
    if run.retries_in_process:
        return SubmitOutcome(run.id, SubmitOutcome.NOT_READY, "the run's engine is retrying it in its own process")
    at = dispatch_time(run, lead)
    if at is not None and at > deps.clock.now():
        due = due_time(run)
        detail = f"scheduled for {due.isoformat() if due else '?'}; its job starts at {at.isoformat()}"
        return SubmitOutcome(run.id, SubmitOutcome.DEFERRED, detail, dispatch_at=at)
    return None


@dataclass(frozen=True)
class Admitted:
    """A run that passed the checks made before its claim (``admit``): ready, not paused, within its limits."""

    run: FlowRun
    pool: WorkPool
    backend: Backend
    reads: Reads
    limits: list  # admission.Limit (and managed.WorkspaceLimit): re-counted after the claim
    entered_at: dt.datetime  # when submit was asked: how stale a claim may be (see _claimed_from_final)


@dataclass(frozen=True)
class Started:
    """A claimed run whose job exists and whose ``infrastructure_pid`` is recorded; its progress state is next."""

    admitted: Admitted
    handle: JobHandle
    attempt: str = ""  # the attempt's key (its job's idempotency key)
    accepted_at: dt.datetime | None = None  # when the backend answered with the job
    spec: JobSpec | None = None  # the rendered job (where it went: region, cluster, image …)


def submit_run(
    deps: Deps,
    run: FlowRun,
    pool: WorkPool,
    *,
    trigger: str = "webhook",
    reads: Reads | None = None,
    arm_trigger: bool = True,
) -> SubmitOutcome:
    """Submit ``run`` (already read) of ``pool`` to its backend if it is ready.

    ``reads``: the queue and deployment reads if the caller started them already (``Reads.start``), so they could
    overlap its own read of the pool. ``arm_trigger``: arm the runtime's trigger for a run not due yet (the default).

    Raises:
        UnsupportedPoolError: the pool is not a push pool this deployment serves (nothing changed).
        ConfigurationError: the pool's provider cannot be loaded here, e.g. its SDK is missing (nothing changed).
        OrchestratorError: Prefect could not be read before the claim (nothing changed).
    """
    with run_events.run_context(run.id, pool.name):
        admitted = admit(deps, run, pool, reads=reads, arm_trigger=arm_trigger)
        if isinstance(admitted, SubmitOutcome):
            return admitted
        claim = deps.orchestrator.propose_state(run.id, StateType.PENDING)
        started = proceed(deps, admitted, claim, trigger=trigger)
        if isinstance(started, SubmitOutcome):
            return started
        progress = deps.orchestrator.propose_state(
            run.id, StateType.PENDING, name=PROGRESS_STATE, message=progress_message(deps, started)
        )
        return finish(deps, started, progress)


def progress_message(deps: Deps, started: Started) -> str:
    """The ``InfrastructurePending`` state's message: where the job runs, with the link to it in its console."""
    pool, handle = started.admitted.pool, started.handle
    url = run_events.console_url(deps, pool, handle.id)
    return f"pushpool submitted job {handle.id} to {handle.backend}" + (f": {url}" if url else "")


def admit(
    deps: Deps,
    run: FlowRun,
    pool: WorkPool,
    *,
    reads: Reads | None = None,
    arm_trigger: bool = True,
    count: bool = True,
) -> Admitted | SubmitOutcome:
    """Steps 1–2: whether ``run`` may be claimed now — an outcome when not (nothing changed), else what the claim and
    the steps after it need. ``count``: count the in-flight runs against the limits now (a batch counts once for all
    its runs: ``bulk_dispatch``)."""
    entered_at = deps.clock.now()  # the run was read before this: how stale a claim may be (see _claimed_from_final)
    backend = deps.backend_for_pool(pool)  # before anything changes: a provider that cannot load claims nothing
    waiting = not_ready(deps, run, lead_seconds(deps, pool, backend))
    if waiting is not None:
        if arm_trigger and waiting.dispatch_at is not None and arm(deps, run.id, waiting.dispatch_at):
            return dataclasses.replace(waiting, detail=f"{waiting.detail} (trigger armed)")
        return waiting
    reads = reads or Reads.start(deps, run)

    queue = reads.queue.result() if reads.queue is not None else None
    why_paused = admission.paused(pool, queue)
    if why_paused:
        refused(deps, run, pool, "paused", why_paused)
        return SubmitOutcome(run.id, SubmitOutcome.PAUSED, why_paused)
    kind = pool_kind(pool.type)  # a wrapping pool type's own admission (prefect:managed: the workspace's limits)
    why_not = kind.not_served(deps, pool)
    if why_not:
        refused(deps, run, pool, "not-served", why_not)
        return SubmitOutcome(run.id, SubmitOutcome.NOT_SERVED, why_not)
    limits: list = [*admission.limits(pool, queue), *kind.limits(deps)]
    over = admission.full(deps.orchestrator, limits, claimed=False) if count else None
    if over is not None:
        why = f"{over.describe()} concurrency limit reached"
        refused(deps, run, pool, "limit", why)
        return SubmitOutcome(run.id, SubmitOutcome.WAITING, why)
    return Admitted(run, pool, backend, reads, limits, entered_at)


def proceed(
    deps: Deps,
    admitted: Admitted,
    claim: OrchestrationResult,
    *,
    trigger: str,
    limits_counted: bool = False,
    claimed_at: dt.datetime | None = None,
) -> Started | SubmitOutcome:
    """Steps 3–6 up to the recorded pid, given the answer to the run's Pending ``claim``: an outcome when the claim was
    refused (nothing changed) or the run ended otherwise, else the started job. ``limits_counted``: the limits were
    re-counted after this claim already (a batch's claims are counted together: ``bulk_dispatch``). ``claimed_at``:
    when the claim was answered, if not just now (a batch's runs wait for a free lane after their claims: the fence
    against a claim the monitor recovered meanwhile counts from the claim, not from when its run's turn came)."""
    run, pool, backend, reads, limits = admitted.run, admitted.pool, admitted.backend, admitted.reads, admitted.limits
    client = deps.orchestrator
    if not claim.accepted:
        return SubmitOutcome(run.id, SubmitOutcome.NOT_CLAIMED, f"{claim.status.value}: {claim.reason}".strip(": "))
    log.info("claimed run %s (%s) via %s", run.id, run.name, trigger)
    claim_id = claim.state.id if claim.state is not None and claim.state.id else run.id
    if _slow(deps, admitted.entered_at) and _claimed_from_final(client, run.id, claim_id):
        why = "the run had ended before this slow claim landed (Prefect accepts Pending after Crashed); given back"
        log.warning("run %s: %s", run.id, why)
        return SubmitOutcome(run.id, SubmitOutcome.NOT_CLAIMED, why)
    claimed_at = claimed_at or deps.clock.now()
    try:
        episode = _episode(client, run, claim_id)
    except OrchestratorUnavailableError:
        return release(deps, run, "Prefect API unavailable while reading the run's earlier attempts")
    attempt = episode.key

    if not limits_counted:
        try:
            over = admission.full(client, limits, claimed=True)
        except OrchestratorUnavailableError:
            return release(deps, run, "Prefect API unavailable while counting runs against the limits")
        if over is not None:
            return give_slot_back(deps, run, f"{over.describe()} concurrency limit reached", pool)

    kind = pool_kind(pool.type)
    try:
        refusal = kind.refusal(deps)  # e.g. the managed workspace's compute hours used up
    except OrchestratorUnavailableError:
        return release(deps, run, "Prefect API unavailable while checking whether the run may start")
    if refusal:
        client.propose_state(run.id, StateType.CANCELLED, message=refusal)
        refused(deps, run, pool, "quota", refusal, attempt=attempt)
        return SubmitOutcome(run.id, SubmitOutcome.CANCELLED, refusal)
    tags = kind.tags(run)
    if tags is not None:
        try:
            client.set_flow_run_tags(run.id, tags)
        except OrchestratorUnavailableError:
            return release(deps, run, "Prefect API unavailable while tagging the run")

    try:
        deployment = reads.deployment.result() if reads.deployment is not None else None
    except ObjectNotFoundError:
        client.propose_state(
            run.id,
            StateType.CANCELLED,
            force=True,
            message=f"Deployment {run.deployment_id} no longer exists, cancelled run.",
        )
        run_events.emit(deps, CANCELLED, run, pool, attempt=attempt, reason="deployment-deleted")
        return SubmitOutcome(run.id, SubmitOutcome.CANCELLED, "deployment no longer exists")
    except OrchestratorUnavailableError:
        return release(deps, run, "Prefect API unavailable while reading the deployment")

    try:
        spec = build_job_spec(
            settings=deps.settings, client=client, run=run, pool=pool, deployment=deployment, attempt=attempt
        )
    except JobRefusedError as exc:
        crash_run(client, run.id, f"pushpool refused to start this run: {exc.one_line()}")
        run_events.emit(deps, CRASHED, run, pool, attempt=attempt, reason="refused-job-variables")
        return SubmitOutcome(run.id, SubmitOutcome.CRASHED, f"refused: {exc.one_line()}")
    except TemplateError as exc:
        crash_run(client, run.id, f"pushpool could not render the job template: {exc.one_line()}")
        run_events.emit(deps, CRASHED, run, pool, attempt=attempt, reason="template")
        return SubmitOutcome(run.id, SubmitOutcome.CRASHED, f"template error: {exc.one_line()}")
    except OrchestratorUnavailableError:
        return release(deps, run, "Prefect API unavailable while rendering the job")

    try:
        # A key this claim made itself cannot have a job yet; a kept one may (an earlier submit's, accepted after all).
        handle = backend.submit(dataclasses.replace(spec, new_attempt=attempt == claim_id))
    except BackendError as exc:
        moved_on = _moved_on(client, run.id, claim_id) if _slow(deps, claimed_at) else None
        if moved_on is not None:
            return _leave_alone(deps, backend, spec, moved_on, attempt, exc)
        if not exc.retryable:
            crash_run(client, run.id, f"Failed to submit flow run to infrastructure ({exc.backend}): {exc.one_line()}")
            error = {"error": exc.one_line()[:300]}
            run_events.emit(deps, CRASHED, run, pool, attempt=attempt, reason="backend-error", payload=error)
            return SubmitOutcome(run.id, SubmitOutcome.CRASHED, f"backend error: {exc.one_line()}")
        # At the bound, a job the cloud accepted after all (a timeout after acceptance) is taken, not left running
        # under a Crashed run; before it, the next retry finds it.
        found = _made_after_all(backend, spec) if _bound_reached(deps, episode) else None
        if found is None:
            return _retry_later(deps, run, pool, exc, episode, lead_seconds(deps, pool, backend))
        handle = found
    accepted_at = deps.clock.now()
    run_events.bind_job(handle.id)
    log.info("run %s: job %s submitted to %s", run.id, handle.id, backend.name)
    if _slow(deps, claimed_at) and _claim_lost(client, run.id, attempt):
        _stop(deps, backend, handle, run)
        why = "the claim was given away while this submit was slow (the monitor recovered the run); its job was stopped"
        log.warning("run %s: %s", run.id, why)
        return SubmitOutcome(run.id, SubmitOutcome.NOT_CLAIMED, why, handle.id)

    client.set_infrastructure_pid(run.id, handle.id)
    return Started(admitted, handle, attempt, accepted_at, spec)


def finish(deps: Deps, started: Started, progress: OrchestrationResult | None) -> SubmitOutcome:
    """The end of step 6, given the answer to the run's ``InfrastructurePending`` proposal (None: the run was not
    proposed to, being no longer Pending, Cancelling or Cancelled — its flow is running or over): a run that became
    Cancelling or Cancelled meanwhile gets its job stopped at once."""
    run, pool, handle = started.admitted.run, started.admitted.pool, started.handle
    state = progress.state.type if progress is not None and progress.state else None
    if progress is not None and not progress.accepted and state in (StateType.CANCELLING, StateType.CANCELLED):
        _stop(deps, started.admitted.backend, handle, run)
        if state is StateType.CANCELLING:
            finish_cancellation(
                deps.orchestrator, run.id, "Cancelled by pushpool: the run was cancelled while its job started."
            )
        stopped_after = (deps.clock.now() - (started.accepted_at or deps.clock.now())).total_seconds()
        run_events.emit(
            deps,
            CANCELLED,
            run,
            pool,
            attempt=started.attempt,
            job_id=handle.id,
            reason="cancelled-while-starting",
            payload={"job_stopped_after_seconds": round(stopped_after, 3)},
        )
        return SubmitOutcome(run.id, SubmitOutcome.CANCELLED, "run was cancelled while its job started", handle.id)
    due = due_time(run)
    latency = (deps.clock.now() - due).total_seconds() if due is not None else None
    accepted = started.accepted_at or deps.clock.now()
    run_events.emit(
        deps,
        SUBMITTED,
        run,
        pool,
        attempt=started.attempt,
        job_id=handle.id,
        occurred=accepted,
        payload={
            "provider": handle.backend,
            "job_id": handle.id,
            "console_url": run_events.console_url(deps, pool, handle.id),
            "dispatch_latency_seconds": round((accepted - due).total_seconds(), 3) if due is not None else None,
            **_placement(started.spec),
        },
    )
    return SubmitOutcome(run.id, SubmitOutcome.SUBMITTED, f"job {handle.id}", handle.id, latency)


# Fields of a job's configuration that say where it runs, shown in its submitted event (never an environment value,
# never a credential; a value a deployment author set is cut short).
_PLACEMENT_FIELDS = ("region", "location", "cluster", "resource_group_name", "project", "workspace", "image")


def _placement(spec: JobSpec | None) -> dict[str, str]:
    if spec is None:
        return {}
    found: dict[str, str] = {}
    for name in _PLACEMENT_FIELDS:
        value = getattr(spec.config, name, None)
        if isinstance(value, tuple | list):
            value = ",".join(str(v) for v in value)
        if isinstance(value, str) and value:
            found[name] = value[:200]
    return found


def refused(deps: Deps, run: FlowRun, pool: WorkPool, reason: str, why: str, *, attempt: str | None = None) -> None:
    """Record that ``run`` was turned away (``paused``, ``limit``, ``quota``, ``not-served``). Before a claim, its key
    is the run's Scheduled state: a run turned away on every tick while it waits is one event per state it waits in."""
    key = attempt or (run.state.id if run.state is not None and run.state.id else "")
    run_events.emit(deps, REFUSED, run, pool, attempt=key, reason=reason, payload={"why": why[:300]})


def give_slot_back(deps: Deps, run: FlowRun, why: str, pool: WorkPool | None = None) -> SubmitOutcome:
    """Give a claimed run over a concurrency limit back to Scheduled (``AwaitingConcurrencySlot``, at its original due
    time: it keeps its place), starting nothing; a run cancelled meanwhile is finished Cancelled."""
    client = deps.orchestrator
    released = client.propose_state(
        run.id,
        StateType.SCHEDULED,
        name=WAITING_STATE,
        message=f"{why}; pushpool will retry",
        state_details=keep_place(run),
    )
    if not released.accepted and released.state is not None and released.state.type is StateType.CANCELLING:
        finish_cancellation(client, run.id, "Cancelled by pushpool before its job was started.")
        return SubmitOutcome(run.id, SubmitOutcome.CANCELLED, why)
    if pool is not None:
        refused(deps, run, pool, "limit", why)
    # Never start a job over the limit; a run left Pending here is recovered by the monitor.
    return SubmitOutcome(run.id, SubmitOutcome.WAITING, why)


def _slow(deps: Deps, since: dt.datetime) -> bool:
    """Whether this submit has taken long enough since ``since`` that the monitor may have acted on the run meanwhile
    (recovered it, past ``pending_timeout``; crashed it, past ``exit_grace``): half the shorter of the two leaves
    room for the clocks and the calls in flight. Only a slow submit pays the reads of the fences below."""
    window = min(deps.settings.pending_timeout_seconds, deps.settings.exit_grace_seconds) / 2
    return (deps.clock.now() - since).total_seconds() > window


def _claimed_from_final(client: PrefectClient, run_id: str, attempt: str) -> bool:
    """Whether this submit's claim landed on a run that had ended meanwhile — and if so, give the run its final
    state back. The run was read Scheduled, but a slow submit (a stalled call) may claim it after another claim's job
    ran and the run ended: Prefect accepts Pending after Crashed or Failed, and a second job would run the flow again.
    One read of the run's states, only for slow submits."""
    try:
        history = sorted(client.read_flow_run_states(run_id), key=lambda s: s.get("timestamp") or "")
    except OrchestratorUnavailableError:
        return False  # cannot tell: go on (the claim was accepted from whatever state Prefect allows)
    ids = [str(s.get("id")) for s in history]
    if attempt not in ids or ids.index(attempt) == 0:
        return False
    before = history[ids.index(attempt) - 1]
    if before.get("type") not in TERMINAL_TYPES:
        return False  # from Scheduled (or Late, AwaitingRetry …): a claim like any other
    client.propose_state(
        run_id,
        StateType(before["type"]),
        name=before.get("name"),
        message=before.get("message") or "pushpool: a stale claim was given back",
        force=True,
    )
    return True


def _claim_lost(client: PrefectClient, run_id: str, attempt: str) -> bool:
    """Whether the run's current claim is no longer this submit's (the run was rescheduled, and maybe claimed again).

    The fence against a submitter that stalled (Prefect's SQLite can stall a call for a minute) past the monitor's
    pending timeout: the monitor found no job, gave the run back to Scheduled, and another claim may have its own job
    by now — a job made late for the old claim would run the flow a second time. A job made before the monitor
    looked is found by it (adopted), never recovered. One read, only for slow submits."""
    try:
        current = client.read_flow_run(run_id)
        return claim_attempt(client, current) != attempt
    except OrchestratorUnavailableError:
        return False  # cannot tell: go on; the monitor's adopt/recover rules still apply


def _moved_on(client: PrefectClient, run_id: str, claim_id: str) -> FlowRun | None:
    """The run, if it moved on from this submit's claim (``claim_id``) while the submit was slow: the monitor recovered
    it (Scheduled), maybe another submitter claimed it again and started its job, or it was cancelled. This submit
    proposed nothing since its claim, so any other current state is someone else's doing and the run is theirs,
    whatever this submit's job failed with: a give-back would start a second job beside a running one (the next claim
    makes its own), a crash would end a run another job serves. None: still this claim's, or cannot tell. One read,
    only for slow submits."""
    if claim_id == run_id:
        return None  # the claim's state id is unknown: nothing to compare with
    try:
        current = client.read_flow_run(run_id)
    except OrchestratorUnavailableError:
        return None  # cannot tell: give back as before; the monitor's adopt/recover rules still apply
    return current if current.state is not None and current.state.id != claim_id else None


def _leave_alone(
    deps: Deps, backend: Backend, spec: JobSpec, current: FlowRun, attempt: str, exc: BackendError
) -> SubmitOutcome:
    """A slow submit whose backend call failed after the run moved on from its claim (``current``: the run now): the
    run is left as it is. A job the cloud made for this attempt after all (accepted, then the answer lost) is stopped,
    unless the run keeps this attempt's key (``ATTEMPT_LABEL``: its next or current claim uses that job)."""
    if current.labels.get(ATTEMPT_LABEL) != attempt:
        found = _made_after_all(backend, spec)
        if found is not None:
            _stop(deps, backend, found, current)
    why = f"the run moved on from this claim while its slow submit failed ({exc.one_line()[:200]}); left as it is"
    log.warning("run %s: %s", current.id, why)
    return SubmitOutcome(current.id, SubmitOutcome.NOT_CLAIMED, why)


def _episode(client: PrefectClient, run: FlowRun, claim_id: str) -> Episode:
    """The attempt this claim belongs to. Only a run that has met a transient backend error (its attempt label) pays
    the one read of its states; any other claim is a new attempt keyed by itself."""
    kept = run.labels.get(ATTEMPT_LABEL)
    if not kept:
        return Episode(claim_id)
    history = sorted(client.read_flow_run_states(run.id), key=lambda s: s.get("timestamp") or "")
    return episode_of(history, claim_id, str(kept))


def _retry_later(
    deps: Deps, run: FlowRun, pool: WorkPool, exc: BackendError, episode: Episode, lead: float
) -> SubmitOutcome:
    """Give the run back after the transient backend error ``exc``, to be claimed again at ``now + backoff`` under
    the same key; or, past the bound, crash it with every attempt's error."""
    client, settings, now = deps.orchestrator, deps.settings, deps.clock.now()
    error = exc.one_line()[:300]
    number = len(episode.given_back) + 1  # this attempt's number, and the give-back it would be
    spent = (now - (episode.first_at or now)).total_seconds()
    if _bound_reached(deps, episode):
        lines = [f"{i}. {_hms(state_time(s))}: {_error_of(s)}" for i, s in enumerate(episode.given_back, 1)]
        lines.append(f"{number}. {_hms(now)}: {error}")
        message = (
            f"Failed to submit flow run to infrastructure ({exc.backend}): still failing after {number} attempts in "
            f"{spent:.0f} s (at most {settings.transient_retries} retries within {settings.transient_retry_seconds:.0f}"
            " s). Attempts:\n" + "\n".join(lines)
        )
        crash_run(client, run.id, message)
        payload = {"error": error, "attempts": number, "seconds_spent": round(spent, 3)}
        run_events.emit(deps, CRASHED, run, pool, attempt=episode.key, reason="backend-error", payload=payload)
        return SubmitOutcome(run.id, SubmitOutcome.CRASHED, f"backend error after {number} attempts: {error}")

    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (number - 1))
    delay = max(delay / 2 + _JITTER.uniform(0, delay / 2), exc.retry_after or 0.0)
    retry_at = now + dt.timedelta(seconds=min(delay, settings.transient_retry_seconds))
    # The job is started ``lead`` before the scheduled time: scheduled for retry_at + lead, it is tried at retry_at.
    scheduled = max(retry_at + dt.timedelta(seconds=lead), due_time(run) or now)
    why = f"pushpool: {error}; retry {number} of {settings.transient_retries} at {_hms(retry_at)}"
    try:
        if run.labels.get(ATTEMPT_LABEL) != episode.key:  # before the give-back: the next claim must find the key
            client.update_flow_run_labels(run.id, {ATTEMPT_LABEL: episode.key})
        released = client.propose_state(
            run.id,
            StateType.SCHEDULED,
            name=BACKOFF_STATE,
            message=why,
            state_details={"scheduled_time": scheduled.isoformat()},
        )
    except OrchestratorUnavailableError:
        # Left Pending: the monitor looks for the job under this claim's key (found: adopted) or recovers the run.
        log.warning("run %s: %s; Prefect unavailable, left Pending for the monitor", run.id, why)
        return SubmitOutcome(run.id, SubmitOutcome.RELEASED, f"{why} (left Pending: Prefect unavailable)")
    if not released.accepted and released.state is not None and released.state.type is StateType.CANCELLING:
        finish_cancellation(client, run.id, "Cancelled by pushpool before its job was started.")
        return SubmitOutcome(run.id, SubmitOutcome.CANCELLED, why)
    log.warning("run %s: %s", run.id, why)
    run_events.emit(
        deps,
        RETRIED,
        run,
        pool,
        attempt=episode.key,
        reason="throttled" if exc.retry_after else "transient",
        sequence=number,
        payload={
            "error": error,
            "retry": number,
            "retries": settings.transient_retries,
            "backoff_seconds": round((retry_at - now).total_seconds(), 3),
            "retry_at": retry_at.isoformat(),
        },
    )
    arm(deps, run.id, retry_at)
    return SubmitOutcome(run.id, SubmitOutcome.RELEASED, why, dispatch_at=retry_at)


def _bound_reached(deps: Deps, episode: Episode) -> bool:
    """Whether a transient failure now ends the episode: ``transient_retries`` give-backs made already, or
    ``transient_retry_seconds`` spent since its first attempt."""
    spent = (deps.clock.now() - (episode.first_at or deps.clock.now())).total_seconds()
    settings = deps.settings
    return len(episode.given_back) >= settings.transient_retries or spent >= settings.transient_retry_seconds


def _made_after_all(backend: Backend, spec: JobSpec) -> JobHandle | None:
    """The attempt's job if the cloud made it although the call failed; None when none is found or cannot be."""
    try:
        return backend.find(spec)
    except BackendError:
        return None


def _hms(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%H:%M:%S UTC") if moment is not None else "?"


def _error_of(state: dict) -> str:
    """The error a give-back's message records (``pushpool: <error>; retry n of N at …``)."""
    message = str(state.get("message") or "")
    return message.removeprefix("pushpool: ").rsplit("; retry ", 1)[0][:300]


def release(deps: Deps, run: FlowRun, why: str) -> SubmitOutcome:
    # Only for Prefect being unavailable. Any other Prefect error after the claim propagates and leaves the run
    # Pending: the monitor's recovery reschedules it, at most max_recoveries times, so a lasting error cannot loop.
    """Give a claimed run back to Scheduled after a transient failure (the monitor recovers it otherwise)."""
    try:
        deps.orchestrator.propose_state(
            run.id, StateType.SCHEDULED, message=f"pushpool: {why}; will retry", state_details=keep_place(run)
        )
    except Exception:  # noqa: BLE001 - Prefect is down: the monitor's Pending recovery repairs the run later
        log.warning("run %s: could not release after %s; the monitor will recover it", run.id, why)
    return SubmitOutcome(run.id, SubmitOutcome.RELEASED, why)


def _stop(deps: Deps, backend: Backend, handle: JobHandle, run: FlowRun) -> None:
    try:
        backend.cancel(handle, grace_seconds=deps.settings.cancel_grace_seconds)
    except BackendError as exc:
        log.warning("run %s: could not stop job %s yet (%s); the monitor will retry", run.id, handle.id, exc.one_line())
