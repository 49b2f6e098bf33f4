"""The infra templates grant nothing account- or project-wide that writes, unless a condition narrows it.

A literal ``"*"`` is not the only way to grant everything: ``arn:aws:iam::*:role/*``, ``…:ec2:region:account:*`` or
``repository/*`` reach every resource of a kind just as well. Every IAM policy of infra/template.yaml (each function's,
and every managed policy, the permissions boundary included) is resolved for a deployment and each Allow statement is
judged per action:

* a mutating action on a broad resource (``*``, an ARN whose account is ``*``, or whose resource part names no
  resource but a whole kind) needs a condition from RESTRICTING_KEYS, or a named reason in UNSCOPABLE / EXEMPT;
* IAM: creating roles or users, attaching policies and writing inline policies need ``iam:PermissionsBoundary``;
  attaching needs ``iam:PolicyARN`` naming exact policies; ``iam:PassRole`` needs ``iam:PassedToService``; actions
  that mint or widen credentials beyond any condition (access keys, login profiles, policy versions, trust policies,
  group policies, removing a boundary) are never allowed; no action wildcards.

Google (infra/gcp/*.tf): no basic role and no predefined role that writes (run, iam, resourcemanager …) on the project;
a project role is a custom role whose permissions are listed, hold nothing that grants or impersonates, and are exactly
what the Cloud Run backend calls. Azure (azuredeploy.json): no Owner / Contributor / User Access Administrator, nothing
at subscription scope, custom roles listed action by action without wildcards and without Microsoft.Authorization
writes, assignable in the resource group only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.iam_policy import Deployment, load_template

ROOT = Path(__file__).resolve().parents[2]
GCP = ROOT / "infra" / "gcp"
AZURE = ROOT / "infra" / "azure" / "azuredeploy.json"

READ_VERBS = ("Get", "List", "Describe", "BatchGet", "BatchCheck", "Head", "Lookup", "Search", "Filter")
# Condition keys that narrow a broad Resource to what pushpool owns or means (a key alone; its value is AWS's to check).
RESTRICTING_KEYS = re.compile(
    r"^(ecs:cluster|aws:RequestTag/.+|aws:ResourceTag/.+|iam:ResourceTag/.+|iam:PassedToService"
    r"|iam:PermissionsBoundary|iam:PolicyARN|ec2:CreateAction)$"
)
# Mutating actions AWS cannot scope to a resource, each with why.
UNSCOPABLE = {
    "ecs:RegisterTaskDefinition": "the definition's ARN does not exist before the call; ECS has no resource-level "
    "permission for it (what it may run is bounded by RunTask's ecs:cluster condition and PassRole's roles)",
}
# (action, resource kind) pairs allowed on a broad resource without a condition, each with why.
EXEMPT = {
    ("ec2:CreateSecurityGroup", "vpc/*"): "a pool on the account's default VPC gets a tagged security group without "
    "rules there: the VPC is not changed, and its side of the call cannot carry a tag pushpool never put on it",
}
NEEDS_BOUNDARY = {
    "iam:CreateRole",
    "iam:CreateUser",
    "iam:AttachRolePolicy",
    "iam:AttachUserPolicy",
    "iam:PutRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:PutUserPermissionsBoundary",
}
NEEDS_POLICY_ARN = {"iam:AttachRolePolicy", "iam:AttachUserPolicy"}
NEVER = {  # each mints a credential or widens a policy past anything a condition key can bound
    "iam:CreateAccessKey",
    "iam:UpdateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:UpdateAssumeRolePolicy",
    "iam:AddUserToGroup",
    "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy",
    "iam:DeleteRolePermissionsBoundary",
    "iam:DeleteUserPermissionsBoundary",
    "iam:CreateServiceLinkedRole",
    "sts:AssumeRole",
}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def mutating(action: str) -> bool:
    return not action.split(":", 1)[1].startswith(READ_VERBS)


def broad(resource: str) -> bool:
    """A resource that names every resource of a kind (or of every kind), in one account or all."""
    if resource == "*":
        return True
    if resource.startswith("<"):  # a resource of the stack itself (Fn::GetAtt): one resource
        return False
    parts = resource.split(":", 5)
    if len(parts) < 6:
        return True
    account, rest = parts[4], parts[5]
    if "*" in account:
        return True
    name = re.sub(r"^[a-z0-9-]+[/:]", "", rest)  # role/…, vpc/…, log-group:…, repository/…
    return name.strip("*?/") == ""


def statement_findings(where: str, statement: dict[str, Any]) -> list[str]:
    if statement.get("Effect") != "Allow":
        return []
    sid = f"{where}/{statement.get('Sid', '?')}"
    condition = statement.get("Condition") or {}
    keys = {key: (operator, value) for operator, block in condition.items() for key, value in block.items()}
    restricting = [k for k in keys if RESTRICTING_KEYS.match(k)]
    resources = [str(r) for r in _list(statement.get("Resource", "*"))]
    found = []
    for action in (str(a) for a in _list(statement["Action"])):
        if "*" in action or "?" in action:
            found.append(f"{sid}: action wildcard {action}")
            continue
        if action in NEVER:
            found.append(f"{sid}: {action} is never granted")
        if action in NEEDS_BOUNDARY and "iam:PermissionsBoundary" not in keys:
            found.append(f"{sid}: {action} without an iam:PermissionsBoundary condition")
        if action in NEEDS_POLICY_ARN:
            operator, value = keys.get("iam:PolicyARN", ("", ""))
            if not operator or any("*" in str(v) for v in _list(value)):
                found.append(f"{sid}: {action} without an iam:PolicyARN condition naming exact policies")
        if action == "iam:PassRole" and "iam:PassedToService" not in keys:
            found.append(f"{sid}: iam:PassRole without an iam:PassedToService condition")
        if not mutating(action) or restricting or action in UNSCOPABLE:
            continue
        for resource in resources:
            kind = re.sub(r"^arn:[^:]*:[^:]*:[^:]*:[^:]*:", "", resource)
            if broad(resource) and (action, kind) not in EXEMPT:
                found.append(f"{sid}: {action} on {resource} with no restricting condition")
    return found


def aws_findings(template: dict[str, Any]) -> list[str]:
    """Findings over every IAM policy of the template, resolved with and without the optional parameters."""
    found: list[str] = []
    for parameters in ({}, {"PrefectApiKeySecretArn": "", "TaskRoleArn": "arn:aws:iam::123456789012:role/flow"}):
        deployment = Deployment(template=template)
        deployment.parameters = {**deployment.parameters, **parameters}
        for name, resource in template["Resources"].items():
            if resource["Type"] == "AWS::Serverless::Function":
                statements = deployment.function_policy(name).statements
            elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::IAM::Role"):
                documents = [resource["Properties"].get("PolicyDocument")]
                documents += [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
                statements = [s for d in documents if d for s in _list(deployment.resolve(d)["Statement"])]
            else:
                continue
            for statement in statements:
                found += [f for f in statement_findings(name, statement) if f not in found]
    return found


# -- Google --------------------------------------------------------------------------------------------------------

BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
WRITING_SERVICES = re.compile(r"^roles/(run|iam|resourcemanager|cloudfunctions|compute|storage|secretmanager)\.")
PROJECT_READ_ROLES = {"roles/logging.viewer": "the monitor reads a crashed run's last log lines (reads only)"}
ESCALATING = re.compile(r"(\.setIamPolicy$|^iam\.|^resourcemanager\.|\.actAs$|getAccessToken|signBlob|signJwt)")
# The Cloud Run Admin API v2 calls of providers/cloudrun/backend.py and the permission each needs.
CLOUD_RUN_CALLS = {
    "create_job": "run.jobs.create",
    "get_job": "run.jobs.get",
    "list_jobs": "run.jobs.list",
    "delete_job": "run.jobs.delete",
    "run_job": "run.jobs.run",
    "get_execution": "run.executions.get",
    "list_executions": "run.executions.list",
    "cancel_execution": "run.executions.cancel",
    "list_tasks": "run.tasks.list",
    "get_task": "run.tasks.get",
}
LONG_RUNNING = {"run.operations.get"}  # create_job and run_job return operations the backend polls (result())


def _blocks(text: str, kind: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(rf'^resource "{kind}" "(\w+)" {{\n(.*?)^}}', text, re.S | re.M)}


def gcp_findings(text: str) -> list[str]:
    found = []
    custom = _blocks(text, "google_project_iam_custom_role")
    for kind in ("google_project_iam_member", "google_project_iam_binding"):
        for name, body in _blocks(text, kind).items():
            role = re.search(r"^\s*role\s*=\s*(.+)$", body, re.M).group(1).strip()  # type: ignore[union-attr]
            literal = role.strip('"')
            if literal in BASIC_ROLES:
                found.append(f"{kind}.{name}: basic role {literal} on the project")
            elif role.startswith('"') and literal not in PROJECT_READ_ROLES:
                found.append(f"{kind}.{name}: predefined role {literal} on the project (use a listed custom role)")
            elif not role.startswith('"') and not re.fullmatch(
                r"google_project_iam_custom_role\.(\w+)\.(id|name)", role
            ):
                found.append(f"{kind}.{name}: role {role} is neither a listed custom role nor a named read role")
    for name, body in custom.items():
        listed = re.search(r"permissions\s*=\s*\[(.*?)\]", body, re.S)
        permissions = re.findall(r'"([^"]+)"', listed.group(1)) if listed else []
        if not permissions or (listed and re.search(r"[^\s\",]", re.sub(r'"[^"]*"', "", listed.group(1)))):
            found.append(f"custom role {name}: permissions are not listed literally")
        found += [f"custom role {name}: wildcard {p}" for p in permissions if "*" in p]
        found += [f"custom role {name}: {p} grants or impersonates" for p in permissions if ESCALATING.search(p)]
    return found


# -- Azure ---------------------------------------------------------------------------------------------------------

BROAD_AZURE_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
}


def azure_findings(template: dict[str, Any]) -> list[str]:
    found = []
    text = json.dumps(template)
    found += [f"built-in role {name} appears" for guid, name in BROAD_AZURE_ROLES.items() if guid in text]
    for resource in template["resources"]:
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            scope = resource.get("scope", "")
            if "subscription()" in scope or (scope.startswith("/subscriptions/") and "/resourceGroups/" not in scope):
                found.append(f"role assignment {resource['name']} at subscription scope")
        if resource["type"] == "Microsoft.Authorization/roleDefinitions":
            properties = resource["properties"]
            if properties.get("assignableScopes") != ["[resourceGroup().id]"]:
                found.append(f"role {properties['roleName']} assignable beyond the resource group")
            for permission in properties["permissions"]:
                actions = permission["actions"]
                if isinstance(actions, str):  # "[variables('x')]"
                    actions = template["variables"][re.search(r"variables\('(\w+)'\)", actions).group(1)]  # type: ignore[union-attr]
                found += [f"role {properties['roleName']}: wildcard {a}" for a in actions if "*" in a]
                found += [
                    f"role {properties['roleName']}: {a} writes access control"
                    for a in actions
                    if a.lower().startswith("microsoft.authorization/") and not a.lower().endswith("/read")
                ]
    return found


# -- the templates -------------------------------------------------------------------------------------------------


def test_the_aws_template_grants_no_unconditioned_write_on_a_broad_resource() -> None:
    assert aws_findings(load_template()) == []


def test_the_google_templates_hold_no_project_wide_writing_role() -> None:
    assert gcp_findings("".join(p.read_text() for p in sorted(GCP.glob("*.tf")))) == []


def test_the_azure_template_holds_no_broad_role() -> None:
    assert azure_findings(json.loads(AZURE.read_text())) == []


def test_the_cloud_run_role_is_exactly_what_the_backend_calls() -> None:
    """Every Admin API method backend.py calls has its permission in the role, and the role holds nothing else."""
    backend = (ROOT / "shared" / "pushpool" / "providers" / "cloudrun" / "backend.py").read_text()
    called = set(re.findall(rf"\.({'|'.join(CLOUD_RUN_CALLS)})\(", backend))
    if re.search(r'_rest\(\s*"POST",[^\n]*"/jobs"', backend):  # CreateJob over REST (the body the current API takes)
        called.add("create_job")
    assert {"create_job", "run_job", "cancel_execution", "list_executions", "delete_job"} <= called
    needed = {CLOUD_RUN_CALLS[c] for c in called} | LONG_RUNNING
    body = _blocks((GCP / "main.tf").read_text(), "google_project_iam_custom_role")["jobs"]
    listed = set(re.findall(r'"(run\.[^"]+)"', body))
    assert listed == needed


# -- the checks catch what they name ---------------------------------------------------------------------------------


def _allow(action: Any, resource: Any, condition: dict | None = None) -> dict[str, Any]:
    statement = {"Sid": "S", "Effect": "Allow", "Action": action, "Resource": resource}
    return {**statement, "Condition": condition} if condition else statement


@pytest.mark.parametrize(
    ("statement", "finding"),
    [
        (_allow("iam:CreateRole", "*"), "without an iam:PermissionsBoundary condition"),
        (_allow("iam:AttachRolePolicy", "arn:aws:iam::*:role/*"), "on arn:aws:iam::*:role/* with no restricting"),
        (
            _allow(
                "iam:AttachRolePolicy",
                "arn:aws:iam::1:role/pushpool-*",
                {"StringEquals": {"iam:PermissionsBoundary": "arn:aws:iam::1:policy/b"}},
            ),
            "without an iam:PolicyARN condition naming exact policies",
        ),
        (
            _allow(
                "iam:AttachRolePolicy",
                "arn:aws:iam::1:role/pushpool-*",
                {"ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/*"}},
            ),
            "without an iam:PolicyARN condition naming exact policies",
        ),
        (_allow("iam:PutRolePolicy", "arn:aws:iam::1:role/pushpool-*"), "without an iam:PermissionsBoundary"),
        (_allow("iam:CreateAccessKey", "arn:aws:iam::1:user/pushpool-*"), "iam:CreateAccessKey is never granted"),
        (_allow("iam:PassRole", "arn:aws:iam::1:role/pushpool-x"), "without an iam:PassedToService condition"),
        (_allow("ec2:ModifyVpcAttribute", "arn:aws:ec2:us-east-1:1:*"), "no restricting condition"),
        (_allow("ec2:CreateRoute", "arn:aws:ec2:*:*:route-table/*"), "no restricting condition"),
        (_allow("ec2:CreateRoute", "arn:aws:ec2:us-east-1:1:route-table/*"), "no restricting condition"),
        (_allow("ecr:PutImage", "arn:aws:ecr:us-east-1:1:repository/*"), "no restricting condition"),
        (_allow("logs:PutRetentionPolicy", "arn:aws:logs:us-east-1:1:log-group:*"), "no restricting condition"),
        (_allow("s3:PutObject", "*"), "no restricting condition"),
        (_allow("ec2:*", "arn:aws:ec2:us-east-1:1:vpc/vpc-1"), "action wildcard"),
        (
            _allow(
                "ec2:CreateRoute",
                "arn:aws:ec2:us-east-1:1:route-table/*",
                {"StringEquals": {"aws:RequestedRegion": "us-east-1"}},
            ),
            "no restricting condition",
        ),
    ],
)
def test_the_aws_check_catches(statement: dict, finding: str) -> None:
    assert any(finding in f for f in statement_findings("T", statement)), statement_findings("T", statement)


@pytest.mark.parametrize(
    "statement",
    [
        _allow("ec2:CreateRoute", "arn:aws:ec2:us-east-1:1:route-table/*", {"Null": {"aws:ResourceTag/p": "false"}}),
        _allow("ecs:CreateCluster", "arn:aws:ecs:us-east-1:1:cluster/pushpool-*"),
        _allow("logs:CreateLogGroup", "arn:aws:logs:us-east-1:1:log-group:/pushpool/*"),
        _allow(["ec2:DescribeVpcs", "sts:GetCallerIdentity"], "*"),
        _allow("ecs:RegisterTaskDefinition", "*"),
        _allow("iam:PassRole", "arn:aws:iam::1:role/x", {"StringEquals": {"iam:PassedToService": "ecs-tasks"}}),
    ],
)
def test_the_aws_check_passes_what_is_scoped(statement: dict) -> None:
    assert statement_findings("T", statement) == []


def test_the_google_check_catches_project_wide_roles_and_loose_custom_roles() -> None:
    text = """
