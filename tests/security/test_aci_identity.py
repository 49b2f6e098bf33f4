"""The hostile deployment author against ACI identities (issue 22, item 1): job variables naming an identity the pool's
operator did not allow — pushpool's own functions identity, another pool's, one given through ``image_registry``, the
same ids in other letter cases or spellings — are refused with a reason naming the variable, and no container group is
created. The ARM endpoint (tests/arm_emulator.py) knows every identity used here, so Azure itself would have accepted
them: the refusal is pushpool's.

The real Prefect server, pushpool's submit, the real azure-mgmt-containerinstance client over TLS to the emulator.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_IDENTITIES, AZ_IDENTITY, AZ_REGISTRY, AZ_RG, AZ_RG_OTHER, AZ_SUB
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration
KEY = "pnu_aci_identity_key_never_shown"
# pushpool's own identity (infra/azure: <prefix>-functions, in the functions' resource group), and another pool's.
FUNCTIONS = f"{AZ_IDENTITIES}/pushpool-functions"
OTHER_POOL = (
    f"/subscriptions/{AZ_SUB}/resourceGroups/{AZ_RG_OTHER}/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/pushpool-other-groups"
)


@pytest.fixture
def aci_deps(prefect_api: str, tmp_path: Path, aci_options: dict, arm):
    arm.identities.update({FUNCTIONS, OTHER_POOL})  # Azure would give a group either of them
    arm.pullable.setdefault(AZ_REGISTRY, set()).update({FUNCTIONS, OTHER_POOL})
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps.backend_options["aci"] = aci_options
    yield deps
    deps.orchestrator.close()


_STOCK = object()


@pytest.fixture
def pool(prefect: PrefectHelper):
    """An ACI pool whose operator allows exactly ``allowed`` (by default the test identity, on a template whose list
    is the stock empty one; None: no such setting, as a pool created before the allowlist existed)."""
    created = []

    def make(allowed: object = _STOCK, template: dict | None = None) -> str:
        template = template or copy.deepcopy(base_job_template("azure-container-instance:push"))
        props = template["variables"]["properties"]
        props["subscription_id"]["default"] = AZ_SUB
        props["resource_group_name"]["default"] = AZ_RG
        configuration = template["job_configuration"]
        if allowed is None:
            configuration.pop("allowed_identities", None)
        elif allowed is not _STOCK:
            configuration["allowed_identities"] = allowed
        elif configuration.get("allowed_identities") == []:
            configuration["allowed_identities"] = [AZ_IDENTITY]
        name = prefect.unique("aci-identity")
        prefect.create_pool(name, "azure-container-instance:push", base_job_template=template)
        created.append(name)
        return name

    yield make
    for name in created:
        prefect.request("DELETE", f"/work_pools/{name}")


def _attempt(deps, prefect: PrefectHelper, pool: str, **variables):
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    run = deps.orchestrator.read_flow_run(run_id)
    outcome = submit_run(deps, run, deps.orchestrator.read_work_pool(pool), trigger="test")
    return run_id, outcome


def _groups_of(arm, run_id: str) -> int:
    return sum(1 for g in arm.groups.values() if (g.body.get("tags") or {}).get("pushpool-flow-run-id") == run_id)


def _refused(arm, prefect: PrefectHelper, run_id: str, outcome, *fragments: str) -> str:
    """The run crashed with a reason holding ``fragments``, and no container group exists for it."""
    assert outcome.outcome == "crashed", outcome
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED"
    for fragment in fragments:
        assert fragment in state["message"], state["message"]
    assert KEY not in state["message"] and "Traceback" not in state["message"]
    assert _groups_of(arm, run_id) == 0  # nothing was created
    return str(state["message"])


@pytest.mark.parametrize(
    ("variables", "fragments"),
    [
        ({"identities": [FUNCTIONS]}, ("identities: identity 'pushpool-functions'", "is not allowed")),
        ({"identities": [AZ_IDENTITY, FUNCTIONS]}, ("identities: identity 'pushpool-functions'",)),
        ({"identities": [OTHER_POOL]}, ("identities: identity 'pushpool-other-groups'", f"'{AZ_RG_OTHER.lower()}'")),
        (
            {"image_registry": {"registry_url": AZ_REGISTRY, "identity": FUNCTIONS}},
            ("image_registry.identity: identity 'pushpool-functions'",),
        ),
        (
            {"image_registry": {"registry_url": AZ_REGISTRY, "identity": OTHER_POOL}, "identities": [AZ_IDENTITY]},
            ("image_registry.identity: identity 'pushpool-other-groups'",),
        ),
        ({"identities": [FUNCTIONS.upper()]}, ("identities: identity 'pushpool-functions'",)),
        ({"identities": [FUNCTIONS.replace("resourceGroups", "resourcegroups")]}, ("identity 'pushpool-functions'",)),
    ],
    ids=[
        "functions",
        "allowed-and-functions",
        "other-pool",
        "registry-functions",
        "registry-other",
        "upper",
        "rg-case",
    ],
)
def test_an_identity_the_operator_did_not_allow_is_refused(
    aci_deps, prefect: PrefectHelper, pool, arm, variables: dict, fragments: tuple[str, ...]
) -> None:
    name = pool()
    calls = arm.count()
    run_id, outcome = _attempt(aci_deps, prefect, name, **variables)
    _refused(arm, prefect, run_id, outcome, *fragments, "nothing was created")
    assert arm.count() == calls  # refused before any call to Azure


@pytest.mark.parametrize(
    "spelling",
    [
        FUNCTIONS + "/",
        " " + AZ_IDENTITY,
        AZ_IDENTITY.replace("/pushpool-aci", "/../pushpool-functions"),
        AZ_IDENTITY.replace("pushpool-aci", "pushpool-\u0430ci"),  # a Cyrillic 'а'
        AZ_IDENTITY + "/../../userAssignedIdentities/pushpool-functions",
        "pushpool-functions",
    ],
    ids=["trailing-slash", "leading-space", "dot-dot", "look-alike", "path-walk", "bare-name"],
)
def test_an_identity_id_pushpool_cannot_compare_exactly_is_refused(
    aci_deps, prefect: PrefectHelper, pool, arm, spelling: str
) -> None:
    run_id, outcome = _attempt(aci_deps, prefect, pool(), identities=[spelling])
    _refused(arm, prefect, run_id, outcome, "identities: not a user-assigned identity's resource id")


def test_an_allowed_identity_in_other_letter_cases_is_the_same_identity(
    aci_deps, prefect: PrefectHelper, pool, arm
) -> None:
    """ARM ids are case-insensitive: the operator's list and the job's variable are compared lower-cased."""
    name = pool([AZ_IDENTITY.upper()])
    _, outcome = _attempt(aci_deps, prefect, name, identities=[AZ_IDENTITY.lower()])
    assert outcome.outcome == "submitted", outcome
    assert set(arm.group(outcome.job_id).body["identity"]["userAssignedIdentities"]) == {AZ_IDENTITY.lower()}


def test_without_an_allowlist_no_identity_is_given_and_runs_without_one_still_start(
    aci_deps, prefect: PrefectHelper, pool, arm
) -> None:
    """A pool made before the allowlist existed (or with an empty one) gives its jobs no identity at all."""
    for allowed in (None, []):
        name = pool(allowed)
        run_id, outcome = _attempt(aci_deps, prefect, name, identities=[AZ_IDENTITY])
        _refused(arm, prefect, run_id, outcome, "identities: identity 'pushpool-aci'", "allows 0 identities")
        run_id, outcome = _attempt(aci_deps, prefect, name)
        assert outcome.outcome == "submitted", outcome
        assert "identity" not in arm.group(outcome.job_id).body


def test_job_variables_cannot_widen_the_allowlist(aci_deps, prefect: PrefectHelper, pool, arm) -> None:
    """``allowed_identities`` is no variable: a job variable of that name fills nothing. A template that makes it a
    placeholder (an operator's mistake) is refused outright."""
    name = pool()
    run_id, outcome = _attempt(aci_deps, prefect, name, allowed_identities=[FUNCTIONS], identities=[FUNCTIONS])
    _refused(arm, prefect, run_id, outcome, "identities: identity 'pushpool-functions'")

    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    template["job_configuration"]["allowed_identities"] = "{{ allowed_identities }}"
    template["variables"]["properties"]["allowed_identities"] = {"type": "array", "default": []}
    run_id, outcome = _attempt(
        aci_deps, prefect, pool(template=template), allowed_identities=[FUNCTIONS], identities=[FUNCTIONS]
    )
    _refused(arm, prefect, run_id, outcome, "job_configuration.allowed_identities", "not a placeholder")


def test_an_identity_in_the_arm_template_is_held_to_the_same_list(aci_deps, prefect: PrefectHelper, pool, arm) -> None:
    """The group's body is checked as sent: an identity reaching it another way (the pool's arm_template, e.g. through
    a placeholder an operator wrote there) is refused too, named as the arm_template's."""
    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    resource = template["job_configuration"]["arm_template"]["resources"][0]
    resource["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {FUNCTIONS: {}}}
    name = pool(template=template)
    puts = arm.count(method="PUT")
    run_id, outcome = _attempt(aci_deps, prefect, name)
    assert arm.count(method="PUT") == puts
    message = _refused(arm, prefect, run_id, outcome, "arm_template identity: identity 'pushpool-functions'")
    assert AZ_SUB not in message  # the subscription is not repeated in the run's state


def test_the_operators_identities_are_given_as_asked(aci_deps, prefect: PrefectHelper, pool, arm) -> None:
    """The allowed identity, by `identities` and by `image_registry`, reaches the group (the refusals above are not a
    blanket ban)."""
    _, outcome = _attempt(
        aci_deps,
        prefect,
        pool(),
        identities=[AZ_IDENTITY],
        image_registry={"registry_url": AZ_REGISTRY, "identity": AZ_IDENTITY},
    )
    assert outcome.outcome == "submitted", outcome
    body = arm.group(outcome.job_id).body
    assert body["identity"]["userAssignedIdentities"] == {AZ_IDENTITY: {}}
    assert KEY not in json.dumps({**body, "properties": {**body["properties"], "containers": []}})


def test_the_operator_sets_the_allowlist_with_the_cli(prefect_api: str, tmp_path: Path, prefect: PrefectHelper) -> None:
    """`pushpool work-pool create --allowed-identity` (repeatable) stores the list; a malformed id or another pool type
    is refused and nothing is created."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    env = {**keep, "PREFECT_API_URL": prefect_api, "PUSHPOOL_HOME": str(tmp_path / "pp")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pushpool.entrypoints.cli", "work-pool", "create", *args]
        command += ["--submit-url", "http://127.0.0.1:9/submit"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    name = prefect.unique("aci-cli")
    aci = ("--type", "azure-container-instance:push")
    for refused, fragment in (
        (cli(name, *aci, "--allowed-identity", AZ_IDENTITY + "/"), "not a user-assigned identity's resource id"),
        (cli(name, "--type", "process:push", "--allowed-identity", AZ_IDENTITY), "azure-container-instance:push"),
    ):
        assert refused.returncode != 0 and fragment in refused.stderr, refused.stderr
        assert prefect.request("GET", f"/work_pools/{name}").status_code == 404  # nothing was created
    try:
        created = cli(name, *aci, "--allowed-identity", AZ_IDENTITY, "--allowed-identity", OTHER_POOL)
        assert created.returncode == 0, created.stderr
        configuration = prefect.json("GET", f"/work_pools/{name}")["base_job_template"]["job_configuration"]
        assert configuration["allowed_identities"] == [AZ_IDENTITY, OTHER_POOL]
    finally:
        prefect.request("DELETE", f"/work_pools/{name}")
