"""infra/azure/azuredeploy.json, read as data: the functions' identity has exactly pushpool's ACI operations, in its
own resource group only (never Contributor, never the subscription), and secrets reach the app only by Key Vault
reference. ``make validate`` runs checkov on the same file."""

from __future__ import annotations

import json
from pathlib import Path

from pushpool.providers.aci.provisioner import SUBMITTER_ACTIONS

TEMPLATE = json.loads((Path(__file__).resolve().parents[2] / "infra" / "azure" / "azuredeploy.json").read_text())
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"


def _resources(kind: str) -> list[dict]:
    return [r for r in TEMPLATE["resources"] if r["type"] == kind]


def test_the_functions_role_is_the_provisioners_and_scoped_to_the_resource_group() -> None:
    (role,) = _resources("Microsoft.Authorization/roleDefinitions")
    assert TEMPLATE["variables"]["submitterActions"] == list(SUBMITTER_ACTIONS)
    assert role["properties"]["permissions"][0]["actions"] == "[variables('submitterActions')]"
    assert role["properties"]["assignableScopes"] == ["[resourceGroup().id]"]


def test_no_broad_role_is_assigned_and_nothing_at_subscription_scope() -> None:
    text = json.dumps(TEMPLATE)
    assert CONTRIBUTOR not in text and OWNER not in text
    for assignment in _resources("Microsoft.Authorization/roleAssignments"):
        assert "subscription()" not in assignment.get("scope", "")
        assert assignment["properties"]["principalType"] == "ServicePrincipal"


def test_secrets_reach_the_app_only_as_key_vault_references() -> None:
    (site,) = _resources("Microsoft.Web/sites")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    for name in ("PREFECT_API_KEY", "PUSHPOOL_WEBHOOK_TOKEN"):
        assert settings[name].startswith("[format('@Microsoft.KeyVault(")
    assert settings["PUSHPOOL_POOL_TYPES"] == "azure-container-instance:push"
    assert site["properties"]["httpsOnly"] is True
    secure = {k for k, v in TEMPLATE["parameters"].items() if v["type"] == "securestring"}
    assert secure == {"prefectApiKey", "webhookToken"}
