"""The typed job configuration of ``process:push`` pools (Prefect's ``process`` worker fields plus push's own)."""

from __future__ import annotations

from pydantic import Field

from pushpool.providers.base import JobConfig

# A process job reaches Running about 3–5 s after it is accepted (the interpreter and Prefect's imports): starting it
# this long before its scheduled time has the flow start on time.
DISPATCH_LEAD_SECONDS = 3.0


class ProcessJobConfig(JobConfig):
    working_dir: str | None = Field(
        default=None, description="directory the flow-run process starts in (the job's own directory by default)"
    )
    memory_limit_mb: int | None = Field(
        default=None,
        ge=16,
        description="memory (MiB, resident, all the job's processes together) above which the job is killed",
    )
