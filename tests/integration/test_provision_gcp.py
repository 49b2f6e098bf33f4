"""`--provision-infra` for Cloud Run pools against local Service Usage, Artifact Registry, IAM and Resource Manager
APIs (tests/gcp_provision_emulator.py: routing and request bodies checked against Google's discovery documents),
reached by the real google-api-python-client discovery clients over HTTP on 127.0.0.1 with anonymous credentials,
and the real Prefect server: created once, a second run changes nothing, deprovision removes exactly what was made,
the IAM policy's etag conflict is retried, a key is made once, and bad input is one line before any call."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.errors import ConfigurationError, InvalidRequestError
from pushpool.providers.cloudrun.provisioner import (
    ACT_AS_ROLE,
    JOB_PERMISSIONS,
    JOB_ROLE_ID,
    LEGACY_ROLES,
    SERVICES,
    CloudRunProvisioner,
    resource_id,
)
from pushpool.providers.provisioning import CREATE, DELETE, EXISTS, UPDATE, ProvisioningError
from pushpool.usecases.provision_infra import deprovision, provision_infra

from tests.gcp_emulator import service_account_info
from tests.gcp_provision_emulator import ProvisionEmulator
from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration
PROJECT = "pushpool-test"
REGION = "us-central1"
JOB_ROLE = f"projects/{PROJECT}/roles/{JOB_ROLE_ID}"


def _project_roles_of(google: ProvisionEmulator, email: str) -> set[str]:
    """Every project role whose bindings name the service account."""
    return {b["role"] for b in google.policies[PROJECT]["bindings"] if f"serviceAccount:{email}" in b["members"]}


@pytest.fixture(scope="module")
def google():
    found = ProvisionEmulator(PROJECT).start()
    yield found
    found.stop()


@pytest.fixture
def provisioner(google: ProvisionEmulator):
    def make(**overrides) -> CloudRunProvisioner:
        options = {
            "project": PROJECT,
            "region": REGION,
            "credential": AnonymousCredentials(),
            "endpoint": google.endpoint,
            "environ": {},
            "interval": 0.01,
            "sleep": lambda _: None,
            **overrides,
        }
        return CloudRunProvisioner(**options)

    return make


def _variables(prefect: PrefectHelper, pool: str) -> dict:
    return prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]


@pytest.mark.parametrize("pool_type", ["cloud-run-v2:push"])
def test_provision_creates_once_a_second_run_changes_nothing_deprovision_removes_what_it_made(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator, pool_type: str
) -> None:
    pool = prefect.unique("gcp-prov")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    repository = f"projects/{PROJECT}/locations/{REGION}/repositories/{resource_id(pool, 63)}"
    google.policies[PROJECT]["bindings"].append({"role": "roles/run.developer", "members": ["user:dev@example.com"]})
    try:
        before = len(google.requests)
        first = provision_infra(deps, provisioner(), pool=pool, type_name=pool_type)
        calls_first = len(google.requests) - before
        assert first.applied and {s.action for s in first.plan} == {CREATE}
        assert {(PROJECT, s) for s in SERVICES} <= google.enabled
        repo = google.repositories[repository]
        assert repo["format"] == "DOCKER" and repo["labels"]["pushpool-pool"] and pool in repo["description"]
        assert pool in google.accounts[email]["description"]
        # Role mode: pushpool's functions identity makes the calls; the account the flows run as holds nothing.
        assert _project_roles_of(google, email) == set() and not google.account_members(email, ACT_AS_ROLE)
        assert google.members(PROJECT, "roles/owner") == ["user:owner@example.com"]  # the rest of the policy kept
        assert not google.keys  # role mode: no key
        variables = _variables(prefect, pool)
        assert variables["project"]["default"] == PROJECT and variables["region"]["default"] == REGION
        assert variables["service_account_name"]["default"] == email
        assert "default" not in variables["credentials"]
        registry = f"{REGION}-docker.pkg.dev/{PROJECT}/{resource_id(pool, 63)}"
        assert any(registry in note for note in first.notes)
        assert not any(note.startswith("verify") for note in first.notes)

        mutations = google.mutations()
        before = len(google.requests)
        second = provision_infra(deps, provisioner(), pool=pool, type_name=pool_type)
        calls_second = len(google.requests) - before
        assert {s.action for s in second.plan} == {EXISTS} and google.mutations() == mutations  # nothing sent
        print(f"provision: {calls_first} Google calls the first time, {calls_second} the second (all reads)")

        removed = deprovision(deps, provisioner(), pool=pool)
        assert removed.applied and [s.action for s in removed.plan] == [DELETE] * 2
        assert repository not in google.repositories and email not in google.accounts
        assert google.members(PROJECT, "roles/run.developer") == ["user:dev@example.com"]  # not pushpool's: kept
        assert {(PROJECT, s) for s in SERVICES} <= google.enabled  # APIs are never disabled
        assert [s.action for s in provisioner().plan(pool)][2:] == [CREATE] * 2
        assert deprovision(deps, provisioner(), pool=pool).plan == []  # nothing marked is left
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_what_is_not_pushpools_is_refused_and_never_deleted(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator
) -> None:
    pool = prefect.unique("gcp-theirs")
    google.enabled |= {(PROJECT, s) for s in SERVICES}
    repository = f"projects/{PROJECT}/locations/{REGION}/repositories/{resource_id(pool, 63)}"
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    google.repositories[repository] = {"name": repository, "format": "DOCKER", "description": "the team's images"}
    google.accounts[email] = {"email": email, "description": "someone else's"}
    try:
        with pytest.raises(Exception, match="is not pushpool's"):
            provisioner().plan(pool)
        assert deprovision(deps, provisioner(), pool=pool).plan == []
        assert repository in google.repositories and email in google.accounts
    finally:
        google.repositories.pop(repository)
        google.accounts.pop(email)


def test_an_iam_policy_changed_meanwhile_is_read_again_and_retried(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator
) -> None:
    pool = prefect.unique("gcp-etag")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    try:
        google.policy_conflicts = 2
        sets = google.mutations().count("cloudresourcemanager.projects.setIamPolicy")
        provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run-v2:push")
        assert google.mutations().count("cloudresourcemanager.projects.setIamPolicy") - sets == 3
        assert _project_roles_of(google, email) == {JOB_ROLE}

        google.policy_conflicts = 10  # more than the provisioner's attempts: a clear failure, nothing half-written
        with pytest.raises(ProvisioningError, match="kept changing meanwhile"):
            deprovision(deps, provisioner(credentials="key", policy_attempts=3), pool=pool)
        assert _project_roles_of(google, email) == {JOB_ROLE}
    finally:
        google.policy_conflicts = 0
        deprovision(deps, provisioner(credentials="key"), pool=pool)
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_a_pool_bound_project_wide_by_an_earlier_version_loses_those_bindings(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator
) -> None:
    """Earlier versions bound the pool's account to run.developer and serviceAccountUser on the whole project:
    provisioning again removes exactly those two members (others in the roles stay), and says so in the plan."""
    pool = prefect.unique("gcp-legacy")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    try:
        provision_infra(deps, provisioner(), pool=pool, type_name="cloud-run-v2:push")
        google.policies[PROJECT]["bindings"] += [
            {"role": role, "members": [f"serviceAccount:{email}", "user:dev@example.com"]} for role in LEGACY_ROLES
        ]
        again = provision_infra(deps, provisioner(), pool=pool, type_name="cloud-run-v2:push")
        (step,) = [s for s in again.plan if s.action == UPDATE]
        assert (
            step.resource == "IAM bindings"
            and "remove roles/run.developer, roles/iam.serviceAccountUser" in step.detail
        )
        assert _project_roles_of(google, email) == set()
        assert all("user:dev@example.com" in google.members(PROJECT, role) for role in LEGACY_ROLES)
        assert {
            s.action for s in provision_infra(deps, provisioner(), pool=pool, type_name="cloud-run-v2:push").plan
        } == {EXISTS}
    finally:
        for binding in google.policies[PROJECT]["bindings"]:
            if binding["role"] in LEGACY_ROLES and "user:dev@example.com" in binding["members"]:
                binding["members"].remove("user:dev@example.com")
        google.policies[PROJECT]["bindings"] = [b for b in google.policies[PROJECT]["bindings"] if b["members"]]
        deprovision(deps, provisioner(), pool=pool)
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_a_new_service_account_not_yet_known_to_iam_is_waited_for(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator
) -> None:
    """IAM is eventually consistent: a service account just created may be refused as a member for a while (400)."""
    pool = prefect.unique("gcp-lag")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    google.iam_lag = 3
    try:
        provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run-v2:push")
        assert _project_roles_of(google, email) == {JOB_ROLE}
        assert google.account_members(email, ACT_AS_ROLE) == [f"serviceAccount:{email}"]
    finally:
        google.iam_lag = 0
        deprovision(deps, provisioner(credentials="key"), pool=pool)
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_credentials_key_makes_one_key_never_again_while_the_block_exists_and_never_shows_it(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator, caplog, capsys
) -> None:
    pool = prefect.unique("gcp-key")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    caplog.set_level(logging.DEBUG)
    try:
        first = provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run:push")
        assert (first.plan[-1].resource, first.plan[-1].action) == ("credentials block", CREATE)
        assert len(google.keys[email]) == 1
        # The key signs the pool's Cloud Run calls: the job operations in a custom role at the project, and actAs on
        # the account itself only (so its jobs run as it, and as no other account).
        assert _project_roles_of(google, email) == {JOB_ROLE}
        assert google.roles[JOB_ROLE]["includedPermissions"] == list(JOB_PERMISSIONS)
        assert google.account_members(email, ACT_AS_ROLE) == [f"serviceAccount:{email}"]
        block_id = _variables(prefect, pool)["credentials"]["default"]["$ref"]["block_document_id"]
        stored = prefect.json("GET", f"/block_documents/{block_id}", params={"include_secrets": "true"})["data"]
        assert stored["service_account_info"]["client_email"] == email and stored["project"] == PROJECT
        private_key = stored["service_account_info"]["private_key"]
        shown = prefect.json("GET", f"/block_documents/{block_id}")["data"]
        assert private_key not in json.dumps(shown)  # a secret field: Prefect obfuscates it

        second = provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run:push")
        assert second.plan[-1].action == EXISTS and len(google.keys[email]) == 1  # never a second key
        assert _variables(prefect, pool)["credentials"]["default"]["$ref"]["block_document_id"] == block_id

        # The key is in no output, log, result or plan — only in the block.
        out = capsys.readouterr()
        seen = out.out + out.err + caplog.text + json.dumps([first.as_dict(), second.as_dict()])
        body = private_key.splitlines()[1]
        assert body not in seen and "privateKeyData" not in seen

        removed = deprovision(deps, provisioner(credentials="key"), pool=pool)
        assert removed.plan[0].resource == "credentials block" and email not in google.accounts
        assert email not in google.keys and email not in google.account_policies
        assert _project_roles_of(google, email) == set()
        assert google.roles[JOB_ROLE]["deleted"] is True  # the last pool that used it
        assert deprovision(deps, provisioner(credentials="key"), pool=pool).plan == []

        # Provisioned again: the deleted role (whose id Google keeps) is brought back.
        third = provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run:push")
        assert ("custom role", CREATE) in [(s.resource, s.action) for s in third.plan]
        assert not google.roles[JOB_ROLE].get("deleted") and _project_roles_of(google, email) == {JOB_ROLE}
        deprovision(deps, provisioner(credentials="key"), pool=pool)
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_no_project_region_or_credentials_is_one_clear_line_before_any_call(
    provisioner, google: ProvisionEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(google.requests)
    with pytest.raises(ConfigurationError, match=r"no Google Cloud project: pass --project or set GOOGLE_CLOUD"):
        provisioner(project=None).check_access()
    with pytest.raises(ConfigurationError, match="pass --region or set CLOUDSDK_RUN_REGION"):
        provisioner(region=None).check_access()
    with pytest.raises(InvalidRequestError, match="not a Google Cloud project id"):
        provisioner(project="Not_A_Project").check_access()
    with pytest.raises(InvalidRequestError, match="--credentials access-key is not available"):
        provisioner(credentials="access-key")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(ConfigurationError, match="no Google credentials") as raised:
        provisioner(credential=None).check_access()
    assert "\n" not in str(raised.value)
    assert len(google.requests) == before


def test_project_and_region_come_from_the_flags_then_the_environment_then_the_credentials(
    provisioner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "GOOGLE_CLOUD_PROJECT": "env-project",
        "CLOUDSDK_CORE_PROJECT": "sdk-project",
        "CLOUDSDK_RUN_REGION": "europe-west1",
    }
    flagged = provisioner(environ=env)
    assert (flagged.project, flagged.region) == (PROJECT, REGION)
    from_env = provisioner(project=None, region=None, environ=env)
    assert (from_env.project, from_env.project_source) == ("env-project", "GOOGLE_CLOUD_PROJECT")
    assert (from_env.region, from_env.region_source) == ("europe-west1", "CLOUDSDK_RUN_REGION")
    assert provisioner(project=None, environ={"CLOUDSDK_CORE_PROJECT": "sdk-project"}).project == "sdk-project"

    key = tmp_path / "key.json"  # a key file's own project, found by Application Default Credentials
    key.write_text(json.dumps(service_account_info("key-project", "http://127.0.0.1:9/token")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    found = provisioner(project=None, credential=None)
    found._google_credential()
    assert (found.project, found.project_source) == ("key-project", "the credentials' project")


def test_the_cli_provisions_a_cloud_run_pool(
    prefect: PrefectHelper, google: ProvisionEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """`pushpool work-pool create <pool> --type cloud-run:push --provision-infra` through the CLI's own path; only
    where Google is (the local endpoint) and who calls it (anonymous) are set for the test."""
    from pushpool.entrypoints import cli

    defaults = CloudRunProvisioner.__init__.__kwdefaults__
    monkeypatch.setitem(defaults, "endpoint", google.endpoint)
    monkeypatch.setitem(defaults, "credential", AnonymousCredentials())
    monkeypatch.setitem(defaults, "interval", 0.01)
    monkeypatch.setenv("PREFECT_API_URL", prefect.api_url)
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "pp"))
    monkeypatch.setenv("CLOUDSDK_RUN_REGION", REGION)
    pool = prefect.unique("gcp-cli")
    create = ["work-pool", "create", pool, "--type", "cloud-run:push", "--provision-infra", "--yes"]
    try:
        assert cli.main([*create, "--project", PROJECT, "--submit-url", "http://127.0.0.1:9/submit"]) == 0
        out = capsys.readouterr().out
        assert "Infrastructure successfully provisioned!" in out
        assert f"{REGION}-docker.pkg.dev/{PROJECT}/{resource_id(pool, 63)}" in out
        assert _variables(prefect, pool)["project"]["default"] == PROJECT
        assert cli.main(["work-pool", "deprovision", pool, "--yes", "--project", PROJECT]) == 0
        assert "Removed." in capsys.readouterr().out
        assert cli.main(["work-pool", "create", "x", "--type", "ecs:push", "--provision-infra", "--project", "p"]) == 2
        assert "--project is for cloud-run-v2:push, cloud-run:push pools" in capsys.readouterr().err
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_a_key_pool_provisioned_again_in_role_mode_loses_its_job_role(
    deps, prefect: PrefectHelper, provisioner, google: ProvisionEmulator
) -> None:
    """In role mode pushpool's own identity makes the calls: the pool's account keeps no project role."""
    pool = prefect.unique("gcp-switch")
    email = f"{resource_id(pool, 30)}@{PROJECT}.iam.gserviceaccount.com"
    try:
        provision_infra(deps, provisioner(credentials="key"), pool=pool, type_name="cloud-run-v2:push")
        assert _project_roles_of(google, email) == {JOB_ROLE}
        again = provision_infra(deps, provisioner(), pool=pool, type_name="cloud-run-v2:push")
        assert [(s.resource, s.action) for s in again.plan if s.action != EXISTS] == [("IAM bindings", UPDATE)]
        assert _project_roles_of(google, email) == set()
    finally:
        deprovision(deps, provisioner(credentials="key"), pool=pool)
        prefect.request("DELETE", f"/work_pools/{pool}")
