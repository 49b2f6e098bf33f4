"""What `--provision-infra` grants a pool's identities (issue 22, trust boundaries): a flow runs with its pool's
identity, so that identity must not be a way to become another pool's, or pushpool's, or an administrator.

* Cloud Run: the pool's service account (what its flows run as) holds no project-level role that lets it act as a
  service account (``actAs``, tokens, signing, keys, IAM policy) or change what another job runs (``run.jobs.update``,
  ``runWithOverrides``, services, IAM). In role mode it holds nothing; in key mode its project-level writes are exactly
  the job operations pushpool makes (create, run, delete, cancel: Cloud Run cannot narrow them to some jobs), and
  ``actAs`` is granted on the account itself, for itself. Today's earlier grants (run.developer and
  serviceAccountUser on the project) fail this test.
* ACI: the functions' identity may ``assign/action`` exactly each pool's own identity (a role assignment whose scope
  is the identity's resource id): no assignment at a resource group's scope covers an identity, so one put later in a
  pool's resource group is assignable by nobody.

Against the local Google APIs (tests/gcp_provision_emulator.py, the real discovery clients) and the ARM endpoint
(tests/arm_emulator.py, the SDK's pipeline over TLS); the grants are read back from the emulators as Google and Azure
would hold them.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.providers.aci.provisioner import ACR_PULL, ASSIGN_IDENTITY, AciProvisioner
from pushpool.providers.cloudrun.provisioner import CloudRunProvisioner, resource_id
from pushpool.usecases.provision_infra import deprovision, provision_infra

from tests.conftest import AZ_SUB
from tests.gcp_provision_emulator import ProvisionEmulator
from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration
PROJECT = "pushpool-test"
REGION = "us-central1"

# Predefined Google roles, by the permissions that matter here (Google's role reference). A predefined role not listed
# fails the test until it is judged.
PREDEFINED: dict[str, set[str]] = {
    "roles/owner": {"*"},
    "roles/editor": {"*"},
    "roles/iam.serviceAccountUser": {"iam.serviceAccounts.actAs", "iam.serviceAccounts.get"},
    "roles/iam.serviceAccountTokenCreator": {
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.signJwt",
        "iam.serviceAccounts.implicitDelegation",
        "iam.serviceAccounts.getOpenIdToken",
    },
    "roles/run.developer": {
        "run.jobs.create",
        "run.jobs.update",
        "run.jobs.run",
        "run.jobs.runWithOverrides",
        "run.jobs.delete",
        "run.services.create",
        "run.services.update",
        "run.executions.cancel",
    },
}
# Acting as a service account, or changing who may.
IMPERSONATION = {
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccounts.signBlob",
    "iam.serviceAccounts.signJwt",
    "iam.serviceAccounts.implicitDelegation",
    "iam.serviceAccounts.getOpenIdToken",
    "iam.serviceAccountKeys.create",
    "iam.serviceAccounts.setIamPolicy",
    "resourcemanager.projects.setIamPolicy",
    "iam.roles.update",
}
# The Cloud Run writes a pool's key needs (backend.py): what Google cannot narrow to the pool's own jobs.
JOB_WRITES = {"run.jobs.create", "run.jobs.run", "run.jobs.delete", "run.executions.cancel"}


@pytest.fixture(scope="module")
def google():
    found = ProvisionEmulator(PROJECT).start()
    yield found
    found.stop()


def _cloud_run(google: ProvisionEmulator, credentials: str) -> CloudRunProvisioner:
    return CloudRunProvisioner(
        project=PROJECT,
        region=REGION,
        credentials=credentials,
        credential=AnonymousCredentials(),
        endpoint=google.endpoint,
        environ={},
        interval=0.01,
        sleep=lambda _: None,
    )


def _permissions(google: ProvisionEmulator, role: str) -> set[str]:
    if role.startswith(f"projects/{PROJECT}/roles/"):
        return set(google.roles[role]["includedPermissions"])
    assert role in PREDEFINED, f"an unjudged predefined role is granted: {role}"
    return PREDEFINED[role]


def _project_permissions(google: ProvisionEmulator, email: str) -> set[str]:
    """What the account may do anywhere in the project: the permissions of every project binding naming it."""
    member = f"serviceAccount:{email}"
    found: set[str] = set()
    for binding in google.policies[PROJECT]["bindings"]:
        if member in binding["members"]:
            found |= _permissions(google, binding["role"])
    return found


def _acting_members(google: ProvisionEmulator, email: str) -> set[str]:
    """Who may act as the account through its own IAM policy."""
    policy = google.account_policies.get(email, {})
    return {
        m
        for b in policy.get("bindings", [])
        if _permissions(google, b["role"]) & (IMPERSONATION | {"*"})
        for m in b["members"]
    }


def test_a_cloud_run_pools_account_cannot_act_as_another_or_rewrite_other_jobs(
    deps, prefect: PrefectHelper, google: ProvisionEmulator
) -> None:
    pools = {prefect.unique("grant-a"): "key", prefect.unique("grant-b"): "key", prefect.unique("grant-c"): "role"}
    emails = {pool: f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com" for pool in pools}
    try:
        for pool, credentials in pools.items():
            provision_infra(deps, _cloud_run(google, credentials), pool=pool, type_name="cloud-run-v2:push")
        for pool, credentials in pools.items():
            email = emails[pool]
            held = _project_permissions(google, email)
            assert "*" not in held and not held & IMPERSONATION, f"{pool} may act as any account: {held}"
            writes = {p for p in held if p.startswith("run.") and not p.endswith((".get", ".list"))}
            if credentials == "role":  # pushpool's own identity makes the calls: the account needs nothing
                assert held == set() and _acting_members(google, email) == set()
            else:  # its key signs the job calls: the job operations, and actAs on itself only
                assert writes <= JOB_WRITES, f"{pool} may change what other jobs run: {writes - JOB_WRITES}"
                assert _acting_members(google, email) == {f"serviceAccount:{email}"}
        # No pool's account may act as another pool's.
        for pool, email in emails.items():
            others = {f"serviceAccount:{e}" for p, e in emails.items() if p != pool}
            assert not _acting_members(google, email) & others
    finally:
        for pool, credentials in pools.items():
            deprovision(deps, _cloud_run(google, credentials), pool=pool)
            prefect.request("DELETE", f"/work_pools/{pool}")
    # Deprovision took back every grant it made.
    for email in emails.values():
        assert email not in google.account_policies and _project_permissions(google, email) == set()


PRINCIPAL = "11111111-2222-3333-4444-555555555555"  # the functions' managed identity
# Azure's built-in roles the provisioner assigns, by their actions.
BUILTIN = {ACR_PULL: ["Microsoft.ContainerRegistry/registries/pull/read"]}


def _aci(aci_options: dict) -> AciProvisioner:
    return AciProvisioner(
        region="westeurope",
        subscription=AZ_SUB,
        principal_id=PRINCIPAL,
        credential=aci_options["credential"],
        base_url=aci_options["base_url"],
        connection_verify=aci_options["connection_verify"],
        interval=0.01,
    )


def _assign_scopes(arm: Any) -> list[str]:
    """The scopes at which the functions' identity holds ``assign/action`` (or a wildcard over it)."""
    scopes = []
    for key, value in arm.resources.items():
        if "/roleassignments/" not in key or value["properties"]["principalId"] != PRINCIPAL:
            continue
        definition = value["properties"]["roleDefinitionId"]
        builtin = definition.rsplit("/", 1)[-1]
        if builtin in BUILTIN:
            actions = BUILTIN[builtin]
        else:
            actions = arm.resources[definition.lower()]["properties"]["permissions"][0]["actions"]
        if any(a in ("*", "Microsoft.ManagedIdentity/*", ASSIGN_IDENTITY) or a.endswith("/*") for a in actions):
            scopes.append(key.split("/providers/microsoft.authorization/roleassignments/")[0])
    return scopes


