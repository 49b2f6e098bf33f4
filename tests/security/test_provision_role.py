"""The stack's provision role (infra/template.yaml, ProvisionFunction) is not an administrator.

Whoever holds it — the provision function, or anyone who gets its credentials — tries to mint an administrator or
reach the account's own network: create a role without pushpool's permissions boundary, attach AdministratorAccess,
write an inline policy on a role without the boundary, make an IAM user or an access key for any user, lift or
replace the boundary, rewrite the boundary policy, pass a role, change a VPC, route table or gateway pushpool did not
tag. Each is refused by the policy as written.

moto does not enforce IAM, so the policy is evaluated by tests/iam_policy.py (AWS's identity-policy logic, explicit
Deny first; conditions with the keys AWS puts in each request). A call is the set of authorisations AWS makes for it
(``requests`` below: CreateSubnet is the new subnet *and* its VPC; a create with tags is also the tagging), with the
resource tags and boundaries read live from moto; the request's tags are put in the context of every resource of the
call, the lenient reading, so a policy that relies on a tag condition to guard an existing resource fails here. Then
the provisioner's own paths (the account's default VPC, a region without one, the Prefect key's secret granted to the
execution role, a role made before the boundary) run against moto through a session that evaluates every call the
same way: all of them are allowed, and the role they made carries the boundary.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from pushpool.providers.ecs.provisioner import EXECUTION_POLICY, EcsProvisioner
from pushpool.settings import Settings

from tests.iam_policy import ACCOUNT, Deployment, Policy, Request, tag_context

pytestmark = pytest.mark.integration

ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
REGION = "us-east-1"
KINDS = {"vpc-": "vpc", "subnet-": "subnet", "rtb-": "route-table", "igw-": "internet-gateway", "sg-": "security-group"}


class Authoriser:
    """The authorisations AWS makes for one call, with the context keys it would see (tags and boundaries read from
    moto at the time of the call)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.ec2 = boto3.client("ec2", region_name=region)
        self.iam = boto3.client("iam")

    def _ec2(self, kind: str, ident: str = "*") -> str:
        return f"arn:aws:ec2:{self.region}:{ACCOUNT}:{kind}/{ident}"

    def _resource_tags(self, ident: str) -> dict[str, Any]:
        kind = next(k for p, k in KINDS.items() if ident.startswith(p))
        reader = {
            "vpc": lambda: self.ec2.describe_vpcs(VpcIds=[ident])["Vpcs"],
            "subnet": lambda: self.ec2.describe_subnets(SubnetIds=[ident])["Subnets"],
            "route-table": lambda: self.ec2.describe_route_tables(RouteTableIds=[ident])["RouteTables"],
            "internet-gateway": lambda: self.ec2.describe_internet_gateways(InternetGatewayIds=[ident])[
                "InternetGateways"
            ],
            "security-group": lambda: self.ec2.describe_security_groups(GroupIds=[ident])["SecurityGroups"],
        }[kind]
        return {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in reader()[0].get("Tags", [])}

    def _existing(self, ident: str, request_context: Mapping[str, Any]) -> Request:
        kind = next(k for p, k in KINDS.items() if ident.startswith(p))
        return Request("", self._ec2(kind, ident), {**request_context, **self._resource_tags(ident)})

    def _boundary_of(self, role: str) -> dict[str, Any]:
        try:
            found = self.iam.get_role(RoleName=role)["Role"].get("PermissionsBoundary") or {}
        except self.iam.exceptions.NoSuchEntityException:
            return {}
        return {"iam:PermissionsBoundary": found["PermissionsBoundaryArn"]} if found else {}

    def requests(self, service: str, operation: str, params: Mapping[str, Any]) -> list[Request]:
        action = f"{service}:{operation}"
        region, account = self.region, ACCOUNT
        if service == "ec2":
            return self._ec2_requests(operation, params)
        if service == "iam":
            role = params.get("RoleName")
            role_arn = f"arn:aws:iam::{account}:role/{role}"
            user_arn = f"arn:aws:iam::{account}:user/{params.get('UserName')}"
            tags = tag_context(params.get("Tags"))
            boundary = (
                {"iam:PermissionsBoundary": params["PermissionsBoundary"]} if "PermissionsBoundary" in params else {}
            )
            if operation in ("GetRole", "ListAttachedRolePolicies", "GetRolePolicy", "ListRolePolicies"):
                return [Request(action, role_arn)]
            if operation == "CreateRole":
                return [Request(action, role_arn, {**boundary, **tags})] + (
                    [Request("iam:TagRole", role_arn, tags)] if tags else []
                )
            if operation == "CreateUser":
                return [Request(action, user_arn, {**boundary, **tags})] + (
                    [Request("iam:TagUser", user_arn, tags)] if tags else []
                )
            if operation == "PutRolePermissionsBoundary":
                return [Request(action, role_arn, boundary)]
            if operation in ("AttachRolePolicy", "DetachRolePolicy"):
                return [Request(action, role_arn, {"iam:PolicyARN": params["PolicyArn"], **self._boundary_of(role)})]
            if operation in ("PutRolePolicy", "DeleteRolePermissionsBoundary", "DeleteRolePolicy"):
                return [Request(action, role_arn, self._boundary_of(role))]
            if operation in ("CreateAccessKey", "AttachUserPolicy", "PutUserPolicy"):
                extra = {"iam:PolicyARN": params["PolicyArn"]} if "PolicyArn" in params else {}
                return [Request(action, user_arn, extra)]
            if operation in ("CreatePolicyVersion", "SetDefaultPolicyVersion", "DeletePolicy"):
                return [Request(action, params["PolicyArn"])]
        if service == "sts" and operation == "GetCallerIdentity":
            return [Request(action, "*")]
        if service == "secretsmanager" and operation == "GetSecretValue":
            return [Request(action, params["SecretId"])]
        if service == "ecs" and operation in ("DescribeClusters", "CreateCluster"):
            names = params.get("clusters") or [params.get("clusterName")]
            arns = [n if n.startswith("arn:") else f"arn:aws:ecs:{region}:{account}:cluster/{n}" for n in names]
            tagging = [Request("ecs:TagResource", a) for a in arns if params.get("tags")]
            return [Request(action, a) for a in arns] + tagging
        if service == "ecr" and operation in ("DescribeRepositories", "CreateRepository"):
            names = params.get("repositoryNames") or [params.get("repositoryName")]
            arns = [f"arn:aws:ecr:{region}:{account}:repository/{n}" for n in names]
            return [Request(action, a) for a in arns] + [
                Request("ecr:TagResource", a) for a in arns if params.get("tags")
            ]
        if service == "logs":
            if operation == "DescribeLogGroups":
                return [Request(action, f"arn:aws:logs:{region}:{account}:log-group:*")]
            if operation in ("CreateLogGroup", "PutRetentionPolicy"):
                arn = f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}"
                return [Request(action, arn)] + ([Request("logs:TagResource", arn)] if params.get("tags") else [])
        raise AssertionError(f"{action} is not mapped to its authorisations: add it to Authoriser.requests")

    def _ec2_requests(self, operation: str, params: Mapping[str, Any]) -> list[Request]:
        action = f"ec2:{operation}"
        if operation.startswith("Describe"):
            return [Request(action, "*")]
        specs = params.get("TagSpecifications") or []
        tags = tag_context(specs[0]["Tags"]) if specs else {}
        new_kind = {
            "CreateVpc": "vpc",
            "CreateInternetGateway": "internet-gateway",
            "CreateSubnet": "subnet",
            "CreateRouteTable": "route-table",
            "CreateSecurityGroup": "security-group",
        }.get(operation)
        found: list[Request] = []
        if new_kind:
            found.append(Request(action, self._ec2(new_kind), tags))
            if tags:
                found.append(Request("ec2:CreateTags", self._ec2(new_kind), {**tags, "ec2:CreateAction": operation}))
        existing = {
            "CreateSubnet": ["VpcId"],
            "CreateRouteTable": ["VpcId"],
            "CreateSecurityGroup": ["VpcId"],
            "ModifyVpcAttribute": ["VpcId"],
            "AttachInternetGateway": ["InternetGatewayId", "VpcId"],
            "CreateRoute": ["RouteTableId"],
            "AssociateRouteTable": ["RouteTableId", "SubnetId"],
        }.get(operation)
        if existing is not None:
            for key in existing:
                request = self._existing(params[key], tags)
                found.append(Request(action, request.resource, request.context))
            return found
        if operation == "CreateTags":  # on resources that exist: no ec2:CreateAction
            for ident in params["Resources"]:
                request = self._existing(ident, tag_context(params["Tags"]))
                found.append(Request(action, request.resource, request.context))
            return found
        if new_kind:
            return found
        raise AssertionError(f"{action} is not mapped to its authorisations: add it to Authoriser._ec2_requests")


