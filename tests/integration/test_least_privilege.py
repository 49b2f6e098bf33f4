"""Each function's IAM policy in infra/template.yaml grants exactly what its code paths call — no more, no less.

The calls are recorded, not listed by hand: the ECS backend and provisioner run their paths against moto with a
session that records every API operation (as ``service:Operation``), plus the permissions AWS checks implicitly:
tagging on create (``ecs:TagResource`` …), ``iam:PassRole`` for a task definition's roles, and reading the function's
own secrets at start. A permission the code never needs, or a call the policy does not grant, fails the test.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path

import boto3
import pytest
from pushpool.entrypoints.aws_delay import SqsTrigger
from pushpool.providers.base import JobHandle
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.providers.ecs.provisioner import EcsProvisioner
from pushpool.usecases.provision_infra import provision_infra

from tests.helpers import SECRET_ARN, PrefectHelper, make_deps
from tests.image_registry import ImageRegistry

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
TAGGING = {"ecs": "ecs:TagResource", "ecr": "ecr:TagResource", "logs": "logs:TagResource", "ec2": "ec2:CreateTags"}
IAM_TAGGING = {"CreateRole": "iam:TagRole", "CreateUser": "iam:TagUser", "CreatePolicy": "iam:TagPolicy"}
# Every function reads its own secrets (the webhook token, the Prefect key) through Powertools Parameters at start.
READS_ITS_SECRETS = {"secretsmanager:GetSecretValue"}
ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def recording_session(region: str = "us-east-1") -> tuple[boto3.session.Session, set[str]]:
    session = boto3.session.Session(region_name=region)
    calls: set[str] = set()

    def record(model, params, **_: object) -> None:
        service = model.service_model.signing_name
        calls.add(f"{service}:{model.name}")
        if any(params.get(key) for key in ("tags", "Tags", "TagSpecifications")):
            calls.add(IAM_TAGGING.get(model.name, TAGGING.get(service, f"{service}:TagResource")))
        roles = [
            params.get("executionRoleArn"),
            params.get("taskRoleArn"),
            (params.get("overrides") or {}).get("taskRoleArn"),
        ]
        if model.name in ("RegisterTaskDefinition", "RunTask") and any(roles):
            calls.add("iam:PassRole")

    session.events.register("before-parameter-build", record)
    return session, calls


def granted(function: str) -> set[str]:
    from cfnlint.decode import cfn_yaml

    actions: set[str] = set()
    for policy in cfn_yaml.load(str(TEMPLATE))["Resources"][function]["Properties"]["Policies"]:
        for statement in policy["Statement"]:
            branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
            for branch in branches:
                if isinstance(branch, dict) and "Action" in branch and branch["Effect"] == "Allow":  # Denies narrow
                    action = branch["Action"]
                    actions.update(action if isinstance(action, list) else [action])
    return actions


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    d = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_least_privilege")
    yield d
    d.orchestrator.close()


def _spec(deps, prefect: PrefectHelper, pool: str, **variables):
    from pushpool.usecases.job_spec import build_job_spec

    client = deps.orchestrator
    dep = prefect.create_deployment(pool, job_variables={"prefect_api_key_secret_arn": SECRET_ARN, **variables})
    run = client.read_flow_run(prefect.create_run(dep))
    return build_job_spec(
        settings=deps.settings,
        client=client,
        run=run,
        pool=client.read_work_pool(pool),
        deployment=client.read_deployment(dep),
        attempt=str(uuid.uuid4()),
    )


def _ecr_image(session: boto3.session.Session) -> tuple[ImageRegistry, str]:
    """A private ECR image (one manifest: its platform is read from its config blob) on the local registry, which
    demands moto's GetAuthorizationToken answer, as ECR does."""
    token = session.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    registry = ImageRegistry()
    registry.protect("flows/private", "basic", *base64.b64decode(token).decode().split(":", 1))
    return registry, registry.add_single("flows/private", "1", "amd64", host=ECR_HOST)


def _registry_reads(registry: ImageRegistry) -> set[str]:
    """What ECR checks when its registry API is read with a token: the manifest (BatchGetImage), a blob
    (GetDownloadUrlForLayer) — the pull permissions of the token's principal."""
    reads = {"manifests": "ecr:BatchGetImage", "blobs": "ecr:GetDownloadUrlForLayer"}
    return {reads[path.split("/")[-2]] for host, path, auth in registry.seen if host == ECR_HOST and auth}


