"""ECS task → job status: the complete, tested mapping (lastStatus, stopCode, container exit codes)."""

from __future__ import annotations

import pytest
from pushpool.providers.base import JobState
from pushpool.providers.ecs.backend import STATE_MAP, _to_status

DOCUMENTED = {
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
    "DELETED",
}


def test_every_documented_last_status_is_mapped() -> None:
    assert set(STATE_MAP) == DOCUMENTED


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


CASES = [
    ({"lastStatus": "PROVISIONING"}, JobState.PENDING, ""),
    ({"lastStatus": "PENDING"}, JobState.PENDING, ""),
    ({"lastStatus": "RUNNING"}, JobState.RUNNING, ""),
    ({"lastStatus": "DEPROVISIONING"}, JobState.RUNNING, ""),
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
