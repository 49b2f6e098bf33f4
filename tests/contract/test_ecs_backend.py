"""The ECS backend keeps the backend contract against moto in server mode (real HTTP, the real boto3 client).

The driver plays ECS's control plane through moto's backend objects (the server runs in this process): a task ends
with an exit code and its container's CloudWatch lines, or disappears. moto's own departures from AWS are corrected
in tests/emulators.py (clientToken idempotency, tasks that stay put, StopTask's stop code).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import boto3
import pytest
from pushpool.providers.base import JobHandle, JobSpec
from pushpool.providers.ecs.backend import EcsBackend, started_by
from pushpool.providers.ecs.config import EcsJobConfig

from tests.contract.contract import BackendContract, contract_spec
from tests.helpers import SECRET_ARN

ACCOUNT, REGION = "123456789012", "us-east-1"
LOG_GROUP, PREFIX = "pushpool-contract", "contract"


def _moto_ecs():
    from moto.backends import get_backend

    return get_backend("ecs")[ACCOUNT][REGION]


class EcsDriver:
    supports_locations = True

    def __init__(self, aws: dict, other_cluster: str) -> None:
        self.aws = aws
        self.clusters = {"default": aws["cluster"], "other": other_cluster, "nowhere": "no-such-cluster"}
        self.logs = boto3.client("logs")

    def spec(self, *, location: str = "default") -> JobSpec:
        config = EcsJobConfig(
            cluster=self.clusters[location],
            network_configuration={
                "subnets": self.aws["subnets"],
                "securityGroups": [self.aws["security_group"]],
                "assignPublicIp": "DISABLED",
            },
            # moto cannot place a Fargate task whose memory is set at task level only
            task_definition={
                "containerDefinitions": [{"name": "prefect", "image": "flows:1", "memoryReservation": 512}]
            },
            prefect_api_key_secret_arn=SECRET_ARN,
            configure_cloudwatch_logs=True,
            execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/exec",
            cloudwatch_logs_prefix=PREFIX,
            cloudwatch_logs_options={"awslogs-group": LOG_GROUP},
        )
        return contract_spec(config)

    @staticmethod
    def _task(handle: JobHandle):
        cluster, arn = handle.id.split("::")
        return _moto_ecs().tasks[cluster][arn]

    def jobs_of(self, spec: JobSpec) -> int:
        ecs = self.aws["ecs"]
        tag = started_by(spec.run_id, spec.attempt)
        return sum(
            len(ecs.list_tasks(cluster=c, startedBy=tag, desiredStatus=d)["taskArns"])
            for c in (self.clusters["default"], self.clusters["other"])
            for d in ("RUNNING", "STOPPED")
        )

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        task = self._task(handle)
        if lines:
            stream = f"{PREFIX}/prefect/{task.id}"
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            now = int(time.time() * 1000)
            self.logs.put_log_events(
                logGroupName=LOG_GROUP,
                logStreamName=stream,
                logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
            )
        task.last_status = task.desired_status = "STOPPED"
        task.stop_code = "EssentialContainerExited"
        task.stopped_reason = "Essential container in task exited"
        task.containers[0].exitCode = code

    def vanish(self, handle: JobHandle) -> None:
        cluster, arn = handle.id.split("::")
        del _moto_ecs().tasks[cluster][arn]

    def unknown_handle(self) -> JobHandle:
        cluster = self.clusters["default"]
        return JobHandle("ecs", f"{cluster}::arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{uuid.uuid4().hex}")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("ecs", "not-an-ecs-task")

    def refused_spec(self) -> JobSpec:
        spec = self.spec()
        missing = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/no-such-definition:1"
        return dataclasses.replace(
            spec, config=spec.config.model_copy(update={"task_run_request": {"taskDefinition": missing}})
        )

    def sent(self, handle: JobHandle) -> str:
        ecs = self.aws["ecs"]
        cluster, arn = handle.id.split("::")
        task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        return json.dumps([task, definition], default=str)


@pytest.fixture(scope="module")
def other_cluster(aws: dict) -> str:
    aws["ecs"].create_cluster(clusterName="pushpool-contract-other")
    logs = boto3.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=LOG_GROUP)
    return "pushpool-contract-other"


class TestEcsBackend(BackendContract):
    @pytest.fixture
    def backend(self, aws: dict) -> EcsBackend:
        return EcsBackend()

    @pytest.fixture
    def driver(self, aws: dict, other_cluster: str) -> EcsDriver:
        return EcsDriver(aws, other_cluster)