resource "google_project_iam_member" "a" {
  project = var.project
  role    = "roles/run.developer"
}
resource "google_project_iam_member" "b" {
  role    = "roles/editor"
}
resource "google_project_iam_member" "c" {
  role    = google_project_iam_custom_role.loose.id
}
resource "google_project_iam_custom_role" "loose" {
  permissions = ["run.jobs.create", "run.*", "run.jobs.setIamPolicy", "iam.serviceAccounts.actAs"]
}
"""
    found = gcp_findings(text)
    assert any("predefined role roles/run.developer" in f for f in found)
    assert any("basic role roles/editor" in f for f in found)
    assert any("wildcard run.*" in f for f in found)
    assert any("run.jobs.setIamPolicy grants" in f for f in found)
    assert any("iam.serviceAccounts.actAs grants" in f for f in found)
    assert not any("google_project_iam_member.c" in f for f in found)


def test_the_azure_check_catches_broad_roles_and_scopes() -> None:
    template = {
        "variables": {"acts": ["Microsoft.ContainerInstance/*", "Microsoft.Authorization/roleAssignments/write"]},
        "resources": [
            {
                "type": "Microsoft.Authorization/roleAssignments",
                "name": "a",
                "scope": "[subscription().id]",
                "properties": {"roleDefinitionId": "b24988ac-6180-42a0-ab88-20f7382dd24c"},
            },
            {
                "type": "Microsoft.Authorization/roleDefinitions",
                "properties": {
                    "roleName": "r",
                    "assignableScopes": ["[subscription().id]"],
                    "permissions": [{"actions": "[variables('acts')]"}],
                },
            },
        ],
    }
    found = azure_findings(template)
    assert len(found) == 5, found  # Contributor, subscription scope, assignable scope, wildcard, authorization write
