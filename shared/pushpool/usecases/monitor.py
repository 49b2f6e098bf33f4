"""monitor: one tick heartbeats into every push pool it serves, dispatches their due runs and reconciles every
in-flight run with its job.

A tick is stateless and safe to overlap with submits and with another tick: every state change goes through
Prefect's orchestration (the Pending claim, no-force proposals), and backends are idempotent per attempt
(the run plus its claim).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from pushpool.errors import ObjectNotFoundError, PushpoolError, UnsupportedPoolError
from pushpool.prefect_api.client import PAGE_SIZE
from pushpool.prefect_api.models import IN_FLIGHT_STATES, TERMINAL_STATES, Deployment, FlowRun, WorkPool
from pushpool.providers.base import Backend, JobHandle, JobState, JobStatus
from pushpool.usecases import bulk_dispatch
from pushpool.usecases.deps import Deps
from pushpool.usecases.heartbeat import heartbeat
from pushpool.usecases.job_spec import PoolCredentials
from pushpool.usecases.pool_kind import kinds, pool_kind
from pushpool.usecases.punctual import GROUP_RUNS, arm, arm_pool, dispatch_time, lead_seconds, look_ahead_seconds
from pushpool.usecases.reconcile import policy_from, reconcile_run
from pushpool.usecases.submit import Reads, SubmitOutcome, submit_run
from pushpool.usecases.tick_report import TickReport
from pushpool.usecases.unstarted import sweep_unstarted

log = logging.getLogger("pushpool.usecases.monitor")

# Finished runs are checked for still-living jobs for this long after they ended.
ZOMBIE_WINDOW = dt.timedelta(hours=1)
# Pages of due runs (200 each) one tick dispatches at most; the next tick goes on.
MAX_DISPATCH_PAGES = 10
ARMED = "armed"  # a run due within the look-ahead: its trigger is armed for its time


def push_pools(deps: Deps) -> list[WorkPool]:
    """The pools this deployment serves (their types are in ``deps.pool_types``)."""
    return [p for p in deps.orchestrator.filter_work_pools() if deps.serves(p)]


def tick(deps: Deps, *, pools: list[WorkPool] | None = None) -> TickReport:
    """One monitor pass over ``pools`` (every pool this deployment serves by default).

    An error in one pool or one backend is reported and never stops the tick for the others.
    """
    report = TickReport()
    every = deps.orchestrator.filter_work_pools() if pools is None else None
    pools = [p for p in (every if every is not None else pools or []) if deps.serves(p)]
    for kind in kinds(pools):  # a wrapping type's pools it does not serve (managed: over the workspace's pool limit)
        try:
            every = every if every is not None else deps.orchestrator.filter_work_pools()
            pools, notes = kind.served(deps, pools, every)
            report.notes.extend(notes)
        except Exception as exc:
            log.exception("pools of %s could not be read", type(kind).__name__)
            report.errors.append(
                f"{', '.join(sorted({p.type for p in pools if pool_kind(p.type) is kind}))} pools: {_describe(exc)}"
            )
            pools = [p for p in pools if pool_kind(p.type) is not kind]
    report.pools = len(pools)
    report.served = [p.name for p in pools]
    report.errors.extend(heartbeat(deps, pools))  # the pools show Ready in Prefect while the monitor ticks
    dispatch_pools(deps, pools, report)
    if pools:
        try:
            reconcile_runs(deps, pools, report)
        except Exception as exc:
            log.exception("reconciliation failed")
            report.errors.append(f"reconcile: {_describe(exc)}")
        sweep_unstarted(deps, pools, report)  # jobs of failed submits that never started (reports its own errors)
    for kind in kinds(pools):  # e.g. the managed workspace's usage, computed and published
        try:
            kind.after_tick(deps, [p for p in pools if pool_kind(p.type) is kind], every, report)
        except Exception as exc:
            log.exception("the end of the tick for %s failed", type(kind).__name__)
            report.errors.append(
                f"{', '.join(sorted({p.type for p in pools if pool_kind(p.type) is kind}))} pools: {_describe(exc)}"
            )
    return report


def _describe(exc: Exception) -> str:
    return exc.one_line() if isinstance(exc, PushpoolError) else f"unexpected {type(exc).__name__}"


def dispatch_pools(deps: Deps, pools: list[WorkPool], report: TickReport) -> None:
    """Dispatch every pool's due runs, up to ``pool_concurrency`` lanes at once, so that a slow backend or a pool
    whose listing stalls holds back only its own runs. Each pool is a lane of its own, except the managed pools: they
    share one lane, one pool after another, because the workspace's concurrency limit spans them and claimers over a
    limit at the same time all give their slots back (``admission``) — two managed pools dispatched together could
    keep doing so tick after tick, and one at a time always makes progress.
    """
    shared = [p for p in pools if pool_kind(p.type).shares_lane]
    lanes = [[p] for p in pools if not pool_kind(p.type).shares_lane] + ([shared] if shared else [])

    def run_lane(lane: list[WorkPool]) -> TickReport:
        own = TickReport()  # one per lane: merged below, in the pools' order
        for pool in lane:
            try:
                dispatch_due(deps, pool, own)
            except Exception as exc:
                log.exception("dispatch of pool %s failed", pool.name)
                own.errors.append(f"pool {pool.name}: {_describe(exc)}")
        return own

    workers = min(len(lanes), deps.settings.pool_concurrency)
    if workers <= 1:
        results = [run_lane(lane) for lane in lanes]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pushpool-pools") as executor:
            results = list(executor.map(run_lane, lanes))
    for own in results:
        report.dispatched.update(own.dispatched)
        report.errors.extend(own.errors)


def dispatch_due(deps: Deps, pool: WorkPool, report: TickReport, *, arm_ahead: bool = True) -> None:
    """Submit the pool's due runs, as Prefect's ``get_scheduled_flow_runs`` hands them out (limits applied).

    Up to ``dispatch_concurrency`` runs are submitted at once, page after page while pages come back full, so a
    backlog drains in one tick. On a server with bulk claims (Prefect 3.6.16+) a page is claimed 50 runs per request
    and its limits are counted per batch (``bulk_dispatch``). Elsewhere each run is claimed on its own, and in a pool
    with a concurrency limit one at a time: concurrent claimers over a limit all give their slots back (submit.py,
    step 4), and one at a time always makes progress.

    ``arm_ahead``: also arm triggers for the runs due within the look-ahead (a sweep set off by a pool trigger
    leaves that to the ticks).
    """
    if pool.is_paused:
        return
    now = deps.clock.now()
    lead = lead_seconds(deps, pool, deps.backend_for_pool(pool))
    # Runs whose job is due now are dispatched; those due within the look-ahead get a trigger armed for their time.
    before = now + dt.timedelta(seconds=lead + (look_ahead_seconds(deps) if arm_ahead else 0.0))
    full = threading.Event()  # a limit was reached: the rest wait for the next tick
    bulk = bulk_dispatch.available(deps)  # claims a page at once, limits counted per batch: runs go on in parallel
    limited = pool.concurrency_limit is not None or pool_kind(pool.type).shares_lane  # managed: the workspace's
    workers = 1 if limited and not bulk else deps.settings.dispatch_concurrency
    shared = TickReads(deps, pool)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pushpool-dispatch") as executor:
        for _ in range(MAX_DISPATCH_PAGES):
            try:
                listed = deps.orchestrator.get_scheduled_flow_runs(pool.name, scheduled_before=before.isoformat())
            except PushpoolError as exc:
                report.errors.append(f"pool {pool.name}: {exc.one_line()}")
                return
            due, ahead = [], {}
            for run in listed:
                at = dispatch_time(run, lead)
                if at is None or at <= now:
                    due.append(run)
                else:
                    ahead.setdefault(at, []).append(run.id)
            for at, run_ids in ahead.items():
                if len(run_ids) >= GROUP_RUNS and arm_pool(deps, pool.name, at):  # a burst: one trigger sweeps them
                    report.dispatched[ARMED] += len(run_ids)
                    continue
                for run_id in run_ids:  # from the listing alone: the trigger re-reads the run when it fires
                    if arm(deps, run_id, at):
                        report.dispatched[ARMED] += 1
            if bulk:
                results = _dispatch_bulk(deps, pool, due, full, shared, executor)
            else:
                results = list(executor.map(lambda run: _dispatch_one(deps, pool, run, full, shared), due))
            for outcome, error in results:
                if error is not None:
                    report.errors.append(error)
                elif outcome is not None:
                    report.dispatched[outcome] += 1
            if full.is_set() or len(listed) < PAGE_SIZE or (SubmitOutcome.SUBMITTED, None) not in results:
                return


def sweep_pool(deps: Deps, pool_name: str) -> dict[str, Any]:
    """What a pool trigger does when it fires (``punctual.arm_pool``): dispatch the pool's due runs as a tick does.

    Raises:
        UnsupportedPoolError: a pool that no longer exists, or that this deployment does not serve (nothing to do).
    """
    try:
        pool = deps.orchestrator.read_work_pool(pool_name)
    except ObjectNotFoundError:
        raise UnsupportedPoolError(f"work pool {pool_name!r} does not exist") from None
    if not deps.serves(pool):
        raise UnsupportedPoolError(f"work pool {pool_name!r} (type {pool.type!r}) is not served here")
    key = (deps.settings.prefect_api_url, pool_name)
    with _SWEEPING_LOCK:  # two ticks may have armed the same burst: its two messages arrive together
        if key in _SWEEPING:
            return {"work_pool": pool_name, "outcome": "duplicate", "detail": "this pool is being swept here already"}
        _SWEEPING.add(key)
    try:
        report = TickReport()
        dispatch_due(deps, pool, report, arm_ahead=False)
    finally:
        with _SWEEPING_LOCK:
            _SWEEPING.discard(key)
    return {
        "work_pool": pool_name,
        "outcome": "swept",
        "dispatched": dict(report.dispatched),
        "errors": report.errors[:20],
    }


# The pools being swept in this process: a second sweep of one at the same time would only race the first's claims.
_SWEEPING: set[tuple[str, str]] = set()
_SWEEPING_LOCK = threading.Lock()


class TickReads:
    """The reads a tick's dispatch of one pool shares between its runs: the pool's queues (one call) and each
        deployment (one call each, on first use). A listed run then costs only its claim, its pid and its progress state
    (with bulk claims, its pid and a share of the two bulk requests: ``bulk_dispatch``).

        Pause flags and limits are as fresh as the tick (the claim is what decides: it is proposed to Prefect itself).
    """

    def __init__(self, deps: Deps, pool: WorkPool) -> None:
        self.deps, self.pool = deps, pool
        self._lock = threading.Lock()
        self._queues: Future | None = None
        self._deployments: dict[str, Future] = {}

    def for_run(self, run: FlowRun) -> Reads:
        with self._lock:
            if self._queues is None:
                self._queues = _done(self.deps.orchestrator.read_work_queues, self.pool.name)
            deployment = None
            if run.deployment_id:
                if run.deployment_id not in self._deployments:
                    self._deployments[run.deployment_id] = _done(
                        self.deps.orchestrator.read_deployment, run.deployment_id
                    )
                deployment = self._deployments[run.deployment_id]
        queues = {q.id: q for q in self._queues.result()}
        return Reads(queue=_resolved(queues.get(run.work_queue_id or "")), deployment=deployment)


def _done(fn: Callable[..., Any], *args: Any) -> Future:
    """A finished future of ``fn(*args)`` (its result or its exception), as ``Reads`` expects."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the run that reads it, as Reads' own futures do
        future.set_exception(exc)
    return future


