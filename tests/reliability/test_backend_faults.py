"""Backend faults on ECS (moto server over HTTP, faults injected with botocore hooks or moto's backend):
throttling, 5xx, timeouts, capacity unavailable, a task that never starts, a task that vanishes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.usecases.submit import submit_run

from tests.helpers import SECRET_ARN, PrefectHelper, make_deps, pool_tick

pytestmark = pytest.mark.integration


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: object):
        yield self.body


def _answer(request, status: int, body: dict) -> AWSResponse:
    return AWSResponse(
        request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(json.dumps(body).encode())
    )


FAULTS = {
    "throttling": lambda req: _answer(req, 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
    "5xx": lambda req: _answer(req, 500, {"__type": "ServerException", "message": "internal error"}),
    "timeout": lambda req: (_ for _ in ()).throw(ReadTimeoutError(endpoint_url=req.url)),
    "capacity unavailable": lambda req: _answer(
        req,
        200,
        {
            "tasks": [],
            "failures": [
                {
                    "reason": "Capacity is unavailable at this time. Please try again later or in a different "
                    "availability zone"
                }
            ],
        },
    ),
}


@pytest.fixture
def ecs_deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    deps = make_deps(prefect_api, tmp_path, start_timeout_seconds=2)
    yield deps
    deps.orchestrator.close()


def _faulty_backend(kind: str, failing: int) -> tuple[EcsBackend, dict]:
    session = boto3.session.Session()
    seen = {"run_task": 0}

    def hook(request, **_: object):
        seen["run_task"] += 1
        return FAULTS[kind](request) if seen["run_task"] <= failing else None

    session.events.register("before-send.ecs.RunTask", hook)
    return EcsBackend(session=session, sleep=lambda _: None), seen


def _run(deps, prefect: PrefectHelper, pool: str) -> tuple[str, object]:
    run_id = prefect.create_run(
        prefect.create_deployment(pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    )
    client = deps.orchestrator
    return run_id, submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool))


@pytest.mark.parametrize("kind", list(FAULTS))
def test_transient_faults_are_retried_within_budget(
    kind: str, ecs_deps, prefect: PrefectHelper, ecs_pool: str, report
) -> None:
    backend, seen = _faulty_backend(kind, failing=2)
    ecs_deps._backends["ecs"] = backend
    started = time.monotonic()
    run_id, outcome = _run(ecs_deps, prefect, ecs_pool)
    report.add(
        f"ECS {kind}, then success",
        runs=1,
        faults=2,
        stuck=int(outcome.outcome != "submitted"),
        longest_repair=time.monotonic() - started,
    )
    assert outcome.outcome == "submitted", outcome
    assert seen["run_task"] == 3
    assert prefect.state(run_id) == ("PENDING", "InfrastructurePending")


@pytest.mark.parametrize("kind", ["throttling", "capacity unavailable"])
def test_exhausted_budget_gives_the_run_back_with_the_reason(
    kind: str, ecs_deps, prefect: PrefectHelper, ecs_pool: str, report
) -> None:
    """A transient failure past the backend's own retries is not a crash (Prefect never retries a Crashed run): the
    run goes back to Scheduled, saying why and when it is retried (tests/unit/usecases/test_transient_retry.py: the
    bound that crashes it at last)."""
    backend, seen = _faulty_backend(kind, failing=100)
    ecs_deps._backends["ecs"] = backend
    run_id, outcome = _run(ecs_deps, prefect, ecs_pool)
    state = prefect.read_run(run_id)["state"]
    right = (state["type"], state["name"]) == ("SCHEDULED", "AwaitingInfrastructure") and (
        "Rate exceeded" in state["message"] or "Capacity" in state["message"]
    )
    report.add(f"ECS {kind}, budget spent", runs=1, faults=seen["run_task"], stuck=int(not right))
    assert outcome.outcome == "released" and right, state
    assert 2 <= seen["run_task"] <= 10  # bounded
    assert prefect.read_run(run_id)["run_count"] == 0  # the flow's own retries were not consumed


def test_task_that_never_starts_or_vanishes(ecs_deps, prefect: PrefectHelper, ecs_pool: str, report) -> None:
    from moto.backends import get_backend

    tasks = get_backend("ecs")["123456789012"]["us-east-1"].tasks
    (never, o1), (gone, o2) = _run(ecs_deps, prefect, ecs_pool), _run(ecs_deps, prefect, ecs_pool)
    cluster, arn = o1.job_id.split("::")
    tasks[cluster][arn].last_status = "PROVISIONING"
    del tasks[cluster][o2.job_id.split("::")[1]]
    started = time.monotonic()
    time.sleep(ecs_deps.settings.start_timeout_seconds + 0.2)
    pool_tick(ecs_deps, ecs_pool)
    states = {r: prefect.read_run(r)["state"] for r in (never, gone)}
    repaired = time.monotonic() - started
    right = (
        states[never]["type"] == "CRASHED"
        and "did not start" in states[never]["message"]
        and states[gone]["type"] == "CRASHED"
        and "disappeared" in states[gone]["message"]
    )
    report.add("ECS task never starts / vanishes", runs=2, faults=2, stuck=int(not right), longest_repair=repaired)
    assert right, states
    stopped = boto3.client("ecs").describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert stopped["desiredStatus"] == "STOPPED"
