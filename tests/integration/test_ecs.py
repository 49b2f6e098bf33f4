"""The ECS backend against moto in server mode (real HTTP, dummy credentials) and the real Prefect server.

moto's gaps are worked around here, in test set-up, never in the product (reference: local-cloud-testing §2):
container-level memory (moto cannot place a task with task-level memory only) and explicit security groups.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import boto3
import pytest
from pushpool.prefect_api.models import StateType
from pushpool.providers.base import JobHandle, JobState
from pushpool.providers.ecs.backend import started_by
from pushpool.usecases.job_spec import build_job_spec

from tests.helpers import SECRET_ARN, PrefectHelper, make_deps, pool_tick, run_as_its_container, skip_ahead, submit

pytestmark = pytest.mark.integration


@pytest.fixture
def ecs_deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    deps = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_test_key_do_not_log")
    yield deps
    deps.orchestrator.close()


def _task(aws: dict, job_id: str) -> dict:
    cluster, arn = job_id.split("::")
    return aws["ecs"].describe_tasks(cluster=cluster, tasks=[arn], include=["TAGS"])["tasks"][0]


def test_submitted_task_carries_what_the_run_needs(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    dep = prefect.create_deployment(
        ecs_pool,
        job_variables={
            "image": "repo/flows:1",
            "cpu": 512,
            "memory": 1024,
            "prefect_api_key_secret_arn": SECRET_ARN,
            "env": {"TEAM": "data"},
        },
    )
    run_id = prefect.create_run(dep)
    outcome = submit(ecs_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    run = prefect.read_run(run_id)
    assert run["infrastructure_pid"] == outcome.job_id and outcome.job_id.startswith(f"{aws['cluster']}::arn:aws:ecs:")

    task = _task(aws, outcome.job_id)
    claims = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    claim = next(s["id"] for s in claims if s["name"] == "Pending")
    assert task["startedBy"] == f"{run_id}/{claim}"  # the run and the attempt (the claim's Pending state)
    override = task["overrides"]["containerOverrides"][0]
    assert override["name"] == "prefect"
    assert override["command"] == ["prefect", "flow-run", "execute"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert env["PREFECT__FLOW_RUN_ID"] == run_id
    assert env["PREFECT_API_URL"] == prefect.api_url
    assert env["TEAM"] == "data"
    assert "PREFECT_API_KEY" not in env
    assert "pnu_test_key_do_not_log" not in str(task)
    tags = {t["key"]: t["value"] for t in task.get("tags", [])}
    assert tags["prefect.io/flow-run-id"] == run_id and tags["prefect.io/work-pool-name"] == ecs_pool

    definition = aws["ecs"].describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert container["image"] == "repo/flows:1"
    assert container["secrets"] == [{"name": "PREFECT_API_KEY", "valueFrom": SECRET_ARN}]
    assert definition["networkMode"] == "awsvpc" and "FARGATE" in definition["requiresCompatibilities"]
    assert (definition["cpu"], definition["memory"]) == ("512", "1024")
    assert definition["family"].startswith(f"pushpool-{ecs_pool}-")
    subnet = next(d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "subnetId")
    assert subnet in aws["subnets"]


def test_ten_runs_of_one_deployment_share_one_task_definition(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict
) -> None:
    dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    for _ in range(10):
        assert submit(ecs_deps, prefect.create_run(dep)).outcome == "submitted"
    arns = aws["ecs"].list_task_definitions()["taskDefinitionArns"]
    ours = [a for a in arns if f":task-definition/pushpool-{ecs_pool}-" in a]
    assert len(ours) == 1, ours


def _spec(deps, prefect: PrefectHelper, pool: str, attempt: str):
    """The rendered job of a new run of a new deployment in ``pool``, for ``attempt``."""
    dep = prefect.create_deployment(pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    client = deps.orchestrator
    return build_job_spec(
        settings=deps.settings,
        client=client,
        run=client.read_flow_run(prefect.create_run(dep)),
        pool=client.read_work_pool(pool),
        attempt=attempt,
        deployment=client.read_deployment(dep),
    )


def test_duplicate_submit_finds_the_task(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    spec = _spec(ecs_deps, prefect, ecs_pool, "attempt-1")
    run_id = spec.run_id
    backend = ecs_deps.backend("ecs")
    first, second = backend.submit(spec), backend.submit(spec)
    assert first == second
    assert len(aws["ecs"].list_tasks(cluster=aws["cluster"], startedBy=f"{run_id}/attempt-1")["taskArns"]) == 1


def test_plaintext_credential_is_refused_and_the_run_crashed(ecs_deps, prefect: PrefectHelper, ecs_pool: str) -> None:
    run_id = prefect.create_run(prefect.create_deployment(ecs_pool))
    outcome = submit(ecs_deps, run_id)
    assert outcome.outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "prefect_api_key_secret_arn" in state["message"]


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"cluster": "no-such-cluster"}, "ClusterNotFoundException"),
        ({"network_configuration": {"subnets": ["subnet-nope"], "securityGroups": ["sg-1"]}}, "InvalidSubnetID"),
        ({"configure_cloudwatch_logs": True}, "needs execution_role_arn"),  # a missing role
    ],
)
def test_aws_refusals_crash_the_run_with_aws_message(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, variables: dict, fragment: str
) -> None:
    dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN, **variables})
    run_id = prefect.create_run(dep)
    assert submit(ecs_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and fragment in state["message"]
    assert "Traceback" not in state["message"]


def test_non_zero_exit_crashes_the_run_with_the_reason(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws) -> None:
    from moto.backends import get_backend

    dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    run_id = prefect.create_run(dep)
    outcome = submit(ecs_deps, run_id)
    cluster, arn = outcome.job_id.split("::")
    task = get_backend("ecs")["123456789012"]["us-east-1"].tasks[cluster][arn]
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.containers[0].exitCode = 137
    task.containers[0].reason = "OutOfMemoryError: Container killed due to memory usage"
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(ecs_deps, ecs_pool))
    assert "137" in run["state"]["message"] and "OutOfMemoryError" in run["state"]["message"]


def test_cancel_stops_the_task(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    run_id = prefect.create_run(dep)
    outcome = submit(ecs_deps, run_id)
    prefect.set_state(run_id, "CANCELLING")
    report = pool_tick(ecs_deps, ecs_pool)
    assert report.reconciled["stop-and-cancel"] >= 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    assert _task(aws, outcome.job_id)["desiredStatus"] == "STOPPED"
    # Stopping a task that is already stopped, or gone, is fine.
    backend = ecs_deps.backend("ecs")
    backend.cancel(JobHandle("ecs", outcome.job_id))
    assert backend.status([JobHandle("ecs", outcome.job_id)])[outcome.job_id].state.is_final


def test_a_new_attempt_goes_straight_to_run_task_with_its_client_token(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict
) -> None:
    """Straight after submit's own claim there is no earlier task to look for: no ListTasks before RunTask, and
    RunTask carries the attempt as clientToken (AWS's own dedup of a retried request)."""
    import dataclasses

    from pushpool.providers.ecs.backend import EcsBackend

    session = boto3.session.Session()
    sent: list[tuple[str, dict]] = []

    def record(request, **_: object):
        target = request.headers.get("X-Amz-Target", b"").decode().rsplit(".", 1)[-1]
        sent.append((target, json.loads(request.body or b"{}")))

    session.events.register("before-send.ecs", record)
    backend = EcsBackend(session=session)
    spec = _spec(ecs_deps, prefect, ecs_pool, "attempt-new")
    backend.submit(dataclasses.replace(spec, new_attempt=True))
    actions = [a for a, _ in sent]
    assert "ListTasks" not in actions and actions.count("RunTask") == 1
    assert next(body for a, body in sent if a == "RunTask")["clientToken"] == "attempt-new"
    sent.clear()
    backend.submit(spec)  # the same attempt again, without the flag: found, not run twice
    assert "ListTasks" in [a for a, _ in sent] and "RunTask" not in [a for a, _ in sent]
    assert len(aws["ecs"].list_tasks(cluster=aws["cluster"], startedBy=f"{spec.run_id}/attempt-new")["taskArns"]) == 1


def test_throttling_is_retried(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    from botocore.awsrequest import AWSResponse
    from pushpool.providers.ecs.backend import EcsBackend

    session = boto3.session.Session()
    calls = {"run_task": 0}

    def throttle(request, **_: object):
        if request.headers.get("X-Amz-Target", b"").endswith(b"RunTask"):
            calls["run_task"] += 1
            if calls["run_task"] <= 2:
                body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
                return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))
        return None

    session.events.register("before-send.ecs.RunTask", throttle)
    ecs_deps._backends["ecs"] = EcsBackend(session=session)
    dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
    outcome = submit(ecs_deps, prefect.create_run(dep))
    assert outcome.outcome == "submitted"
    assert calls["run_task"] == 3


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: object):
        yield self.body