def decide(policy: Policy, requests: list[Request]) -> list[str]:
    """The refusals of a call: one line per authorisation that is not allowed (empty: the call is allowed)."""
    return [
        f"{r}: {policy.decide(r.action, r.resource, r.context)}"
        for r in requests
        if not policy.allows(r.action, r.resource, r.context)
    ]


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> dict[str, Any]:
    """The stack's boundary created in moto from the template's own document, its Prefect key secret, and the
    provision role's policy resolved for that deployment."""
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"pushpool-stack-key-{uuid.uuid4().hex[:6]}", SecretString="pnu_stack"
    )["ARN"]
    deployment = Deployment(region=REGION)
    deployment.parameters = {**deployment.parameters, "PrefectApiKeySecretArn": secret}
    boundary = deployment.ref("ProvisionedRolesBoundary")
    document = deployment.resolve(deployment.template["Resources"]["ProvisionedRolesBoundary"]["Properties"])
    iam = boto3.client("iam")
    try:
        iam.create_policy(PolicyName=boundary.rsplit("/", 1)[1], PolicyDocument=json.dumps(document["PolicyDocument"]))
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return {"deployment": deployment, "boundary": boundary, "secret": secret}


def _policy(stack: dict[str, Any], region: str = REGION) -> Policy:
    deployment: Deployment = stack["deployment"]
    regional = Deployment(region=region, parameters=deployment.parameters, template=deployment.template)
    return regional.function_policy("ProvisionFunction")


