"""canary: prove a pool works end to end — ``pushpool doctor --canary POOL``.

It deploys a tiny flow to the pool (deployment ``pushpool-canary/canary-<pool>``), creates one run of it now and
watches it go the whole way, through the pool's real path (Prefect's event → pushpool's submit → the provider → the
flow's engine → the monitor's cleanup), on the pool's real provider (the user's cloud for a cloud pool). Each stage is
timed from the run's creation:

=================  ===========================================================================================
run created        the Scheduled state Prefect wrote (the clock starts here)
event received     Prefect's event bus received the run's ``prefect.flow-run.Scheduled`` event (what the event
                   stream and the automation react to; a server that stores no events shows none)
claimed            pushpool's Pending proposal was accepted (the event reached submit, or the monitor's sweep)
job accepted       the provider accepted the job (its ``accepted_at``, on the provider's clock or, for ACI, the
                   time pushpool asked: it may read a little before the claim's time on Prefect's clock; else the
                   ``InfrastructurePending`` state, written once the job exists)
container started  the provider says the job's container/process started (its ``started_at``)
flow Running       the engine inside the job proposed Running
Completed          the flow ended Completed
job cleaned up     the provider keeps nothing of the job any more (the monitor deletes a finished job that stays:
                   Cloud Run jobs, ACI groups, process directories); a provider that keeps nothing is done at the end
=================  ===========================================================================================

The flow's code comes with the deployment: a ``run_shell_script`` pull step writes it into ``/tmp/pushpool-canary``
(``python3`` and ``prefect``, what any Prefect image has) and a ``set_working_directory`` step goes there — no code
storage, no image to build. The deployment is deleted at the end; the run stays, to be read with ``pushpool logs``.
A stage that does not come within ``timeout`` ends the canary, failed, with what to do.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import ObjectNotFoundError, OrchestratorError, PushpoolError
from pushpool.prefect_api.models import FlowRun, StateType
from pushpool.providers.base import JobState, JobStatus
from pushpool.usecases.deps import Deps
from pushpool.usecases.job_spec import PoolCredentials
from pushpool.usecases.submit import PROGRESS_STATE

FLOW_NAME = "pushpool-canary"
DIRECTORY = "/tmp/pushpool-canary"
ENTRYPOINT = "pushpool_canary.py:pushpool_canary"
_SOURCE = "from prefect import flow\\n\\n\\n@flow\\ndef pushpool_canary():\\n    print(\\'pushpool canary: ok\\')\\n"
WRITE_FLOW = (
    "python3 -c \"import os; os.makedirs('" + DIRECTORY + "', exist_ok=True); "
    "open('" + DIRECTORY + "/pushpool_canary.py', 'w').write('" + _SOURCE + "')\""
)
STAGES = (
    "run created",
    "event received",
    "claimed",
    "job accepted",
    "container started",
    "flow Running",
    "Completed",
    "job cleaned up",
)
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
# What to do when the canary stops before a stage.
ADVICE = {
    "claimed": "nothing claimed the run: run `pushpool doctor` (serve running? the pool's automation? its token?)",
    "job accepted": "the run was claimed but no job was accepted: read `pushpool logs {run}` (the provider's refusal "
    "is in the run's state message)",
    "container started": "the provider accepted the job but did not start it (image pull, capacity, permissions): "
    "read `pushpool logs {run}`",
    "flow Running": "the container started but the flow did not (image without prefect, PREFECT_API_URL not "
    "reachable from the job, a pull step failing): read `pushpool logs {run}`",
    "Completed": "the flow did not complete: read `pushpool logs {run}`",
    "job cleaned up": "the job was not cleaned up (is the monitor running? `pushpool serve` ticks it)",
}


@dataclass
class Stage:
    name: str
    at: dt.datetime | None = None
    note: str = ""


@dataclass
class CanaryResult:
    pool: str
    run_id: str | None = None
    stages: list[Stage] = field(default_factory=list)
    ok: bool = False
    problem: str = ""
    fix: str = ""

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def seconds(self, name: str) -> float | None:
        """Seconds from the run's creation to the stage (None: not reached)."""
        start, stage = self.stage("run created").at, self.stage(name).at
        return None if start is None or stage is None else round((stage - start).total_seconds(), 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "flow_run_id": self.run_id,
            "ok": self.ok,
            "problem": self.problem,
            "fix": self.fix,
            "stages": [
                {
                    "stage": s.name,
                    "at": s.at.isoformat() if s.at else None,
                    "seconds": self.seconds(s.name),
                    "note": s.note,
                }
                for s in self.stages
            ],
        }


