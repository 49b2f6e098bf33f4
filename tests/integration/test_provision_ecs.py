"""`--provision-infra` for ECS against moto server over HTTP and the real Prefect server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3
import pytest
from pushpool.errors import PushpoolError
from pushpool.managed.description import addresses_line
from pushpool.providers.ecs.provisioner import TAG_KEY, EcsProvisioner
from pushpool.providers.provisioning import ProvisioningError
from pushpool.usecases.monitor import tick
from pushpool.usecases.provision_infra import deprovision, provision_infra
from pushpool.usecases.submit import submit_run

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

WRITES = ("Create", "Register", "Put", "Attach", "Associate", "Modify", "Authorize", "Tag", "Delete", "Update")


def counted_session(region: str) -> tuple[boto3.session.Session, Counter]:
    session = boto3.session.Session(region_name=region)
    calls: Counter = Counter()
    session.events.register("before-call", lambda model, **_: calls.update([model.name]))
    return session, calls


def writes(calls: Counter) -> dict[str, int]:
    return {name: n for name, n in calls.items() if name.startswith(WRITES)}


def drop_default_vpc(region: str) -> None:
    ec2 = boto3.client("ec2", region_name=region)
    for vpc in ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]:
        for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        for igw in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])[
            "InternetGateways"
        ]:
            ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc["VpcId"])
            ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])
        ec2.delete_vpc(VpcId=vpc["VpcId"])


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, moto_endpoint: str):
    d = make_deps(prefect_api, tmp_path)
    yield d
    d.orchestrator.close()


def tagged_anywhere(pool: str, region: str) -> list[str]:
    """Every resource of the kinds pushpool creates that still carries the pool's tag."""
    found = []
    ec2 = boto3.client("ec2", region_name=region)
    tag = [{"Name": f"tag:{TAG_KEY}", "Values": [pool]}]
    found += [v["VpcId"] for v in ec2.describe_vpcs(Filters=tag)["Vpcs"]]
    found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=tag)["SecurityGroups"]]
    found += [s["SubnetId"] for s in ec2.describe_subnets(Filters=tag)["Subnets"]]
    found += [i["InternetGatewayId"] for i in ec2.describe_internet_gateways(Filters=tag)["InternetGateways"]]
    ecs = boto3.client("ecs", region_name=region)
    for cluster in ecs.describe_clusters(clusters=[f"pushpool-{pool}"], include=["TAGS"])["clusters"]:
        if cluster["status"] == "ACTIVE":
            found.append(cluster["clusterName"])
    ecr = boto3.client("ecr", region_name=region)
    found += [
        r["repositoryName"] for r in ecr.describe_repositories()["repositories"] if pool.lower() in r["repositoryName"]
    ]
    logs = boto3.client("logs", region_name=region)
    found += [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=f"/pushpool/{pool}")["logGroups"]]
    iam = boto3.client("iam")
    found += [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"] == f"pushpool-{pool}-exec"]
    found += [u["UserName"] for u in iam.list_users()["Users"] if u["UserName"] == f"pushpool-{pool}"]
    return found


def test_account_with_a_default_vpc(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("infra")
    session, calls = counted_session("us-east-1")
    result = provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert plan == {
        "IAM role": "create",
        "ECS cluster": "create",
        "VPC": "exists",
        "security group": "create",
        "ECR repository": "create",
        "log group": "create",
    }
    assert not result.notes[:-1]  # verify found nothing left to do; the last note is the image namespace
    assert result.notes[-1].startswith("image namespace: push flow images to 123456789012.dkr.ecr.us-east-1")

    variables = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
    assert variables["cluster"]["default"] == f"pushpool-{pool}"
    network = variables["network_configuration"]["default"]
    assert network["securityGroups"] and network["subnets"] and network["assignPublicIp"] == "ENABLED"
    assert variables["execution_role_arn"]["default"].endswith(f"role/pushpool-{pool}-exec")
    assert variables["cloudwatch_logs_options"]["default"]["awslogs-group"] == f"/pushpool/{pool}"

    # A second run makes zero create calls.
    session, calls = counted_session("us-east-1")
    again = provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    assert {s.action for s in again.plan} == {"exists"}
    assert writes(calls) == {}
    assert again.prefect is not None and not again.prefect.changed

    # The provisioned pool renders a job the ECS backend submits (moto workaround in test set-up only).
    template = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512
    prefect.json("PATCH", f"/work_pools/{pool}", json={"base_job_template": template})
    run_id = prefect.create_run(prefect.create_deployment(pool))
    client = deps.orchestrator
    outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool))
    assert outcome.outcome == "submitted", outcome
    assert outcome.job_id.startswith(f"pushpool-{pool}::arn:aws:ecs:us-east-1:")
    boto3.client("ecs").stop_task(cluster=f"pushpool-{pool}", task=outcome.job_id.split("::")[1])