def test_the_functions_may_assign_each_pools_own_identity_and_no_other(arm, aci_options: dict) -> None:
    pools = ["grant-aci-a", "grant-aci-b"]
    provisioner = _aci(aci_options)
    identity = (
        "/subscriptions/{}/resourcegroups/pushpool-{}/providers/microsoft.managedidentity/userassignedidentities/{}"
    )
    try:
        for pool in pools:
            for step in provisioner.plan(pool):
                step.run()
        scopes = _assign_scopes(arm)
        own = {pool: identity.format(AZ_SUB, pool, f"pushpool-{pool}-groups") for pool in pools}
        # Each pool's identity is assignable by exactly one grant: scoped to that identity, not to its group.
        for pool, path in own.items():
            covering = [s for s in scopes if path == s or path.startswith(s + "/")]
            assert covering == [path], f"{pool}'s identity is assignable through {covering}"
        # An identity put later in a pool's resource group is assignable by no grant of pushpool's.
        later = identity.format(AZ_SUB, pools[0], "someone-elses")
        assert not [s for s in scopes if later.startswith(s + "/")]
    finally:
        for pool in pools:
            for step in provisioner.deprovision_plan(pool, None):  # type: ignore[arg-type]
                step.run()
    assert _assign_scopes(arm) == []
