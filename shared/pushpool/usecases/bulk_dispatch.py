"""bulk_dispatch: a page of one pool's due runs claimed together, on Prefect servers with ``bulk_set_state`` (3.6.16+).

The monitor's sweep (a tick, or a pool trigger firing) hands a page of due runs here instead of submitting them one by
one (``monitor.dispatch_due`` picks this path by the server's version; older servers keep one ``set_state`` per run).
One ``POST /flow_runs/bulk_set_state`` proposes Pending to up to 50 runs, and the server orchestrates each of them as
it does a single ``set_state``: every run still gets its own Pending claim and its own ACCEPT/REJECT/ABORT, and only
the accepted ones go on (``submit.proceed``, one per run, in parallel). When their jobs exist and their pids are
recorded, one more bulk request proposes their ``InfrastructurePending`` progress state; its per-run answer is the
re-read after the pid (design rule 3): a run that became Cancelling or Cancelled meanwhile has its job stopped.
A run costs its share of two bulk requests plus its own pid (``PATCH``) instead of three calls.

What each claim keeps from the one-by-one path:

* No run claimed twice, none taken from another claimer: the proposal is never forced, and only runs still Scheduled
  (or Pending: the request's own retry, whose transition id makes the server answer "already made this state
  transition", reported ACCEPT) are proposed to at all. Another claimer's Pending run is ABORTed; a run that ended,
  started or was cancelled since the listing is not touched (not even proposed to, so a finished run is never
  claimed again — Prefect would accept Pending after Completed).
* A refused run is left as it is: NOT_CLAIMED, nothing started, nothing written.
* Limits (pool, queue, managed workspace) are counted once before the claims (only as many runs as there is room for
  are proposed) and again after each request's claims are committed: a batch that then sees ``C`` in-flight runs
  against a limit ``L`` gives back the last ``C - L`` of its own claims of that limit (AwaitingConcurrencySlot, at their
  due time), never more than it made. With one claim this is the one-by-one rule; with many, the batch that counts
  last sees every claim committed before its count (a claimer counts only after its own claims are committed), so
  what it keeps plus what the others kept — at most what it saw of them — stays within ``L`` under any race.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future

from pushpool.errors import OrchestratorUnavailableError, PushpoolError
from pushpool.prefect_api.client import BULK_LIMIT
from pushpool.prefect_api.models import FlowRun, OrchestrationResult, StateType, WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.run_events import run_context
from pushpool.usecases.submit import (
    PROGRESS_STATE,
    Admitted,
    Reads,
    Started,
    SubmitOutcome,
    admit,
    finish,
    give_slot_back,
    proceed,
    refused,
    release,
)

log = logging.getLogger("pushpool.usecases.bulk_dispatch")

Result = tuple[str | None, str | None]  # (outcome, error) per run, as monitor._dispatch_one gives it
CLAIM_FROM = (StateType.SCHEDULED, StateType.PENDING)  # Pending: the request's own retry (see the module docstring)
PROGRESS_FROM = (StateType.PENDING, StateType.CANCELLING, StateType.CANCELLED)


def available(deps: Deps) -> bool:
    """Whether the server claims in bulk (``bulk_set_state``, Prefect 3.6.16+)."""
    return deps.orchestrator.server_dialect().has("bulk_set_state")


def dispatch(
    deps: Deps,
    pool: WorkPool,
    listed: list[tuple[FlowRun, Reads]],
    *,
    full: threading.Event,
    executor: Executor,
    describe: Callable[[Exception], str],
) -> list[Result]:
    """Claim and submit ``listed`` (due runs of ``pool`` with their reads), a bulk claim per 50 runs.

    ``full`` is set when a limit turned runs away; ``describe`` words an error as the monitor reports it.
    """
    client = deps.orchestrator
    results: list[Result] = []
    admitted: list[Admitted] = []
    for run, reads in listed:
        try:
            got = admit(deps, run, pool, reads=reads, count=False)
        except Exception as exc:  # noqa: BLE001 - one run's failure never holds back the pool's other runs
            results.append(_error(run, exc, describe))
            continue
        if isinstance(got, SubmitOutcome):
            results.append((got.outcome, None))
        else:
            admitted.append(got)
    if any(a.limits for a in admitted):
        admitted, turned_away = _within_room(deps, admitted)
        if turned_away:
            full.set()
            results.extend((outcome.outcome, None) for outcome in turned_away)

    chunks: list[list[Future]] = []
    for start in range(0, len(admitted), BULK_LIMIT):
        chunk = admitted[start : start + BULK_LIMIT]
        claimed_at = deps.clock.now()  # no later than the claims: the fence for a slow submit errs on the safe side
        try:
            claims = client.propose_states([a.run.id for a in chunk], StateType.PENDING, from_states=CLAIM_FROM)
        except Exception as exc:  # noqa: BLE001 - nothing started; a run left Pending is recovered by the monitor
            results.extend(_error(a.run, exc, describe) for a in chunk)
            continue
        accepted: list[tuple[Admitted, OrchestrationResult]] = []
        for one in chunk:
            claim = claims.get(one.run.id)
            if claim is None:
                results.append((SubmitOutcome.NOT_CLAIMED, None))  # no longer Scheduled: not proposed to
            elif not claim.accepted:
                results.append((SubmitOutcome.NOT_CLAIMED, None))  # another claimer's, or refused: left as it is
            else:
                accepted.append((one, claim))
        if any(one.limits for one, _ in accepted):
            accepted, given_back = _recount(deps, accepted, describe)
            if given_back:
                full.set()
                results.extend(given_back)
        chunks.append([executor.submit(_proceed, deps, one, claim, claimed_at, describe) for one, claim in accepted])

    for futures in chunks:
        started: list[Started] = []
        for future in futures:
            got = future.result()
            if isinstance(got, Started):
                started.append(got)
            else:
                results.append(got)
        results.extend(_progress(deps, started, describe))
    return results


def _proceed(
    deps: Deps,
    one: Admitted,
    claim: OrchestrationResult,
    claimed_at: dt.datetime,
    describe: Callable[[Exception], str],
) -> Started | Result:
    try:
        with run_context(one.run.id, one.pool.name):
            got = proceed(deps, one, claim, trigger="monitor", limits_counted=True, claimed_at=claimed_at)
    except Exception as exc:  # noqa: BLE001 - reported per run, as monitor._dispatch_one does
        return _error(one.run, exc, describe)
    return got if isinstance(got, Started) else (got.outcome, None)


def _progress(deps: Deps, started: list[Started], describe: Callable[[Exception], str]) -> list[Result]:
    """Propose ``InfrastructurePending`` to the started runs at once; each answer is the run's re-read after its pid."""
    if not started:
        return []
    try:
        answers = deps.orchestrator.propose_states(
            [s.admitted.run.id for s in started], StateType.PENDING, name=PROGRESS_STATE, from_states=PROGRESS_FROM
        )
    except Exception as exc:  # noqa: BLE001 - the jobs exist, their pids recorded: the monitor reconciles them
        why = f"job started; its progress state could not be proposed: {describe(exc)}"
        return [(None, f"run {s.admitted.run.id}: {why}") for s in started]
    found: list[Result] = []
    for one in started:
        try:
            with run_context(one.admitted.run.id, one.admitted.pool.name, one.handle.id):
                found.append((finish(deps, one, answers.get(one.admitted.run.id)).outcome, None))
        except Exception as exc:  # noqa: BLE001 - reported per run
            found.append(_error(one.admitted.run, exc, describe))
    return found


