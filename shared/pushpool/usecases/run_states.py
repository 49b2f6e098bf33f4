"""Small state-changing helpers shared by the use-cases (crash a run, release it, attach log lines)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pushpool.clock import Clock
from pushpool.errors import ObjectNotFoundError
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import FlowRun, OrchestrationResult, SetStateStatus, StateType
from pushpool.usecases.punctual import due_time

log = logging.getLogger("pushpool")

MAX_MESSAGE = 4000


def keep_place(run: FlowRun) -> dict[str, str] | None:
    """State details that give ``run`` back to Scheduled at the time it first became due (None: no time known).

    Prefect stamps a Scheduled state proposed without a time with *now* and hands runs out in order of that time: a
    run given back (a lost claim race, a recovery) would otherwise go behind every run that became due after it.
    """
    due = due_time(run)
    return {"scheduled_time": due.isoformat()} if due is not None else None


def crash_run(client: PrefectClient, run_id: str, message: str) -> OrchestrationResult | None:
    """Propose Crashed (no force). ABORT (already final) and a deleted run are fine: late reports are harmless."""
    try:
        result = client.propose_state(run_id, StateType.CRASHED, message=message[:MAX_MESSAGE])
    except ObjectNotFoundError:
        return None
    if result.status is not SetStateStatus.ACCEPT:
        log.info("crash of run %s not applied (%s: %s)", run_id, result.status.value, result.reason)
    return result


def finish_cancellation(client: PrefectClient, run_id: str, message: str) -> OrchestrationResult | None:
    try:
        return client.propose_state(run_id, StateType.CANCELLED, message=message[:MAX_MESSAGE])
    except ObjectNotFoundError:
        return None


def attach_logs(client: PrefectClient, clock: Clock, run_id: str, title: str, lines: Sequence[str]) -> None:
    """Write a job's last output lines to the run's logs in Prefect (best effort)."""
    if not lines:
        return
    now = clock.now().isoformat()
    records = [
        {
            "name": "pushpool",
            "level": 40,
            "message": f"{title}\n" + "\n".join(lines),
            "timestamp": now,
            "flow_run_id": run_id,
            "task_run_id": None,
        }
    ]
    try:
        client.create_logs(records)
    except Exception as exc:  # noqa: BLE001 - logs are a courtesy; never fail the state change for them
        log.warning("could not write job output to run %s: %s", run_id, type(exc).__name__)


def crash_message(reason: str, lines: Sequence[str], *, keep: int = 15) -> str:
    tail = [line[:300] for line in lines[-keep:]]
    if not tail:
        return reason
    return reason + "\nLast lines of the job's output:\n" + "\n".join(tail)


def claim_attempt(client: PrefectClient, run: FlowRun) -> str | None:
    """The id of the Pending state that claimed the run's current attempt (the jobs' idempotency key): the run's
    state when it is that claim, else the latest claim in its history (one more read)."""
    if run.state is not None and run.state.type is StateType.PENDING and run.state.name == "Pending":
        return run.state.id
    history = sorted(client.read_flow_run_states(run.id), key=lambda s: s.get("timestamp") or "")
    claims = [s for s in history if s.get("type") == "PENDING" and s.get("name") == "Pending"]
    return str(claims[-1]["id"]) if claims else None
