"""ACI identities and secret environment values, without Azure: the operator's allowlist decides every identity a
group's body would name (compared as ARM compares ids: case-insensitively, and only well-formed ones), and values
that look secret become ``secureValue``s. The end-to-end refusals (nothing created) are in
tests/security/test_aci_identity.py."""

from __future__ import annotations

import pytest
from pushpool.errors import BackendError
from pushpool.providers.aci.backend import check_identities, group_body
from pushpool.providers.aci.config import AciJobConfig, identity_key
from pushpool.providers.base import JobSpec
from pydantic import ValidationError

SUB = "00000000-0000-0000-0000-0000000000a1"
IDS = f"/subscriptions/{SUB}/resourceGroups/rg-pool/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
POOL, FUNCTIONS = f"{IDS}/pool-groups", f"{IDS}/pushpool-functions"


def _spec(*, env: dict | None = None, secret_env: dict | None = None, **config) -> JobSpec:
    fields = {"resource_group_name": "rg-pool", "subscription_id": SUB, "allowed_identities": [POOL], **config}
    return JobSpec(
        run_id="r",
        attempt="a",
        pool_name="p",
        name="run",
        command=("prefect", "flow-run", "execute"),
        env=env or {},
        labels={},
        config=AciJobConfig(**fields),
        secret_env=secret_env or {},
    )


def test_only_allowed_identities_pass_whatever_their_letter_case() -> None:
    check_identities(_spec(identities=[POOL.upper()], image_registry={"registry_url": "r", "identity": POOL.lower()}))
    with pytest.raises(BackendError, match=r"^identities: identity 'pushpool-functions' \(resource group 'rg-pool'\)"):
        check_identities(_spec(identities=[POOL, FUNCTIONS]))
    with pytest.raises(BackendError, match=r"^image_registry.identity: identity 'pushpool-functions'"):
        check_identities(_spec(image_registry={"registry_url": "r", "identity": FUNCTIONS}))
    with pytest.raises(BackendError, match="allows 0 identities"):
        check_identities(_spec(identities=[POOL], allowed_identities=[]))


def test_an_identity_the_arm_template_names_is_held_to_the_list() -> None:
    resource = {
        "type": "Microsoft.ContainerInstance/containerGroups",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {FUNCTIONS: {}}},
        "properties": {"containers": [], "encryptionProperties": {"identity": FUNCTIONS}},
    }
    with pytest.raises(BackendError, match=r"^arm_template identity: identity 'pushpool-functions'"):
        group_body(_spec(arm_template={"resources": [resource]}), "westeurope")
    resource.pop("identity")
    with pytest.raises(BackendError, match=r"^arm_template encryptionProperties.identity: identity 'pushpool-func"):
        group_body(_spec(arm_template={"resources": [resource]}), "westeurope")


@pytest.mark.parametrize(
    "spelling", [POOL + "/", " " + POOL, POOL.replace("pool-groups", "pool-gr\u043eups"), "pool-groups", 7]
)
def test_ids_that_are_not_exactly_an_identitys_are_refused_by_the_job_and_by_the_operator(spelling) -> None:
    assert identity_key(spelling) is None
    with pytest.raises(BackendError, match=r"^identities: not a user-assigned identity's resource id"):
        check_identities(_spec(identities=[spelling] if isinstance(spelling, str) else [str(spelling)]))
    with pytest.raises(ValidationError, match="allowed_identities"):
        _spec(allowed_identities=[spelling])


def test_credentials_and_secret_looking_values_are_secure_values() -> None:
    template = {"resources": [{"type": "Microsoft.ContainerInstance/containerGroups", "properties": {"containers": [
        {"name": "c", "properties": {"environmentVariables": [{"name": "FROM_TEMPLATE", "value": "x"}]}}
    ]}}]}  # fmt: skip
    # the template's FROM_TEMPLATE is not sent: the job's environment replaces it, as Prefect's worker's does
    spec = _spec(
        env={"TEAM": "data", "GITHUB_TOKEN": "t", "SMTP_PASSWORD": "op"},
        secret_env={"PREFECT_API_KEY": "k", "PREFECT_API_AUTH_STRING": "u:p"},
        arm_template=template,
    )
    body = group_body(spec, "westeurope")
    sent = {e["name"]: e for e in body["properties"]["containers"][0]["properties"]["environmentVariables"]}
    assert sent == {
        "SMTP_PASSWORD": {"name": "SMTP_PASSWORD", "secureValue": "op"},
        "TEAM": {"name": "TEAM", "value": "data"},
        "GITHUB_TOKEN": {"name": "GITHUB_TOKEN", "secureValue": "t"},
        "PREFECT_API_KEY": {"name": "PREFECT_API_KEY", "secureValue": "k"},
        "PREFECT_API_AUTH_STRING": {"name": "PREFECT_API_AUTH_STRING", "secureValue": "u:p"},
    }
