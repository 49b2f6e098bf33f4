"""``FakePrefect``: an in-memory stand-in for :class:`pushpool.prefect_api.client.PrefectClient`.

Same method names, signatures, return types and errors as the real client, for every method the use-cases call, so
use-case tests run in milliseconds. Every rule modelled here was observed on a real Prefect 3.8.8 server and is checked
against one by ``tests/contract/test_orchestration_contract.py`` (the same suite runs against both).

Orchestration of ``set_state`` (checked in this order; ``force=True`` skips 1–5):

1. a proposal whose ``state_details.transition_id`` equals the current state's → REJECT, current state
   (``PreventDuplicateTransitions``; :meth:`FakePrefect.propose_state` then reports ACCEPT, as the real client does);
2. current CANCELLING, proposal anything but CANCELLED → REJECT "Cannot transition flows that are cancelling to a
   state other than Cancelled." — also a PENDING claim: the real server REJECTs it here before the Pending rule;
3. current terminal (COMPLETED, FAILED, CANCELLED, CRASHED), proposal CRASHED, CANCELLING or PAUSED → ABORT
   "Run is already in terminal state X.";
4. proposal PENDING while PENDING, RUNNING or CANCELLED → ABORT "This run is in a X state and cannot transition to a
   PENDING state.", except Pending → Pending under a different name that is not "Pending" (InfrastructurePending);
   a COMPLETED, FAILED or CRASHED run *can* be claimed again;
5. proposal PAUSED unless RUNNING → REJECT; PAUSED → PENDING → REJECT;
6. (also with force) Scheduled → CANCELLING with no ``infrastructure_pid`` → a new Cancelled state is written (no
   message, no transition id) and the answer is REJECT "Scheduled flow run has no infrastructure to terminate.";
7. otherwise ACCEPT: a new state with a fresh id and the clock's timestamp; the first RUNNING sets ``start_time``,
   every RUNNING counts in ``run_count``; a terminal state sets ``end_time`` (and ``start_time`` if never set);
   a non-terminal state clears ``end_time``; SCHEDULED sets ``next_scheduled_start_time``.

Other server behaviour kept: a run whose queue was defaulted (neither the run nor its deployment named one) shows
the pool's default queue when read, but the ``flow_runs.work_queue_name`` filter does not match it (the server's column
is NULL; ``work_pool_queues.name`` does); ``get_scheduled_flow_runs`` counts PENDING and RUNNING runs (not CANCELLING)
against pool and queue limits, orders by queue priority then next scheduled start time, and lists abridged runs (of
their state only its type, name and id; no pool name; the queue name only if stored); deleting a deployment deletes
its Scheduled runs except those AwaitingConcurrencySlot.

``propose_states`` is ``POST /flow_runs/bulk_set_state`` (3.6.16+; refused with the server's version below it, as
``server_version`` says): the runs named whose state's type is listed are selected, then each is orchestrated as one
``set_state`` (the rules above); runs not selected are untouched and absent from the answer.

Not modelled (a test that needs them must use the real server): deployment concurrency limits and WAIT, events,
flows other than by id, filters other than those in ``_FILTER_SCHEMA`` (they raise, as an unknown key does).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pushpool.clock import Clock, FixedClock, new_id
from pushpool.errors import ObjectNotFoundError, OrchestratorAuthError, OrchestratorError, OrchestratorUnavailableError
from pushpool.prefect_api.client import BULK_LIMIT, PAGE_SIZE
from pushpool.prefect_api.dialect import ServerDialect
from pushpool.prefect_api.models import (
    TERMINAL_STATES,
    BlockDocument,
    Deployment,
    Flow,
    FlowRun,
    OrchestrationResult,
    SetStateStatus,
    State,
    StateType,
    WorkPool,
    WorkQueue,
)

# What a run in these states counts against pool and queue limits in get_scheduled_flow_runs (CANCELLING does not).
LIMIT_COUNTED = frozenset({StateType.PENDING, StateType.RUNNING})
AWAITING_SLOT = "AwaitingConcurrencySlot"
MASK = "********"

# The filter bodies the fake understands; a leaf names how its value is checked. Anything else raises (HTTP 422).
_FILTER_SCHEMA: dict[str, Any] = {
    "flow_runs": {
        "id": {"any_": "strings"},
        "state": {"type": {"any_": "state_types"}, "name": {"any_": "strings"}},
        "work_queue_name": {"any_": "strings"},
        "deployment_id": {"any_": "strings"},
        "end_time": {"after_": "datetime", "before_": "datetime"},
        "expected_start_time": {"after_": "datetime", "before_": "datetime"},
    },
    "work_pools": {"name": {"any_": "strings"}},
    "work_pool_queues": {"name": {"any_": "strings"}},
}
_SORTS = ("ID_DESC", "START_TIME_DESC")
_DEPLOYMENT_FILTER_SCHEMA: dict[str, Any] = {
    "deployments": {"id": {"any_": "strings"}, "paused": {"eq_": "bool"}},
    "work_pools": {"name": {"any_": "strings"}},
}


def _invalid(what: str, why: str) -> OrchestratorError:
    return OrchestratorError(f"{what} failed with HTTP 422: Invalid request received. ({why})", status_code=422)


def _parse_time(value: Any) -> dt.datetime:
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _pages(total: int, limit: int | None) -> int:
    """The requests PrefectClient.filter_flow_runs makes to read ``total`` matching runs (its paging loop)."""
    requests = seen = 0
    while True:
        page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - seen)
        if page_size <= 0:
            return requests
        requests += 1
        got = min(page_size, total - seen)
        seen += got
        if got < page_size:
            return requests


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Run:
    id: str
    name: str
    flow_id: str | None
    deployment_id: str | None
    pool: str
    queue: str  # the queue a read shows
    queue_column: str | None  # what the server stores: None when the queue was defaulted
    state: State
    expected_start_time: dt.datetime
    next_scheduled_start_time: dt.datetime | None
    created: dt.datetime
    job_variables: dict[str, Any] = field(default_factory=dict)
    infrastructure_pid: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    run_count: int = 0
    empirical_policy: dict[str, Any] = field(default_factory=dict)
    history: list[State] = field(default_factory=list)

    def model(self, pools: dict[str, WorkPool], queues: dict[tuple[str, str], WorkQueue]) -> FlowRun:
        queue = queues.get((self.pool, self.queue))
        return FlowRun(
            id=self.id,
            name=self.name,
            flow_id=self.flow_id,
            deployment_id=self.deployment_id,
            work_pool_name=self.pool,
            work_queue_name=self.queue,
            work_queue_id=queue.id if queue else None,
            state=self.state.model_copy(deep=True),
            job_variables=copy.deepcopy(self.job_variables),
            infrastructure_pid=self.infrastructure_pid,
            expected_start_time=self.expected_start_time,
            next_scheduled_start_time=self.next_scheduled_start_time,
            start_time=self.start_time,
            end_time=self.end_time,
            created=self.created,
            labels=copy.deepcopy(self.labels),
            tags=list(self.tags),
            run_count=self.run_count,
            empirical_policy=copy.deepcopy(self.empirical_policy),
        )

    def abridged(self, queues: dict[tuple[str, str], WorkQueue]) -> FlowRun:
        """A run as get_scheduled_flow_runs lists it: only its state's type, name and id, no pool name, only the stored
        queue column."""
        full = self.model({}, queues)
        state = full.state and State(id=full.state.id, type=full.state.type, name=full.state.name)
        return full.model_copy(update={"state": state, "work_pool_name": None, "work_queue_name": self.queue_column})


@dataclass
class _Deployment:
    id: str
    name: str
    flow_id: str
    pool: str
    queue_column: str | None
    job_variables: dict[str, Any]
    updated: dt.datetime
    paused: bool = False
    schedules: list[dict[str, Any]] = field(default_factory=list)


class FakePrefect:
    """An in-memory Prefect API behind the :class:`PrefectClient` interface (thread-safe: one lock, like the server's
    row lock, serialises every call).

    Args:
        clock: gives state timestamps and "now" (a :class:`FixedClock` by default: time moves only when told to).
        api_url: reported as ``api_url``, like the real client's.
    """

    def __init__(self, clock: Clock | None = None, *, api_url: str = "http://fake-prefect/api") -> None:
        self.api_url = api_url
        self.clock = clock or FixedClock()
        self.calls = 0  # HTTP requests the real client would have made
        self.calls_by_method: Counter[str] = Counter()  # the same, per client method
        self.closed = False
        self.pools: dict[str, WorkPool] = {}
        self.queues: dict[tuple[str, str], WorkQueue] = {}
        self.deployments: dict[str, _Deployment] = {}
        self.flows: dict[str, Flow] = {}
        self.runs: dict[str, _Run] = {}
        self.variables: dict[str, Any] = {}
        self.logs: list[dict[str, Any]] = []
        self.block_types: dict[str, dict[str, Any]] = {}  # slug -> {"id", "schema_id", "secret_fields"}
        self.blocks: dict[str, dict[str, Any]] = {}  # id -> {"name", "data", "block_type_id", "block_schema_id"}
        self.automations: dict[str, dict[str, Any]] = {}
        self.emitted: list[dict[str, Any]] = []  # batches posted to /events, flattened
        self.server_version = "3.8.8"
        self.workers: dict[tuple[str, str], int] = {}  # (pool, worker name) -> heartbeat interval
        self._lock = threading.RLock()
        self._faults: dict[str, list[Exception]] = {}
        self._lost_answers = 0
        self.add_block_type("webhook", secret_fields=("url", "headers"))
        self.add_block_type("secret", secret_fields=("value",))

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _call(self, method: str, requests: int = 1) -> None:
        if self.closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        self.calls += requests
        self.calls_by_method[method] += requests
        queued = self._faults.get(method)
        if queued:
            raise queued.pop(0)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakePrefect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> dt.datetime:
        return self.clock.now()

    def _run(self, run_id: str, what: str) -> _Run:
        run = self.runs.get(str(run_id))
        if run is None:
            raise ObjectNotFoundError(f"not found: {what}", status_code=404)
        return run

    def _pool(self, name: str, what: str) -> WorkPool:
        pool = self.pools.get(name)
        if pool is None:
            raise ObjectNotFoundError(f"not found: {what}", status_code=404)
        return pool

    # -- health ---------------------------------------------------------------------------------------------------

    def check(self) -> None:
        with self._lock:
            self._call("check", 2)

    # -- flow runs ------------------------------------------------------------------------------------------------

    def read_flow_run(self, run_id: str) -> FlowRun:
        with self._lock:
            self._call("read_flow_run")
            return self._run(run_id, f"GET /flow_runs/{run_id}").model(self.pools, self.queues)

    def filter_flow_runs(self, body: dict[str, Any], *, limit: int | None = None) -> Iterator[FlowRun]:
        """All runs matching ``body`` (a ``/flow_runs/filter`` body), one counted request per page of 200."""
        with self._lock:
            self._call("filter_flow_runs", 0)
            self._check_filter(body, "POST /flow_runs/filter", sortable=True)
            found = self._select(body)
            found = self._sort(found, body.get("sort") or "ID_DESC")
            if limit is not None:
                found = found[:limit]
            self.calls += _pages(len(found), limit)
            models = [r.model(self.pools, self.queues) for r in found]
        yield from models

    def count_flow_runs(self, body: dict[str, Any]) -> int:
        with self._lock:
            self._call("count_flow_runs")
            self._check_filter(body, "POST /flow_runs/count", sortable=False)
            return len(self._select(body))

    def _check_filter(self, body: Any, what: str, *, sortable: bool, schema: dict[str, Any] = _FILTER_SCHEMA) -> None:
        if not isinstance(body, dict):
            raise _invalid(what, "the body must be an object")
        for key, value in body.items():
            if key == "sort" and sortable:
                if value not in _SORTS:
                    raise _invalid(what, f"sort {value!r} is unknown or not modelled by FakePrefect")
                continue
            if key not in schema:
                raise _invalid(what, f"filter key {key!r} is unknown or not modelled by FakePrefect")
            self._check_level(value, schema[key], key, what)

    def _check_level(self, value: Any, schema: Any, path: str, what: str) -> None:
        if isinstance(schema, dict):
            if value is None:
                return
            if not isinstance(value, dict):
                raise _invalid(what, f"{path} must be an object")
            for key, inner in value.items():
                if key not in schema:
                    raise _invalid(what, f"filter key {path}.{key} is unknown or not modelled by FakePrefect")
                self._check_level(inner, schema[key], f"{path}.{key}", what)
            return
        if value is None:
            return
        if schema in ("strings", "state_types"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _invalid(what, f"{path} must be a list of strings")
            if schema == "state_types" and any(v not in StateType.__members__ for v in value):
                raise _invalid(what, f"{path}: unknown state type in {value!r}")
        elif schema == "bool":
            if not isinstance(value, bool):
                raise _invalid(what, f"{path} must be a boolean, got {value!r}")
        elif schema == "datetime":
            try:
                _parse_time(value)
            except (TypeError, ValueError):
                raise _invalid(what, f"{path} must be a date-time, got {value!r}") from None

    def _select(self, body: dict[str, Any]) -> list[_Run]:
        runs_filter = body.get("flow_runs") or {}
        pools_filter = body.get("work_pools") or {}
        queues_filter = body.get("work_pool_queues") or {}

        def any_of(spec: dict[str, Any] | None, value: Any) -> bool:
            choices = (spec or {}).get("any_")
            return choices is None or value in choices

        def keep(run: _Run) -> bool:
            state = runs_filter.get("state") or {}
            if not any_of(runs_filter.get("id"), run.id):
                return False
            if not any_of(state.get("type"), run.state.type.value):
                return False
            if not any_of(state.get("name"), run.state.name):
                return False
            if not any_of(runs_filter.get("deployment_id"), run.deployment_id):
                return False
            expected = runs_filter.get("expected_start_time") or {}
            if expected.get("after_") is not None and run.expected_start_time < _parse_time(expected["after_"]):
                return False
            if expected.get("before_") is not None and run.expected_start_time > _parse_time(expected["before_"]):
                return False
            queue_names = (runs_filter.get("work_queue_name") or {}).get("any_")
            if queue_names is not None and run.queue_column not in queue_names:
                return False
            end = runs_filter.get("end_time") or {}
            if end.get("after_") is not None and (run.end_time is None or run.end_time < _parse_time(end["after_"])):
                return False
            if end.get("before_") is not None and (run.end_time is None or run.end_time > _parse_time(end["before_"])):
                return False
            if not any_of(pools_filter.get("name"), run.pool):
                return False
            return any_of(queues_filter.get("name"), run.queue)

        return [run for run in self.runs.values() if keep(run)]

    @staticmethod
    def _sort(runs: list[_Run], sort: str) -> list[_Run]:
        if sort == "START_TIME_DESC":
            return sorted(runs, key=lambda r: r.start_time or r.expected_start_time, reverse=True)
        return sorted(runs, key=lambda r: r.id, reverse=True)

    def propose_state(
        self,
        run_id: str,
        state_type: StateType,
        *,
        name: str | None = None,
        message: str | None = None,
        force: bool = False,
        state_details: dict[str, Any] | None = None,
        max_wait_seconds: float = 0.0,
    ) -> OrchestrationResult:
        """Propose a state as the real client does: a fresh transition id per proposal, and a REJECT that carries
        that same transition id (a retried request the server had already applied) reported as ACCEPT."""
        transition_id = new_id()
        details = {**(state_details or {}), "transition_id": transition_id}
        with self._lock:
            self._call("propose_state")
            result = self._set_state(run_id, state_type, name=name, message=message, details=details, force=force)
            if self._lost_answers:  # the answer was lost: the client sends the same body again
                self._lost_answers -= 1
                self._call("propose_state")
                result = self._set_state(run_id, state_type, name=name, message=message, details=details, force=force)
        if (
            result.status is SetStateStatus.REJECT
            and result.state is not None
            and result.state.state_details.get("transition_id") == transition_id
        ):
            return result.model_copy(update={"status": SetStateStatus.ACCEPT})
        return result

    def _set_state(
        self,
        run_id: str,
        state_type: StateType,
        *,
        name: str | None,
        message: str | None,
        details: dict[str, Any],
        force: bool,
    ) -> OrchestrationResult:
        """``POST /flow_runs/{id}/set_state``: the server's orchestration, as the module docstring lists it."""
        run = self._run(run_id, f"POST /flow_runs/{run_id}/set_state")
        current = run.state
        proposed_name = name or state_type.value.title()
        if not force:
            refusal = self._refusal(run, state_type, proposed_name, details)
            if refusal is not None:
                status, reason = refusal
                return self._answer(status, current, reason)
        if state_type is StateType.CANCELLING and current.type is StateType.SCHEDULED and not run.infrastructure_pid:
            cancelled = self._write_state(run, StateType.CANCELLED, "Cancelled", None, {})
            return self._answer(
                SetStateStatus.REJECT, cancelled, "Scheduled flow run has no infrastructure to terminate."
            )
        return self._answer(
            SetStateStatus.ACCEPT, self._write_state(run, state_type, proposed_name, message, details), None
        )

    @staticmethod
    def _refusal(
        run: _Run, proposed: StateType, proposed_name: str, details: dict[str, Any]
    ) -> tuple[SetStateStatus, str] | None:
        current = run.state
        transition_id = details.get("transition_id")
        if transition_id is not None and current.state_details.get("transition_id") == transition_id:
            return SetStateStatus.REJECT, "This run has already made this state transition."
        if current.type is StateType.CANCELLING and proposed is not StateType.CANCELLED:
            return SetStateStatus.REJECT, "Cannot transition flows that are cancelling to a state other than Cancelled."
        if current.type in TERMINAL_STATES and proposed in (
            StateType.CRASHED,
            StateType.CANCELLING,
            StateType.PAUSED,
        ):
            return SetStateStatus.ABORT, f"Run is already in terminal state {current.type.value}."
        if proposed is StateType.PENDING and current.type in (
            StateType.PENDING,
            StateType.RUNNING,
            StateType.CANCELLED,
        ):
            renamed = current.type is StateType.PENDING and proposed_name not in (current.name, "Pending")
            if not renamed:
                return (
                    SetStateStatus.ABORT,
                    f"This run is in a {current.type.value} state and cannot transition to a PENDING state.",
                )
        if proposed is StateType.PAUSED and current.type is not StateType.RUNNING:
            return SetStateStatus.REJECT, "Cannot pause flows that are not currently running."
        if current.type is StateType.PAUSED and proposed is StateType.PENDING:
            return (
                SetStateStatus.REJECT,
                "This run cannot transition to the StateType.PENDING state from the StateType.PAUSED state.",
            )
        return None

    def _write_state(
        self, run: _Run, state_type: StateType, name: str, message: str | None, details: dict[str, Any]
    ) -> State:
        now = self._now()
        state_details: dict[str, Any] = {"flow_run_id": run.id, "transition_id": None, **details}
        if state_type is StateType.SCHEDULED:
            scheduled = _parse_time(state_details.get("scheduled_time") or now)
            state_details["scheduled_time"] = _stamp(scheduled)
            run.next_scheduled_start_time = scheduled
        else:
            state_details.setdefault("scheduled_time", None)
            run.next_scheduled_start_time = None
        state = State(
            id=str(uuid.uuid4()),
            type=state_type,
            name=name,
            message=message,
            timestamp=now,
            state_details=state_details,
        )
        if state_type is StateType.RUNNING:
            run.run_count += 1
            run.start_time = run.start_time or now
        if state_type in TERMINAL_STATES:
            run.end_time = now
            run.start_time = run.start_time or now
        else:
            run.end_time = None
        run.state = state
        run.history.append(state)
        return state

    @staticmethod
    def _answer(status: SetStateStatus, state: State, reason: str | None) -> OrchestrationResult:
        details: dict[str, Any] = {"type": f"{status.value.lower()}_details"}
        if reason is not None:
            details["reason"] = reason
        return OrchestrationResult(status=status, state=state.model_copy(deep=True), details=details)

    def propose_states(
        self,
        run_ids: list[str],
        state_type: StateType,
        *,
        name: str | None = None,
        message: str | None = None,
        from_states: tuple[StateType, ...],
    ) -> dict[str, OrchestrationResult]:
        """``POST /flow_runs/bulk_set_state`` (3.6.16+), as the real server does it: the runs of ``run_ids`` whose
        state's type is in ``from_states`` are selected first, then each gets ``set_state``'s orchestration on its own
        (one counted request per 50 runs, one transition id per request); the others are untouched and not answered."""
        self.server_dialect().require("bulk_set_state")
        found: dict[str, OrchestrationResult] = {}
        for start in range(0, len(run_ids), BULK_LIMIT):
            chunk = [str(run_id) for run_id in run_ids[start : start + BULK_LIMIT]]
            transition_id = new_id()
            details = {"transition_id": transition_id}
            body = {"flow_runs": {"id": {"any_": chunk}, "state": {"type": {"any_": [s.value for s in from_states]}}}}
            with self._lock:
                attempts = 1
                self._call("propose_states")
                if self._lost_answers:  # the answer was lost: the client sends the same body again
                    self._lost_answers -= 1
                    attempts = 2
                    self._call("propose_states")
                for _ in range(attempts):
                    answers = {
                        run.id: self._set_state(
                            run.id, state_type, name=name, message=message, details=dict(details), force=False
                        )
                        for run in self._sort(self._select(body), "ID_DESC")[: len(chunk)]
                    }
            for run_id, result in answers.items():
                if (
                    result.status is SetStateStatus.REJECT
                    and result.state is not None
                    and result.state.state_details.get("transition_id") == transition_id
                ):
                    result = result.model_copy(update={"status": SetStateStatus.ACCEPT})
                found[run_id] = result
        return found

    def set_infrastructure_pid(self, run_id: str, pid: str) -> None:
        with self._lock:
            self._call("set_infrastructure_pid")
            self._run(run_id, f"PATCH /flow_runs/{run_id}").infrastructure_pid = pid

    def server_dialect(self) -> ServerDialect:
        """The fake speaks the pinned server's dialect (``server_version``, settable)."""
        return ServerDialect.of(self.server_version)

    def set_flow_run_tags(self, run_id: str, tags: list[str]) -> None:
        with self._lock:
            self._call("set_flow_run_tags")
            self._run(run_id, f"PATCH /flow_runs/{run_id}").tags = list(tags)

    def update_flow_run_labels(self, run_id: str, labels: dict[str, Any]) -> None:
        with self._lock:
            self._call("update_flow_run_labels")
            self._run(run_id, f"PATCH /flow_runs/{run_id}/labels").labels.update(copy.deepcopy(labels))

    def read_flow_run_states(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._call("read_flow_run_states")
            return self.state_history(run_id)

    def create_logs(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with self._lock:
            self._call("create_logs")
            self.logs.extend(copy.deepcopy(records))

    def read_logs(self, run_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            records = sorted(
                (copy.deepcopy(r) for r in self.logs if r.get("flow_run_id") == run_id),
                key=lambda r: str(r.get("timestamp")),
            )
            self._call("read_logs", len(records) // PAGE_SIZE + 1)
            return records if limit is None else records[-limit:] if limit > 0 else []

    # -- deployments, flows, variables ------------------------------------------------------------------------------

    def read_deployment(self, deployment_id: str) -> Deployment:
        with self._lock:
            self._call("read_deployment")
            dep = self.deployments.get(str(deployment_id))
            if dep is None:
                raise ObjectNotFoundError(f"not found: GET /deployments/{deployment_id}", status_code=404)
            return self._deployment_model(dep)

    def _deployment_model(self, dep: _Deployment) -> Deployment:
        pool = self.pools.get(dep.pool)
        default_queue = self._default_queue_name(pool) if pool else None
        return Deployment(
            id=dep.id,
            name=dep.name,
            flow_id=dep.flow_id,
            job_variables=copy.deepcopy(dep.job_variables),
            work_pool_name=dep.pool,
            work_queue_name=dep.queue_column or default_queue,
            updated=dep.updated,
            paused=dep.paused,
            schedules=copy.deepcopy(dep.schedules),
        )

    def filter_deployments(self, body: dict[str, Any]) -> list[Deployment]:
        """Deployments matching ``body`` (``deployments.id.any_``, ``deployments.paused.eq_`` and
        ``work_pools.name.any_`` are modelled), one counted request per page of 200."""
        with self._lock:
            self._call("filter_deployments", 0)
            self._check_filter(body, "POST /deployments/filter", sortable=False, schema=_DEPLOYMENT_FILTER_SCHEMA)
            spec = body.get("deployments") or {}
            ids = (spec.get("id") or {}).get("any_")
            paused = (spec.get("paused") or {}).get("eq_")
            pools = ((body.get("work_pools") or {}).get("name") or {}).get("any_")
            found = [
                d
                for d in self.deployments.values()
                if (ids is None or d.id in ids)
                and (paused is None or d.paused == paused)
                and (pools is None or d.pool in pools)
            ]
            self.calls += _pages(len(found), None)
            return [self._deployment_model(d) for d in sorted(found, key=lambda d: d.name)]

    def create_flow(self, name: str) -> Flow:
        with self._lock:
            self._call("create_flow")
            found = next((f for f in self.flows.values() if f.name == name), None)
            if found is None:
                found = Flow(id=str(uuid.uuid4()), name=name)
                self.flows[found.id] = found
            return found.model_copy()

    def create_deployment(self, body: dict[str, Any]) -> Deployment:
        """Only ``name``, ``flow_id``, ``work_pool_name``, ``work_queue_name``, ``job_variables``, ``paused`` and
        ``schedules`` are kept; the server's upsert by flow and name is modelled."""
        with self._lock:
            self._call("create_deployment")
            pool = body.get("work_pool_name")
            if pool not in self.pools:
                raise ObjectNotFoundError(f"not found: work pool {pool!r}", status_code=404)
            if body.get("flow_id") not in self.flows:
                raise ObjectNotFoundError(f"not found: flow {body.get('flow_id')!r}", status_code=404)
            existing = next(
                (d for d in self.deployments.values() if d.flow_id == body["flow_id"] and d.name == body.get("name")),
                None,
            )
            dep = _Deployment(
                id=existing.id if existing else str(uuid.uuid4()),
                name=str(body.get("name")),
                flow_id=str(body["flow_id"]),
                pool=str(pool),
                queue_column=body.get("work_queue_name"),
                job_variables=copy.deepcopy(body.get("job_variables") or {}),
                updated=self._now(),
                paused=bool(body.get("paused", False)),
                schedules=[{"id": str(uuid.uuid4()), "active": True, **s} for s in body.get("schedules") or []],
            )
            self.deployments[dep.id] = dep
            return self._deployment_model(dep)

    def create_flow_run(self, deployment_id: str, body: dict[str, Any]) -> FlowRun:
        """A run of the deployment, Scheduled now (or at ``state.state_details.scheduled_time``)."""
        with self._lock:
            self._call("create_flow_run")
            if deployment_id not in self.deployments:
                raise ObjectNotFoundError(f"not found: deployment {deployment_id}", status_code=404)
            at = ((body.get("state") or {}).get("state_details") or {}).get("scheduled_time")
            run_id = self.add_run(deployment_id, scheduled_at=_parse_time(at) if at else None)
            return self.runs[run_id].model(self.pools, self.queues)

    def read_flow(self, flow_id: str) -> Flow:
        with self._lock:
            self._call("read_flow")
            flow = self.flows.get(str(flow_id))
            if flow is None:
                raise ObjectNotFoundError(f"not found: GET /flows/{flow_id}", status_code=404)
            return flow.model_copy()

    def emit_events(self, events: list[dict[str, Any]], *, timeout: float = 5.0) -> None:
        """``POST /events``: the batch is kept in ``emitted`` (a fault set for ``emit_events`` fails it as Prefect
        would: unreachable, or a refusal). Stored events are not read back (``read_events``)."""
        with self._lock:
            self._call("emit_events")
            self.emitted.extend(copy.deepcopy(events))

    def read_events(self, event_filter: dict[str, Any], *, max_pages: int = 20) -> list[dict[str, Any]]:
        """Prefect's stored events: the fake stores none (only serve's event stream reads them, against the real
        server: tests/integration/test_event_stream.py)."""
        with self._lock:
            self._call("read_events")
            return []

    def read_variable(self, name: str) -> Any:
        with self._lock:
            self._call("read_variable")
            if name not in self.variables:
                raise ObjectNotFoundError(f"not found: GET /variables/name/{name}", status_code=404)
            return copy.deepcopy(self.variables[name])

    def write_variable(self, name: str, value: Any) -> None:
        with self._lock:
            self._call("write_variable")
            self.variables[name] = copy.deepcopy(value)

    # -- work pools and queues ---------------------------------------------------------------------------------------

    def read_work_pool(self, name: str) -> WorkPool:
        with self._lock:
            self._call("read_work_pool")
            return self._pool(name, f"GET /work_pools/{name}").model_copy(deep=True)

    def filter_work_pools(self) -> list[WorkPool]:
        with self._lock:
            pools = [self.pools[name].model_copy(deep=True) for name in sorted(self.pools)]
            self._call("filter_work_pools", len(pools) // PAGE_SIZE + 1)
            return pools

    _POOL_CREATE_KEYS = frozenset(
        {"name", "type", "base_job_template", "is_paused", "concurrency_limit", "description", "storage_configuration"}
    )
    _POOL_UPDATE_KEYS = frozenset(
        {"base_job_template", "is_paused", "concurrency_limit", "description", "storage_configuration"}
    )

    def create_work_pool(self, body: dict[str, Any]) -> WorkPool:
        with self._lock:
            self._call("create_work_pool")
            what = "POST /work_pools/"
            unknown = set(body) - self._POOL_CREATE_KEYS
            if unknown or not body.get("name") or not body.get("type"):
                raise _invalid(what, f"unknown keys {sorted(unknown)} or no name/type")
            name = str(body["name"])
            if name.lower().startswith("prefect"):
                # Prefect answers 403 for reserved names; the real client translates every 403 this way.
                raise OrchestratorAuthError(
                    f"Prefect API refused the credentials for {what} (HTTP 403): check PREFECT_API_KEY or "
                    "PREFECT_API_AUTH_STRING",
                    status_code=403,
                )
            if name in self.pools:
                raise OrchestratorError(
                    f"{what} failed with HTTP 409: A work pool with this name already exists.", status_code=409
                )
            return self._new_pool(
                name,
                str(body["type"]),
                base_job_template=copy.deepcopy(body.get("base_job_template") or {}),
                is_paused=bool(body.get("is_paused", False)),
                concurrency_limit=body.get("concurrency_limit"),
                description=body.get("description"),
            ).model_copy(deep=True)

    def update_work_pool(self, name: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._call("update_work_pool")
            what = f"PATCH /work_pools/{name}"
            unknown = set(body) - self._POOL_UPDATE_KEYS
            if unknown:
                raise _invalid(what, f"unknown keys {sorted(unknown)}")
            pool = self._pool(name, what)
            update = {k: copy.deepcopy(v) for k, v in body.items() if k != "storage_configuration"}
            if "is_paused" in body:
                online = any(p == name for p, _ in self.workers)
                update["status"] = "PAUSED" if body["is_paused"] else ("READY" if online else "NOT_READY")
            self.pools[name] = pool.model_copy(update=update)

    def delete_work_pool(self, name: str) -> None:
        with self._lock:
            self._call("delete_work_pool")
            self._pool(name, f"DELETE /work_pools/{name}")
            del self.pools[name]
            for key in [k for k in self.queues if k[0] == name]:
                del self.queues[key]

    def heartbeat_worker(self, pool_name: str, worker_name: str, interval_seconds: float) -> None:
        with self._lock:
            self._call("heartbeat_worker")
            pool = self._pool(pool_name, f"POST /work_pools/{pool_name}/workers/heartbeat")
            self.workers[(pool_name, worker_name)] = max(1, round(interval_seconds))
            if pool.status == "NOT_READY":  # a heartbeat makes a pool Ready (a paused one stays Paused)
                self.pools[pool_name] = pool.model_copy(update={"status": "READY"})

    def delete_worker(self, pool_name: str, worker_name: str) -> None:
        with self._lock:
            self._call("delete_worker")
            what = f"DELETE /work_pools/{pool_name}/workers/{worker_name}"
            self._pool(pool_name, what)
            if self.workers.pop((pool_name, worker_name), None) is None:
                raise ObjectNotFoundError(f"not found: {what}", status_code=404)

    def read_work_queue(self, pool_name: str, queue_name: str) -> WorkQueue:
        with self._lock:
            self._call("read_work_queue")
            queue = self.queues.get((pool_name, queue_name))
            if queue is None:
                raise ObjectNotFoundError(
                    f"not found: GET /work_pools/{pool_name}/queues/{queue_name}", status_code=404
                )
            return queue.model_copy()

    def read_work_queues(self, pool_name: str) -> list[WorkQueue]:
        with self._lock:
            self._call("read_work_queues")
            self._pool(pool_name, f"POST /work_pools/{pool_name}/queues/filter")
            return [q.model_copy() for q in self._queues_of(pool_name)]

    def _queues_of(self, pool_name: str) -> list[WorkQueue]:
        return sorted((q for (p, _), q in self.queues.items() if p == pool_name), key=lambda q: q.priority)

    def _default_queue_name(self, pool: WorkPool) -> str:
        for (pool_name, name), queue in self.queues.items():
            if pool_name == pool.name and queue.id == pool.default_queue_id:
                return name
        return "default"

    def get_scheduled_flow_runs(
        self,
        pool_name: str,
        *,
        scheduled_before: str | None = None,
        work_queue_names: list[str] | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[FlowRun]:
        """Due runs of a pool as the server hands them to workers: pause flags, pool and queue limits (PENDING and
        RUNNING runs count), queue priority then next scheduled start time, ``limit``; abridged runs."""
        with self._lock:
            self._call("get_scheduled_flow_runs")
            what = f"POST /work_pools/{pool_name}/get_scheduled_flow_runs"
            if limit > PAGE_SIZE:  # the server's page: a worker or a monitor asks again for the next one
                raise OrchestratorError(
                    f"{what} failed with HTTP 422: Invalid limit: must be less than or equal to {PAGE_SIZE}.",
                    status_code=422,
                )
            pool = self._pool(pool_name, what)
            if pool.is_paused:
                return []
            before = _parse_time(scheduled_before) if scheduled_before else None
            in_pool = [r for r in self.runs.values() if r.pool == pool_name]

            def busy(runs: list[_Run]) -> int:
                return sum(1 for r in runs if r.state.type in LIMIT_COUNTED)

            picked: list[_Run] = []
            for queue in self._queues_of(pool_name):
                if queue.is_paused or (work_queue_names and queue.name not in work_queue_names):
                    continue
                in_queue = [r for r in in_pool if r.queue == queue.name]
                due = sorted(
                    (
                        r
                        for r in in_queue
                        if r.state.type is StateType.SCHEDULED
                        and r.empirical_policy.get("retry_type") != "in_process"
                        and (before is None or (r.next_scheduled_start_time or r.expected_start_time) <= before)
                    ),
                    key=lambda r: (r.next_scheduled_start_time or r.expected_start_time, r.id),
                )
                if queue.concurrency_limit is not None:
                    due = due[: max(0, queue.concurrency_limit - busy(in_queue))]
                picked.extend(due)
            room = limit if pool.concurrency_limit is None else min(limit, pool.concurrency_limit - busy(in_pool))
            return [r.abridged(self.queues) for r in picked[: max(0, room)]]

    # -- blocks ------------------------------------------------------------------------------------------------------

    def read_block_type_id(self, slug: str) -> str:
        with self._lock:
            self._call("read_block_type_id")
            if slug not in self.block_types:
                raise ObjectNotFoundError(f"not found: GET /block_types/slug/{slug}", status_code=404)
            return str(self.block_types[slug]["id"])

    def read_latest_block_schema_id(self, block_type_id: str) -> str:
        with self._lock:
            self._call("read_latest_block_schema_id")
            for block_type in self.block_types.values():
                if block_type["id"] == block_type_id and block_type["schema_id"]:
                    return str(block_type["schema_id"])
            raise ObjectNotFoundError(f"no block schema for block type {block_type_id}")

    def create_block_type(self, body: dict[str, Any]) -> str:
        """Registers a block type with no schema yet, as POST /block_types/ does (a taken slug is a conflict)."""
        with self._lock:
            self._call("create_block_type")
            slug = body.get("slug")
            if not slug or slug in self.block_types:
                raise _invalid("POST /block_types/", f"slug {slug!r} missing or taken")
            self.block_types[slug] = {"id": str(uuid.uuid4()), "schema_id": None, "secret_fields": ()}
            return str(self.block_types[slug]["id"])

    def create_block_schema(self, body: dict[str, Any]) -> str:
        """Registers the schema of a block type; its ``fields.secret_fields`` are masked in answers from then on."""
        with self._lock:
            self._call("create_block_schema")
            block_type = next((t for t in self.block_types.values() if t["id"] == body.get("block_type_id")), None)
            if block_type is None:
                raise _invalid("POST /block_schemas/", "unknown block_type_id")
            block_type["schema_id"] = str(uuid.uuid4())
            block_type["secret_fields"] = tuple((body.get("fields") or {}).get("secret_fields") or ())
            return str(block_type["schema_id"])

    def _block_model(self, block_id: str, *, secrets: bool) -> BlockDocument:
        doc = self.blocks[block_id]
        data = copy.deepcopy(doc["data"])
        if not secrets:
            secret_fields = next(
                (t["secret_fields"] for t in self.block_types.values() if t["id"] == doc["block_type_id"]), ()
            )
            for name in secret_fields:
                if isinstance(data.get(name), dict):
                    data[name] = dict.fromkeys(data[name], MASK)
                elif name in data:
                    data[name] = MASK
        return BlockDocument(
            id=block_id,
            name=doc["name"],
            data=data,
            block_type_id=doc["block_type_id"],
            block_schema_id=doc["block_schema_id"],
        )

    def read_block_document(self, block_document_id: str) -> BlockDocument:
        with self._lock:
            self._call("read_block_document")
            if block_document_id not in self.blocks:
                raise ObjectNotFoundError(f"not found: GET /block_documents/{block_document_id}", status_code=404)
            return self._block_model(block_document_id, secrets=True)

    def read_block_document_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        with self._lock:
            self._call("read_block_document_by_name")
            block_type = self.block_types.get(block_type_slug)
            for block_id, doc in self.blocks.items():
                if block_type is not None and doc["block_type_id"] == block_type["id"] and doc["name"] == name:
                    return self._block_model(block_id, secrets=True)
            raise ObjectNotFoundError(
                f"not found: GET /block_types/slug/{block_type_slug}/block_documents/name/{name}", status_code=404
            )

    def create_block_document(self, body: dict[str, Any]) -> BlockDocument:
        """Creates a block document; the answer has secret fields masked, as the server's does."""
        with self._lock:
            self._call("create_block_document")
            what = "POST /block_documents/"
            unknown = set(body) - {"name", "data", "block_type_id", "block_schema_id", "is_anonymous"}
            if unknown:
                raise _invalid(what, f"unknown keys {sorted(unknown)}")
            if not any(t["id"] == body.get("block_type_id") for t in self.block_types.values()):
                raise OrchestratorError(f"{what} failed with HTTP 500: Internal Server Error", status_code=500)
            for doc in self.blocks.values():
                if doc["name"] == body.get("name") and doc["block_type_id"] == body["block_type_id"]:
                    raise OrchestratorError(f"{what} failed with HTTP 409: Block already exists", status_code=409)
            block_id = str(uuid.uuid4())
            self.blocks[block_id] = {
                "name": body.get("name"),
                "data": copy.deepcopy(body.get("data") or {}),
                "block_type_id": body["block_type_id"],
                "block_schema_id": body.get("block_schema_id"),
            }
            return self._block_model(block_id, secrets=False)

    def update_block_document(self, block_document_id: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._call("update_block_document")
            if block_document_id not in self.blocks:
                raise ObjectNotFoundError(f"not found: PATCH /block_documents/{block_document_id}", status_code=404)
            self.blocks[block_document_id]["data"] = copy.deepcopy(data)  # merge_existing_data: false

    def delete_block_document(self, block_document_id: str) -> None:
        with self._lock:
            self._call("delete_block_document")
            if self.blocks.pop(block_document_id, None) is None:
                raise ObjectNotFoundError(f"not found: DELETE /block_documents/{block_document_id}", status_code=404)

    # -- automations -------------------------------------------------------------------------------------------------

    def _stored_automation(self, automation_id: str, body: dict[str, Any], created: dt.datetime) -> dict[str, Any]:
        """``body`` as the server stores and returns it: ids, defaults added, ``expect`` in another order."""
        stored = copy.deepcopy(body)
        trigger = stored.setdefault("trigger", {})
        trigger.setdefault("id", str(uuid.uuid4()))
        trigger.setdefault("after", [])
        trigger["expect"] = list(reversed(sorted(trigger.get("expect") or [])))  # the server keeps a set
        if "within" in trigger:
            trigger["within"] = float(trigger["within"])
        stored.setdefault("tags", [])
        stored.setdefault("actions_on_trigger", [])
        stored.setdefault("actions_on_resolve", [])
        stored.update({"id": automation_id, "created": _stamp(created), "updated": _stamp(self._now())})
        return stored

    def read_automations(self) -> list[dict[str, Any]]:
        with self._lock:
            found = sorted(self.automations.values(), key=lambda a: str(a.get("name")))
            self._call("read_automations", len(found) // PAGE_SIZE + 1)
            return [copy.deepcopy(a) for a in found]

    def find_automations(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            self._call("find_automations")
            return [copy.deepcopy(a) for a in self.automations.values() if a.get("name") == name]

    def create_automation(self, body: dict[str, Any]) -> str:
        with self._lock:
            self._call("create_automation")
            automation_id = str(uuid.uuid4())
            self.automations[automation_id] = self._stored_automation(automation_id, body, self._now())
            return automation_id

    def replace_automation(self, automation_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._call("replace_automation")
            old = self.automations.get(automation_id)
            if old is None:
                raise ObjectNotFoundError(f"not found: PUT /automations/{automation_id}", status_code=404)
            self.automations[automation_id] = self._stored_automation(automation_id, body, _parse_time(old["created"]))

    def delete_automation(self, automation_id: str) -> None:
        with self._lock:
            self._call("delete_automation")
            if self.automations.pop(automation_id, None) is None:
                raise ObjectNotFoundError(f"not found: DELETE /automations/{automation_id}", status_code=404)

    # ================================================================================================================
    # Seeding and inspection for tests (not counted in ``calls``, never faulted)
    # ================================================================================================================

    def _new_pool(
        self,
        name: str,
        type_name: str,
        *,
        base_job_template: dict[str, Any],
        is_paused: bool,
        concurrency_limit: int | None,
        description: str | None = None,
    ) -> WorkPool:
        pool = WorkPool(
            id=str(uuid.uuid4()),
            name=name,
            type=type_name,
            base_job_template=base_job_template,
            is_paused=is_paused,
            concurrency_limit=concurrency_limit,
            description=description,
            status="PAUSED" if is_paused else "NOT_READY",
        )
        self.pools[name] = pool
        queue = self.add_queue(name, "default")
        self.pools[name] = pool.model_copy(update={"default_queue_id": queue.id})
        return self.pools[name]

    def add_pool(
        self,
        name: str,
        type_name: str = "process:push",
        *,
        base_job_template: dict[str, Any] | None = None,
        concurrency_limit: int | None = None,
        is_paused: bool = False,
    ) -> WorkPool:
        """A pool with its ``default`` queue; pushpool's base job template for a push type unless one is given."""
        from pushpool.providers import POOL_TYPES
        from pushpool.providers import base_job_template as template_of

        if base_job_template is None:
            base_job_template = template_of(type_name) if type_name in POOL_TYPES else {}
        with self._lock:
            if name in self.pools:
                raise ValueError(f"pool {name!r} exists")
            return self._new_pool(
                name,
                type_name,
                base_job_template=copy.deepcopy(base_job_template),
                is_paused=is_paused,
                concurrency_limit=concurrency_limit,
            ).model_copy(deep=True)

    def set_pool(self, name: str, **fields: Any) -> None:
        """Change a pool's ``is_paused``, ``concurrency_limit`` or ``base_job_template``."""
        with self._lock:
            update = copy.deepcopy(fields)
            if "is_paused" in fields:
                online = any(p == name for p, _ in self.workers)
                update["status"] = "PAUSED" if fields["is_paused"] else ("READY" if online else "NOT_READY")
            self.pools[name] = self.pools[name].model_copy(update=update)

    def add_queue(
        self,
        pool: str,
        name: str,
        *,
        priority: int | None = None,
        concurrency_limit: int | None = None,
        is_paused: bool = False,
    ) -> WorkQueue:
        """A queue; a taken ``priority`` moves the queues at or after it down by one (the server does so)."""
        with self._lock:
            existing = self._queues_of(pool)
            if priority is None:
                priority = max((q.priority for q in existing), default=0) + 1
            elif any(q.priority == priority for q in existing):
                for q in existing:
                    if q.priority >= priority:
                        self.queues[(pool, q.name)] = q.model_copy(update={"priority": q.priority + 1})
            queue = WorkQueue(
                id=str(uuid.uuid4()),
                name=name,
                priority=priority,
                concurrency_limit=concurrency_limit,
                is_paused=is_paused,
                work_pool_id=self.pools[pool].id,
            )
            self.queues[(pool, name)] = queue
            return queue.model_copy()

    def set_queue(self, pool: str, name: str, **fields: Any) -> None:
        """Change a queue's ``is_paused`` or ``concurrency_limit``."""
        with self._lock:
            self.queues[(pool, name)] = self.queues[(pool, name)].model_copy(update=fields)

    def add_deployment(
        self,
        pool: str,
        *,
        name: str | None = None,
        job_variables: dict[str, Any] | None = None,
        work_queue_name: str | None = None,
        flow_name: str = "hello",
        schedules: list[dict[str, Any]] | None = None,
        paused: bool = False,
    ) -> str:
        """A deployment of ``pool``; its runs go to ``work_queue_name`` or, when None, the pool's default queue.
        ``schedules`` as the API takes them (``[{"schedule": {"interval": 60}, "active": True}]``): the fake has no
        scheduler, so no run is made for them (what a server whose scheduler fails shows)."""
        with self._lock:
            if pool not in self.pools:
                raise ValueError(f"no pool {pool!r}")
            flow = Flow(id=str(uuid.uuid4()), name=flow_name)
            self.flows[flow.id] = flow
            dep = _Deployment(
                id=str(uuid.uuid4()),
                name=name or f"dep-{uuid.uuid4().hex[:8]}",
                flow_id=flow.id,
                pool=pool,
                queue_column=work_queue_name,
                job_variables=copy.deepcopy(job_variables or {}),
                updated=self._now(),
                paused=paused,
                schedules=[{"id": str(uuid.uuid4()), "active": True, **copy.deepcopy(s)} for s in schedules or []],
            )
            self.deployments[dep.id] = dep
            return dep.id

    def delete_deployment(self, deployment_id: str) -> None:
        """Delete a deployment as the server does: its Scheduled runs go too, except AwaitingConcurrencySlot ones;
        other runs keep the dangling ``deployment_id``."""
        with self._lock:
            if deployment_id not in self.deployments:
                raise ObjectNotFoundError(f"not found: DELETE /deployments/{deployment_id}", status_code=404)
            del self.deployments[deployment_id]
            for run_id, run in list(self.runs.items()):
                if (
                    run.deployment_id == deployment_id
                    and run.state.type is StateType.SCHEDULED
                    and run.state.name != AWAITING_SLOT
                ):
                    del self.runs[run_id]

    def add_run(
        self,
        deployment_id: str,
        *,
        scheduled_at: dt.datetime | None = None,
        work_queue_name: str | None = None,
        job_variables: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
        name: str | None = None,
        retry_in_process: bool = False,
    ) -> str:
        """A Scheduled run of a deployment, due at ``scheduled_at`` (now by default)."""
        with self._lock:
            dep = self.deployments[deployment_id]
            pool = self.pools[dep.pool]
            column = work_queue_name or dep.queue_column
            queue = column or self._default_queue_name(pool)
            if (dep.pool, queue) not in self.queues:
                raise ValueError(f"no queue {queue!r} in pool {dep.pool!r}")
            now = self._now()
            due = scheduled_at or now
            run_id = str(uuid.uuid4())
            policy = {"retries": 1, "retry_type": "in_process"} if retry_in_process else {}
            run = _Run(
                id=run_id,
                name=name or f"fake-run-{run_id[:8]}",
                flow_id=dep.flow_id,
                deployment_id=dep.id,
                pool=dep.pool,
                queue=queue,
                queue_column=column,
                state=State(type=StateType.SCHEDULED),  # replaced below
                expected_start_time=due,
                next_scheduled_start_time=due,
                created=now,
                job_variables=copy.deepcopy(job_variables or {}),
                labels={"prefect.flow.id": dep.flow_id, "prefect.deployment.id": dep.id, **(labels or {})},
                empirical_policy=policy,
            )
            self.runs[run_id] = run
            self._write_state(run, StateType.SCHEDULED, "Scheduled", None, {"scheduled_time": due.isoformat()})
            return run_id

    def set_state_raw(
        self,
        run_id: str,
        state_type: StateType,
        *,
        name: str | None = None,
        message: str | None = None,
        force: bool = False,
        transition_id: str | None = None,
    ) -> OrchestrationResult:
        """The server's answer to one ``set_state`` request, without the client's transition-id handling."""
        with self._lock:
            details = {"transition_id": transition_id} if transition_id else {}
            return self._set_state(run_id, state_type, name=name, message=message, details=details, force=force)

    def force_state(
        self, run_id: str, state_type: StateType, *, name: str | None = None, message: str | None = None
    ) -> State:
        """Force a state (``force=True``), as an operator or the engine would; returns the state written."""
        result = self.set_state_raw(run_id, state_type, name=name, message=message, force=True)
        assert result.state is not None
        return result.state

    def set_variable(self, name: str, value: Any) -> None:
        with self._lock:
            self.variables[name] = copy.deepcopy(value)

    def add_block_type(self, slug: str, *, secret_fields: tuple[str, ...] = ()) -> str:
        with self._lock:
            if slug not in self.block_types:
                self.block_types[slug] = {
                    "id": str(uuid.uuid4()),
                    "schema_id": str(uuid.uuid4()),
                    "secret_fields": tuple(secret_fields),
                }
            return str(self.block_types[slug]["id"])

    def lose_answers(self, count: int = 1) -> None:
        """The next ``count`` state proposals are applied but their answers lost: the client sends each again."""
        with self._lock:
            self._lost_answers += count

    def fail_next(self, method: str, error: Exception, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` (e.g. OrchestratorUnavailableError)."""
        if not hasattr(self, method):
            raise AttributeError(method)
        with self._lock:
            self._faults.setdefault(method, []).extend([error] * times)

    def unavailable(self, method: str, times: int = 1) -> None:
        self.fail_next(method, OrchestratorUnavailableError(f"Prefect API unavailable ({method})"), times)

    def run(self, run_id: str) -> FlowRun:
        """The run as a read shows it (uncounted)."""
        with self._lock:
            return self.runs[run_id].model(self.pools, self.queues)

    def history(self, run_id: str) -> list[tuple[str, str]]:
        """The run's states, oldest first, as (type, name)."""
        with self._lock:
            return [(s.type.value, s.name or "") for s in self.runs[run_id].history]

    def state_history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's states as ``GET /flow_run_states/`` lists them (uncounted; an unknown run has none, as there)."""
        with self._lock:
            run = self.runs.get(str(run_id))
            return [
                {**s.model_dump(mode="json"), "timestamp": _stamp(s.timestamp or self._now()), "data": None}
                for s in (run.history if run is not None else [])
            ]

    def logs_of(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.logs if r.get("flow_run_id") == run_id]
