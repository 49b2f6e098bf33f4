"""The Lambda entry points (functions/*/app.py, Powertools) with real-shaped events: a Function URL request, a
ScheduleV2 tick, an EventBridge ECS Task State Change and the delay queue's SQS records — secrets from Secrets
Manager on moto, the real Prefect server, and the process backend behind an ECS-free pool."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from pushpool.entrypoints import aws_lambda
from pushpool.providers.base import JobHandle
from pushpool.usecases.deps import Deps

from tests.helpers import EXITS_AT_ONCE, PrefectHelper, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load(function: str):
    spec = importlib.util.spec_from_file_location(f"fn_{function}", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Context:
    function_name: str = "pushpool-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:pushpool-test"
    aws_request_id: str = "req-1"


@pytest.fixture(scope="module")
def prefect_api(session_home: Path, migrated_db: Path) -> str:
    """A Prefect server of this module's own: the deployed monitor's scheduled tick serves every pool of its server,
    and the session's server holds every other test's pools and in-flight runs (such a tick took over 300 s there late
    in a run)."""
    server = start_server(session_home / f"functions-{uuid.uuid4().hex[:6]}", migrated_db)
    yield server.api_url
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, prefect_api: str, tmp_path: Path, moto_endpoint: str) -> None:
    secrets = boto3.client("secretsmanager")
    token_arn = secrets.create_secret(
        Name=f"pushpool-token-{uuid.uuid4().hex[:6]}",
        SecretString=json.dumps({"current": "fn-token", "previous": "old"}),
    )["ARN"]
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("PUSHPOOL_WEBHOOK_TOKEN_SECRET_ARN", token_arn)
    monkeypatch.setenv("PUSHPOOL_SUBMIT_URL", "http://127.0.0.1:9/submit")
    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "pushpool-test")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "pushpool")
    aws_lambda.lambda_deps.cache_clear()
    # Powertools' Logger (service "pushpool") gives the "pushpool" logger a handler on the sys.stdout of the moment:
    # in Lambda that is wanted; here it is this test's capture, closed after it, and every later test's pushpool log
    # line would meet a closed file ("--- Logging error ---" in CI's output). Put the logger back as it was.
    pushpool_log = logging.getLogger("pushpool")
    saved = {**vars(pushpool_log), "handlers": pushpool_log.handlers[:]}
    yield
    vars(pushpool_log).clear()
    vars(pushpool_log).update(saved)
    aws_lambda.lambda_deps.cache_clear()


def url_event(body: dict, token: str = "fn-token") -> dict:
    """A Lambda Function URL event, as AWS sends it (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"authorization": f"Bearer {token}", "content-type": "application/json", "host": "x.lambda-url"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "x",
            "domainName": "x.lambda-url.us-east-1.on.aws",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "python-httpx",
            },
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1800000000000,
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


SCHEDULE_EVENT = {
    "version": "0",
    "id": "e-1",
    "detail-type": "Scheduled Event",
    "source": "aws.scheduler",
    "account": "123456789012",
    "time": "2026-11-21T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/pushpool-monitor"],
    "detail": "{}",
}


def ecs_event(run_id: str, status: str = "STOPPED") -> dict:
    arn = "arn:aws:ecs:us-east-1:123456789012:task/pushpool/0123456789abcdef"
    return {
        "version": "0",
        "id": "e-2",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "time": "2026-11-21T00:00:00Z",
        "region": "us-east-1",
        "resources": [arn],
        "detail": {
            "taskArn": arn,
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/pushpool",
            "lastStatus": status,
            "desiredStatus": "STOPPED",
            "startedBy": f"{run_id}/attempt-1",
            "stoppedReason": "Essential container in task exited",
            "containers": [],
            "version": 3,
        },
    }


