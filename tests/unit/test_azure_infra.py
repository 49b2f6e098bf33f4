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


QUEUE_SENDER, QUEUE_READER, QUEUE_PROCESSOR = (
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "19e7f393-937e-4f77-808e-94535e297925",
    "8a0f0c08-91a1-4084-bc3d-661d67233fed",
)


def test_the_delay_queue_roles_are_send_read_process_on_that_queue_only() -> None:
    """Punctual dispatch: the identity sends messages (arming) and reads/processes them (the queue trigger) on the
    delay queue, and may only send to its poison queue; no role on the storage account or any other queue."""
    variables = TEMPLATE["variables"]
    roles = {variables[k].split("'")[-2]: k for k in ("queueSender", "queueReader", "queueProcessor")}
    assert roles == {QUEUE_SENDER: "queueSender", QUEUE_READER: "queueReader", QUEUE_PROCESSOR: "queueProcessor"}
    granted = {
        (a["scope"], a["properties"]["roleDefinitionId"])
        for a in _resources("Microsoft.Authorization/roleAssignments")
        if "queue" in a.get("scope", "").lower()
    }
    assert granted == {
        ("[variables('delayQueueScope')]", "[variables('queueSender')]"),
        ("[variables('delayQueueScope')]", "[variables('queueReader')]"),
        ("[variables('delayQueueScope')]", "[variables('queueProcessor')]"),
        ("[variables('poisonQueueScope')]", "[variables('queueSender')]"),
    }
    assert variables["delayQueueScope"].endswith("variables('storageName'), variables('delayQueueName'))]")
    assert "/queues/" in variables["delayQueueScope"] and "/queues/" in variables["poisonQueueScope"]


def test_the_app_reaches_the_delay_queue_with_its_managed_identity() -> None:
    (site,) = _resources("Microsoft.Web/sites")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    assert "variables('delayQueueName')" in settings["PUSHPOOL_DELAY_QUEUE_URL"]
    assert settings["PUSHPOOL_DELAY_QUEUE_NAME"] == "[variables('delayQueueName')]"
    # The queue trigger's connection (function_app.py: connection="PushpoolDelayQueue") is identity-based: no key.
    assert settings["PushpoolDelayQueue__credential"] == "managedidentity"
    assert settings["PushpoolDelayQueue__clientId"].endswith(".clientId]")
    assert "AccountKey" not in settings["PushpoolDelayQueue__queueServiceUri"]
    queues = {q["name"] for q in _resources("Microsoft.Storage/storageAccounts/queueServices/queues")}
    assert len(queues) == 2  # the delay queue and its poison queue