Report = Callable[[Stage, CanaryResult], None]


def deployment_body(pool: str, flow_id: str) -> dict[str, Any]:
    return {
        "name": f"canary-{pool}",
        "flow_id": flow_id,
        "work_pool_name": pool,
        "entrypoint": ENTRYPOINT,
        "pull_steps": [
            {"prefect.deployments.steps.run_shell_script": {"script": WRITE_FLOW, "stream_output": False}},
            {"prefect.deployments.steps.set_working_directory": {"directory": DIRECTORY}},
        ],
        "enforce_parameter_schema": False,
        "tags": [FLOW_NAME],
        "description": "pushpool doctor --canary: a tiny flow that proves the pool runs flows end to end",
    }


def run_canary(
    deps: Deps,
    pool_name: str,
    *,
    timeout: float = 600.0,
    cleanup_timeout: float = 120.0,
    poll_seconds: float = 0.25,
    report: Report | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> CanaryResult:
    """Deploy the canary flow to ``pool_name``, run it once and time each stage (see the module's docstring).

    ``report`` is called as each stage is reached, in order. Raises PushpoolError only before the run exists (the pool
    is not a push pool this pushpool serves, or its provider cannot be loaded: nothing is made).
    """
    client = deps.orchestrator
    pool = client.read_work_pool(pool_name)
    backend = deps.backend_for_pool(pool)  # before anything is made: a pool this pushpool cannot run is refused
    result = CanaryResult(pool_name, stages=[Stage(name) for name in STAGES])
    seen: set[str] = set()

    def reached(name: str, at: dt.datetime | None, note: str = "") -> None:
        # Stages are reported in order: one reached before an earlier one was seen waits for it.
        stage = result.stage(name)
        if stage.at is None and at is not None:
            stage.at, stage.note = at, note
        elif stage.at is None and not stage.note:
            stage.note = note  # passed, with no time to give: "none stored", "none reported"
        for stage in result.stages:
            if stage.name in seen:
                continue
            if stage.at is None and not stage.note:
                break
            seen.add(stage.name)
            if report is not None:
                report(stage, result)

    flow = client.create_flow(FLOW_NAME)
    deployment = client.create_deployment(deployment_body(pool_name, flow.id))
    try:
        run = client.create_flow_run(deployment.id, {"tags": [FLOW_NAME]})
        result.run_id = run.id
        created = _first(client.read_flow_run_states(run.id), StateType.SCHEDULED) or run.created
        reached("run created", created)
        _watch(deps, backend, pool, run, result, reached, timeout, cleanup_timeout, poll_seconds, sleep, monotonic)
    finally:
        try:
            client.delete_deployment(deployment.id)
        except OrchestratorError:
            pass  # removed meanwhile, or the API is away: the canary's verdict stands
    return result


def _watch(
    deps: Deps,
    backend: Any,
    pool: Any,
    run: FlowRun,
    result: CanaryResult,
    reached: Callable[..., None],
    timeout: float,
    cleanup_timeout: float,
    poll_seconds: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> None:
    client = deps.orchestrator
    handles = PoolCredentials(deps.settings, client)
    deadline = monotonic() + timeout
    ended: FlowRun | None = None
    status: JobStatus | None = None
    event_looked = False
    while True:
        current = client.read_flow_run(run.id)
        history = client.read_flow_run_states(run.id)
        if not event_looked and result.stage("event received").at is None:
            event = _scheduled_event(deps, run.id)
            if event is not None:
                reached("event received", event)
            elif _first(history, StateType.PENDING) is not None:
                event_looked = True  # claimed with no event stored: the server keeps none (the fake) or not yet
                reached("event received", None, "none stored")
        claimed = _first(history, StateType.PENDING)
        if claimed is not None:
            reached("claimed", claimed)
        if current.infrastructure_pid:
            status = _status(backend, handles, pool, current.infrastructure_pid) or status
            progress = _first(history, StateType.PENDING, PROGRESS_STATE)
            accepted = (status.accepted_at if status else None) or progress
            if accepted is not None:
                reached("job accepted", accepted)
            if status is not None and status.started_at is not None:
                reached("container started", status.started_at)
        running = _first(history, StateType.RUNNING)
        if running is not None:
            reached("flow Running", running)
        if current.state_type in FINAL:
            ended = current
            if result.stage("container started").at is None and current.infrastructure_pid:
                status = _status(backend, handles, pool, current.infrastructure_pid) or status
                started = status.started_at if status is not None else None
                reached("container started", started, "" if started else "not reported by the provider")
            break
        if monotonic() >= deadline:
            break
        sleep(poll_seconds)

    if ended is None or ended.state_type is not StateType.COMPLETED:
        missing = next((s.name for s in result.stages if s.at is None and not s.note), "Completed")
        state = ended.state if ended is not None else None
        what = f"{state.type.value}" + (f": {state.message}" if state and state.message else "") if state else ""
        result.problem = (
            f"the run ended {what}" if ended is not None else f"no {missing!r} within {timeout:.0f} s"
        ).strip()
        result.fix = ADVICE.get(missing, ADVICE["Completed"]).format(run=run.id)
        return
    reached("Completed", _first(client.read_flow_run_states(run.id), StateType.COMPLETED) or ended.end_time)
    _wait_cleanup(deps, backend, handles, pool, ended, result, reached, cleanup_timeout, poll_seconds, sleep, monotonic)


def _wait_cleanup(
    deps: Deps,
    backend: Any,
    handles: PoolCredentials,
    pool: Any,
    run: FlowRun,
    result: CanaryResult,
    reached: Callable[..., None],
    timeout: float,
    poll_seconds: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> None:
    job = run.infrastructure_pid
    if job is None or not backend.keeps_finished_jobs:
        status = _status(backend, handles, pool, job) if job else None
        reached("job cleaned up", (status.finished_at if status else None) or deps.clock.now(), "nothing kept")
        result.ok = True
        return
    deadline = monotonic() + timeout
    while True:
        status = _status(backend, handles, pool, job)
        if status is not None and status.state is JobState.MISSING:
            reached("job cleaned up", deps.clock.now())
            result.ok = True
            return
        if monotonic() >= deadline:
            result.problem = f"job {job} still kept by the provider {timeout:.0f} s after the run completed"
            result.fix = ADVICE["job cleaned up"]
            return
        sleep(max(poll_seconds, 1.0))


def _status(backend: Any, handles: PoolCredentials, pool: Any, job_id: str) -> JobStatus | None:
    try:
        handle = handles.handle(backend.name, pool, job_id)
        return backend.status([handle]).get(job_id)
    except PushpoolError:
        return None


def _first(history: list[dict[str, Any]], state_type: StateType, name: str | None = None) -> dt.datetime | None:
    """When the run first entered ``state_type`` (named ``name``, if given; Pending: the claim, not the progress)."""
    times = []
    for state in history:
        if state.get("type") != state_type.value:
            continue
        if name is not None and state.get("name") != name:
            continue
        if name is None and state_type is StateType.PENDING and state.get("name") == PROGRESS_STATE:
            continue
        times.append(_parse(state.get("timestamp")))
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _scheduled_event(deps: Deps, run_id: str) -> dt.datetime | None:
    """When Prefect's event bus received the run's Scheduled event (None: not stored, or not yet)."""
    event_filter = {
        "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
        "event": {"name": ["prefect.flow-run.Scheduled"]},
        "occurred": {"since": (deps.clock.now() - dt.timedelta(hours=1)).isoformat()},
    }
    try:
        events = deps.orchestrator.read_events(event_filter, max_pages=1)
    except (ObjectNotFoundError, OrchestratorError):
        return None
    times = [_parse(e.get("received") or e.get("occurred")) for e in events]
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _parse(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