def _key(limit: object) -> tuple[str, str]:
    return type(limit).__name__, limit.describe()  # type: ignore[attr-defined]


def _within_room(deps: Deps, admitted: list[Admitted]) -> tuple[list[Admitted], list[SubmitOutcome]]:
    """The runs there is room for under their limits as counted now (one count per limit), in order; the others
    are turned away WAITING, unclaimed."""
    client = deps.orchestrator
    room: dict[tuple[str, str], int] = {}
    for one in admitted:
        for limit in one.limits:
            if _key(limit) not in room:
                room[_key(limit)] = limit.limit - client.count_flow_runs(limit.in_flight_filter())
    kept: list[Admitted] = []
    turned_away: list[SubmitOutcome] = []
    for one in admitted:
        over = next((limit for limit in one.limits if room[_key(limit)] <= 0), None)
        if over is not None:
            why = f"{over.describe()} concurrency limit reached"
            refused(deps, one.run, one.pool, "limit", why)
            turned_away.append(SubmitOutcome(one.run.id, SubmitOutcome.WAITING, why))
            continue
        for limit in one.limits:
            room[_key(limit)] -= 1
        kept.append(one)
    return kept, turned_away


def _recount(
    deps: Deps, accepted: list[tuple[Admitted, OrchestrationResult]], describe: Callable[[Exception], str]
) -> tuple[list[tuple[Admitted, OrchestrationResult]], list[Result]]:
    """After the claims are committed, count each limit once: over it by ``C - L``, the last ``C - L`` of this batch's
    claims of that limit are given back (their slots), starting nothing."""
    limits = {_key(limit): limit for one, _ in accepted for limit in one.limits}
    try:
        counts = {key: deps.orchestrator.count_flow_runs(limit.in_flight_filter()) for key, limit in limits.items()}
    except OrchestratorUnavailableError:
        why = "Prefect API unavailable while counting runs against the limits"
        return [], [(release(deps, one.run, why).outcome, None) for one, _ in accepted]
    back: dict[str, str] = {}  # run id -> why
    for key, count in counts.items():
        over = count - limits[key].limit
        mine = [one for one, _ in accepted if any(_key(limit) == key for limit in one.limits)]
        over -= sum(1 for one in mine if one.run.id in back)  # given back already for another limit
        for one in reversed(mine):
            if over <= 0:
                break
            if one.run.id not in back:
                back[one.run.id] = f"{limits[key].describe()} concurrency limit reached"
                over -= 1
    kept = [(one, claim) for one, claim in accepted if one.run.id not in back]
    given_back: list[Result] = []
    for one, _ in accepted:
        if one.run.id in back:
            try:
                given_back.append((give_slot_back(deps, one.run, back[one.run.id], one.pool).outcome, None))
            except Exception as exc:  # noqa: BLE001 - left Pending without a job: the monitor recovers it
                given_back.append(_error(one.run, exc, describe))
    return kept, given_back


def _error(run: FlowRun, exc: Exception, describe: Callable[[Exception], str]) -> Result:
    if not isinstance(exc, PushpoolError):
        log.exception("dispatch of run %s failed", run.id)
    return None, f"run {run.id}: {describe(exc)}"