def _resolved(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _dispatch_bulk(
    deps: Deps, pool: WorkPool, due: list[FlowRun], full: threading.Event, shared: TickReads, executor: Executor
) -> list[tuple[str | None, str | None]]:
    """(outcome, error) per run of ``due``, claimed together (``bulk_dispatch``) with the tick's shared reads."""
    listed: list[tuple[FlowRun, Reads]] = []
    errors: list[tuple[str | None, str | None]] = []
    for run in due:
        try:
            listed.append(_with_reads(pool, run, shared))
        except Exception as exc:  # noqa: BLE001 - e.g. the queues could not be read: the run waits for the next tick
            errors.append((None, f"run {run.id}: {_describe(exc)}"))
    return errors + bulk_dispatch.dispatch(deps, pool, listed, full=full, executor=executor, describe=_describe)


def _with_reads(pool: WorkPool, run: FlowRun, shared: TickReads) -> tuple[FlowRun, Reads]:
    """The listed run with its pool and queue names filled in (the listing gives neither), and its reads."""
    reads = shared.for_run(run)
    if reads.queue is not None and reads.queue.result() is not None:
        run = run.model_copy(update={"work_pool_name": pool.name, "work_queue_name": reads.queue.result().name})
    return run, reads


def _dispatch_one(
    deps: Deps, pool: WorkPool, run: FlowRun, full: threading.Event, shared: TickReads
) -> tuple[str | None, str | None]:
    """(outcome, error) of submitting one listed run; (None, None) when skipped because a limit was reached.

    The listed run is used as it is (its state's type, name and id are in the listing; its pool is this one): no read
    of its own. The claim is what decides whether it is still Scheduled.
    """
    if full.is_set():
        return None, None
    try:
        run, reads = _with_reads(pool, run, shared)
        outcome = submit_run(deps, run, pool, trigger="monitor", reads=reads)
    except Exception as exc:  # one run's failure, expected or not, never holds back the pool's other runs
        if not isinstance(exc, PushpoolError):
            log.exception("dispatch of run %s failed", run.id)
        return None, f"run {run.id}: {_describe(exc)}"
    if outcome.outcome == SubmitOutcome.WAITING:
        full.set()
    return outcome.outcome, None


def reconcile_runs(deps: Deps, pools: list[WorkPool], report: TickReport) -> None:
    """Reconcile every in-flight run of ``pools``, and stop jobs that outlive their (recently ended) runs."""
    client, now = deps.orchestrator, deps.clock.now()
    by_name = {p.name: p for p in pools}
    names = list(by_name)
    runs = list(
        client.filter_flow_runs(
            {
                "flow_runs": {"state": {"type": {"any_": [s.value for s in IN_FLIGHT_STATES]}}},
                "work_pools": {"name": {"any_": names}},
            }
        )
    )
    report.in_flight = dict.fromkeys(names, 0)  # the metrics' in-flight runs per pool (usecases/metrics.py)
    for run in runs:
        if run.work_pool_name in report.in_flight:
            report.in_flight[run.work_pool_name] += 1
    ended = client.filter_flow_runs(
        {
            "flow_runs": {
                "state": {"type": {"any_": [s.value for s in TERMINAL_STATES]}},
                "end_time": {"after_": (now - ZOMBIE_WINDOW).isoformat()},
            },
            "work_pools": {"name": {"any_": names}},
        }
    )
    runs += [r for r in ended if r.infrastructure_pid]
    policy = policy_from(deps)
    deployments: dict[str, Deployment | None] = {}

    # Every call about a job is signed with its pool's credentials (rendered once per pool): a pool whose credentials
    # cannot be rendered now has its runs left alone this tick (asked with other credentials, a live job would read
    # as missing). Status is batched per backend; the backend groups the handles by their credentials.
    credentials = PoolCredentials(deps.settings, client)
    by_backend: dict[str, tuple[Backend, list[tuple[FlowRun, JobHandle | None]]]] = {}
    for run in runs:
        pool = by_name.get(run.work_pool_name or "")
        if pool is None:
            continue
        try:
            backend = deps.backend_for_pool(pool)
            handle = credentials.handle(backend.name, pool, run.infrastructure_pid) if run.infrastructure_pid else None
        except PushpoolError as exc:
            report.errors.append(f"run {run.id}: {exc.one_line()}")
            continue
        by_backend.setdefault(backend.name, (backend, []))[1].append((run, handle))
    for backend_name, (backend, backend_runs) in by_backend.items():
        handles = [handle for _, handle in backend_runs if handle is not None]
        try:
            statuses: dict[str, JobStatus] = backend.status(handles) if handles else {}
        except Exception as exc:  # the runs with a job wait for the next tick; those without one go on
            log.exception("status of %s jobs failed", backend_name)
            report.errors.append(f"backend {backend_name}: {_describe(exc)}")
            statuses = {}
        for run, handle in backend_runs:
            try:
                pool = by_name[run.work_pool_name or ""]
                status = None  # no pid: judged by its state alone
                if handle is not None:  # a job no status came back for (a failed call) is unknown, never missing
                    status = statuses.get(handle.id) or JobStatus(JobState.UNKNOWN, reason="no status")
                action = reconcile_run(
                    deps, backend, pool, run, status, now=now, policy=policy, cache=deployments, handle=handle
                )
                report.reconciled[action] += 1
            except Exception as exc:
                if not isinstance(exc, PushpoolError):
                    log.exception("reconciling run %s failed", run.id)
                report.errors.append(f"run {run.id}: {_describe(exc)}")
