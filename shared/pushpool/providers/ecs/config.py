"""The typed job configuration of ``ecs:push`` pools: the fields of Prefect's ECS worker template, plus push's own.

Where a job goes (cluster, region) is read from here, both by submit and by the monitor's look-up of a job whose
``infrastructure_pid`` was never written — so a deployment that overrides ``cluster`` is searched in its own cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from pushpool.providers.base import JobConfig


class EcsJobConfig(JobConfig):
    credential_fields = ("aws_credentials",)  # the pool's only: job variables may not change it

    aws_credentials: dict[str, Any] | None = Field(
        default=None, repr=False, description="aws-credentials block data: region, keys/role"
    )
    cluster: str | None = Field(default=None, description="ECS cluster name or ARN (default: the account's default)")
    task_definition: dict[str, Any] = Field(default_factory=dict, description="the task definition to register")
    task_run_request: dict[str, Any] = Field(default_factory=dict, description="the RunTask request")
    container_name: str | None = Field(default=None, description="the container that runs the flow")
    network_configuration: dict[str, Any] | None = Field(default=None, description="awsvpc network configuration")
    vpc_id: str | None = Field(default=None, description="VPC whose subnets are used when no network is given")
    execution_role_arn: str | None = Field(default=None, description="the task execution role")
    configure_cloudwatch_logs: bool = Field(default=False, description="send the container's output to CloudWatch")
    cloudwatch_logs_options: dict[str, str] = Field(default_factory=dict, description="awslogs driver options")
    cloudwatch_logs_prefix: str | None = Field(default=None, description="awslogs stream prefix")
    prefect_api_key_secret_arn: str | None = Field(default=None, description="Secrets Manager ARN of the Prefect key")
    prefect_api_auth_string_secret_arn: str | None = Field(
        default=None, description="Secrets Manager ARN of the Prefect auth string"
    )
    auto_deregister_task_definition: bool = Field(default=False, description="ignored: definitions are shared")
    match_latest_revision_in_family: bool = Field(default=False, description="accepted for compatibility")

    @field_validator(
        "task_definition", "task_run_request", "cloudwatch_logs_options", "configure_cloudwatch_logs", mode="before"
    )
    @classmethod
    def _unset_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return False if info.field_name == "configure_cloudwatch_logs" else {}
        return value

    @property
    def target_cluster(self) -> str:
        """The cluster the task runs in: ``cluster``, else the run request's, else ECS's ``default``."""
        return str(self.cluster or self.task_run_request.get("cluster") or "default")

    @property
    def region(self) -> str | None:
        """The region from the credentials block, if it names one (else the SDK's own configuration)."""
        credentials = self.aws_credentials or {}
        region = credentials.get("region_name") if isinstance(credentials, Mapping) else None
        return str(region) if region else None
