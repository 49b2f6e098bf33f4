"""Typed views of the Prefect API objects pushpool reads (unknown fields are ignored)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StateType(str, enum.Enum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


TERMINAL_STATES = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED})
# States in which a run holds (or is about to hold) a job: they count against concurrency limits.
IN_FLIGHT_STATES = frozenset({StateType.PENDING, StateType.RUNNING, StateType.CANCELLING})


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class State(_ApiModel):
    id: str | None = None
    type: StateType
    name: str | None = None
    message: str | None = None
    timestamp: dt.datetime | None = None
    state_details: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.type in TERMINAL_STATES


class FlowRun(_ApiModel):
    id: str
    name: str = ""
    flow_id: str | None = None
    deployment_id: str | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    work_queue_id: str | None = None
    state: State | None = None
    job_variables: dict[str, Any] | None = None
    infrastructure_pid: str | None = None
    expected_start_time: dt.datetime | None = None
    next_scheduled_start_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    created: dt.datetime | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    run_count: int = 0
    empirical_policy: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat_state(cls, data: Any) -> Any:
        """``get_scheduled_flow_runs`` lists runs without ``state`` but with ``state_type``/``state_name``/``state_id``:
        keep what they say (the state's type, name and id; no timestamp, message or details)."""
        if isinstance(data, dict) and data.get("state") is None and data.get("state_type"):
            state = {"type": data["state_type"], "name": data.get("state_name"), "id": data.get("state_id")}
            return {**data, "state": state}
        return data

    @property
    def retries_in_process(self) -> bool:
        """An AwaitingRetry run whose engine retries it itself: it must not get a second job."""
        return self.empirical_policy.get("retry_type") == "in_process"

    @property
    def state_type(self) -> StateType | None:
        return self.state.type if self.state else None

    @property
    def state_name(self) -> str:
        return (self.state.name or self.state.type.value.title()) if self.state else "?"


class WorkPool(_ApiModel):
    id: str
    name: str
    type: str
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    is_paused: bool = False
    concurrency_limit: int | None = None
    default_queue_id: str | None = None
    description: str | None = None
    created: dt.datetime | None = None
    status: str | None = None  # READY, NOT_READY or PAUSED (informational: shown by the UI, never used to schedule)


class WorkQueue(_ApiModel):
    id: str
    name: str
    is_paused: bool = False
    concurrency_limit: int | None = None
    priority: int = 1
    work_pool_id: str | None = None


class Deployment(_ApiModel):
    id: str
    name: str
    flow_id: str | None = None
    job_variables: dict[str, Any] | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    concurrency_limit: int | None = None
    updated: dt.datetime | None = None
    pull_steps: list[Any] | None = None
    paused: bool | None = None
    schedules: list[dict[str, Any]] | None = None  # each {"id", "active", "schedule": {interval | cron | rrule}}


class Flow(_ApiModel):
    id: str
    name: str


class SetStateStatus(str, enum.Enum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    ABORT = "ABORT"
    WAIT = "WAIT"


class OrchestrationResult(_ApiModel):
    status: SetStateStatus
    state: State | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status is SetStateStatus.ACCEPT

    @property
    def reason(self) -> str:
        return str(self.details.get("reason") or "")


class BlockDocument(_ApiModel):
    id: str
    name: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    block_type_id: str | None = None
    block_schema_id: str | None = None
