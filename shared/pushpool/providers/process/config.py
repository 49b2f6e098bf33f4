"""The typed job configuration of ``process:push`` pools (Prefect's ``process`` worker fields plus push's own)."""

from __future__ import annotations

from pydantic import Field

from pushpool.providers.base import JobConfig


class ProcessJobConfig(JobConfig):
    working_dir: str | None = Field(
        default=None, description="directory the flow-run process starts in (the job's own directory by default)"
    )
