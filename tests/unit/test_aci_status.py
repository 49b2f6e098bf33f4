"""The ACI backend's state mapping, group names and container-group bodies, without a server.

The 2023-05-01 API description (the one azure-mgmt-containerinstance 10.1.0 is generated from) declares the
provisioning, group and container states as free strings; the values below are the ones Azure documents
(``ContainerGroupProvisioningState`` of later API versions; the container and group states of the instance view).
A value outside them is UNKNOWN with the value named — never a guess.
"""

from __future__ import annotations

import uuid

import pytest
from azure.mgmt.containerinstance.models import ContainerGroup
from hypothesis import given
from hypothesis import strategies as st
from pushpool.errors import BackendError
from pushpool.providers.aci.backend import (
    CONTAINER_STATES,
    GROUP_STATES,
    PROVISIONING_STATES,
    AciBackend,
    group_body,
    group_name,
    parse_handle,
    to_status,
)
from pushpool.providers.aci.config import AciJobConfig
from pushpool.providers.base import JobSpec, JobState

from tests.arm_emulator import _GROUP_NAME as AZURE_GROUP_NAME_RULE
from tests.arm_emulator import check_body

DOCUMENTED_PROVISIONING = {
    "NotSpecified", "Accepted", "Pending", "Updating", "Creating", "Repairing", "Failed", "Canceled", "Succeeded",
    "Deleting", "NotAccessible", "PreProvisioned", "Unhealthy",
}  # fmt: skip
DOCUMENTED_GROUP = {"Pending", "Running", "Succeeded", "Failed", "Stopped", "Repairing"}
DOCUMENTED_CONTAINER = {"Waiting", "Running", "Terminated"}
SUB = "00000000-0000-0000-0000-000000000001"


def _group(provisioning="Succeeded", group_state=None, container=None, events=()) -> ContainerGroup:
    props: dict = {"osType": "Linux", "provisioningState": provisioning}
    containers = [
        {"name": "prefect", "properties": {"image": "i", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}}}
    ]
    if container is not None:
        containers[0]["properties"]["instanceView"] = {"currentState": container, "events": []}
    props["containers"] = containers
    props["instanceView"] = {"state": group_state, "events": list(events)}
    return ContainerGroup.deserialize({"id": "/x", "location": "l", "properties": props})


def test_every_documented_state_is_mapped() -> None:
    assert set(PROVISIONING_STATES) == DOCUMENTED_PROVISIONING
    assert set(GROUP_STATES) == DOCUMENTED_GROUP
    assert set(CONTAINER_STATES) == DOCUMENTED_CONTAINER


@pytest.mark.parametrize("provisioning", sorted(DOCUMENTED_PROVISIONING))
def test_each_provisioning_state_has_an_outcome(provisioning: str) -> None:
    status = to_status(_group(provisioning, "Running", {"state": "Running"}))
    assert status.state is not JobState.UNKNOWN or provisioning == "NotAccessible"


@pytest.mark.parametrize(
    ("group", "expected", "fragment"),
    [
        (_group("Creating"), JobState.PENDING, ""),
        (
            _group("Succeeded", "Pending", {"state": "Waiting", "detailStatus": "ContainerCreating"}),
            JobState.PENDING,
            "",
        ),
        (_group("Succeeded", "Running", {"state": "Running"}), JobState.RUNNING, ""),
        (_group("Succeeded", "Succeeded", {"state": "Terminated", "exitCode": 0}), JobState.SUCCEEDED, "0"),
        (
            _group("Succeeded", "Failed", {"state": "Terminated", "exitCode": 3, "detailStatus": "Error"}),
            JobState.FAILED,
            "exit code 3 (Error)",
        ),
        (_group("Succeeded", "Failed", {"state": "Terminated", "exitCode": 137}), JobState.FAILED, "out of memory"),
        (_group("Succeeded", "Failed", {"state": "Terminated"}), JobState.FAILED, "without an exit code"),
        (_group("Succeeded", "Stopped"), JobState.STOPPED, "stopped"),
        (
            _group("Succeeded", "Pending", {"state": "Waiting", "detailStatus": "ErrImagePull"}),
            JobState.FAILED,
            "ErrImagePull",
        ),
        (
            _group("Failed", events=[{"type": "Warning", "message": 'Failed to pull image "x": manifest unknown'}]),
            JobState.FAILED,
            "manifest unknown",
        ),
        (_group("Deleting"), JobState.MISSING, "deleted"),
        (_group("Exploded"), JobState.UNKNOWN, "'Exploded'"),
        (_group("Succeeded", "Running", {"state": "Hibernating"}), JobState.UNKNOWN, "'Hibernating'"),
    ],
)
def test_outcomes(group: ContainerGroup, expected: JobState, fragment: str) -> None:
    status = to_status(group)
    assert status.state is expected and fragment in status.reason, status


def _spec(name: str = "my-flow-run", **config) -> JobSpec:
    config = AciJobConfig(resource_group_name="rg", subscription_id=SUB, **config)
    return JobSpec(
        str(uuid.uuid4()), str(uuid.uuid4()), "pool", name, ("prefect", "flow-run", "execute"), {}, {}, config
    )


@given(st.text(max_size=300))
def test_every_run_name_gives_a_group_name_azure_accepts(name: str) -> None:
    group = group_name(_spec(name))
    assert AZURE_GROUP_NAME_RULE.match(group) and 1 <= len(group) <= 63


def test_one_name_per_attempt() -> None:
    spec = _spec("Crimson Otter")
    assert group_name(spec) == group_name(spec) and group_name(spec).startswith("crimson-otter-")
    other = JobSpec(
        spec.run_id,
        spec.attempt + "x",
        *[getattr(spec, f) for f in ("pool_name", "name", "command", "env", "labels", "config")],
    )
    assert group_name(other) != group_name(spec)


def test_a_handle_names_its_subscription_resource_group_and_group() -> None:
    sub, rg, name = parse_handle(
        f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.ContainerInstance/containerGroups/g-1"
    )
    assert (sub, rg, name) == (SUB, "rg-1", "g-1")


def test_without_an_arm_template_the_default_group_is_valid() -> None:
    spec = _spec(image="img:1")
    body = group_body(spec, "westeurope")
    assert check_body(body) == []
    assert AciBackend().container_group(spec, "westeurope").containers[0].image == "img:1"


def test_a_registry_with_neither_identity_nor_password_is_refused() -> None:
    with pytest.raises(BackendError, match="image_registry needs"):
        group_body(_spec(image_registry={"registry_url": "r.azurecr.io"}), "westeurope")
