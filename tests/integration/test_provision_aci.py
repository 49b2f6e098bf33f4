"""`--provision-infra` for ACI against the local ARM endpoint over TLS (the SDK's pipeline: bearer token, retries, LROs)
and the real Prefect server: least privilege, idempotence, deprovision, and a run on the provisioned pool."""

from __future__ import annotations

import pytest
from pushpool.errors import ConfigurationError, InvalidRequestError
from pushpool.providers.aci.provisioner import ASSIGN_IDENTITY, ASSIGNER_ACTIONS, SUBMITTER_ACTIONS, AciProvisioner
from pushpool.providers.provisioning import CREATE, EXISTS, UPDATE
from pushpool.usecases.provision_infra import deprovision, provision_infra
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_SUB
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration
PRINCIPAL = "11111111-2222-3333-4444-555555555555"  # the functions' managed identity


@pytest.fixture
def provisioner(aci_options: dict):
    def make(**overrides) -> AciProvisioner:
        options = {
            "region": "westeurope",
            "subscription": AZ_SUB,
            "principal_id": PRINCIPAL,
            "credential": aci_options["credential"],
            "base_url": aci_options["base_url"],
            "connection_verify": aci_options["connection_verify"],
            "interval": 0.01,
            **overrides,
        }
        return AciProvisioner(**options)

    return make


@pytest.fixture
def aci_deps(prefect_api: str, tmp_path, aci_options: dict):
    deps = make_deps(prefect_api, tmp_path)
    deps.backend_options["aci"] = aci_options
    yield deps
    deps.orchestrator.close()


