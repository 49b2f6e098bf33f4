"""run_logs: what happened to one flow run, for ``pushpool logs <flow-run>`` — pushpool's decisions (the run's state
history, each state with its message: claimed, job submitted, crashed and why …), the job's own output as its backend
keeps it (:meth:`Backend.logs`), and the run's last log records in Prefect.
"""

from __future__ import annotations

import uuid
from typing import Any

from pushpool.errors import InvalidRequestError, ObjectNotFoundError, PushpoolError
from pushpool.prefect_api.models import FlowRun
from pushpool.usecases.deps import Deps
from pushpool.usecases.job_spec import PoolCredentials


def find_run(deps: Deps, ref: str) -> FlowRun:
    """The flow run with id or name ``ref``.

    Raises:
        InvalidRequestError: no such run, or a name that several runs share.
    """
    client = deps.orchestrator
    try:
        uuid.UUID(ref)
    except ValueError:
        runs = list(client.filter_flow_runs({"flow_runs": {"name": {"any_": [ref]}}}, limit=2))
        if len(runs) > 1:
            raise InvalidRequestError(f"several flow runs are called {ref!r}: give the run's id") from None
        if runs:
            return runs[0]
    else:
        try:
            return client.read_flow_run(ref)
        except ObjectNotFoundError:
            pass
    raise InvalidRequestError(f"no flow run {ref!r}")


def run_logs(deps: Deps, ref: str, *, lines: int = 200) -> dict[str, Any]:
    """The run (by id or name), its state history, its job's last ``lines`` of output and its last ``lines`` log
    records in Prefect. A job whose output its backend no longer keeps (cleaned up once the run was final) has none;
    ``job_note`` says why.

    Raises:
        InvalidRequestError: no such run.
    """
    client = deps.orchestrator
    run = find_run(deps, ref)
    states = sorted(client.read_flow_run_states(run.id), key=lambda s: str(s.get("timestamp")))
    job_output: list[str] = []
    note = ""
    backend_name: str | None = None
    if not run.infrastructure_pid:
        note = "no job was started for this run"
    elif not run.work_pool_name:
        note = "the run has no work pool"
    else:
        try:
            pool = client.read_work_pool(run.work_pool_name)
            backend = deps.backend_for_pool(pool)
            handle = PoolCredentials(deps.settings, client).handle(backend.name, pool, run.infrastructure_pid)
            backend_name = backend.name
            job_output = backend.logs(handle, lines=lines)
        except PushpoolError as exc:
            note = exc.one_line()
        else:
            if not job_output:
                note = "the backend keeps no output for this job (it is removed once the run is final)"
    records = client.read_logs(run.id, limit=lines)
    return {
        "id": run.id,
        "name": run.name,
        "pool": run.work_pool_name,
        "state": run.state_name,
        "job_id": run.infrastructure_pid,
        "job_backend": backend_name,  # which backend runs the job: what its id means (e.g. process, ecs)
        "states": [
            {
                "timestamp": s.get("timestamp"),
                "type": s.get("type"),
                "name": s.get("name"),
                "message": s.get("message") or "",
            }
            for s in states
        ],
        "job_output": job_output,
        "job_note": note,
        "logs": [
            {
                "timestamp": r.get("timestamp"),
                "level": r.get("level"),
                "name": r.get("name"),
                "message": r.get("message"),
            }
            for r in records
        ],
    }