def _backend_paths(deps, prefect: PrefectHelper, ecs_pool: str, aws: dict, *, monitor: bool) -> set[str]:
    """The ECS calls of submit's paths (a new attempt, a retried one, a network looked up, a cancel while starting,
    the image's platforms read from a private ECR repository) and, for the monitor, also status, log tails and
    look-ups of jobs whose pid was never written."""
    session, calls = recording_session()
    registry, image = _ecr_image(session)
    calls.clear()  # the test's own token above is not a call of the code
    backend = EcsBackend(
        session=session, max_attempts=1, check_image_platform=True, registry_client=registry.routed_client()
    )
    spec = _spec(deps, prefect, ecs_pool, execution_role_arn="arn:aws:iam::123456789012:role/exec", image=image)
    handle = backend.submit(dataclasses.replace(spec, new_attempt=True))
    backend.submit(spec)  # a retried submit finds its task
    no_network = _spec(deps, prefect, ecs_pool, network_configuration=None)
    no_network = dataclasses.replace(
        no_network,
        config=no_network.config.model_copy(
            update={"network_configuration": None, "vpc_id": None, "task_run_request": {"launchType": "FARGATE"}}
        ),
    )
    try:
        backend.submit(no_network)  # default VPC subnets; moto may refuse the task itself, the calls are recorded
    except Exception:  # noqa: BLE001 - only the calls matter here
        pass
    backend.cancel(handle)
    cluster = handle.id.split("::")[0]
    backend.cancel(JobHandle("ecs", f"{cluster}::arn:aws:ecs:us-east-1:123456789012:task/{cluster}/gone"))  # asks
    # Both arm the delay queue's one-shot triggers for runs not due yet (punctual dispatch).
    queue = session.client("sqs").create_queue(QueueName=f"pushpool-delay-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    calls.discard("sqs:CreateQueue")  # the stack creates the queue, not the functions
    SqsTrigger(queue, client=session.client("sqs")).arm(spec.run_id, dt.datetime.now(dt.timezone.utc))
    if monitor:
        logged = _spec(
            deps,
            prefect,
            ecs_pool,
            configure_cloudwatch_logs=True,
            execution_role_arn="arn:aws:iam::123456789012:role/exec",
        )
        logged_handle = backend.submit(logged)
        backend.status([handle, logged_handle, JobHandle("ecs", "x::arn:aws:ecs:us-east-1:1:task/x/y")])
        backend.logs(logged_handle)
        backend.find(spec)
    registry.stop()
    reads = _registry_reads(registry)
    assert reads == {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}  # the pre-flight read the private image
    return calls | reads


def test_submit_is_granted_exactly_what_it_calls(deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    calls = _backend_paths(deps, prefect, ecs_pool, aws, monitor=False) | READS_ITS_SECRETS
    assert granted("SubmitFunction") == calls


def test_monitor_is_granted_exactly_what_it_calls(deps, prefect: PrefectHelper, ecs_pool: str, aws: dict) -> None:
    calls = _backend_paths(deps, prefect, ecs_pool, aws, monitor=True) | READS_ITS_SECRETS
    assert granted("MonitorFunction") == calls


def test_provision_is_granted_exactly_what_provisioning_calls_and_nothing_that_deletes(
    deps, prefect: PrefectHelper
) -> None:
    """Every provisioning path the Lambda can take (fresh account, default VPC, the Prefect key's secret granted to
    the execution role, an execution role made before the permissions boundary); deprovisioning is not one of them,
    so no Delete*, and neither is access-key mode (the deployed provision refuses it: no IAM user, policy or key)."""
    boundary = boto3.client("iam").create_policy(
        PolicyName=prefect.unique("pushpool-boundary"),
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
        ),
    )["Policy"]["Arn"]
    calls: set[str] = set()
    for region in ("us-west-1", "us-west-2"):
        if region == "us-west-2":
            from tests.integration.test_provision_ecs import drop_default_vpc

            drop_default_vpc(region)
        session, recorded = recording_session(region)
        provisioner = EcsProvisioner(session=session, permissions_boundary=boundary)
        provision_infra(deps, provisioner, pool=prefect.unique("lp"), type_name="ecs:push")
        calls |= recorded
    # The stack reads its Prefect key from a secret: provisioning grants the pool's execution role exactly that one.
    stack_secret = boto3.client("secretsmanager").create_secret(Name=prefect.unique("lp-key"), SecretString="pnu_lp")
    stack = deps.settings.replace(prefect_api_key=None, prefect_api_key_secret_arn=stack_secret["ARN"])
    session, recorded = recording_session()
    provisioner = EcsProvisioner(session=session, settings=stack, permissions_boundary=boundary)
    provision_infra(deps, provisioner, pool=prefect.unique("lp-secret"), type_name="ecs:push")
    calls |= recorded
    # A pool provisioned before the boundary: its execution role is given the boundary, then kept up to date.
    pool = prefect.unique("lp-old")
    provision_infra(deps, EcsProvisioner(), pool=pool, type_name="ecs:push")
    session, recorded = recording_session()
    provision_infra(
        deps, EcsProvisioner(session=session, permissions_boundary=boundary), pool=pool, type_name="ecs:push"
    )
    calls |= recorded
    assert "iam:PutRolePermissionsBoundary" in calls
    assert granted("ProvisionFunction") == calls | READS_ITS_SECRETS
    assert not [a for a in granted("ProvisionFunction") if ":Delete" in a]