def test_provision_submit_and_monitor_handlers(env, prefect: PrefectHelper, capsys) -> None:
    provision, submit, monitor = load("provision"), load("submit"), load("monitor")
    pool = prefect.unique("fn")
    result = provision.lambda_handler({"name": pool, "type": "process:push"}, Context())
    assert result["ok"] and result["changed"]
    assert provision.lambda_handler({"name": pool, "type": "process:push"}, Context())["changed"] is False
    bad = provision.lambda_handler({"name": pool, "type": "nomad:push"}, Context())
    assert bad["ok"] is False and bad["status"] == 422
    assert bad["error"].startswith("unknown push pool type 'nomad:push' (supported: ")

    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 20"}))
    assert submit.lambda_handler(url_event({"flow_run_id": run_id}, token="nope"), Context())["statusCode"] == 401
    assert submit.lambda_handler(url_event({"flow_run_id": "x"}), Context())["statusCode"] == 400
    # The HTTP rules of serve hold here (issue 28 item 3): a body not declared JSON is 415, an unknown run 404.
    plain = url_event({"flow_run_id": run_id})
    plain["headers"]["content-type"] = "text/plain"
    refused = submit.lambda_handler(plain, Context())
    assert (
        refused["statusCode"] == 415 and "send Content-Type: application/json" in json.loads(refused["body"])["error"]
    )
    unknown = submit.lambda_handler(url_event({"flow_run_id": "00000000-0000-4000-8000-000000000000"}), Context())
    assert unknown["statusCode"] == 404 and "unknown flow run" in json.loads(unknown["body"])["error"]
    old = submit.lambda_handler(url_event({"flow_run_id": run_id}, token="old"), Context())  # rotation
    assert old["statusCode"] == 200, old
    assert json.loads(old["body"])["outcome"] == "submitted"

    prefect.set_state(run_id, "CANCELLING")
    answer = monitor.lambda_handler(ecs_event(run_id), Context())  # the fast path: that run only
    assert answer["detail"] == "stop-and-cancel"
    assert prefect.state(run_id)[0] == "CANCELLED"
    # A task that stopped under a Running run: the task's event reconciles that run at once (Crashed, with why).
    failing = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sh -c 'exit 3'"}))
    assert json.loads(submit.lambda_handler(url_event({"flow_run_id": failing}), Context())["body"])["job_id"]
    prefect.set_state(failing, "RUNNING")
    prefect.wait_for(
        failing, {"CRASHED"}, timeout=20, tick=lambda: monitor.lambda_handler(ecs_event(failing), Context())
    )
    assert "exit code 3" in prefect.read_run(failing)["state"]["message"]
    report = monitor.lambda_handler(SCHEDULE_EVENT, Context())
    assert {"pools", "dispatched", "reconciled", "errors"} <= set(report)
    assert monitor.lambda_handler({"detail-type": "ECS Task State Change", "detail": {}}, Context()) == {
        "ignored": "malformed event"
    }

    out = capsys.readouterr().out
    # EMF: the names of serve's /metrics, with their labels as dimensions, in the stack's namespace.
    emf = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    named = {
        (d["_aws"]["CloudWatchMetrics"][0]["Namespace"], d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"])
        for d in emf
    }
    assert {n for ns, n in named if ns == "pushpool-test"} >= {
        "pushpool_prefect_api_calls_total",
        "pushpool_backend_calls_total",
        "pushpool_monitor_tick_duration_seconds",
        "pushpool_runs_in_flight",
    }, named
    submits = [d for d in emf if d.get("operation") == "submit" and d.get("provider") == "process"]
    assert submits and all("pushpool_backend_calls_total" in d for d in submits)
    assert {d["route"] for d in emf if "route" in d} >= {"/flow_runs/{id}"}
    assert run_id not in json.dumps(emf) and pool not in {d.get("route") for d in emf}
    assert any(d.get("pool") == pool for d in emf if "pushpool_runs_in_flight" in d)
    assert '"correlation_id"' in out or '"function_request_id"' in out  # structured logs with context
    assert "fn-token" not in out


def test_provision_handler_plans_and_applies_infrastructure(env, prefect: PrefectHelper) -> None:
    provision = load("provision")
    pool = prefect.unique("fninfra")
    request = {"name": pool, "type": "ecs:push", "provision_infra": True, "region": "us-east-1"}
    plan = provision.lambda_handler({**request, "plan_only": True}, Context())
    assert plan["ok"] and plan["applied"] is False
    assert {s["resource"]: s["action"] for s in plan["plan"]}["ECS cluster"] == "create"
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 404  # the plan changed nothing
    dry = provision.lambda_handler({**request, "dry_run": True, "concurrency_limit": 2}, Context())
    assert dry["ok"] and dry["applied"] is False and dry["created"] == []  # a dry run creates nothing, in AWS either
    assert boto3.client("ecs").describe_clusters(clusters=[f"pushpool-{pool}"])["clusters"] == []
    done = provision.lambda_handler({**request, "concurrency_limit": 2}, Context())
    assert done["ok"] and done["applied"] and f"ECS cluster pushpool-{pool}" in done["created"]
    assert done["prefect"]["steps"][0]["action"] == "created"
    assert prefect.json("GET", f"/work_pools/{pool}")["concurrency_limit"] == 2  # not lost with provision_infra
    again = provision.lambda_handler(request, Context())
    assert {s["action"] for s in again["plan"]} == {"exists"} and again["created"] == []
    bad = provision.lambda_handler({**request, "name": "no good"}, Context())
    assert bad["ok"] is False and "invalid work pool name" in bad["error"]
    # No IAM user or access key from the stack's role (it holds no iam:CreateUser / iam:CreateAccessKey).
    keys = provision.lambda_handler({**request, "name": f"{pool}-k", "credentials": "access-key"}, Context())
    assert keys["ok"] is False and keys["status"] == 400 and "--credentials access-key" in keys["error"]
    assert not [u for u in boto3.client("iam").list_users()["Users"] if u["UserName"] == f"pushpool-{pool}-k"]
    assert prefect.request("GET", f"/work_pools/{pool}-k").status_code == 404


def test_the_deployed_monitor_leaves_pools_of_types_it_does_not_serve_alone(
    env, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """infra/template.yaml configures the AWS functions for ecs:push (and prefect:managed, when asked) only: a due
    process:push run is not theirs."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(ROOT / "infra" / "template.yaml"))
    pool_types = template["Globals"]["Function"]["Environment"]["Variables"]["PUSHPOOL_POOL_TYPES"]
    condition, served_with_managed, served = pool_types["Fn::If"]  # ServeManagedPools (default false) adds managed
    assert condition == "ServesManagedPools" and template["Parameters"]["ServeManagedPools"]["Default"] == "false"
    assert "process:push" not in served_with_managed
    monkeypatch.setenv("PUSHPOOL_POOL_TYPES", served)
    pool = prefect.unique("not-lambdas")
    prefect.create_pool(pool)
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "true"}))
    load("monitor").lambda_handler(SCHEDULE_EVENT, Context())
    assert prefect.states(run_id) == [("SCHEDULED", "Scheduled")]


def sqs_event(bodies: list[str]) -> dict:
    """The event the delay queue's event source mapping sends submit (SQS records)."""
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"r-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:pushpool-delay",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_a_scheduled_run_comes_back_through_the_delay_queue_at_its_time(
    env, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployed path of punctual dispatch: submit arms a delayed SQS message for a run not due yet; the message
    (received from moto at its time, as Lambda's event source mapping would) invokes submit, which starts the job."""
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"pushpool-delay-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    monkeypatch.setenv("PUSHPOOL_DELAY_QUEUE_URL", queue)
    aws_lambda.lambda_deps.cache_clear()
    submit = load("submit")
    pool = prefect.unique("fndelay")
    prefect.create_pool(pool)
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 20"})
    due = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)  # lead 3 s: its job is due in 2 s
    run_id = prefect.create_run(dep, state={"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}})
    told = json.loads(submit.lambda_handler(url_event({"flow_run_id": run_id}), Context())["body"])
    assert told["outcome"] == "deferred" and "(trigger armed)" in told["detail"]
    assert sqs.receive_message(QueueUrl=queue).get("Messages") is None  # delayed: not visible yet

    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10).get("Messages", [])
    assert len(messages) == 1 and json.loads(messages[0]["Body"])["flow_run_id"] == run_id
    answer = submit.lambda_handler(sqs_event([messages[0]["Body"], "{not json", '{"flow_run_id": "x"}']), Context())
    assert answer == {"batchItemFailures": []}  # the malformed records are dropped, not retried
    assert prefect.state(run_id) == ("PENDING", "InfrastructurePending")
    handle = JobHandle("process", prefect.read_run(run_id)["infrastructure_pid"])
    Deps.from_settings(aws_lambda.lambda_settings()).backend("process").cancel(handle, grace_seconds=1)


def test_the_lambda_handlers_serve_modal_and_coiled_pools_when_configured_to(
    env, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch, modal_server, coiled_server
) -> None:
    """The same handlers run modal:push and coiled:push pools (PUSHPOOL_POOL_TYPES): each SDK loads with its pools."""
    monkeypatch.setenv("PUSHPOOL_POOL_TYPES", "modal:push,coiled:push")
    aws_lambda.lambda_deps.cache_clear()
    provision, submit = load("provision"), load("submit")
    for type_name in ("modal:push", "coiled:push"):
        pool = prefect.unique(type_name.split(":")[0])
        assert provision.lambda_handler({"name": pool, "type": type_name}, Context())["ok"]
        run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
        answer = json.loads(submit.lambda_handler(url_event({"flow_run_id": run_id}), Context())["body"])
        assert answer["outcome"] == "submitted", answer
        assert prefect.read_run(run_id)["infrastructure_pid"] == answer["job_id"]


def test_the_google_submit_function_answers_405_to_other_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """functions-framework passes every method to the function: submit answers as pushpool serve does (issue 28
    item 3), before it reads its settings."""
    import flask

    pushpool_log = logging.getLogger("pushpool")  # main.py sets up Cloud Logging's handler on it: put it back after
    saved = {**vars(pushpool_log), "handlers": pushpool_log.handlers[:]}
    spec = importlib.util.spec_from_file_location("fn_gcp_main", ROOT / "functions" / "gcp" / "main.py")
    main = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(main)
    finally:
        vars(pushpool_log).clear()
        vars(pushpool_log).update(saved)
    monkeypatch.setattr(main, "function_deps", lambda: pytest.fail("settings read for a refused method"))
    for method in ("GET", "PUT", "DELETE"):
        with flask.Flask("t").test_request_context("/", method=method):
            body, status, headers = main.submit(flask.request)
        assert status == 405 and headers["Allow"] == "POST" and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": f"{method} is not allowed on submit: use POST"}