def test_fresh_account_gets_a_vpc_and_deprovision_removes_everything(deps, prefect: PrefectHelper) -> None:
    region = "eu-west-1"
    drop_default_vpc(region)
    pool = prefect.unique("fresh")
    result = provision_infra(deps, EcsProvisioner(region=region), pool=pool, type_name="ecs:push")
    assert {s.resource: s.action for s in result.plan}["VPC"] == "create"
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.describe_vpcs(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [pool]}])["Vpcs"][0]
    dns = ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")
    assert dns["EnableDnsHostnames"]["Value"] is True
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 3
    network = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"][
        "network_configuration"
    ]["default"]
    assert sorted(network["subnets"]) == sorted(s["SubnetId"] for s in subnets)
    group = ec2.describe_security_groups(GroupIds=network["securityGroups"])["SecurityGroups"][0]
    assert group["IpPermissions"] == []  # no inbound rules
    assert tagged_anywhere(pool, region)

    removed = deprovision(deps, EcsProvisioner(region=region), pool=pool)
    assert removed.applied
    assert tagged_anywhere(pool, region) == []
    again = deprovision(deps, EcsProvisioner(region=region), pool=pool)
    assert not again.applied and again.notes == [f"nothing marked for pool {pool}"]


def test_partial_prior_state_is_reused(deps, prefect: PrefectHelper) -> None:
    region = "eu-central-1"
    drop_default_vpc(region)
    pool = prefect.unique("partial")
    boto3.client("ecs", region_name=region).create_cluster(
        clusterName=f"pushpool-{pool}", tags=[{"key": TAG_KEY, "value": pool}]
    )
    session, calls = counted_session(region)
    result = provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert plan["ECS cluster"] == "exists" and plan["VPC"] == "create"
    assert "CreateCluster" not in calls and calls["CreateVpc"] == 1
    deprovision(deps, EcsProvisioner(region=region), pool=pool)


def test_access_key_mode_creates_exactly_one_key_and_keeps_the_policy_current(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("keys")
    for _ in range(2):
        provision_infra(deps, EcsProvisioner(credentials="access-key"), pool=pool, type_name="ecs:push")
    iam = boto3.client("iam")
    assert len(iam.list_access_keys(UserName=f"pushpool-{pool}")["AccessKeyMetadata"]) == 1
    block = prefect.json("GET", f"/block_types/slug/aws-credentials/block_documents/name/{pool}-aws-credentials")
    variables = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
    assert variables["aws_credentials"]["default"] == {"$ref": {"block_document_id": block["id"]}}
    # A stale policy is brought back up to date on the next run.
    arn = f"arn:aws:iam::123456789012:policy/pushpool-{pool}-policy"
    iam.create_policy_version(
        PolicyArn=arn,
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}]}
        ),
        SetAsDefault=True,
    )
    result = provision_infra(deps, EcsProvisioner(credentials="access-key"), pool=pool, type_name="ecs:push")
    assert {s.resource: s.action for s in result.plan}["IAM policy"] == "update"
    assert len(iam.list_access_keys(UserName=f"pushpool-{pool}")["AccessKeyMetadata"]) == 1
    deprovision(deps, EcsProvisioner(), pool=pool)
    assert tagged_anywhere(pool, "us-east-1") == []


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: EcsProvisioner(region="xx-nowhere-1"), "unknown AWS region"),
        (lambda: EcsProvisioner(region="us-east-1", credentials="password"), "credentials must be"),
    ],
)
def test_bad_settings_are_clear_errors(make, fragment: str, moto_endpoint: str) -> None:
    with pytest.raises(PushpoolError, match=fragment):
        make()