def test_the_job_sent_to_ecs_runs_the_flow(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict, tmp_path: Path
) -> None:
    """Take the container command and environment moto recorded, run them here: the real flow completes."""
    dep = prefect.create_deployment(
        ecs_pool, "flows.py:hello", job_variables={"prefect_api_key_secret_arn": SECRET_ARN}
    )
    run_id = prefect.create_run(dep, parameters={"who": "ecs"})
    outcome = submit(ecs_deps, run_id)
    override = _task(aws, outcome.job_id)["overrides"]["containerOverrides"][0]
    env = {e["name"]: e["value"] for e in override["environment"]}
    run_as_its_container(override["command"], env, tmp_path)
    assert prefect.state(run_id)[0] == "COMPLETED"


def test_crash_writes_the_task_log_tail_to_the_run(ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    from moto.backends import get_backend

    dep = prefect.create_deployment(
        ecs_pool,
        job_variables={
            "prefect_api_key_secret_arn": SECRET_ARN,
            "configure_cloudwatch_logs": True,
            "execution_role_arn": "arn:aws:iam::123456789012:role/PrefectEcsTaskExecutionRole",
            "cloudwatch_logs_prefix": "flows",
        },
    )
    run_id = prefect.create_run(dep)
    outcome = submit(ecs_deps, run_id)
    cluster, arn = outcome.job_id.split("::")
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="prefect")
    stream = f"flows/prefect/{arn.rsplit('/', 1)[-1]}"
    logs.create_log_stream(logGroupName="prefect", logStreamName=stream)
    logs.put_log_events(
        logGroupName="prefect",
        logStreamName=stream,
        logEvents=[
            {"timestamp": int(time.time() * 1000) - 1000 + i, "message": line}
            for i, line in enumerate(["downloading flow code", "ModuleNotFoundError: No module named 'pandas'"])
        ],
    )
    task = get_backend("ecs")["123456789012"]["us-east-1"].tasks[cluster][arn]
    task.last_status = task.desired_status = "STOPPED"
    task.containers[0].exitCode = 1
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(ecs_deps, ecs_pool))
    assert "exit code 1" in run["state"]["message"]
    assert "No module named 'pandas'" in run["state"]["message"]
    run_logs = prefect.json("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}})
    assert any("No module named 'pandas'" in entry["message"] for entry in run_logs)


def test_task_transitions_through_the_state_manager(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict, moto_endpoint: str
) -> None:
    """moto's own state machine moves the task RUNNING → … → STOPPED (exit 0) while the run never reports."""
    import httpx

    transition = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1}}
    httpx.post(f"{moto_endpoint}/moto-api/state-manager/set-transition", json=transition).raise_for_status()
    try:
        dep = prefect.create_deployment(ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN})
        run_id = prefect.create_run(dep)
        outcome = submit(ecs_deps, run_id)
        seen = []
        backend = ecs_deps.backend("ecs")
        handle = JobHandle("ecs", outcome.job_id)
        for _ in range(8):
            status = backend.status([handle])[handle.id]
            seen.append(status.extra.get("lastStatus"))
            if status.state.is_final:
                break
        assert seen[-1] == "STOPPED" and len(set(seen)) > 2, seen
        assert backend.status([handle])[handle.id].state is JobState.SUCCEEDED
        # Exit 0 but the run is still Pending: after the grace period the monitor crashes it.
        run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(ecs_deps, ecs_pool))
        assert "exited cleanly" in run["state"]["message"]
    finally:  # back to the session's rule (tests/emulators.py): tasks keep their state; "unset" would let every
        # later test's tasks run on to STOPPED as they are described
        from tests.emulators import hold_tasks_still

        hold_tasks_still()


