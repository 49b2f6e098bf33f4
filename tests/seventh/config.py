"""The seventh provider's typed job configuration: the common fields and one of its own."""

from __future__ import annotations

from pushpool.providers.base import JobConfig
from pydantic import Field


class SeventhJobConfig(JobConfig):
    machine: str = Field(default="small", description="the machine size the job runs on")