def test_invalid_pool_name_and_missing_credentials_change_nothing(deps, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PushpoolError, match="cannot name AWS resources"):
        provision_infra(deps, EcsProvisioner(), pool="x" * 60, type_name="ecs:push")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(PushpoolError, match="no AWS credentials"):
        provision_infra(deps, EcsProvisioner(), pool="nocreds", type_name="ecs:push")


def _cli_env(prefect_api: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PUSHPOOL_HOME": str(tmp_path / "pp")}


def _cli(args: list[str], env: dict[str, str], answer: str | None = None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", *args]
    if answer is None:  # no terminal: stdin is a pipe
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        return result.returncode, result.stdout + result.stderr
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    answered = False
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/n]" in output:
            os.write(controller, answer.encode() + b"\n")
            answered = True
    proc.wait(timeout=120)
    os.close(controller)
    return proc.returncode, output.decode(errors="replace")


def test_cli_prompt_yes_no_and_no_terminal(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, moto_endpoint: str
) -> None:
    import re

    env = _cli_env(prefect_api, tmp_path)
    pool = prefect.unique("cli")
    code, out = _cli(["work-pool", "create", pool, "--type", "ecs:push", "--provision-infra"], env, answer="n")
    out = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", out)  # on a terminal the question is coloured
    assert code == 1 and "Proceed with infrastructure provisioning? [y/n]" in out and "cancelled" in out
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 404  # nothing created
    assert tagged_anywhere(pool, "us-east-1") == []
    code, out = _cli(["work-pool", "create", pool, "--type", "ecs:push", "--provision-infra"], env, answer="y")
    assert code == 0 and "Infrastructure successfully provisioned!" in out, out
    code, out = _cli(["work-pool", "provision-infra", pool], env)  # no terminal: no question asked
    assert code == 0 and "[y/n]" not in out and "nothing changed" in out, out
    code, out = _cli(["work-pool", "deprovision", pool, "--yes"], env)
    assert code == 0 and "Removed." in out, out
    assert tagged_anywhere(pool, "us-east-1") == []
    code, out = _cli(["work-pool", "create", "bad name", "--type", "ecs:push", "--provision-infra", "--yes"], env)
    assert code == 2 and "invalid work pool name" in out


def failing_session(region: str, operation: str, code: str, message: str, times: int = 1) -> boto3.session.Session:
    """A session whose ``operation`` fails ``times`` times with the AWS error ``code`` (as AWS would send it)."""
    from botocore.exceptions import ClientError

    session = boto3.session.Session(region_name=region)
    left = {"n": times}

    def fail(model, **_: object) -> None:
        if model.name == operation and left["n"] > 0:
            left["n"] -= 1
            raise ClientError({"Error": {"Code": code, "Message": message}}, operation)

    session.events.register("before-call", fail)
    return session


def test_a_cloud_error_while_deprovisioning_is_translated(deps, prefect: PrefectHelper) -> None:
    """A DependencyViolation on DeleteSecurityGroup reaches the caller as a pushpool error with AWS's code (it was a
    raw botocore ClientError), and the next deprovision finishes the job."""
    region = "ap-southeast-2"
    pool = prefect.unique("undeletable")
    provision_infra(deps, EcsProvisioner(region=region), pool=pool, type_name="ecs:push")
    session = failing_session(
        region, "DeleteSecurityGroup", "DependencyViolation", "resource sg-1 has a dependent object"
    )
    with pytest.raises(ProvisioningError, match="DependencyViolation"):
        deprovision(deps, EcsProvisioner(session=session), pool=pool)
    assert deprovision(deps, EcsProvisioner(region=region), pool=pool).applied
    assert tagged_anywhere(pool, region) == []


def test_provisioning_resumes_after_a_partial_failure(deps, prefect: PrefectHelper) -> None:
    """The security group cannot be created the first time: the error names what was created; the next run creates
    only what is missing and makes nothing twice."""
    region = "ca-central-1"
    pool = prefect.unique("resume")
    session = failing_session(region, "CreateSecurityGroup", "RequestLimitExceeded", "Request limit exceeded.", 10)
    with pytest.raises(ProvisioningError) as failure:
        provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    assert "RequestLimitExceeded" in failure.value.message
    assert failure.value.created == ["IAM role " + f"pushpool-{pool}-exec", f"ECS cluster pushpool-{pool}"]

    session, calls = counted_session(region)
    result = provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert plan["IAM role"] == plan["ECS cluster"] == "exists" and plan["security group"] == "create"
    assert "CreateRole" not in calls and "CreateCluster" not in calls and calls["CreateSecurityGroup"] == 1
    assert result.prefect is not None and not result.notes[:-1]  # verified: nothing left to do
    deprovision(deps, EcsProvisioner(region=region), pool=pool)


def test_the_cli_prints_a_deprovision_failure_as_one_line(
    deps, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pushpool.entrypoints import cli
    from pushpool.entrypoints.cli import pools as pool_commands

    region = "sa-east-1"
    pool = prefect.unique("cli-undeletable")
    provision_infra(deps, EcsProvisioner(region=region), pool=pool, type_name="ecs:push")
    session = failing_session(region, "DeleteCluster", "ClusterContainsTasksException", "The cluster has tasks")
    monkeypatch.setattr(pool_commands, "_provisioner", lambda args, type_name: EcsProvisioner(session=session))
    monkeypatch.setenv("PREFECT_API_URL", deps.settings.prefect_api_url)
    code = cli.main(["work-pool", "deprovision", pool, "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and "ClusterContainsTasksException" in err and "Traceback" not in err
    deprovision(deps, EcsProvisioner(region=region), pool=pool)


def test_a_vpc_left_half_built_is_finished_by_the_next_run(deps, prefect: PrefectHelper) -> None:
    """The first run creates the VPC and its gateway, then fails at the subnets: the next run does not take the
    empty VPC for a finished one (its plan says update) and the pool ends with subnets to run tasks in."""
    region = "eu-north-1"
    drop_default_vpc(region)
    pool = prefect.unique("halfvpc")
    session = failing_session(region, "CreateSubnet", "InsufficientFreeAddressesInSubnet", "no room", times=10)
    with pytest.raises(ProvisioningError, match="InsufficientFreeAddressesInSubnet"):
        provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    session, calls = counted_session(region)
    result = provision_infra(deps, EcsProvisioner(session=session), pool=pool, type_name="ecs:push")
    assert {s.resource: s.action for s in result.plan}["VPC"] == "update"
    assert "CreateVpc" not in calls and "CreateInternetGateway" not in calls and calls["CreateSubnet"] == 3
    network = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"][
        "network_configuration"
    ]["default"]
    assert len(network["subnets"]) == 3
    assert not result.notes[:-1]  # verified: nothing left to do
    deprovision(deps, EcsProvisioner(region=region), pool=pool)


def _grant(pool: str) -> dict:
    document = boto3.client("iam").get_role_policy(RoleName=f"pushpool-{pool}-exec", PolicyName="read-prefect-secret")
    document = document["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def test_the_prefect_key_goes_to_a_secret_only_the_execution_role_reads(
    deps, prefect: PrefectHelper, tmp_path: Path
) -> None:
    """The secure path is the easy one: provisioning with pushpool's Prefect key stores it once in the pool's own
    secret, grants the execution role GetSecretValue on exactly that secret, and writes its ARN into the pool — whose
    runs then start (they crashed before: no secret ARN, and pushpool never sends the key in plaintext)."""
    pool = prefect.unique("keyed")
    key = "pnu_provisioned_key_do_not_log"
    settings = deps.settings.replace(prefect_api_key=key)
    result = provision_infra(deps, EcsProvisioner(settings=settings), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert plan["secret"] == "create" and plan["secret grant"] == "create"
    assert key not in json.dumps(result.as_dict(), default=str)
    assert not result.notes[:-1]  # verified: nothing left to do

    sm = boto3.client("secretsmanager")
    secret = sm.describe_secret(SecretId=f"pushpool-{pool}-prefect-api-key")
    assert sm.get_secret_value(SecretId=secret["ARN"])["SecretString"] == key
    assert {"Key": TAG_KEY, "Value": pool} in secret["Tags"]
    variables = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
    assert variables["prefect_api_key_secret_arn"]["default"] == secret["ARN"]
    (statement,) = _grant(pool)["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == (
        "Allow",
        "secretsmanager:GetSecretValue",
        secret["ARN"],
    )

    session, calls = counted_session("us-east-1")
    again = provision_infra(deps, EcsProvisioner(session=session, settings=settings), pool=pool, type_name="ecs:push")
    assert {s.action for s in again.plan} == {"exists"} and writes(calls) == {}

    rotated = settings.replace(prefect_api_key="pnu_rotated_key_do_not_log")
    result = provision_infra(deps, EcsProvisioner(settings=rotated), pool=pool, type_name="ecs:push")
    assert {s.resource: s.action for s in result.plan}["secret"] == "update"
    assert sm.get_secret_value(SecretId=secret["ARN"])["SecretString"] == "pnu_rotated_key_do_not_log"

    # A run of the pool, dispatched by a pushpool that holds the key (moto workaround in test set-up only).
    template = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512
    prefect.json("PATCH", f"/work_pools/{pool}", json={"base_job_template": template})
    keyed = make_deps(deps.settings.prefect_api_url, tmp_path, prefect_api_key=key)
    try:
        client = keyed.orchestrator
        run_id = prefect.create_run(prefect.create_deployment(pool))
        outcome = submit_run(keyed, client.read_flow_run(run_id), client.read_work_pool(pool))
    finally:
        keyed.orchestrator.close()
    assert outcome.outcome == "submitted", outcome
    ecs = boto3.client("ecs")
    cluster, arn = outcome.job_id.split("::")
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["containerDefinitions"][0]["secrets"] == [{"name": "PREFECT_API_KEY", "valueFrom": secret["ARN"]}]
    assert definition["executionRoleArn"].endswith(f"role/pushpool-{pool}-exec")
    assert key not in json.dumps(task, default=str)
    ecs.stop_task(cluster=cluster, task=arn)

    deprovision(deps, EcsProvisioner(settings=settings), pool=pool)
    assert tagged_anywhere(pool, "us-east-1") == []
    assert not sm.list_secrets(Filters=[{"Key": "name", "Values": [f"pushpool-{pool}"]}])["SecretList"]


@pytest.mark.parametrize(
    ("value", "variable"),
    [("pnu_stack_key_do_not_log", "prefect_api_key_secret_arn"), ("admin:pass", "prefect_api_auth_string_secret_arn")],
)
def test_a_credential_pushpool_reads_from_a_secret_is_granted_not_copied(
    deps, prefect: PrefectHelper, value: str, variable: str
) -> None:
    """The deployed stack reads its Prefect credential from a secret (PUSHPOOL_PREFECT_API_KEY_SECRET_ARN): that
    secret is granted to the execution role as it is (no copy), and named by the matching pool variable."""
    pool = prefect.unique("stack")
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name=prefect.unique("stack-prefect"), SecretString=value)["ARN"]
    settings = deps.settings.replace(prefect_api_key=None, prefect_api_key_secret_arn=arn)
    result = provision_infra(deps, EcsProvisioner(settings=settings), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert "secret" not in plan and plan["secret grant"] == "create"
    variables = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
    assert variables[variable]["default"] == arn
    assert _grant(pool)["Statement"][0]["Resource"] == arn
    assert value not in json.dumps(result.as_dict(), default=str)
    deprovision(deps, EcsProvisioner(settings=settings), pool=pool)
    assert sm.describe_secret(SecretId=arn)["ARN"] == arn  # not ours: kept


def test_static_ips_nat_gateway_and_elastic_ip_made_once_reported_and_removed(deps, prefect: PrefectHelper) -> None:
    """Issue 18, item 4: managed runs on ECS leave through one NAT gateway holding one Elastic IP."""
    region = "us-east-1"  # the ECS backend's region (the environment's): the managed run below goes there
    pool = prefect.unique("static")
    result = provision_infra(deps, EcsProvisioner(region=region, static_ips=True), pool=pool, type_name="ecs:push")
    plan = {s.resource: s.action for s in result.plan}
    assert plan["Elastic IP"] == plan["NAT gateway"] == plan["private subnets"] == "create"
    ec2 = boto3.client("ec2", region_name=region)
    tag = [{"Name": f"tag:{TAG_KEY}", "Values": [pool]}]
    addresses = ec2.describe_addresses(Filters=tag)["Addresses"]
    gateways = [g for g in ec2.describe_nat_gateways(Filters=tag)["NatGateways"] if g["State"] != "deleted"]
    assert len(addresses) == 1 and len(gateways) == 1
    assert gateways[0]["NatGatewayAddresses"][0]["AllocationId"] == addresses[0]["AllocationId"]
    ip = addresses[0]["PublicIp"]
    assert any(ip in note and "static outbound IP" in note for note in result.notes)
    assert EcsProvisioner(region=region).static_addresses(pool) == [ip]
    # Recorded in the pool's description (Prefect's UI), where the monitor finds them for the managed pools.
    assert prefect.json("GET", f"/work_pools/{pool}")["description"] == addresses_line([ip])
    own = "Operator's pool for managed runs"  # the operator's own text: kept, never rewritten
    prefect.json("PATCH", f"/work_pools/{pool}", json={"description": f"{own}\n\n{addresses_line([ip])}"})

    # Tasks run in the private subnets, whose only route out is the NAT gateway; no public address.
    network = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"][
        "network_configuration"
    ]["default"]
    assert network["assignPublicIp"] == "DISABLED" and len(network["subnets"]) == 3
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": network["subnets"]}])
    routes = [r for t in tables["RouteTables"] for r in t["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert routes and all(r.get("NatGatewayId") == gateways[0]["NatGatewayId"] for r in routes)

    # Idempotent: a second run creates nothing and reports the same address.
    session, calls = counted_session(region)
    described = spy_descriptions(deps)
    again = provision_infra(deps, EcsProvisioner(session=session, static_ips=True), pool=pool, type_name="ecs:push")
    assert {s.action for s in again.plan} == {"exists"}
    assert writes(calls) == {}
    assert any(ip in note for note in again.notes)
    assert described == []  # the description already said so: not written again
    assert prefect.json("GET", f"/work_pools/{pool}")["description"] == f"{own}\n\n{addresses_line([ip])}"

    managed_run_on_ecs(deps, prefect, pool, region, ip)

    removed = deprovision(deps, EcsProvisioner(region=region), pool=pool)
    assert removed.applied
    assert ec2.describe_addresses(Filters=tag)["Addresses"] == []
    assert [g for g in ec2.describe_nat_gateways(Filters=tag)["NatGateways"] if g["State"] != "deleted"] == []
    assert tagged_anywhere(pool, region) == []
    assert prefect.json("GET", f"/work_pools/{pool}")["description"] == own  # the addresses line went with them


def spy_descriptions(deps) -> list[str]:
    """The descriptions ``deps`` writes into pools from now on."""
    written: list[str] = []
    update = deps.orchestrator.update_work_pool

    def spy(name: str, body: dict) -> None:
        if "description" in body:
            written.append(body["description"])
        update(name, body)

    deps.orchestrator.update_work_pool = spy
    return written


def managed_run_on_ecs(deps, prefect: PrefectHelper, carrier: str, region: str, ip: str) -> None:
    """A managed run with the ECS backend goes out as a task of the operator's pool ``carrier``: its image, the tier's
    memory, the private subnets with no public address; ``pushpool usage`` shows the static address."""
    from pushpool.managed import MANAGED_POOL_TYPE
    from pushpool.usecases.deps import Deps
    from pushpool.usecases.usage import usage

    template = prefect.json("GET", f"/work_pools/{carrier}")["base_job_template"]
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512  # moto
    prefect.json("PATCH", f"/work_pools/{carrier}", json={"base_job_template": template})
    for found in prefect.json("POST", "/work_pools/filter", json={}):  # the workspace is the shared server
        if found["type"] == MANAGED_POOL_TYPE:
            prefect.request("DELETE", f"/work_pools/{found['name']}")
    settings = deps.settings.replace(managed_backend="ecs", managed_template_pool=carrier)
    managed = Deps.from_settings(settings)
    pool = prefect.unique("managed-ecs")
    prefect.create_pool(pool, MANAGED_POOL_TYPE, base_job_template={}, description="Team A's flows")
    try:
        # The monitor copies the addresses recorded on the template pool onto the managed pool's description (the
        # user's text kept) and into its usage report; a second tick writes nothing.
        report = tick(managed, pools=[managed.orchestrator.read_work_pool(pool)])
        assert report.managed["static_outbound_ips"] == [ip], report.as_dict()
        description = prefect.json("GET", f"/work_pools/{pool}")["description"]
        assert description == f"Team A's flows\n\n{addresses_line([ip])}"
        described = spy_descriptions(managed)
        tick(managed, pools=[managed.orchestrator.read_work_pool(pool)])
        assert described == [] and prefect.json("GET", f"/work_pools/{pool}")["description"] == description
        pull = [{"prefect.deployments.steps.git_clone": {"repository": "https://example.com/flows.git"}}]
        deployment = prefect.create_deployment(pool, "flows.py:hello", pull_steps=pull)
        run_id = prefect.create_run(deployment, job_variables={"pip_packages": ["pandas"], "env": {"A": "1"}})
        client = managed.orchestrator
        outcome = submit_run(managed, client.read_flow_run(run_id), client.read_work_pool(pool))
        assert outcome.outcome == "submitted", outcome
        cluster, arn = outcome.job_id.split("::")
        ecs = boto3.client("ecs", region_name=region)
        task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        assert definition["containerDefinitions"][0]["image"] == "prefecthq/prefect:3-latest"
        assert str(definition["memory"]) == "2048"
        override = task["overrides"]["containerOverrides"][0]
        assert override["command"][:2] == ["python", "-c"]
        assert {"name": "PUSHPOOL_PIP_PACKAGES", "value": '["pandas"]'} in override["environment"]
        subnets = {d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "subnetId"}
        ec2 = boto3.client("ec2", region_name=region)
        private = ec2.describe_subnets(SubnetIds=list(subnets))["Subnets"]
        assert private and all({"Key": "pushpool:egress", "Value": "private"} in s["Tags"] for s in private)
        ecs.stop_task(cluster=cluster, task=arn)
        assert usage(managed, addresses=True).static_outbound_ips == [ip]
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")
        managed.orchestrator.close()
