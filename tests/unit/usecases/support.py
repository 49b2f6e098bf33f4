"""Helpers shared by the use-case tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pushpool.prefect_api.models import FlowRun

from tests.fake_prefect import FakePrefect

POOL = "push"


def ready_run(
    fake: FakePrefect,
    *,
    job_variables: dict[str, Any] | None = None,
    work_queue_name: str | None = None,
    scheduled_at: dt.datetime | None = None,
) -> FlowRun:
    """A Scheduled run of a new deployment of the pool, read as submit receives it."""
    deployment = fake.add_deployment(POOL, job_variables=job_variables, work_queue_name=work_queue_name)
    return fake.read_flow_run(fake.add_run(deployment, scheduled_at=scheduled_at))
