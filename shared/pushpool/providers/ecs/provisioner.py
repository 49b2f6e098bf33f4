"""The ECS provisioner: what an ``ecs:push`` pool needs in an AWS account, created once, tagged, reversible.

Resources (all named after the pool and tagged ``pushpool:pool=<pool>``):

=========================  ==============================  ==========================================
resource                   name                            pool variable it fills
=========================  ==============================  ==========================================
task execution role        ``pushpool-<pool>-exec``        ``execution_role_arn``
ECS cluster (Fargate)      ``pushpool-<pool>``             ``cluster``
network                    the default VPC when usable,    ``vpc_id``, ``network_configuration``
                           else VPC ``pushpool-<pool>``    (subnets + the security group — Prefect's
                           (DNS hostnames, IGW, subnets    provisioner forgets the security group)
                           in up to 3 zones, route table)
security group             ``pushpool-<pool>`` (no inbound)
ECR repository             ``pushpool-<pool>``             ``image`` namespace is printed
CloudWatch log group       ``/pushpool/<pool>``            ``configure_cloudwatch_logs``, options
Prefect key secret         ``pushpool-<pool>-prefect-api-  ``prefect_api_key_secret_arn`` (or
                           key`` (or ``-auth-string``)     ``prefect_api_auth_string_secret_arn``)
secret grant               inline policy ``read-prefect-   (the execution role may GetSecretValue on
                           secret`` of the execution role  exactly that secret, nothing else)
IAM user + policy + key    ``pushpool-<pool>`` (only with  ``aws_credentials`` (a block, key made once)
                           ``credentials="access-key"``)
=========================  ==============================  ==========================================

By default nothing long-lived is created for credentials: the deployed functions use their own IAM role.
When pushpool's Prefect server needs a credential (``PREFECT_API_KEY`` or ``PREFECT_API_AUTH_STRING``), tasks get it
by secret reference: it is stored once in the pool's own secret (or, where pushpool already reads it from a secret —
``PUSHPOOL_PREFECT_API_KEY_SECRET_ARN``, the deployed stack — that secret is used as it is), the execution role is
granted ``secretsmanager:GetSecretValue`` on exactly that secret, and the pool's variable names its ARN.
Existing resources are reused ("already exists"); a second run makes no create calls.

Permissions boundary: with ``permissions_boundary`` (default: ``PUSHPOOL_PERMISSIONS_BOUNDARY_ARN``, which the AWS
stack sets on its provision function) every role and user made here carries that managed policy as its permissions
boundary, and an existing execution role without it is given it (an update in the plan). The stack's provision role
may create roles, attach policies and write inline policies only with that boundary in place (infra/template.yaml),
so what the provisioner makes can never hold more than the boundary allows, whatever is attached to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pushpool.errors import BackendError, InvalidRequestError, ObjectNotFoundError
from pushpool.providers.ecs.aws import aws_error_code, new_session
from pushpool.providers.ecs.aws import aws_errors as _aws
from pushpool.providers.ecs.managed_network import StaticEgress
from pushpool.providers.provisioning import CREATE, DELETE, EXISTS, UPDATE, Marker, Step, wait_until

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient
    from pushpool.settings import Settings

TAG_KEY = Marker.TAG_KEY
CREDENTIALS_BLOCK_TYPE = "aws-credentials"
EXECUTION_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,45}\Z")
SECRET_GRANT = "read-prefect-secret"  # the execution role's inline policy
# The pool's own secret per kind of Prefect credential: pushpool-<pool>-<suffix>.
SECRET_SUFFIX = {
    "prefect_api_key_secret_arn": "prefect-api-key",
    "prefect_api_auth_string_secret_arn": "prefect-auth-string",
}
BOUNDARY_VARIABLE = "PUSHPOOL_PERMISSIONS_BOUNDARY_ARN"  # the stack's provision function has it
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def check_pool_name(pool: str) -> str:
    if not _NAME.match(pool):
        raise InvalidRequestError(
            f"pool name {pool!r} cannot name AWS resources: use 1–46 letters, digits, '-' or '_' (IAM role names are "
            "limited to 64 characters, ECS and ECR names to letters, digits, '-' and '_')"
        )
    return pool


class EcsProvisioner:
    def __init__(
        self,
        *,
        session: Any = None,
        region: str | None = None,
        credentials: str = "role",
        wait_timeout: float = 300,
        settings: Settings | None = None,
        static_ips: bool = False,
        permissions_boundary: str | None = None,
    ) -> None:
        """``settings``: where pushpool's own Prefect credential is found (default: the environment, as ``pushpool
        serve`` and the functions read it). ``permissions_boundary``: the managed policy ARN every role and user made
        here carries (default: ``PUSHPOOL_PERMISSIONS_BOUNDARY_ARN``; none when unset)."""

        if credentials not in ("role", "access-key"):
            raise InvalidRequestError(f"credentials must be 'role' or 'access-key', not {credentials!r}")
        with _aws():  # a profile that does not exist, a broken configuration file …
            self.session = session or new_session(region_name=region)
        self.credentials = credentials
        self.wait_timeout = wait_timeout
        self.static_ips = static_ips  # private subnets behind a NAT gateway with an Elastic IP (managed_network.py)
        self._network: dict[str, Any] = {}  # what the network steps learn while they apply (VPC, subnets, group)
        self._settings = settings
        self.permissions_boundary = permissions_boundary or os.environ.get(BOUNDARY_VARIABLE) or None
        self._clients: dict[str, Any] = {}
        if not self.session.region_name:
            raise InvalidRequestError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or pass --region")
        known = set(self.session.get_available_regions("ecs")) | set(
            self.session.get_available_regions("ecs", partition_name="aws-us-gov")
        )
        if self.session.region_name not in known:
            raise InvalidRequestError(f"unknown AWS region {self.session.region_name!r} (ECS is not offered there)")

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def check_access(self) -> str:
        """The caller's identity, or a clear error when there are no usable AWS credentials."""
        with _aws():
            return str(self.client("sts").get_caller_identity()["Arn"])

    # -- plan ------------------------------------------------------------------------------------------------

    def plan(self, pool: str) -> list[Step]:
        check_pool_name(pool)
        with _aws():
            steps = [
                self._role_step(pool),
                self._cluster_step(pool),
                *self._network_steps(pool),
                *(self._egress(pool).steps(self._network) if self.static_ips else []),
                self._ecr_step(pool),
                self._logs_step(pool),
                *self._prefect_secret_steps(pool),
            ]
            if self.credentials == "access-key":
                steps += self._user_steps(pool)
        return steps

    def _tags(self, pool: str) -> list[dict[str, str]]:
        return Marker(pool).aws_tags()

    def errors(self) -> AbstractContextManager[None]:
        return _aws()

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        found = []
        if "_static_ips" in defaults:
            found.append(f"static outbound IP addresses (to allow in firewalls): {', '.join(defaults['_static_ips'])}")
        if "_repository" in defaults:
            found.append(f"image namespace: push flow images to {defaults['_repository']}")
        return found

    def _egress(self, pool: str) -> StaticEgress:
        return StaticEgress(self.client("ec2"), pool, self._tags(pool), wait_timeout=self.wait_timeout)

    def static_addresses(self, pool: str) -> list[str]:
        """The static outbound addresses of the pool's tasks (none unless provisioned with ``static_ips``)."""
        with _aws():
            return self._egress(pool).addresses()

    # -- the Prefect credential, by secret reference ------------------------------------------------------------

    def _prefect_credential(self) -> tuple[str, str | None, str | None] | None:
        """(pool variable, value to store, existing secret ARN) of pushpool's Prefect credential; None without one."""
        settings = self._settings
        if settings is None:
            from pushpool.errors import ConfigurationError
            from pushpool.settings import Settings

            try:
                settings = Settings.from_env()
            except ConfigurationError:
                return None
        if settings.prefect_api_key:
            return "prefect_api_key_secret_arn", settings.prefect_api_key, None
        if settings.prefect_api_auth_string:
            return "prefect_api_auth_string_secret_arn", settings.prefect_api_auth_string, None
        arn = settings.prefect_api_key_secret_arn
        if not arn:
            return None
        value = str(self.client("secretsmanager").get_secret_value(SecretId=arn).get("SecretString") or "")
        return _credential_variable(value), None, arn

    def _prefect_secret_steps(self, pool: str) -> list[Step]:
        credential = self._prefect_credential()
        if credential is None:
            return []
        variable, value, existing_arn = credential
        sm, iam = self.client("secretsmanager"), self.client("iam")
        state: dict[str, Any] = {"arn": existing_arn}
        steps: list[Step] = []
        if existing_arn is None:
            name = f"pushpool-{pool}-{SECRET_SUFFIX[variable]}"
            try:
                state["arn"] = sm.describe_secret(SecretId=name)["ARN"]
                same = sm.get_secret_value(SecretId=name).get("SecretString") == value
                action = EXISTS if same else UPDATE
            except Exception as exc:
                if aws_error_code(exc) != "ResourceNotFoundException":
                    raise
                action = CREATE

            def run_secret() -> dict[str, Any]:
                with _aws():
                    if action == CREATE:
                        state["arn"] = sm.create_secret(
                            Name=name,
                            Description=f"pushpool: the Prefect credential of pool {pool}'s tasks",
                            SecretString=value,
                            Tags=self._tags(pool),
                        )["ARN"]
                    elif action == UPDATE:
                        sm.put_secret_value(SecretId=name, SecretString=value)
                return {variable: state["arn"]}

            steps.append(Step("secret", name, action, "the Prefect credential, read by the tasks only", run_secret))
        role = f"pushpool-{pool}-exec"

        def grant_document() -> dict[str, Any]:
            return {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ReadThePrefectCredential",
                        "Effect": "Allow",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": state["arn"],
                    }
                ],
            }

        try:
            stored = iam.get_role_policy(RoleName=role, PolicyName=SECRET_GRANT)["PolicyDocument"]
            stored = json.loads(stored) if isinstance(stored, str) else stored
            grant = EXISTS if state["arn"] and stored == grant_document() else UPDATE
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchEntity":
                raise
            grant = CREATE

        def run_grant() -> dict[str, Any]:
            if grant != EXISTS:
                with _aws():
                    iam.put_role_policy(
                        RoleName=role, PolicyName=SECRET_GRANT, PolicyDocument=json.dumps(grant_document())
                    )
            return {variable: state["arn"]}

        steps.append(
            Step("secret grant", f"{role}/{SECRET_GRANT}", grant, "GetSecretValue on exactly that secret", run_grant)
        )
        return steps

    # -- credentials (access-key mode): one key, stored once in an aws-credentials block ----------------------------

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        if self.credentials != "access-key":
            return []
        name = f"{pool}-aws-credentials"
        try:
            existing = prefect.read_block_document_by_name(CREDENTIALS_BLOCK_TYPE, name)
        except ObjectNotFoundError:
            existing = None

        def run() -> dict[str, Any]:
            block_id = existing.id if existing else None
            if block_id is None:
                data = self.create_access_key(pool)
                type_id = prefect.read_block_type_id(CREDENTIALS_BLOCK_TYPE)
                schema_id = prefect.read_latest_block_schema_id(type_id)
                block_id = prefect.create_block_document(
                    {"name": name, "data": data, "block_type_id": type_id, "block_schema_id": schema_id}
                ).id
            return {"aws_credentials": {"$ref": {"block_document_id": block_id}}}

        return [
            Step(
                "credentials block",
                name,
                EXISTS if existing else CREATE,
                "an access key for the IAM user, stored once in an aws-credentials block",
                run,
            )
        ]

    def _credential_deletions(self, pool: str, prefect: PrefectClient) -> list[Step]:
        name = f"{pool}-aws-credentials"
        try:
            block = prefect.read_block_document_by_name(CREDENTIALS_BLOCK_TYPE, name)
        except ObjectNotFoundError:
            return []

        def delete() -> dict[str, Any]:
            prefect.delete_block_document(block.id)
            return {}

        return [Step("credentials block", name, DELETE, "", delete)]

    def _boundary(self) -> dict[str, str]:
        """The ``PermissionsBoundary`` argument of CreateRole / CreateUser (nothing without a boundary)."""
        return {"PermissionsBoundary": self.permissions_boundary} if self.permissions_boundary else {}

    def _role_step(self, pool: str) -> Step:
        iam, name = self.client("iam"), f"pushpool-{pool}-exec"
        try:
            role = iam.get_role(RoleName=name)["Role"]
            arn = role["Arn"]
            bounded = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchEntity":
                raise
            arn, bounded = None, None
        attached = arn is not None and any(
            p["PolicyArn"] == EXECUTION_POLICY
            for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        )
        # A role made before the boundary existed gets it first: the stack's role may attach nothing without it.
        unbounded = arn is not None and bool(self.permissions_boundary) and bounded != self.permissions_boundary

        def run() -> dict[str, Any]:
            nonlocal arn
            with _aws():
                if arn is None:
                    arn = iam.create_role(
                        RoleName=name,
                        AssumeRolePolicyDocument=json.dumps(TRUST),
                        Description=f"pushpool: ECS task execution for pool {pool}",
                        Tags=self._tags(pool),
                        **self._boundary(),
                    )["Role"]["Arn"]
                elif unbounded:
                    iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=self.permissions_boundary)
                if not attached:
                    iam.attach_role_policy(RoleName=name, PolicyArn=EXECUTION_POLICY)
            return {"execution_role_arn": arn}

        action = CREATE if arn is None else (UPDATE if not attached or unbounded else EXISTS)
        detail = "task execution, AmazonECSTaskExecutionRolePolicy"
        if self.permissions_boundary:
            detail += ", permissions boundary " + self.permissions_boundary.rsplit("/", 1)[-1]
        return Step("IAM role", name, action, detail, run)

    def _cluster_step(self, pool: str) -> Step:
        ecs, name = self.client("ecs"), f"pushpool-{pool}"
        clusters = ecs.describe_clusters(clusters=[name]).get("clusters", [])
        exists = any(c.get("status") == "ACTIVE" for c in clusters)

        def run() -> dict[str, Any]:
            if not exists:
                ecs.create_cluster(
                    clusterName=name,
                    capacityProviders=["FARGATE", "FARGATE_SPOT"],
                    tags=[{"key": t["Key"], "value": t["Value"]} for t in self._tags(pool)],
                )
                wait_until(
                    lambda: any(
                        c.get("status") == "ACTIVE" for c in ecs.describe_clusters(clusters=[name])["clusters"]
                    ),
                    what=f"ECS cluster {name}",
                    timeout=self.wait_timeout,
                )
            return {"cluster": name}

        return Step("ECS cluster", name, EXISTS if exists else CREATE, "Fargate and Fargate Spot", run)

    def _network_steps(self, pool: str) -> list[Step]:
        ec2 = self.client("ec2")
        default = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
        ours = ec2.describe_vpcs(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [pool]}]).get("Vpcs", [])
        vpc_id = (ours or default or [{}])[0].get("VpcId")
        subnets = self._subnets(vpc_id) if vpc_id else []
        if vpc_id and not subnets and not ours:
            vpc_id = None  # a default VPC without subnets is not usable
        steps: list[Step] = []
        state = self._network
        state.update({"vpc_id": vpc_id, "subnets": subnets})
        if vpc_id is None:
            cidr = self._free_cidr()
            steps.append(
                Step(
                    "VPC",
                    f"pushpool-{pool}",
                    CREATE,
                    f"{cidr}, internet gateway, subnets in up to 3 zones, route table",
                    lambda: self._create_vpc(pool, cidr, state),
                )
            )
        elif ours and not subnets:  # an earlier run stopped half-way through building it: finish it
            steps.append(
                Step(
                    "VPC",
                    vpc_id,
                    UPDATE,
                    "created earlier for this pool but unfinished: internet gateway, subnets, route table",
                    lambda: self._finish_vpc(pool, state),
                )
            )
        else:
            detail = "the account's default VPC" if not ours else "created earlier for this pool"
            steps.append(Step("VPC", vpc_id, EXISTS, detail, lambda: {"vpc_id": state["vpc_id"]}))
        group = None
        if vpc_id:
            groups = ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [f"pushpool-{pool}"]}]
            )
            group = next((g["GroupId"] for g in groups.get("SecurityGroups", [])), None)

        def run_group() -> dict[str, Any]:
            sg = group
            with _aws():
                if sg is None:
                    sg = ec2.create_security_group(
                        GroupName=f"pushpool-{pool}",
                        Description=f"pushpool pool {pool}: no inbound traffic",
                        VpcId=state["vpc_id"],
                        TagSpecifications=[{"ResourceType": "security-group", "Tags": self._tags(pool)}],
                    )["GroupId"]
            state["security_group"] = sg
            return {
                "network_configuration": {
                    "subnets": state["subnets"],
                    "securityGroups": [sg],
                    "assignPublicIp": "ENABLED",
                }
            }

        steps.append(
            Step("security group", f"pushpool-{pool}", EXISTS if group else CREATE, "no inbound rules", run_group)
        )
        return steps

    def _subnets(self, vpc_id: str) -> list[str]:
        found = self.client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get("Subnets", [])
        by_zone: dict[str, str] = {}
        for subnet in sorted(found, key=lambda s: s["SubnetId"]):
            by_zone.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
        return list(by_zone.values())[:3]

    def _free_cidr(self) -> str:
        used = [ipaddress.ip_network(v["CidrBlock"]) for v in self.client("ec2").describe_vpcs().get("Vpcs", [])]
        candidate = ipaddress.ip_network("172.31.0.0/16")
        for _ in range(200):
            if not any(candidate.overlaps(u) for u in used):
                return str(candidate)
            candidate = ipaddress.ip_network(f"{candidate.network_address + 2**16}/16")
        raise BackendError("no free /16 for a new VPC", backend="ecs")

    def _create_vpc(self, pool: str, cidr: str, state: dict[str, Any]) -> dict[str, Any]:
        ec2 = self.client("ec2")
        tags = self._tags(pool)
        vpc_id = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])["Vpc"][
            "VpcId"
        ]
        state["vpc_id"] = vpc_id
        return self._finish_vpc(pool, state)

    def _finish_vpc(self, pool: str, state: dict[str, Any]) -> dict[str, Any]:
        """DNS, an internet gateway, a public route table and subnets in up to three zones — each made only if
        missing, so a run that stopped half-way is completed by the next one."""
        ec2 = self.client("ec2")
        tags = self._tags(pool)
        vpc_id = state["vpc_id"]
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
        attached = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
        gateways = attached.get("InternetGateways", [])
        if gateways:
            igw = gateways[0]["InternetGatewayId"]
        else:
            igw = ec2.create_internet_gateway(TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": tags}])[
                "InternetGateway"
            ]["InternetGatewayId"]
            ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
        tables = ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": f"tag:{TAG_KEY}", "Values": [pool]}]
        ).get("RouteTables", [])
        if tables:
            table = tables[0]["RouteTableId"]
        else:
            table = ec2.create_route_table(
                VpcId=vpc_id, TagSpecifications=[{"ResourceType": "route-table", "Tags": tags}]
            )["RouteTable"]["RouteTableId"]
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for t in tables for r in t.get("Routes", [])):
            ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        cidr = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
        zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:3]
        blocks = list(ipaddress.ip_network(cidr).subnets(new_prefix=20))
        subnets = []
        for zone, block in zip(zones, blocks, strict=False):
            subnet = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(block),
                AvailabilityZone=zone,
                TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
            )["Subnet"]["SubnetId"]
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            subnets.append(subnet)
        state["subnets"] = subnets
        return {"vpc_id": vpc_id}

    def _ecr_step(self, pool: str) -> Step:
        ecr, name = self.client("ecr"), f"pushpool-{pool.lower()}"
        try:
            uri = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
        except Exception as exc:
            if aws_error_code(exc) != "RepositoryNotFoundException":
                raise
            uri = None

        def run() -> dict[str, Any]:
            nonlocal uri
            if uri is None:
                with _aws():
                    uri = ecr.create_repository(
                        repositoryName=name,
                        imageScanningConfiguration={"scanOnPush": True},
                        tags=self._tags(pool),
                    )["repository"]["repositoryUri"]
            return {"_registry": uri.rsplit("/", 1)[0], "_repository": uri}

        return Step("ECR repository", name, EXISTS if uri else CREATE, "for flow images", run)

    def _logs_step(self, pool: str) -> Step:
        logs, name = self.client("logs"), f"/pushpool/{pool}"
        groups = logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
        exists = any(g["logGroupName"] == name for g in groups)

        def run() -> dict[str, Any]:
            if not exists:
                with _aws():
                    logs.create_log_group(logGroupName=name, tags={TAG_KEY: pool})
                    logs.put_retention_policy(logGroupName=name, retentionInDays=30)
            return {
                "configure_cloudwatch_logs": True,
                "cloudwatch_logs_options": {"awslogs-group": name, "awslogs-create-group": "false"},
            }

        return Step("log group", name, EXISTS if exists else CREATE, "30-day retention", run)

    # -- access-key mode -------------------------------------------------------------------------------------

    def policy_document(self, pool: str, account: str) -> dict[str, Any]:
        cluster = f"arn:aws:ecs:{self.region}:{account}:cluster/pushpool-{pool}"
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TasksInTheCluster",
                    "Effect": "Allow",
                    "Action": ["ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks", "ecs:TagResource"],
                    "Resource": "*",
                    "Condition": {"ArnEquals": {"ecs:cluster": cluster}},
                },
                {
                    "Sid": "TaskDefinitions",
                    "Effect": "Allow",
                    "Action": ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"],
                    "Resource": "*",
                },
                {
                    "Sid": "Network",
                    "Effect": "Allow",
                    "Action": ["ec2:DescribeVpcs", "ec2:DescribeSubnets"],
                    "Resource": "*",
                },
                {
                    "Sid": "Logs",
                    "Effect": "Allow",
                    "Action": ["logs:GetLogEvents"],
                    "Resource": f"arn:aws:logs:{self.region}:{account}:log-group:/pushpool/{pool}:*",
                },
                {
                    "Sid": "PassTheExecutionRole",
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": f"arn:aws:iam::{account}:role/pushpool-{pool}-exec",
                    "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
                },
            ],
        }

    def _user_steps(self, pool: str) -> list[Step]:
        iam, name = self.client("iam"), f"pushpool-{pool}"
        account = self.client("sts").get_caller_identity()["Account"]
        policy_arn = f"arn:aws:iam::{account}:policy/pushpool-{pool}-policy"
        document = self.policy_document(pool, account)
        try:
            iam.get_user(UserName=name)
            user_exists = True
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchEntity":
                raise
            user_exists = False
        try:
            policy = iam.get_policy(PolicyArn=policy_arn)["Policy"]
            current = iam.get_policy_version(PolicyArn=policy_arn, VersionId=policy["DefaultVersionId"])
            stored = current["PolicyVersion"]["Document"]
            stored = json.loads(stored) if isinstance(stored, str) else stored
            policy_state = EXISTS if stored == document else UPDATE
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchEntity":
                raise
            policy_state = CREATE

        def run_user() -> dict[str, Any]:
            with _aws():
                if not user_exists:
                    iam.create_user(UserName=name, Tags=self._tags(pool), **self._boundary())
            return {}

        def run_policy() -> dict[str, Any]:
            with _aws():
                if policy_state == CREATE:
                    iam.create_policy(
                        PolicyName=f"pushpool-{pool}-policy", PolicyDocument=json.dumps(document), Tags=self._tags(pool)
                    )
                elif policy_state == UPDATE:
                    versions = iam.list_policy_versions(PolicyArn=policy_arn)["Versions"]
                    if len(versions) >= 5:
                        oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
                        iam.delete_policy_version(PolicyArn=policy_arn, VersionId=oldest["VersionId"])
                    iam.create_policy_version(
                        PolicyArn=policy_arn, PolicyDocument=json.dumps(document), SetAsDefault=True
                    )
                attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
                if not any(p["PolicyArn"] == policy_arn for p in attached):
                    iam.attach_user_policy(UserName=name, PolicyArn=policy_arn)
            return {}

        return [
            Step("IAM user", name, EXISTS if user_exists else CREATE, "for pushpool outside AWS", run_user),
            Step("IAM policy", f"pushpool-{pool}-policy", policy_state, "least privilege, kept up to date", run_policy),
        ]

    def create_access_key(self, pool: str) -> dict[str, str]:
        iam, name = self.client("iam"), f"pushpool-{pool}"
        with _aws():
            keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
            if len(keys) >= 2:
                raise BackendError(
                    f"IAM user {name} already has 2 access keys (AWS's limit); delete one that is no longer stored in "
                    "Prefect, then run again",
                    backend="ecs",
                )
            key = iam.create_access_key(UserName=name)["AccessKey"]
        return {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
            "region_name": self.region,
        }

    # -- deprovision -----------------------------------------------------------------------------------------

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        """Everything tagged with the pool, in deletion order, then the credentials block."""
        check_pool_name(pool)
        steps: list[Step] = []
        with _aws():
            ecs = self.client("ecs")
            for cluster in ecs.describe_clusters(clusters=[f"pushpool-{pool}"], include=["TAGS"]).get("clusters", []):
                if cluster.get("status") == "ACTIVE" and _tagged(cluster.get("tags"), pool, key="key", value="value"):
                    steps.append(
                        Step(
                            "ECS cluster",
                            cluster["clusterName"],
                            DELETE,
                            "",
                            lambda c=cluster["clusterArn"]: _none(ecs.delete_cluster(cluster=c)),
                        )
                    )
            ec2 = self.client("ec2")
            steps += self._egress(pool).deprovision_steps()  # before the VPC: its NAT gateway holds a subnet
            for group in ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [pool]}]).get(
                "SecurityGroups", []
            ):
                steps.append(
                    Step(
                        "security group",
                        group["GroupId"],
                        DELETE,
                        group.get("GroupName", ""),
                        lambda g=group["GroupId"]: _none(ec2.delete_security_group(GroupId=g)),
                    )
                )
            for vpc in ec2.describe_vpcs(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [pool]}]).get("Vpcs", []):
                steps.append(
                    Step(
                        "VPC",
                        vpc["VpcId"],
                        DELETE,
                        "with its subnets, route table and internet gateway",
                        lambda v=vpc["VpcId"]: self._delete_vpc(v),
                    )
                )
            ecr = self.client("ecr")
            try:
                for repo in ecr.describe_repositories(repositoryNames=[f"pushpool-{pool.lower()}"])["repositories"]:
                    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags", [])
                    if _tagged(tags, pool):
                        steps.append(
                            Step(
                                "ECR repository",
                                repo["repositoryName"],
                                DELETE,
                                "and its images",
                                lambda r=repo["repositoryName"]: _none(
                                    ecr.delete_repository(repositoryName=r, force=True)
                                ),
                            )
                        )
            except Exception as exc:
                if aws_error_code(exc) != "RepositoryNotFoundException":
                    raise
            logs = self.client("logs")
            for group in logs.describe_log_groups(logGroupNamePrefix=f"/pushpool/{pool}").get("logGroups", []):
                if (
                    group["logGroupName"] == f"/pushpool/{pool}"
                    and logs.list_tags_log_group(logGroupName=group["logGroupName"]).get("tags", {}).get(TAG_KEY)
                    == pool
                ):
                    steps.append(
                        Step(
                            "log group",
                            group["logGroupName"],
                            DELETE,
                            "",
                            lambda n=group["logGroupName"]: _none(logs.delete_log_group(logGroupName=n)),
                        )
                    )
            sm = self.client("secretsmanager")
            for name in (f"pushpool-{pool}-{suffix}" for suffix in SECRET_SUFFIX.values()):
                try:
                    secret = sm.describe_secret(SecretId=name)
                except Exception as exc:
                    if aws_error_code(exc) != "ResourceNotFoundException":
                        raise
                    continue
                if _tagged(secret.get("Tags"), pool):
                    steps.append(
                        Step(
                            "secret",
                            name,
                            DELETE,
                            "at once, without a recovery window",
                            lambda n=name: _none(sm.delete_secret(SecretId=n, ForceDeleteWithoutRecovery=True)),
                        )
                    )
            steps += self._iam_deletions(pool)
        return steps + self._credential_deletions(pool, prefect)

    def _iam_deletions(self, pool: str) -> list[Step]:
        iam = self.client("iam")
        steps: list[Step] = []
        role = f"pushpool-{pool}-exec"
        if _iam_tagged(lambda: iam.list_role_tags(RoleName=role)["Tags"], pool):

            def delete_role() -> dict[str, Any]:
                for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                    iam.delete_role_policy(RoleName=role, PolicyName=name)
                for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                    iam.detach_role_policy(RoleName=role, PolicyArn=p["PolicyArn"])
                iam.delete_role(RoleName=role)
                return {}

            steps.append(Step("IAM role", role, DELETE, "", delete_role))
        user = f"pushpool-{pool}"
        if _iam_tagged(lambda: iam.list_user_tags(UserName=user)["Tags"], pool):

            def delete_user() -> dict[str, Any]:
                for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                    iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
                for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]:
                    iam.detach_user_policy(UserName=user, PolicyArn=p["PolicyArn"])
                    if p["PolicyName"] == f"pushpool-{pool}-policy":
                        for v in iam.list_policy_versions(PolicyArn=p["PolicyArn"])["Versions"]:
                            if not v["IsDefaultVersion"]:
                                iam.delete_policy_version(PolicyArn=p["PolicyArn"], VersionId=v["VersionId"])
                        iam.delete_policy(PolicyArn=p["PolicyArn"])
                iam.delete_user(UserName=user)
                return {}

            steps.append(Step("IAM user", user, DELETE, "with its access keys and policy", delete_user))
        return steps

    def _delete_vpc(self, vpc_id: str) -> dict[str, Any]:
        ec2 = self.client("ec2")
        with _aws():
            for group in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
                "SecurityGroups"
            ]:
                if group["GroupName"] != "default":
                    ec2.delete_security_group(GroupId=group["GroupId"])
            for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]:
                ec2.delete_subnet(SubnetId=subnet["SubnetId"])
            for table in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]:
                if not any(a.get("Main") for a in table.get("Associations", [])):
                    for assoc in table.get("Associations", []):
                        ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
                    ec2.delete_route_table(RouteTableId=table["RouteTableId"])
            for igw in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])[
                "InternetGateways"
            ]:
                ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc_id)
                ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])
            ec2.delete_vpc(VpcId=vpc_id)
        return {}


def _credential_variable(value: str) -> str:
    """The pool variable for a stored Prefect credential: an auth string is ``user:password`` (the functions' rule)."""
    if ":" in value and not value.startswith("pnu_"):
        return "prefect_api_auth_string_secret_arn"
    return "prefect_api_key_secret_arn"


def _none(_: Any) -> dict[str, Any]:
    return {}


def _tagged(tags: Any, pool: str, *, key: str = "Key", value: str = "Value") -> bool:
    return any(t.get(key) == TAG_KEY and t.get(value) == pool for t in tags or [])


def _iam_tagged(read_tags: Any, pool: str) -> bool:
    try:
        return _tagged(read_tags(), pool)
    except Exception as exc:
        if aws_error_code(exc) == "NoSuchEntity":
            return False
        raise
