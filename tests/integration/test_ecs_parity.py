"""ECS as a drop-in for Prefect's ECS worker (issue 12): the job variables and pool templates a migrating team already
has must produce the task Prefect's ECS worker would start. One test per difference found; each reads what pushpool
*sent* (RegisterTaskDefinition / RunTask bodies as moto received them over HTTP, tests/emulators.py RequestLog).

moto's gaps are worked around in test set-up only (container-level ``memoryReservation``, explicit security groups, a
container instance for the EC2 launch type).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from pushpool.providers import base_job_template
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.usecases.submit import submit_run

from tests.emulators import MotoServer
from tests.helpers import SECRET_ARN, PrefectHelper, make_deps

pytestmark = pytest.mark.integration

KEY = "pnu_parity_key_do_not_log"
ACCOUNT = "123456789012"


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    d = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    yield d
    d.orchestrator.close()


def moto_log():
    assert MotoServer.instance is not None
    return MotoServer.instance.requests


def sent(mark: int, action: str) -> list[dict[str, Any]]:
    return [e["body"] for e in moto_log().since(mark, action)]


def make_pool(
    prefect: PrefectHelper, aws: dict, tweak=None, *, network: bool = True, defaults: dict | None = None
) -> str:
    """An ecs:push pool on pushpool's template (cluster, network as the session's moto set-up), ``tweak``ed, with
    variable ``defaults`` (where an operator or the provisioner puts a credentials block)."""
    template = copy.deepcopy(base_job_template("ecs:push"))
    props = template["variables"]["properties"]
    props["cluster"]["default"] = aws["cluster"]
    if network:
        props["network_configuration"]["default"] = {
            "subnets": aws["subnets"],
            "securityGroups": [aws["security_group"]],
            "assignPublicIp": "ENABLED",
        }
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512  # moto
    for name, value in (defaults or {}).items():
        props[name]["default"] = value
    if tweak is not None:
        tweak(template["job_configuration"])
    name = prefect.unique("parity")
    prefect.create_pool(name, "ecs:push", base_job_template=template)
    return name


def dispatch(deps, prefect: PrefectHelper, pool: str, job_variables: dict, deployment: str | None = None):
    """One run of a deployment with ``job_variables``, submitted by pushpool; (outcome, mark before, run id)."""
    dep = deployment or prefect.create_deployment(pool, job_variables=job_variables)
    run_id = prefect.create_run(dep)
    client = deps.orchestrator
    run = client.read_flow_run(run_id)
    mark = moto_log().mark()
    outcome = submit_run(deps, run, client.read_work_pool(pool), trigger="test")
    return outcome, mark, run_id


def test_task_definition_arn_overrides_the_definitions_own_container(deps, prefect: PrefectHelper, aws: dict) -> None:
    """Item 1: ``task_definition_arn`` of a definition whose container is ``app``, no ``container_name``: the command
    and the run's environment go to ``app`` (the definition's container), not to a ``prefect`` it does not have."""
    ecs = aws["ecs"]
    arn = ecs.register_task_definition(
        family="parity-app",
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
    pool = make_pool(prefect, aws)
    outcome, mark, run_id = dispatch(
        deps, prefect, pool, {"task_definition_arn": arn, "prefect_api_key_secret_arn": SECRET_ARN}
    )
    assert outcome.outcome == "submitted", outcome
    assert sent(mark, "RegisterTaskDefinition") == []  # the named definition is used as it is
    (request,) = sent(mark, "RunTask")
    assert request["taskDefinition"] == arn
    overrides = request["overrides"]["containerOverrides"]
    assert [o["name"] for o in overrides] == ["app"]
    assert overrides[0]["command"] == ["prefect", "flow-run", "execute"]
    assert {"name": "PREFECT__FLOW_RUN_ID", "value": run_id} in overrides[0]["environment"]


def test_the_templates_run_request_is_the_base_of_run_task(deps, prefect: PrefectHelper, aws: dict) -> None:
    """Item 2: fields an operator put in the pool template's ``task_run_request`` reach RunTask unchanged."""
    env_file = {"value": "arn:aws:s3:::parity-config/app.env", "type": "s3"}

    def tweak(job: dict) -> None:
        request = job["task_run_request"]
        request["propagateTags"] = "TASK_DEFINITION"
        request["enableExecuteCommand"] = True
        request["platformVersion"] = "1.4.0"
        request["overrides"]["ephemeralStorage"] = {"sizeInGiB": 30}
        request["overrides"]["containerOverrides"][0]["environmentFiles"] = [env_file]

    pool = make_pool(prefect, aws, tweak)
    outcome, mark, run_id = dispatch(
        deps, prefect, pool, {"prefect_api_key_secret_arn": SECRET_ARN, "env": {"TEAM": "data"}}
    )
    assert outcome.outcome == "submitted", outcome
    (request,) = sent(mark, "RunTask")
    assert request["propagateTags"] == "TASK_DEFINITION"
    assert request["enableExecuteCommand"] is True
    assert request["platformVersion"] == "1.4.0"
    assert request["overrides"]["ephemeralStorage"] == {"sizeInGiB": 30}
    (container,) = request["overrides"]["containerOverrides"]
    assert container["environmentFiles"] == [env_file]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["TEAM"] == "data" and env["PREFECT__FLOW_RUN_ID"] == run_id  # pushpool adds to the base


