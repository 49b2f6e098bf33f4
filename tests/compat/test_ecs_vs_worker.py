"""Differential test (issue 12): for a table of realistic job-variable sets, the RegisterTaskDefinition and RunTask
bodies pushpool sends are compared with those Prefect's ECS worker (prefect-aws 0.7.12) sends for the same flow run,
against the same moto server (bodies as moto received them over HTTP: tests/emulators.py RequestLog).

The worker runs in its own environment (``.venv-bench``) through ``worker_driver.py``; ``make compat`` runs this.
Each case makes two pools with the same tweaks — one of type ``ecs`` on the worker's own default template, one of
type ``ecs:push`` on pushpool's — and one deployment (the run's job variables). Both dispatch the same run. What may
differ is listed once, with its reason, in ``INTENDED`` (docs/ecs-compat.md shows the same table; a test keeps the
two in step): each entry normalises exactly that difference away; anything else that differs fails the case.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.differential import start, worker_env
from tests.emulators import MotoServer
from tests.helpers import SECRET_ARN, PrefectHelper, make_deps

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ecs-compat.md"
KEY = "pnu_compat_key_do_not_log"
ACCOUNT = "123456789012"
EXEC_ROLE = f"arn:aws:iam::{ACCOUNT}:role/compat-exec"


# -- the intended differences, in one place -------------------------------------------------------------------


@dataclass(frozen=True)
class Intended:
    id: str
    what: str
    why: str
    # (which body: "definition" | "run", pushpool's body, the worker's body, the case) -> None; normalises in place
    normalise: Callable[[str, dict, dict, Case], None] = field(repr=False, compare=False)


def _family(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind == "definition" and "family" not in case.variables:
        ours.pop("family", None)
        theirs.pop("family", None)


def _task_definition_reference(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind == "run" and "task_definition_arn" not in case.variables:
        ours["taskDefinition"] = theirs["taskDefinition"] = "<registered>"


def _idempotency(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind == "run":
        ours.pop("clientToken", None)
        theirs.pop("clientToken", None)  # botocore fills in a random one per call
        ours.pop("startedBy", None)


def _image(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind == "definition" and "image" not in case.variables and not case.template_image:
        for body in (ours, theirs):
            for container in body.get("containerDefinitions", []):
                if container.get("image", "").startswith("prefecthq/prefect:"):
                    container["image"] = "<default image>"


def _log_prefix(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind == "definition" and "cloudwatch_logs_prefix" not in case.variables:
        for body in (ours, theirs):
            for container in body.get("containerDefinitions", []):
                options = (container.get("logConfiguration") or {}).get("options") or {}
                if "awslogs-stream-prefix" in options and "awslogs-stream-prefix" not in case.variables.get(
                    "cloudwatch_logs_options", {}
                ):
                    options["awslogs-stream-prefix"] = "<default prefix>"


_WORKER_ONLY_LABELS = {
    "prefect.io/flow-id",
    "prefect.io/flow-name",
    "prefect.io/version",
    "prefect.io/deployment-updated",
    "prefect.io/worker-name",
    "prefect.io/worker-id",
    "prefect.io/deployment-version",
}


def _tags(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind != "run":
        return
    for body in (ours, theirs):
        tags = {t["key"]: t["value"] for t in body.get("tags", [])}
        for key in _WORKER_ONLY_LABELS:
            tags.pop(key, None)
        for key in ("prefect.io/work-pool-name", "prefect.io/work-pool-id"):  # two pools: one per dispatcher
            if key in tags:
                tags[key] = "<pool>"
        body["tags"] = tags


_PUSHPOOL_ONLY_ENV = {"PREFECT__FLOW_ID", "PREFECT__DEPLOYMENT_ID", "PREFECT__DEPLOYMENT_NAME"}


def _environment(kind: str, ours: dict, theirs: dict, case: Case) -> None:
    if kind != "run":
        return
    for body, side in ((ours, "ours"), (theirs, "theirs")):
        for override in (body.get("overrides") or {}).get("containerOverrides", []):
            env = {e["name"]: e["value"] for e in override.get("environment", [])}
            for name in list(env):
                job_env = name in case.variables.get("env", {})
                if side == "theirs" and name.startswith("PREFECT_") and not job_env and name not in _SHARED_ENV:
                    del env[name]  # the worker's own Prefect settings, copied into every task
                if side == "ours" and name in _PUSHPOOL_ONLY_ENV:
                    del env[name]
            override["environment"] = env


_SHARED_ENV = {"PREFECT_API_URL", "PREFECT__FLOW_RUN_ID"}

INTENDED: tuple[Intended, ...] = (
    Intended(
        "content-addressed-family",
        "task definition family: `pushpool-<pool>-<hash of the content>` instead of `prefect_<pool>_<deployment>`",
        "stateless reuse: a cold Lambda finds the definition by its content (100 runs register one definition) and "
        "deployments with the same content share it; the worker needs its in-process cache for that",
        _family,
    ),
    Intended(
        "family-not-revision",
        "RunTask names the content-addressed family (AWS runs its latest ACTIVE revision), not a revision ARN",
        "every submit of one attempt sends the same request, so the clientToken deduplicates concurrent submits",
        _task_definition_reference,
    ),
    Intended(
        "idempotent-run-task",
        "RunTask's `clientToken` is the attempt (the worker's is random per call) and it carries `startedBy` "
        "(`<flow run>/<attempt>`)",
        "a retried or concurrent submit starts no second task, and finds the task it started",
        _idempotency,
    ),
    Intended(
        "default-image",
        "default image `prefecthq/prefect:3-latest` instead of `prefecthq/prefect:<worker's version>-python<x.y>`",
        "pushpool does not import prefect, so it has no Prefect version of its own to match; set `image`",
        _image,
    ),
    Intended(
        "log-stream-prefix",
        "default awslogs stream prefix `pushpool-<pool>` instead of `prefect-logs_<pool>_<deployment>`",
        "a per-deployment prefix would make every deployment's definition different content (no sharing); "
        "`cloudwatch_logs_prefix` still sets it",
        _log_prefix,
    ),
    Intended(
        "attribution-labels",
        "tags: no `prefect.io/flow-id`, `flow-name`, `version`, `deployment-updated`, `worker-*` labels",
        "pushpool labels the run, deployment and pool (what the monitor and operators look tasks up by); there is "
        "no worker; the pool label names each dispatcher's own pool in this test",
        _tags,
    ),
    Intended(
        "no-worker-settings-in-env",
        "environment: only `PREFECT_API_URL`, `PREFECT__FLOW_RUN_ID`, `PREFECT__FLOW_ID`, `PREFECT__DEPLOYMENT_*` and "
        "the job's `env`; the worker also copies every Prefect setting of its own process",
        "design rule 7: a task gets what the run needs and nothing of the dispatcher's configuration",
        _environment,
    ),
)


# -- the cases -----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    variables: dict[str, Any] = field(default_factory=dict)
    tweak: Callable[[dict, dict], None] | None = None  # (job_configuration, moto set-up) -> None, on both pools
    network: bool = True  # the pools' network_configuration default (cluster network with a security group)
    template_image: bool = False
    definition_arn: bool = False  # task_definition_arn: a definition whose container is "app" (registered here)
    credentials_block: bool = False  # both pools' aws_credentials: a block with keys of an IAM user of the account


def _run_request_fields(job: dict, aws: dict) -> None:
    request = job["task_run_request"]
    request["propagateTags"] = "TASK_DEFINITION"
    request["enableExecuteCommand"] = True
    request["platformVersion"] = "1.4.0"
    request["overrides"]["ephemeralStorage"] = {"sizeInGiB": 30}
    request["overrides"]["containerOverrides"][0]["environmentFiles"] = [
        {"value": "arn:aws:s3:::compat-config/app.env", "type": "s3"}
    ]


def _private_network(job: dict, aws: dict) -> None:
    job["task_run_request"]["networkConfiguration"] = {
        "awsvpcConfiguration": {
            "subnets": [aws["subnets"][1]],
            "securityGroups": [aws["security_group"]],
            "assignPublicIp": "DISABLED",
        }
    }


def _db_secret(job: dict, aws: dict) -> None:
    job["task_definition"]["containerDefinitions"][0]["secrets"] = [
        {"name": "DB_PASSWORD", "valueFrom": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-Xy12"}
    ]


def _flow_container(job: dict, aws: dict) -> None:
    job["task_definition"]["containerDefinitions"] = [
        {"name": "log-router", "image": "amazon/aws-for-fluent-bit:2", "memoryReservation": 64, "essential": False},
        {"name": "flow", "image": "repo/flows:2", "memoryReservation": 512},
    ]


CASES: list[Case] = [
    Case("defaults", {}),
    Case("image", {"image": "repo/flows:1"}),
    Case("cpu-memory", {"image": "repo/flows:1", "cpu": 512, "memory": 1024}),
    Case("env-and-labels", {"image": "repo/flows:1", "env": {"TEAM": "data", "STAGE": "prod"}, "labels": {"a": "b"}}),
    Case("command", {"image": "repo/flows:1", "command": "python -m flows.entry --fast"}),
    Case("task-role", {"image": "repo/flows:1", "task_role_arn": f"arn:aws:iam::{ACCOUNT}:role/compat-task"}),
    Case("execution-role", {"image": "repo/flows:1", "execution_role_arn": EXEC_ROLE}),
    Case(
        "cloudwatch-logs",
        {"image": "repo/flows:1", "execution_role_arn": EXEC_ROLE, "configure_cloudwatch_logs": True},
    ),
    Case(
        "cloudwatch-logs-options",
        {
            "image": "repo/flows:1",
            "execution_role_arn": EXEC_ROLE,
            "configure_cloudwatch_logs": True,
            "cloudwatch_logs_prefix": "flows",
            "cloudwatch_logs_options": {"awslogs-group": "/compat/flows", "awslogs-create-group": "false"},
        },
    ),
    Case("fargate-spot", {"image": "repo/flows:1", "launch_type": "FARGATE_SPOT"}),
    Case(
        "capacity-provider-strategy",
        {
            "image": "repo/flows:1",
            "capacity_provider_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        },
    ),
    Case("ec2", {"image": "repo/flows:1", "launch_type": "EC2"}, network=False),
    Case("ec2-sizes", {"image": "repo/flows:1", "launch_type": "EC2", "cpu": 512, "memory": 1024}, network=False),
    Case("family", {"image": "repo/flows:1", "family": "compat-family"}),
    Case("run-request-fields", {"image": "repo/flows:1"}, _run_request_fields),
    Case("template-network", {"image": "repo/flows:1"}, _private_network, network=False),
    Case("template-secrets", {"image": "repo/flows:1"}, _db_secret),
    Case("named-container", {"container_name": "flow"}, _flow_container, template_image=True),
    Case("first-container", {}, _flow_container, template_image=True),
    Case("auth-string-secret", {"image": "repo/flows:1", "prefect_api_auth_string_secret_arn": SECRET_ARN}),
    Case("task-definition-arn", {}, definition_arn=True),
    Case("credentials-block", {"image": "repo/flows:1"}, credentials_block=True),
]


# -- fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(prefect_api: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory):
    env = worker_env(
        prefect_api,
        "pnu_worker_key_do_not_log",  # the worker holds a key; its tasks get it by secret
        tmp_path_factory.mktemp("worker-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS="1",
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    yield from start(os.environ["PUSHPOOL_WORKER_PYTHON"], Path(__file__).with_name("worker_driver.py"), env)


@pytest.fixture(scope="module")
def worker_template(worker) -> dict:
    answer = worker({"template": True})
    assert answer["ok"], answer
    return answer["template"]


@pytest.fixture(scope="module")
def network(aws: dict) -> dict:
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    return {**aws, "vpc": vpc}


@pytest.fixture(scope="module")
def ec2_cluster(aws: dict) -> str:
    ec2, ecs = boto3.client("ec2"), aws["ecs"]
    name = "compat-ec2"
    ecs.create_cluster(clusterName=name)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.4xlarge")["Instances"][0]
    ecs.register_container_instance(
        cluster=name, instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"]})
    )
    return name


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    d = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    yield d
    d.orchestrator.close()


@pytest.fixture(scope="module")
def app_definition(aws: dict) -> str:
    return aws["ecs"].register_task_definition(
        family="compat-app",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": "app",
                "image": "repo/app:1",
                "memoryReservation": 256,
                "secrets": [{"name": "PREFECT_API_KEY", "valueFrom": SECRET_ARN}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def _credentials_block(deps) -> tuple[dict, str]:
    iam = boto3.client("iam")
    user = PrefectHelper.unique("compat-user")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    client = deps.orchestrator
    type_id = client.read_block_type_id("aws-credentials")
    block = client.create_block_document(
        {
            "name": PrefectHelper.unique("compat-aws"),
            "data": {
                "aws_access_key_id": key["AccessKeyId"],
                "aws_secret_access_key": key["SecretAccessKey"],
                "region_name": "us-east-1",
            },
            "block_type_id": type_id,
            "block_schema_id": client.read_latest_block_schema_id(type_id),
        }
    )
    return {"$ref": {"block_document_id": block.id}}, key["AccessKeyId"]


def _pool(
    prefect: PrefectHelper,
    type_name: str,
    template: dict,
    case: Case,
    net: dict,
    cluster: str,
    defaults: dict,
) -> str:
    template = copy.deepcopy(template)
    props = template["variables"]["properties"]
    for name, value in defaults.items():
        props[name]["default"] = value
    props["cluster"]["default"] = cluster
    props["vpc_id"]["default"] = net["vpc"]  # the worker wants it with a network_configuration
    if case.network:
        props["network_configuration"]["default"] = {
            "subnets": net["subnets"],
            "securityGroups": [net["security_group"]],
            "assignPublicIp": "ENABLED",
        }
    props["prefect_api_key_secret_arn"]["default"] = SECRET_ARN
    job = template["job_configuration"]
    job["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512  # moto, on both
    if case.tweak is not None:
        case.tweak(job, net)
    name = prefect.unique(f"compat-{type_name.replace(':', '-')}")
    prefect.create_pool(name, type_name, base_job_template=template)
    return name


def _bodies(mark: int) -> tuple[list[dict], list[dict], set[str]]:
    """What was registered and run since ``mark``, and the access keys that signed those calls."""
    log = MotoServer.instance.requests  # type: ignore[union-attr]
    registered, run = log.since(mark, "RegisterTaskDefinition"), log.since(mark, "RunTask")
    return [e["body"] for e in registered], [e["body"] for e in run], {e["key_id"] for e in registered + run}


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pushpool_sends_what_the_worker_sends(
    case: Case,
    deps,
    prefect: PrefectHelper,
    worker,
    worker_template: dict,
    network: dict,
    ec2_cluster: str,
    app_definition: str,
) -> None:
    cluster = ec2_cluster if case.variables.get("launch_type") == "EC2" else network["cluster"]
    variables = copy.deepcopy(case.variables)
    if case.definition_arn:
        variables["task_definition_arn"] = app_definition
        case = Case(case.id, variables, case.tweak, case.network, case.template_image)
    defaults, signer = {}, "testing"
    if case.credentials_block:
        defaults["aws_credentials"], signer = _credentials_block(deps)
    theirs_pool = _pool(prefect, "ecs", worker_template, case, network, cluster, defaults)
    ours_pool = _pool(prefect, "ecs:push", base_job_template("ecs:push"), case, network, cluster, defaults)
    deployment = prefect.create_deployment(ours_pool, job_variables=variables)
    run_id = prefect.create_run(deployment)

    log = MotoServer.instance.requests  # type: ignore[union-attr]
    mark = log.mark()
    answer = worker({"pool": theirs_pool, "run_id": run_id})
    assert answer["ok"], answer
    theirs = _bodies(mark)
    mark = log.mark()
    client = deps.orchestrator
    outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(ours_pool), trigger="compat")
    assert outcome.outcome == "submitted", outcome
    ours = _bodies(mark)
    assert KEY not in json.dumps(ours[:2])
    assert ours[2] == theirs[2] == {signer}  # the same identity signed both (the block's keys when it has some)

    assert len(ours[0]) == len(theirs[0]) <= 1, (ours[0], theirs[0])  # both register, or neither
    assert len(ours[1]) == len(theirs[1]) == 1
    pairs = [("definition", ours[0][0], theirs[0][0])] if ours[0] else []
    pairs.append(("run", ours[1][0], theirs[1][0]))
    for kind, mine, worker_body in pairs:
        mine, worker_body = copy.deepcopy(mine), copy.deepcopy(worker_body)
        for difference in INTENDED:
            difference.normalise(kind, mine, worker_body, case)
        assert _canonical(mine) == _canonical(worker_body), f"{case.id}: {kind} differs"


def test_the_document_lists_every_intended_difference() -> None:
    text = DOC.read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M))
    assert rows >= {d.id for d in INTENDED}, sorted({d.id for d in INTENDED} - rows)
