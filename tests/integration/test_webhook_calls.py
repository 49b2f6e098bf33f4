"""The webhook path's orchestration calls on a real Prefect server, route by route (issue 25): a run of a pool and
deployment not seen for ``read_cache_seconds`` costs 7 calls, the next one 4 (its read, its claim, its pid, its
progress state) — and what the shared reads may not weaken still holds: a deployment's new job variables and a pool's
pause are used by every run submitted ``read_cache_seconds`` after the change."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.usecases.deps import Deps

from tests.fakes import LatencyBackend
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer test-token", "Content-Type": "application/json"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

RUN = "GET /flow_runs/{id}"
POOL = "GET /work_pools/{pool}"
QUEUE = "GET /work_pools/{pool}/queues/default"
DEPLOYMENT = "GET /deployments/{id}"
CLAIM = "POST /flow_runs/{id}/set_state PENDING"
PID = "PATCH /flow_runs/{id}"
PROGRESS = "POST /flow_runs/{id}/set_state PENDING InfrastructurePending"


def _deps(prefect_api: str, tmp_path: Path, **overrides: object) -> tuple[Deps, LatencyBackend]:
    # Timeouts long enough that no submit counts as slow here (a slow one pays a fence's read: not this test's count).
    deps = make_deps(prefect_api, tmp_path, pending_timeout_seconds=600, exit_grace_seconds=600, **overrides)
    backend = LatencyBackend()
    deps._backends["process"] = backend
    return deps, backend


def _record(deps: Deps, pool: str) -> list[str]:
    """Every request ``deps``' client sends from now on, as ``METHOD /route`` (ids and the pool's name replaced), a
    state proposal with the state's type and name."""
    calls: list[str] = []
    api = httpx.URL(deps.settings.prefect_api_url).path.rstrip("/")

    def record(request: httpx.Request) -> None:
        path = _UUID.sub("{id}", request.url.path.removeprefix(api)).replace(f"/{pool}", "/{pool}")
        call = f"{request.method} {path}"
        if path.endswith("/set_state"):
            state = json.loads(request.content)["state"]
            call = " ".join([call, state["type"], *([state["name"]] if state.get("name") else [])])
        calls.append(call)

    deps.orchestrator._http.event_hooks["request"].append(record)
    return calls


def _webhook(deps: Deps, run_id: str) -> dict:
    body = json.dumps({"flow_run_id": run_id, "event": "prefect.flow-run.Scheduled"}).encode()
    response = handle_submit(deps, WebhookAuth(deps.settings.webhook_tokens), HEADERS, body, trigger="webhook")
    assert response.status == 200, response.body
    return response.body


def _command(backend: LatencyBackend, answer: dict) -> list[str]:
    assert answer["outcome"] == "submitted", answer
    return list(backend.jobs[answer["job_id"]].spec.command)


def test_one_webhook_run_route_by_route(prefect_api: str, tmp_path: Path, prefect: PrefectHelper, pool: str) -> None:
    deps, _ = _deps(prefect_api, tmp_path, read_cache_seconds=60)
    dep = prefect.create_deployment(pool, job_variables={"command": "true"})
    first, second = prefect.create_run(dep), prefect.create_run(dep)
    calls = _record(deps, pool)

    assert _webhook(deps, first)["outcome"] == "submitted"
    # The run first; its pool, queue and deployment read while one another's round trips overlap (threads: in any
    # order); the pause flags checked before the claim, the job rendered from the deployment before its pid is written.
    assert calls[0] == RUN
    assert Counter(calls) == Counter([RUN, POOL, QUEUE, DEPLOYMENT, CLAIM, PID, PROGRESS]), calls
    assert [c for c in calls if not c.startswith("GET ")] == [CLAIM, PID, PROGRESS]
    assert max(calls.index(POOL), calls.index(QUEUE)) < calls.index(CLAIM)
    assert calls.index(DEPLOYMENT) < calls.index(PID)

    calls.clear()
    assert _webhook(deps, second)["outcome"] == "submitted"
    assert calls == [RUN, CLAIM, PID, PROGRESS]
    assert prefect.state(second) == ("PENDING", "InfrastructurePending")
    assert prefect.read_run(second)["infrastructure_pid"]
    deps.orchestrator.close()


def test_new_job_variables_are_used_read_cache_seconds_after_the_change(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, pool: str
) -> None:
    deps, backend = _deps(prefect_api, tmp_path, read_cache_seconds=1.0)
    dep = prefect.create_deployment(pool, job_variables={"command": "echo old"})
    first, second = prefect.create_run(dep), prefect.create_run(dep)
    assert _command(backend, _webhook(deps, first)) == ["echo", "old"]
    prefect.json("PATCH", f"/deployments/{dep}", json={"job_variables": {"command": "echo new"}})
    time.sleep(deps.settings.read_cache_seconds)
    assert _command(backend, _webhook(deps, second)) == ["echo", "new"]
    deps.orchestrator.close()


def test_a_paused_pool_refuses_read_cache_seconds_after_the_pause(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, pool: str
) -> None:
    deps, backend = _deps(prefect_api, tmp_path, read_cache_seconds=1.0)
    dep = prefect.create_deployment(pool, job_variables={"command": "true"})
    first, second = prefect.create_run(dep), prefect.create_run(dep)
    assert _webhook(deps, first)["outcome"] == "submitted"
    prefect.json("PATCH", f"/work_pools/{pool}", json={"is_paused": True})
    time.sleep(deps.settings.read_cache_seconds)
    assert _webhook(deps, second)["outcome"] == "paused"
    assert prefect.state(second)[0] == "SCHEDULED"  # nothing claimed, no job
    assert [j.spec.run_id for j in backend.jobs.values()] == [first]
    deps.orchestrator.close()
