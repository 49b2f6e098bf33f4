"""Small state-changing helpers shared by the use-cases (crash a run, release it, attach log lines), and the run's
attempt key (the jobs' idempotency key) that submit and the monitor share."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pushpool.clock import Clock
from pushpool.errors import ObjectNotFoundError
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import FlowRun, OrchestrationResult, SetStateStatus, StateType
from pushpool.usecases.punctual import due_time

log = logging.getLogger("pushpool")

MAX_MESSAGE = 4000
# The Scheduled state a run is given back in after a transient backend error (a name of its own: Prefect marks only
# states named "Scheduled" Late, which would drop the message that says why and when it is retried).
BACKOFF_STATE = "AwaitingInfrastructure"
# The attempt key a run keeps across its transient give-backs (see ``Episode``).
ATTEMPT_LABEL = "pushpool.io/attempt"


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
    """The attempt key of the run's current claim (the jobs' idempotency key): the id of the Pending state that
    claimed it — the run's state when it is that claim, else the latest claim in its history (one more read) — or,
    for a run given back after a transient backend error, the key that episode keeps (``Episode``; one read)."""
    kept = run.labels.get(ATTEMPT_LABEL)
    if not kept and run.state is not None and run.state.type is StateType.PENDING and run.state.name == "Pending":
        return run.state.id
    history = sorted(client.read_flow_run_states(run.id), key=lambda s: s.get("timestamp") or "")
    claims = [s for s in history if _is_claim(s)]
    if not claims:
        return None
    return episode_of(history, str(claims[-1]["id"]), str(kept) if kept else None).key


@dataclass(frozen=True)
class Episode:
    """The attempt a claim belongs to: its key and the transient give-backs since that key's claim.

    A submit that meets a transient backend error records its key in the run's ``ATTEMPT_LABEL`` and gives the run
    back (``BACKOFF_STATE``); the next claim keeps that key while nothing but Scheduled states and claims came
    between the key's claim and its own — no job ran, so a job the first submit made after all (a timeout after the
    cloud accepted it) is found, never doubled. Anything else in between (Running, InfrastructurePending, a final
    state: the flow's own retry, a manual retry of a Crashed run) makes the claim a new attempt with its own key.
    """

    key: str
    first_at: dt.datetime | None = None  # when the key's claim was made (the first attempt)
    given_back: list[dict[str, Any]] = field(default_factory=list)  # the BACKOFF_STATE states since, oldest first


def episode_of(history: Sequence[dict[str, Any]], claim_id: str, kept: str | None) -> Episode:
    """The episode of claim ``claim_id`` given the run's ``history`` (oldest first) and its ``ATTEMPT_LABEL``."""
    ids = [str(s.get("id")) for s in history]
    if claim_id not in ids:
        return Episode(claim_id)
    end = ids.index(claim_id)
    start = ids.index(kept) if kept in ids else end
    if start > end or not _is_claim(history[start]) or not all(_in_episode(s) for s in history[start + 1 : end]):
        start = end  # a new attempt
    return Episode(
        ids[start],
        state_time(history[start]),
        [s for s in history[start + 1 : end] if s.get("name") == BACKOFF_STATE],
    )


def _is_claim(state: dict[str, Any]) -> bool:
    return state.get("type") == "PENDING" and state.get("name") == "Pending"


def _in_episode(state: dict[str, Any]) -> bool:
    """Whether ``state`` may come between two claims of one attempt (nothing ran in between)."""
    return state.get("type") == "SCHEDULED" or _is_claim(state)


def state_time(state: dict[str, Any]) -> dt.datetime | None:
    """When a state (as the states API gives it) was made."""
    value = state.get("timestamp")
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
