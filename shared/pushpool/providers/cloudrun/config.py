"""The typed job configuration of ``cloud-run-v2:push`` and ``cloud-run:push`` pools: the fields of Prefect's Cloud Run
workers' templates, plus push's own.

Where a job goes (project, region) is read from here, both by submit and by the monitor's look-up of a job whose
``infrastructure_pid`` was never written — so a deployment that overrides ``region`` is searched in its own region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushpool.providers.base import JobConfig

# Cloud Run's longest task timeout (7 days).
MAX_TASK_TIMEOUT_SECONDS = 604800


class SecretKeySelector(BaseModel):
    """A Secret Manager secret version, as Prefect's ``SecretKeySelector``: ``{"secret": ..., "version": ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str = Field(min_length=1, description="the secret's name or projects/<p>/secrets/<name>")
    version: str = Field(default="latest", min_length=1, description="a version number or 'latest'")

    @field_validator("version", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "latest" if value in (None, "") else str(value)


class CloudRunJobConfig(JobConfig):
    credential_fields = ("credentials",)  # the pool's only: job variables may not change it

    credentials: dict[str, Any] | None = Field(
        default=None, repr=False, description="gcp-credentials block data: service_account_info/file, project"
    )
    project: str | None = Field(default=None, description="the Google Cloud project (else the credentials')")
    region: str = Field(default="us-central1", min_length=1, description="the Cloud Run region")
    job_body: dict[str, Any] = Field(default_factory=dict, description="the Cloud Run v2 Job to create")
    keep_job: bool = Field(default=False, description="keep the Cloud Run job after its execution ended")
    timeout: int | None = Field(
        default=None, gt=0, le=MAX_TASK_TIMEOUT_SECONDS, description="task timeout (default: max_run_time_seconds)"
    )
    env_from_secrets: dict[str, SecretKeySelector] = Field(
        default_factory=dict, description="environment variables from Secret Manager"
    )
    prefect_api_key_secret: SecretKeySelector | None = Field(default=None, description="the Prefect key's secret")
    prefect_api_auth_string_secret: SecretKeySelector | None = Field(
        default=None, description="the Prefect auth string's secret"
    )
    cloudsql_instances: list[str] = Field(default_factory=list, description="Cloud SQL connection names")

    @field_validator("job_body", "env_from_secrets", "cloudsql_instances", mode="before")
    @classmethod
    def _unset_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return [] if info.field_name == "cloudsql_instances" else {}
        return value

    @field_validator("keep_job", mode="before")
    @classmethod
    def _unset_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("region", mode="before")
    @classmethod
    def _default_region(cls, value: Any) -> Any:
        return "us-central1" if value in (None, "") else value

    @field_validator("project", "timeout", mode="before")
    @classmethod
    def _unset_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def task_timeout_seconds(self) -> int:
        """Cloud Run's task timeout: ``timeout`` when set, else the run's maximum run time (at most 7 days)."""
        return min(self.timeout or self.max_run_time_seconds, MAX_TASK_TIMEOUT_SECONDS)

    @property
    def credentials_project(self) -> str | None:
        block = self.credentials if isinstance(self.credentials, Mapping) else {}
        info = block.get("service_account_info")
        found = block.get("project") or (info.get("project_id") if isinstance(info, Mapping) else None)
        return str(found) if found else None
