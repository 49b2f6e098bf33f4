"""ECS task → job status: every status and stop code ECS documents is mapped, and each case means what it says."""

from __future__ import annotations

import botocore.session
import pytest
from pushpool.providers.base import JobState
from pushpool.providers.ecs.backend import INFRASTRUCTURE_STOPS, JUDGED_BY_EXIT_CODE, STATE_MAP, _to_status

# The task lifecycle in AWS's order (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle.html).
LIFECYCLE = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
]


def test_every_stop_code_in_the_ecs_model_is_handled() -> None:
    """botocore's ECS model (AWS's own) enumerates stopCode: a new code fails here until it is given a meaning."""
    model = botocore.session.get_session().get_service_model("ecs")
    documented = set(model.shape_for("Task").members["stopCode"].enum)
    assert documented == set(INFRASTRUCTURE_STOPS) | JUDGED_BY_EXIT_CODE


def test_the_lifecycle_is_alive_until_stopped_and_deleted_is_gone() -> None:
    states = [_to_status({"lastStatus": s}).state for s in LIFECYCLE[:-1]]
    assert states == [JobState.PENDING] * 3 + [JobState.RUNNING] * 4  # a stopping task may still run user code
    assert _to_status(stopped("EssentialContainerExited", containers=[prefect(0)])).state.is_final
    assert _to_status({"lastStatus": "DELETED"}).state is JobState.MISSING
    assert set(STATE_MAP) == {*LIFECYCLE, "DELETED"}


def stopped(stop_code: str | None = None, reason: str = "", containers: list | None = None) -> dict:
    task = {
        "lastStatus": "STOPPED",
        "stoppedReason": reason,
        "containers": containers if containers is not None else [],
    }
    if stop_code:
        task["stopCode"] = stop_code
    return task


def prefect(exit_code: int | None, reason: str = "") -> dict:
    container = {"name": "prefect", "lastStatus": "STOPPED", "reason": reason}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return container


@pytest.mark.parametrize("stop_code", sorted(INFRASTRUCTURE_STOPS))
def test_a_task_stopped_by_aws_failed_even_with_exit_code_zero(stop_code: str) -> None:
    status = _to_status(stopped(stop_code, "host retired", [prefect(0)]))
    assert status.state is JobState.FAILED and INFRASTRUCTURE_STOPS[stop_code] in status.reason


CASES = [
    ({"lastStatus": "SOMETHING_NEW"}, JobState.UNKNOWN, "unmapped"),
    (stopped("EssentialContainerExited", "Essential container in task exited", [prefect(0)]), JobState.SUCCEEDED, ""),
    (
        stopped("TaskFailedToStart", "ResourceInitializationError: unable to pull secrets"),
        JobState.FAILED,
        "failed to start: ResourceInitializationError",
    ),
    (
        stopped("TaskFailedToStart", "", [prefect(None, "CannotPullContainerError: pull image manifest")]),
        JobState.FAILED,
        "CannotPullContainerError",
    ),
    (
        stopped("EssentialContainerExited", "Essential container in task exited", [prefect(137, "OutOfMemoryError")]),
        JobState.FAILED,
        "137 (killed (SIGKILL), often out of memory): OutOfMemoryError",
    ),
    (stopped("EssentialContainerExited", "", [prefect(143)]), JobState.FAILED, "143 (terminated (SIGTERM))"),
    (stopped("EssentialContainerExited", "", [prefect(1)]), JobState.FAILED, "exit code 1"),
    (
        stopped("SpotInterruption", "Your Spot Task was interrupted.", [prefect(143)]),
        JobState.FAILED,
        "Spot capacity was reclaimed",
    ),
    (stopped("UserInitiated", "Stopped by pushpool", [prefect(143)]), JobState.STOPPED, "Stopped by pushpool"),
    (stopped("UserInitiated", "Stopped by pushpool", [prefect(None)]), JobState.STOPPED, ""),
    (stopped(None, "", [{"name": "sidecar", "exitCode": 0}, prefect(2)]), JobState.FAILED, "exit code 2"),
]


@pytest.mark.parametrize(("task", "state", "fragment"), CASES)
def test_to_status(task: dict, state: JobState, fragment: str) -> None:
    status = _to_status(task)
    assert status.state is state
    assert fragment in status.reason
