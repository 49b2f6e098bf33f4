"""A cloud's brief 429/503/timeout at submit gives the run back to Scheduled, saying why and when, and the retry gets
its job — one job — instead of a Crashed run (issue 23, item 2). A real Prefect server; the cloud fails at its own
boundary: ECS against moto with the failure injected into botocore's HTTP send, and the real process backend behind
a wrapper that throttles its first submit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ReadTimeoutError
from pushpool.errors import BackendUnavailableError
from pushpool.usecases.run_states import ATTEMPT_LABEL, BACKOFF_STATE

from tests.helpers import PrefectHelper, make_deps, pool_tick, skip_ahead, submit

pytestmark = pytest.mark.integration

WAITING = re.compile(r"pushpool: .+; retry 1 of 5 at \d\d:\d\d:\d\d UTC")


def _claims(prefect: PrefectHelper, run_id: str) -> list[str]:
    states = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    return [s["id"] for s in sorted(states, key=lambda s: s["timestamp"]) if s["name"] == "Pending"]


class TimeoutAfterAcceptance:
    """botocore's ``before-send`` hook for ECS RunTask: the first request reaches moto (the task is made), then the
    client sees a read timeout, as when AWS accepted the call and the answer was lost."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Any, **_: Any) -> None:
        self.calls += 1
        if self.calls > 1:
            return None  # later calls go through as usual
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        answer = httpx.request(request.method, request.url, content=request.body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        raise ReadTimeoutError(endpoint_url=request.url)


@pytest.fixture
def ecs_deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    deps = make_deps(prefect_api, tmp_path)
    session = boto3.session.Session()  # max_attempts 0: botocore's own retries off (they would hide the timeout)
    hook = TimeoutAfterAcceptance()
    session.events.register("before-send.ecs.RunTask", hook)
    deps.backend_options["ecs"] = {**deps.backend_options.get("ecs", {}), "session": session, "max_attempts": 0}
    deps.timeout_hook = hook  # type: ignore[attr-defined]
    yield deps
    deps.orchestrator.close()


def test_ecs_a_timeout_after_acceptance_is_retried_and_the_retry_finds_the_task(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict
) -> None:
    run_id = prefect.create_run(prefect.create_deployment(ecs_pool, job_variables={"image": "repo/flows:1"}))
    outcome = submit(ecs_deps, run_id)
    assert outcome.outcome == "released", outcome
    run = prefect.read_run(run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("SCHEDULED", BACKOFF_STATE)
    assert WAITING.fullmatch(run["state"]["message"]), run["state"]["message"]
    assert "cannot reach AWS" in run["state"]["message"]
    assert run["infrastructure_pid"] is None
    (first_claim,) = _claims(prefect, run_id)
    assert run["labels"][ATTEMPT_LABEL] == first_claim
    made = aws["ecs"].list_tasks(cluster=aws["cluster"], startedBy=f"{run_id}/{first_claim}")["taskArns"]
    assert len(made) == 1  # AWS made the task although the client never heard

    skip_ahead(ecs_deps, 120)  # past the backoff and the pool's lead: the monitor's sweep dispatches it again
    report = pool_tick(ecs_deps, ecs_pool)
    assert report.dispatched["submitted"] == 1, report
    run = prefect.read_run(run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("PENDING", "InfrastructurePending")
    assert len(_claims(prefect, run_id)) == 2  # claimed again …
    assert run["infrastructure_pid"] == f"{aws['cluster']}::{made[0]}"  # … and found the first task: no second
    every = aws["ecs"].list_tasks(cluster=aws["cluster"])["taskArns"]
    tasks = aws["ecs"].describe_tasks(cluster=aws["cluster"], tasks=every)["tasks"] if every else []
    assert [t["taskArn"] for t in tasks if t.get("startedBy", "").startswith(f"{run_id}/")] == made
    assert ecs_deps.timeout_hook.calls == 1  # the retry never sent RunTask again


class ThrottledOnce:
    """The real process backend, whose first submit is throttled (nothing started), as a cloud's 429 is."""

    def __init__(self, backend: Any) -> None:
        self._backend, self.submits = backend, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def submit(self, spec: Any) -> Any:
        self.submits += 1
        if self.submits == 1:
            raise BackendUnavailableError("throttled (429 Too Many Requests)", backend="process", retry_after=2)
        return self._backend.submit(spec)


def test_process_a_throttled_submit_is_retried_and_the_flow_completes(deps, prefect: PrefectHelper, pool: str) -> None:
    backend = ThrottledOnce(deps.backend("process"))
    deps._backends["process"] = backend
    run_id = prefect.create_run(prefect.create_deployment(pool, "flows.py:hello"))
    assert submit(deps, run_id).outcome == "released"
    run = prefect.read_run(run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("SCHEDULED", BACKOFF_STATE)
    assert run["state"]["message"].startswith("pushpool: throttled (429 Too Many Requests); retry 1 of 5 at ")
    assert pool_tick(deps, pool).dispatched["submitted"] == 0  # not before its time

    skip_ahead(deps, 30)
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90, tick=lambda: pool_tick(deps, pool))
    assert run["state"]["type"] == "COMPLETED"
    assert backend.submits == 2
    names = [name for _, name in prefect.states(run_id)]
    assert names[:4] == ["Scheduled", "Pending", BACKOFF_STATE, "Pending"]