def test_provision_least_privilege_idempotent_and_reversible(
    aci_deps, prefect: PrefectHelper, provisioner, arm
) -> None:
    pool = prefect.unique("aci-prov")
    try:
        first = provision_infra(aci_deps, provisioner(), pool=pool, type_name="azure-container-instance:push")
        assert first.applied and {s.action for s in first.plan} == {CREATE}
        rg = f"pushpool-{pool}"
        scope = f"/subscriptions/{AZ_SUB}/resourcegroups/{rg}"
        roles = {v["properties"]["roleName"]: v for k, v in arm.resources.items() if "/roledefinitions/" in k}
        submitter, assigner = roles[f"pushpool-{pool}-submitter"], roles[f"pushpool-{pool}-assigner"]
        assert submitter["properties"]["assignableScopes"] == [scope]  # not the subscription
        assert assigner["properties"]["assignableScopes"] == [scope]
        assert submitter["properties"]["permissions"][0]["actions"] == list(SUBMITTER_ACTIONS)
        assert assigner["properties"]["permissions"][0]["actions"] == [ASSIGN_IDENTITY] == list(ASSIGNER_ACTIONS)
        assert ASSIGN_IDENTITY not in SUBMITTER_ACTIONS  # never at the resource group's scope
        assert not any("*" in action for action in (*SUBMITTER_ACTIONS, *ASSIGNER_ACTIONS))
        assignments = {k: v for k, v in arm.resources.items() if "/roleassignments/" in k}
        assert len(assignments) == 3 and all(k.startswith(scope.lower() + "/") for k in assignments)
        functions = {
            v["properties"]["roleDefinitionId"].lower(): k
            for k, v in assignments.items()
            if v["properties"]["principalId"] == PRINCIPAL
        }
        identity_id = f"{scope}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pushpool-{pool}-groups"
        assert functions[submitter["id"].lower()].startswith(f"{scope.lower()}/providers/microsoft.authorization/")
        assert functions[assigner["id"].lower()].startswith(f"{identity_id.lower()}/providers/microsoft.authorization/")
        assert len(functions) == 2

        variables = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
        assert variables["subscription_id"]["default"] == AZ_SUB
        assert variables["resource_group_name"]["default"] == rg
        identity = variables["identities"]["default"][0]
        assert identity.endswith(f"/userAssignedIdentities/pushpool-{pool}-groups")
        # The pool's own identity is the one its jobs may have: a literal of the job configuration, not a variable.
        configuration = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["job_configuration"]
        assert configuration["allowed_identities"] == [identity] and "allowed_identities" not in variables
        registry = variables["image_registry"]["default"]
        assert registry["identity"] == identity and registry["registry_url"].endswith(".azurecr.io")
        assert any(registry["registry_url"] in note for note in first.notes)

        puts = len(arm.puts)
        second = provision_infra(aci_deps, provisioner(), pool=pool, type_name="azure-container-instance:push")
        assert {s.action for s in second.plan} == {EXISTS} and len(arm.puts) == puts  # nothing changed

        # The operator allows one more identity (--allowed-identity): it joins the pool's own.
        extra = f"/subscriptions/{AZ_SUB}/resourceGroups/shared/providers/Microsoft.ManagedIdentity/"
        extra += "userAssignedIdentities/etl"
        provision_infra(
            aci_deps,
            provisioner(),
            pool=pool,
            type_name="azure-container-instance:push",
            settings={"allowed_identities": [extra]},
        )
        configuration = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["job_configuration"]
        assert configuration["allowed_identities"] == [identity, extra]

        # A run on the provisioned pool: its group pulls from the registry with the identity granted AcrPull.
        dep = prefect.create_deployment(pool, job_variables={"image": f"{registry['registry_url']}/flows:1"})
        run_id = prefect.create_run(dep)
        run = aci_deps.orchestrator.read_flow_run(run_id)
        outcome = submit_run(aci_deps, run, aci_deps.orchestrator.read_work_pool(pool), trigger="test")
        assert outcome.outcome == "submitted", outcome
        body = arm.group(outcome.job_id).body
        assert body["properties"]["imageRegistryCredentials"] == [
            {"server": registry["registry_url"], "identity": identity}
        ]

        removed = deprovision(aci_deps, provisioner(), pool=pool)
        assert removed.applied and removed.plan[-1].resource == "resource group"
        assert not any(rg.lower() in k for k in arm.resources)
        assert [s.action for s in provisioner().plan(pool)] == [CREATE] * 8  # all gone
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_without_a_subscription_or_location_one_clear_line_before_any_call(provisioner, arm, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    monkeypatch.delenv("AZURE_LOCATION", raising=False)
    monkeypatch.delenv("AZURE_DEFAULTS_LOCATION", raising=False)
    before = len(arm.requests)
    with pytest.raises(ConfigurationError, match="AZURE_SUBSCRIPTION_ID"):
        provisioner(subscription=None).check_access()
    with pytest.raises(ConfigurationError, match="AZURE_LOCATION"):
        provisioner(region=None).check_access()
    with pytest.raises(InvalidRequestError, match="client-secret"):
        provisioner(credentials="client-secret")
    assert len(arm.requests) == before


def test_a_resource_group_that_is_not_pushpools_is_refused(provisioner, arm) -> None:
    arm.add_resource_group(AZ_SUB, "pushpool-theirs", "westeurope")
    from pushpool.errors import BackendError

    with pytest.raises(BackendError, match="is not pushpool's"):
        provisioner().plan("theirs")


def test_a_pool_provisioned_with_assign_at_the_group_scope_is_narrowed(
    aci_deps, prefect: PrefectHelper, provisioner, arm
) -> None:
    """A pool made by an earlier version: its submitter role held ``assign/action`` at the resource group's scope.
    Provisioning again writes the role without it and assigns ``assign/action`` on the identity alone."""
    pool = prefect.unique("aci-old")
    try:
        provision_infra(aci_deps, provisioner(), pool=pool, type_name="azure-container-instance:push")
        key, role = next(
            (k, v)
            for k, v in arm.resources.items()
            if "/roledefinitions/" in k and v["properties"]["roleName"] == f"pushpool-{pool}-submitter"
        )
        role["properties"]["permissions"][0]["actions"].append(ASSIGN_IDENTITY)  # as the earlier version made it
        again = provision_infra(aci_deps, provisioner(), pool=pool, type_name="azure-container-instance:push")
        assert [s.name for s in again.plan if s.action == UPDATE] == [f"pushpool-{pool}-submitter"]
        assert ASSIGN_IDENTITY not in arm.resources[key]["properties"]["permissions"][0]["actions"]
        assert {
            s.action
            for s in provision_infra(aci_deps, provisioner(), pool=pool, type_name="azure-container-instance:push").plan
        } == {EXISTS}
    finally:
        deprovision(aci_deps, provisioner(), pool=pool)
        prefect.request("DELETE", f"/work_pools/{pool}")
