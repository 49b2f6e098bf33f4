"""Refusals when a pool is created or updated through pushpool, not at run time (issue 24): a template whose runs submit
would refuse — Coiled options pushpool does not support, a credentials block of another project than the pool's, an
ACI identity the pool does not allow — is refused by ``provision_pool``
with the reason, and nothing is written: no pool (or the existing pool's template unchanged), no Webhook block, no
automation. A pool the check passes is created as before; a pool that leaves a value unset for deployments to give
(ACI's resource group) is not refused.

A real Prefect server; each provider's own ``check_job`` (the functions its submit calls) judges the job, with no call
to the cloud.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pushpool.errors import InvalidRequestError
from pushpool.providers import base_job_template
from pushpool.usecases.provision import provision_pool

from tests.gcp_emulator import service_account_info
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

SUB = "00000000-0000-0000-0000-0000000000aa"
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other"


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path):
    found = make_deps(prefect_api, tmp_path)
    yield found
    found.orchestrator.close()


def _nothing_written(prefect: PrefectHelper, name: str) -> None:
    assert prefect.request("GET", f"/work_pools/{name}").status_code == 404
    _no_block_nor_automation(prefect, name)


def _no_block_nor_automation(prefect: PrefectHelper, name: str) -> None:
    block = prefect.request("GET", f"/block_types/slug/webhook/block_documents/name/pushpool-{name}")
    assert block.status_code == 404
    automations = prefect.json("POST", "/automations/filter", json={})
    assert [a["name"] for a in automations if a["name"] == f"pushpool-{name}"] == []


@pytest.mark.parametrize(
    ("type_name", "defaults", "reason"),
    [
        ("coiled:push", {"additional_coiled_options": {"bogus_option": 1}}, "bogus_option"),
        ("coiled:push", {"vm_types": ["m6i.large"], "cpu": 2}, "either vm_types or cpu/memory"),
        (
            "azure-container-instance:push",
            {"resource_group_name": "rg", "subscription_id": SUB, "identities": [IDENTITY]},
            "identit",
        ),
    ],
    ids=["coiled-option", "coiled-vm-types-and-cpu", "aci-identity"],
)
def test_a_refused_template_creates_nothing(
    deps, prefect: PrefectHelper, type_name: str, defaults: dict, reason: str
) -> None:
    name = prefect.unique("refused")
    with pytest.raises(InvalidRequestError, match="its runs would be refused") as caught:
        provision_pool(deps, name=name, type_name=type_name, defaults=defaults)
    assert reason in str(caught.value)
    _nothing_written(prefect, name)
    with pytest.raises(InvalidRequestError):  # a dry run says the same
        provision_pool(deps, name=name, type_name=type_name, defaults=defaults, dry_run=True)


def test_a_credentials_block_of_another_project_is_refused_when_the_pool_is_updated(
    deps, prefect: PrefectHelper
) -> None:
    """The operator set the pool's defaults in Prefect (a block of project-a, jobs to project-b): running `pushpool
    work-pool create` again refuses, naming both projects, and changes nothing."""
    name = prefect.unique("cr-project")
    template = base_job_template("cloud-run-v2:push")
    template["variables"]["properties"]["credentials"]["default"] = {
        "service_account_info": service_account_info("project-aaaa", "http://127.0.0.1:9/token"),
        "project": "project-aaaa",
    }
    template["variables"]["properties"]["project"]["default"] = "project-bbbb"
    template["job_configuration"]["job_body"]["client"] = "an-old-version"  # so that provision would update it
    prefect.create_pool(name, "cloud-run-v2:push", base_job_template=template)
    before = prefect.json("GET", f"/work_pools/{name}")["base_job_template"]

    with pytest.raises(InvalidRequestError, match=r"project-aaaa.*project-bbbb"):
        provision_pool(deps, name=name, type_name="cloud-run-v2:push")
    assert prefect.json("GET", f"/work_pools/{name}")["base_job_template"] == before
    _no_block_nor_automation(prefect, name)

    fixed = copy.deepcopy(before)
    fixed["variables"]["properties"]["project"]["default"] = "project-aaaa"
    prefect.json("PATCH", f"/work_pools/{name}", json={"base_job_template": fixed})
    assert provision_pool(deps, name=name, type_name="cloud-run-v2:push").changed


def test_a_pool_that_leaves_a_value_to_its_deployments_is_created(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path
) -> None:
    """ACI's resource group and subscription may come from each deployment, and a Cloud Run pool's Prefect key secret
    is set after the pool (``--provision-infra``; the CLI's key is not the serve's): neither is a refusal."""
    deps = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_the_cli_s_own_key_000000")
    try:
        for type_name in ("azure-container-instance:push", "cloud-run-v2:push"):
            name = prefect.unique("open")
            result = provision_pool(deps, name=name, type_name=type_name)
            assert [s.action for s in result.steps] == ["created", "created", "created"]
            assert prefect.json("GET", f"/work_pools/{name}")["type"] == type_name
    finally:
        deps.orchestrator.close()