def test_a_task_in_the_deployments_own_cluster_is_adopted_after_submit_died(
    ecs_deps, prefect: PrefectHelper, ecs_pool: str, aws: dict
) -> None:
    """Submit dies after RunTask and before writing the pid, for a deployment that overrides ``cluster``: the monitor
    must find the task in that cluster (the run's own configuration), adopt it, and start no second task."""
    other = "pushpool-deployment-cluster"
    aws["ecs"].create_cluster(clusterName=other)
    dep = prefect.create_deployment(
        ecs_pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN, "cluster": other}
    )
    run_id = prefect.create_run(dep)
    client = ecs_deps.orchestrator
    claim = client.propose_state(run_id, StateType.PENDING)
    assert claim.accepted
    run = client.read_flow_run(run_id)
    spec = build_job_spec(
        settings=ecs_deps.settings,
        client=client,
        run=run,
        pool=client.read_work_pool(ecs_pool),
        deployment=client.read_deployment(dep),
        attempt=claim.state.id,
    )
    handle = ecs_deps.backend("ecs").submit(dataclasses.replace(spec, new_attempt=True))  # then submit "dies"
    assert handle.id.startswith(f"{other}::")

    skip_ahead(ecs_deps, ecs_deps.settings.pending_timeout_seconds + 1)
    report = pool_tick(ecs_deps, ecs_pool)
    assert report.reconciled["adopt"] == 1, report.as_dict()
    assert prefect.read_run(run_id)["infrastructure_pid"] == handle.id
    assert prefect.state(run_id) == ("PENDING", "Pending")  # not sent back to Scheduled
    pool_tick(ecs_deps, ecs_pool)
    tasks = aws["ecs"].list_tasks(cluster=other, startedBy=started_by(run_id, claim.state.id))["taskArns"]
    assert len(tasks) == 1
    assert aws["ecs"].list_tasks(cluster=aws["cluster"], startedBy=started_by(run_id, claim.state.id))["taskArns"] == []