def test_the_templates_network_configuration_is_kept(deps, prefect: PrefectHelper, aws: dict) -> None:
    """Item 3: a private-subnet network in the template's ``task_run_request`` is what the task gets — not every
    default-VPC subnet with a public IP."""
    network = {
        "awsvpcConfiguration": {
            "subnets": [aws["subnets"][1]],
            "securityGroups": [aws["security_group"]],
            "assignPublicIp": "DISABLED",
        }
    }

    def tweak(job: dict) -> None:
        job["task_run_request"]["networkConfiguration"] = network

    pool = make_pool(prefect, aws, tweak, network=False)
    outcome, mark, _ = dispatch(deps, prefect, pool, {"prefect_api_key_secret_arn": SECRET_ARN})
    assert outcome.outcome == "submitted", outcome
    (request,) = sent(mark, "RunTask")
    assert request["networkConfiguration"] == network


def test_container_secrets_of_the_template_are_merged_with_the_prefect_key(
    deps, prefect: PrefectHelper, aws: dict
) -> None:
    """Item 4: the template's container ``secrets`` stay; the Prefect key's secret is added to them."""
    db = {"name": "DB_PASSWORD", "valueFrom": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-password-Xy12"}

    def tweak(job: dict) -> None:
        job["task_definition"]["containerDefinitions"][0]["secrets"] = [db]

    pool = make_pool(prefect, aws, tweak)
    outcome, mark, _ = dispatch(deps, prefect, pool, {"prefect_api_key_secret_arn": SECRET_ARN})
    assert outcome.outcome == "submitted", outcome
    (definition,) = sent(mark, "RegisterTaskDefinition")
    (container,) = definition["containerDefinitions"]
    assert sorted(container["secrets"], key=lambda s: s["name"]) == [
        db,
        {"name": "PREFECT_API_KEY", "valueFrom": SECRET_ARN},
    ]
    assert KEY not in json.dumps(sent(mark, "RunTask"))


@pytest.fixture
def eu_west_1(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> dict:
    """The environment's region is eu-west-1, with a cluster and a network of its own there."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    ec2, ecs = boto3.client("ec2", region_name="eu-west-1"), boto3.client("ecs", region_name="eu-west-1")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto needs it for task ENIs
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24", AvailabilityZone="eu-west-1a")["Subnet"]
    group = ec2.create_security_group(GroupName="parity-logs", Description="parity", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName="parity-eu")["cluster"]["clusterName"]
    return {"cluster": cluster, "subnet": subnet["SubnetId"], "security_group": group}


def test_cloudwatch_logs_name_the_region_the_task_runs_in(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, aws: dict, eu_west_1: dict
) -> None:
    """Item 5: ``configure_cloudwatch_logs`` with the region from the environment (eu-west-1): the awslogs driver
    writes to eu-west-1, not to a hard-wired us-east-1."""
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps._backends["ecs"] = EcsBackend()  # made in this environment (eu-west-1)
    pool = make_pool(prefect, aws)
    variables = {
        "prefect_api_key_secret_arn": SECRET_ARN,
        "configure_cloudwatch_logs": True,
        "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/parity-exec",
        "cluster": eu_west_1["cluster"],
        "network_configuration": {
            "subnets": [eu_west_1["subnet"]],
            "securityGroups": [eu_west_1["security_group"]],
            "assignPublicIp": "DISABLED",
        },
    }
    try:
        outcome, mark, _ = dispatch(deps, prefect, pool, variables)
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "submitted", outcome
    assert outcome.job_id.startswith(f"{eu_west_1['cluster']}::arn:aws:ecs:eu-west-1:")
    (definition,) = sent(mark, "RegisterTaskDefinition")
    options = definition["containerDefinitions"][0]["logConfiguration"]["options"]
    assert options["awslogs-region"] == "eu-west-1"


@pytest.fixture(scope="module")
def ec2_cluster(aws: dict) -> str:
    """A cluster with one registered EC2 container instance (the EC2 launch type needs somewhere to place tasks)."""
    ec2, ecs = boto3.client("ec2"), aws["ecs"]
    name = "parity-ec2"
    ecs.create_cluster(clusterName=name)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.xlarge")["Instances"][0]
    ecs.register_container_instance(
        cluster=name, instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"]})
    )
    return name


@pytest.mark.parametrize(
    ("sizes", "task_level", "container_level"),
    [
        ({}, {}, {"cpu": 1024, "memory": 2048}),
        ({"cpu": 512, "memory": 1024}, {"cpu": "512", "memory": "1024"}, {"cpu": 512, "memory": 1024}),
    ],
    ids=["no-sizes", "cpu-512-memory-1024"],
)
def test_the_ec2_launch_type_registers_and_runs(
    deps, prefect: PrefectHelper, aws: dict, ec2_cluster: str, sizes: dict, task_level: dict, container_level: dict
) -> None:
    """Item 6: EC2 tasks get container-level cpu and memory (Prefect's defaults 1024/2048 when none are given) and
    task-level sizes as the strings the API takes; the definition registers and the task runs."""
    pool = make_pool(prefect, aws, network=False)
    variables = {"prefect_api_key_secret_arn": SECRET_ARN, "launch_type": "EC2", "cluster": ec2_cluster, **sizes}
    outcome, mark, _ = dispatch(deps, prefect, pool, variables)
    assert outcome.outcome == "submitted", outcome
    (definition,) = sent(mark, "RegisterTaskDefinition")
    assert {k: definition[k] for k in ("cpu", "memory") if k in definition} == task_level
    container = definition["containerDefinitions"][0]
    assert {k: container.get(k) for k in ("cpu", "memory")} == container_level
    assert "FARGATE" not in definition.get("requiresCompatibilities", [])
    (request,) = sent(mark, "RunTask")
    assert request["launchType"] == "EC2" and "networkConfiguration" not in request


def _credentials_block(deps, data: dict) -> dict:
    client = deps.orchestrator
    type_id = client.read_block_type_id("aws-credentials")
    block = client.create_block_document(
        {
            "name": PrefectHelper.unique("parity-aws"),
            "data": data,
            "block_type_id": type_id,
            "block_schema_id": client.read_latest_block_schema_id(type_id),
        }
    )
    return {"$ref": {"block_document_id": block.id}}


def test_an_aws_credentials_block_with_keys_signs_the_calls(deps, prefect: PrefectHelper, aws: dict) -> None:
    """Item 7: the block's own access keys (same account) sign RegisterTaskDefinition and RunTask — as the worker
    does — instead of being silently replaced by pushpool's identity."""
    iam = boto3.client("iam")
    user = PrefectHelper.unique("parity-user")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    block = _credentials_block(
        deps,
        {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
            "region_name": "us-east-1",
        },
    )
    pool = make_pool(prefect, aws, defaults={"aws_credentials": block})
    outcome, mark, _ = dispatch(deps, prefect, pool, {"prefect_api_key_secret_arn": SECRET_ARN})
    assert outcome.outcome == "submitted", outcome
    signed = {e["action"]: e["key_id"] for e in moto_log().since(mark) if e["action"] in ("RunTask", "ListTasks")}
    assert signed.get("RunTask") == key["AccessKeyId"]
    registered = [e["key_id"] for e in moto_log().since(mark, "RegisterTaskDefinition")]
    assert set(registered) <= {key["AccessKeyId"]}


@pytest.mark.parametrize("how", ["assume_role_arn", "access_keys"])
def test_credentials_of_another_account_are_refused_clearly(deps, prefect: PrefectHelper, aws: dict, how: str) -> None:
    """Item 7: a block that names another account (a role to assume there, or that account's keys) is refused with a
    message naming both accounts; nothing is registered or started, and no key appears in the message."""
    other_role = "arn:aws:iam::210987654321:role/prefect-ecs"
    if how == "assume_role_arn":
        data: dict = {"assume_role_arn": other_role, "region_name": "us-east-1"}
    else:
        creds = boto3.client("sts").assume_role(RoleArn=other_role, RoleSessionName="parity")["Credentials"]
        data = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
    pool = make_pool(prefect, aws, defaults={"aws_credentials": _credentials_block(deps, data)})
    outcome, mark, run_id = dispatch(deps, prefect, pool, {"prefect_api_key_secret_arn": SECRET_ARN})
    assert outcome.outcome == "crashed"
    message = prefect.read_run(run_id)["state"]["message"]
    assert "210987654321" in message and ACCOUNT in message, message
    assert all(str(v) not in message for k, v in data.items() if k != "assume_role_arn")
    assert sent(mark, "RegisterTaskDefinition") == [] and sent(mark, "RunTask") == []


@pytest.mark.parametrize("family", [None, "parity-explicit-family"])
def test_a_definition_deregistered_between_runs_is_registered_again(
    deps, prefect: PrefectHelper, aws: dict, family: str | None
) -> None:
    """Item 8: a warm process whose definition was deregistered (INACTIVE) since its last run registers it again
    and starts the task on an ACTIVE revision."""
    pool = make_pool(prefect, aws)
    variables = {"prefect_api_key_secret_arn": SECRET_ARN, **({"family": family} if family else {})}
    dep = prefect.create_deployment(pool, job_variables=variables)
    first, _, _ = dispatch(deps, prefect, pool, variables, deployment=dep)
    assert first.outcome == "submitted", first
    ecs = aws["ecs"]
    cluster, arn = first.job_id.split("::")
    used = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["taskDefinitionArn"]
    ecs.deregister_task_definition(taskDefinition=used)

    second, mark, _ = dispatch(deps, prefect, pool, variables, deployment=dep)  # the same, warm backend
    assert second.outcome == "submitted", second
    assert len(sent(mark, "RegisterTaskDefinition")) == 1
    cluster, arn = second.job_id.split("::")
    now_used = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["taskDefinitionArn"]
    assert ecs.describe_task_definition(taskDefinition=now_used)["taskDefinition"]["status"] == "ACTIVE"


def test_a_named_definition_without_the_prefect_credential_is_refused(deps, prefect: PrefectHelper, aws: dict) -> None:
    """A ``task_definition_arn`` whose container has no PREFECT_API_KEY secret would start a task that cannot reach
    the Prefect server: the run is crashed with what to add, and nothing is started."""
    arn = aws["ecs"].register_task_definition(
        family="parity-no-key",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "app", "image": "repo/app:1", "memoryReservation": 256}],
    )["taskDefinition"]["taskDefinitionArn"]
    pool = make_pool(prefect, aws)
    outcome, mark, run_id = dispatch(
        deps, prefect, pool, {"task_definition_arn": arn, "prefect_api_key_secret_arn": SECRET_ARN}
    )
    assert outcome.outcome == "crashed"
    message = prefect.read_run(run_id)["state"]["message"]
    assert "no PREFECT_API_KEY" in message and "'app'" in message and KEY not in message
    assert sent(mark, "RunTask") == []