def _default_vpc() -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]  # someone else's, untagged
    return {"vpc": vpc, "table": table, "subnet": subnet, "igw": igw}


def _foreign_role(name: str, boundary: str | None = None) -> str:
    """A role pushpool did not make (no boundary unless given), with a pushpool-like name."""
    iam = boto3.client("iam")
    extra = {"PermissionsBoundary": boundary} if boundary else {}
    iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}), **extra
    )
    return name


def test_the_provision_role_cannot_mint_an_administrator_or_touch_the_accounts_network(stack: dict[str, Any]) -> None:
    policy, boundary = _policy(stack), stack["boundary"]
    auth = Authoriser(REGION)
    theirs = _default_vpc()
    suffix = uuid.uuid4().hex[:6]
    unbounded = _foreign_role(f"pushpool-old{suffix}-exec")
    bounded = _foreign_role(f"pushpool-new{suffix}-exec", boundary)
    pool_tags = [{"Key": "pushpool:pool", "Value": "evil"}]
    attempts = {
        "create a role without the boundary": ("iam", "CreateRole", {"RoleName": f"pushpool-x{suffix}-exec"}),
        "create a role with AdministratorAccess as its boundary": (
            "iam",
            "CreateRole",
            {"RoleName": f"pushpool-y{suffix}-exec", "PermissionsBoundary": ADMIN},
        ),
        "create a role outside pushpool's names": (
            "iam",
            "CreateRole",
            {"RoleName": f"admin-{suffix}", "PermissionsBoundary": boundary},
        ),
        "attach AdministratorAccess to a bounded role": (
            "iam",
            "AttachRolePolicy",
            {"RoleName": bounded, "PolicyArn": ADMIN},
        ),
        "attach the execution policy to a role without the boundary": (
            "iam",
            "AttachRolePolicy",
            {"RoleName": unbounded, "PolicyArn": EXECUTION_POLICY},
        ),
        "write an inline policy on a role without the boundary": (
            "iam",
            "PutRolePolicy",
            {"RoleName": unbounded, "PolicyName": "p", "PolicyDocument": "{}"},
        ),
        "create an IAM user, even with the boundary": (
            "iam",
            "CreateUser",
            {"UserName": f"pushpool-{suffix}", "PermissionsBoundary": boundary},
        ),
        "create an access key for another user": ("iam", "CreateAccessKey", {"UserName": "admin"}),
        "create an access key for a pushpool user": ("iam", "CreateAccessKey", {"UserName": f"pushpool-{suffix}"}),
        "attach a policy to a user": (
            "iam",
            "AttachUserPolicy",
            {"UserName": f"pushpool-{suffix}", "PolicyArn": ADMIN},
        ),
        "remove the boundary": ("iam", "DeleteRolePermissionsBoundary", {"RoleName": bounded}),
        "replace the boundary with AdministratorAccess": (
            "iam",
            "PutRolePermissionsBoundary",
            {"RoleName": bounded, "PermissionsBoundary": ADMIN},
        ),
        "rewrite the boundary policy": ("iam", "CreatePolicyVersion", {"PolicyArn": boundary}),
        "modify a VPC pushpool did not tag": (
            "ec2",
            "ModifyVpcAttribute",
            {"VpcId": theirs["vpc"], "EnableDnsHostnames": {"Value": False}},
        ),
        "add a route to a route table pushpool did not tag": (
            "ec2",
            "CreateRoute",
            {"RouteTableId": theirs["table"], "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": theirs["igw"]},
        ),
        "attach a gateway to a VPC pushpool did not tag": (
            "ec2",
            "AttachInternetGateway",
            {"InternetGatewayId": theirs["igw"], "VpcId": theirs["vpc"]},
        ),
        "put a (tagged) subnet into a VPC pushpool did not tag": (
            "ec2",
            "CreateSubnet",
            {
                "VpcId": theirs["vpc"],
                "CidrBlock": "10.9.0.0/24",
                "TagSpecifications": [{"ResourceType": "subnet", "Tags": pool_tags}],
            },
        ),
        "re-route a subnet pushpool did not tag": (
            "ec2",
            "AssociateRouteTable",
            {"RouteTableId": theirs["table"], "SubnetId": theirs["subnet"]},
        ),
        "tag the account's VPC as pushpool's (to then change it)": (
            "ec2",
            "CreateTags",
            {"Resources": [theirs["vpc"]], "Tags": pool_tags},
        ),
        "create a VPC without the pool's tag": ("ec2", "CreateVpc", {"CidrBlock": "10.8.0.0/16"}),
    }
    allowed = [
        what
        for what, (service, operation, params) in attempts.items()
        if not decide(policy, auth.requests(service, operation, params))
    ]
    assert allowed == []
    explicit = decide(policy, auth.requests("iam", "DeleteRolePermissionsBoundary", {"RoleName": bounded}))
    assert "ExplicitDeny:NeverLiftTheBoundary" in explicit[0]  # refused even if a broader policy is attached later
    replaced = decide(
        policy, auth.requests("iam", "PutRolePermissionsBoundary", {"RoleName": bounded, "PermissionsBoundary": ADMIN})
    )
    assert "ExplicitDeny:NeverAnotherBoundary" in replaced[0]
    # The boundary itself: a role that carries it may pass only pushpool execution roles, and only to ECS tasks.
    ceiling = stack["deployment"].managed_policy("ProvisionedRolesBoundary")
    assert not ceiling.allows(
        "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    )
    assert not ceiling.allows(
        "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/pushpool-a-exec", {"iam:PassedToService": "lambda.amazonaws.com"}
    )
    assert not ceiling.allows("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x")
    assert not ceiling.allows(
        "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod-db"
    )


class Enforcing:
    """A boto3 session whose every call is authorised against ``policy`` first; refusals are collected."""

    def __init__(self, policy: Policy, region: str) -> None:
        self.session = boto3.session.Session(region_name=region)
        self.auth = Authoriser(region)
        self.policy = policy
        self.refused: list[str] = []
        self.calls: list[str] = []
        self.session.events.register("before-parameter-build", self._check)

    def _check(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        service = model.service_model.signing_name
        self.calls.append(f"{service}:{model.name}")
        self.refused += decide(self.policy, self.auth.requests(service, model.name, params))


def _apply(provisioner: EcsProvisioner, pool: str) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for step in provisioner.plan(pool):
        if step.run is not None:
            defaults.update(step.run())
    return defaults


def test_the_provisioners_own_paths_are_all_allowed(stack: dict[str, Any]) -> None:
    from tests.integration.test_provision_ecs import drop_default_vpc

    boundary, secret = stack["boundary"], stack["secret"]
    settings = Settings.from_env(
        {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PUSHPOOL_PREFECT_API_KEY_SECRET_ARN": secret}
    )
    iam = boto3.client("iam")
    calls: set[str] = set()
    # The account's default VPC (a security group added there; the stack's Prefect key granted to the execution role)
    # and a region without one (a VPC of its own; the stack's secret lives in its own region, so none there).
    drop_default_vpc("ca-central-1")
    keyless = Settings.from_env({"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    for region, region_settings in ((REGION, settings), ("ca-central-1", keyless)):
        enforcing = Enforcing(_policy(stack, region), region)
        pool = f"sec{uuid.uuid4().hex[:6]}"
        provisioner = EcsProvisioner(session=enforcing.session, settings=region_settings, permissions_boundary=boundary)
        defaults = _apply(provisioner, pool)
        assert enforcing.refused == [], enforcing.refused
        calls |= set(enforcing.calls)
        role = iam.get_role(RoleName=f"pushpool-{pool}-exec")["Role"]
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
        assert defaults["execution_role_arn"] == role["Arn"]
    # A pool provisioned before the boundary (its role has none): the boundary is put first, then the rest is allowed.
    pool = f"sec{uuid.uuid4().hex[:6]}"
    _apply(EcsProvisioner(region=REGION, settings=settings), pool)
    assert "PermissionsBoundary" not in iam.get_role(RoleName=f"pushpool-{pool}-exec")["Role"]
    iam.delete_role_policy(RoleName=f"pushpool-{pool}-exec", PolicyName="read-prefect-secret")  # to be written again
    enforcing = Enforcing(_policy(stack), REGION)
    _apply(EcsProvisioner(session=enforcing.session, settings=settings, permissions_boundary=boundary), pool)
    assert enforcing.refused == [], enforcing.refused
    calls |= set(enforcing.calls)
    assert (
        iam.get_role(RoleName=f"pushpool-{pool}-exec")["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"]
        == boundary
    )
    # Not vacuous: the writes the policy guards were made, and judged.
    assert {
        "iam:CreateRole",
        "iam:AttachRolePolicy",
        "iam:PutRolePolicy",
        "iam:PutRolePermissionsBoundary",
        "ec2:CreateVpc",
        "ec2:CreateSubnet",
        "ec2:CreateRouteTable",
        "ec2:CreateRoute",
        "ec2:AssociateRouteTable",
        "ec2:AttachInternetGateway",
        "ec2:ModifyVpcAttribute",
        "ec2:CreateSecurityGroup",
        "ecs:CreateCluster",
    } <= calls
