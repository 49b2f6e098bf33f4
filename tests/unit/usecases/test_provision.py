"""provision_pool against FakePrefect: idempotent, repairs what drifted, removes a twin automation."""

from __future__ import annotations

import copy

import pytest
from pushpool.errors import ObjectNotFoundError
from pushpool.providers import base_job_template
from pushpool.usecases.deps import Deps
from pushpool.usecases.provision import automation_body, provision_pool

from tests.fake_prefect import FakePrefect

NAME = "pp-new"
AUTOMATION = f"pushpool-{NAME}"


def snapshot(fake: FakePrefect) -> tuple:
    return copy.deepcopy((fake.pools, fake.queues, fake.blocks, fake.automations))


def actions(result) -> list[tuple[str, str]]:
    return [(step.resource, step.action) for step in result.steps]


def test_provisioning_twice_changes_nothing_the_second_time(deps: Deps, fake: FakePrefect) -> None:
    """The first run creates pool, webhook block and automation pointing at submit; the second writes nothing."""
    first = provision_pool(deps, name=NAME, type_name="process:push")
    assert actions(first) == [("work pool", "created"), ("webhook", "created"), ("automation", "created")]
    assert fake.read_work_pool(NAME).base_job_template == base_job_template("process:push")
    block = fake.read_block_document_by_name("webhook", AUTOMATION)
    assert block.data["url"] == deps.settings.submit_url
    assert block.data["headers"]["Authorization"] == "Bearer t"
    (automation,) = fake.find_automations(AUTOMATION)
    assert automation["actions"][0]["block_document_id"] == block.id
    assert automation["trigger"]["match_related"]["prefect.resource.name"] == NAME

    before = snapshot(fake)
    second = provision_pool(deps, name=NAME, type_name="process:push")
    assert not second.changed
    assert actions(second) == [("work pool", "unchanged"), ("webhook", "unchanged"), ("automation", "unchanged")]
    assert snapshot(fake) == before


def test_a_twin_automation_is_removed(deps: Deps, fake: FakePrefect) -> None:
    """A retried create left two automations of the same name: the next run keeps one and deletes the other."""
    provision_pool(deps, name=NAME, type_name="process:push")
    (kept,) = fake.find_automations(AUTOMATION)
    block = fake.read_block_document_by_name("webhook", AUTOMATION)
    twin = fake.create_automation(automation_body(NAME, block.id))
    assert len(fake.find_automations(AUTOMATION)) == 2
    result = provision_pool(deps, name=NAME, type_name="process:push")
    assert ("automation", "updated") in actions(result)
    assert [a["id"] for a in fake.find_automations(AUTOMATION)] == [kept["id"]]
    assert twin not in fake.automations
    assert not provision_pool(deps, name=NAME, type_name="process:push").changed


def test_a_drifted_webhook_and_automation_are_repaired(deps: Deps, fake: FakePrefect) -> None:
    """A webhook block pointing elsewhere and a disabled automation are put back."""
    provision_pool(deps, name=NAME, type_name="process:push")
    block = fake.read_block_document_by_name("webhook", AUTOMATION)
    fake.update_block_document(block.id, {**block.data, "url": "http://elsewhere/submit"})
    (automation,) = fake.find_automations(AUTOMATION)
    fake.replace_automation(automation["id"], {**automation_body(NAME, block.id), "enabled": False})
    result = provision_pool(deps, name=NAME, type_name="process:push")
    assert actions(result) == [("work pool", "unchanged"), ("webhook", "updated"), ("automation", "updated")]
    assert fake.read_block_document(block.id).data["url"] == deps.settings.submit_url
    assert fake.find_automations(AUTOMATION)[0]["enabled"] is True


def test_a_default_changed_by_an_operator_is_kept(deps: Deps, fake: FakePrefect) -> None:
    """A variable default an operator changed on the pool survives a later provision."""
    provision_pool(deps, name=NAME, type_name="process:push")
    template = fake.read_work_pool(NAME).base_job_template
    template["variables"]["properties"]["max_run_time_seconds"]["default"] = 600
    fake.update_work_pool(NAME, {"base_job_template": template})
    assert not provision_pool(deps, name=NAME, type_name="process:push").changed
    props = fake.read_work_pool(NAME).base_job_template["variables"]["properties"]
    assert props["max_run_time_seconds"]["default"] == 600


def test_a_webhook_block_created_concurrently_is_used(deps: Deps, fake: FakePrefect) -> None:
    """When another provision creates the block between our look-up and our create (409), its block is used."""
    type_id = fake.read_block_type_id("webhook")
    other = fake.create_block_document(
        {"name": AUTOMATION, "data": {"url": "x"}, "block_type_id": type_id, "block_schema_id": "s"}
    )
    fake.fail_next("read_block_document_by_name", ObjectNotFoundError("not found (raced)", status_code=404))
    provision_pool(deps, name=NAME, type_name="process:push")
    assert len([b for b in fake.blocks.values() if b["name"] == AUTOMATION]) == 1
    (automation,) = fake.find_automations(AUTOMATION)
    assert automation["actions"][0]["block_document_id"] == other.id


ALLOWED = (
    "/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/jobs/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/etl"
)


def test_the_operators_identity_allowlist_is_a_literal_of_the_job_configuration_and_is_kept(
    deps: Deps, fake: FakePrefect
) -> None:
    """`--allowed-identity` stores the list in the pool's job_configuration (no variable: job variables cannot reach
    it); provisioning again without it keeps the list, with another list replaces it."""
    aci = "azure-container-instance:push"
    provision_pool(deps, name=NAME, type_name=aci, defaults={"allowed_identities": [ALLOWED]})
    template = fake.read_work_pool(NAME).base_job_template
    assert template["job_configuration"]["allowed_identities"] == [ALLOWED]
    assert "allowed_identities" not in template["variables"]["properties"]

    assert not provision_pool(deps, name=NAME, type_name=aci).changed
    assert fake.read_work_pool(NAME).base_job_template["job_configuration"]["allowed_identities"] == [ALLOWED]

    provision_pool(deps, name=NAME, type_name=aci, defaults={"allowed_identities": []})
    assert fake.read_work_pool(NAME).base_job_template["job_configuration"]["allowed_identities"] == []


def test_a_managed_pool_is_refused_on_a_server_without_labels(deps: Deps, fake: FakePrefect) -> None:
    """Issue 25: managed compute hours live in run labels (3.1+); on 3.0 the refusal names the server and the upgrade,
    and nothing is changed."""
    from pushpool.managed import MANAGED_POOL_TYPE
    from pushpool.prefect_api.dialect import UnsupportedServerError

    fake.server_version = "3.0.11"
    before = snapshot(fake)
    with pytest.raises(UnsupportedServerError, match=r"3\.0\.11: flow-run labels .* needs Prefect 3\.1\.0 or newer"):
        provision_pool(deps, name=NAME, type_name=MANAGED_POOL_TYPE)
    assert snapshot(fake) == before
