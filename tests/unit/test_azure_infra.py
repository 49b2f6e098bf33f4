"""infra/azure/azuredeploy.json, read as data: the functions' identity has exactly pushpool's ACI operations, in its
own resource group only (never Contributor, never the subscription), may give container groups the jobs' identity
and no other (never its own: a job would run as pushpool and read its Key Vault), and secrets reach the app only by
Key Vault reference. ``make validate`` runs checkov on the same file."""

from __future__ import annotations

import json
from pathlib import Path

from pushpool.providers.aci.provisioner import ACI_ACTIONS, ASSIGN_IDENTITY

TEMPLATE = json.loads((Path(__file__).resolve().parents[2] / "infra" / "azure" / "azuredeploy.json").read_text())
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"


def _resources(kind: str) -> list[dict]:
    return [r for r in TEMPLATE["resources"] if r["type"] == kind]


def test_the_functions_role_is_the_provisioners_and_scoped_to_the_resource_group() -> None:
    roles = {r["name"]: r for r in _resources("Microsoft.Authorization/roleDefinitions")}
    role = roles["[variables('roleName')]"]
    assert TEMPLATE["variables"]["submitterActions"] == list(ACI_ACTIONS)
    assert role["properties"]["permissions"][0]["actions"] == "[variables('submitterActions')]"
    assert all(r["properties"]["assignableScopes"] == ["[resourceGroup().id]"] for r in roles.values())


# Azure's built-in roles the template may assign: Key Vault Secrets User and the queue data roles (data actions only;
# none of them may assign an identity). Any other built-in role fails the test below until it is judged.
DATA_ROLES = {
    "4633458b-17de-408a-b874-0445c86b69e6",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "19e7f393-937e-4f77-808e-94535e297925",
    "8a0f0c08-91a1-4084-bc3d-661d67233fed",
}


def _actions_of(assignment: dict) -> list[str]:
    """The ARM actions an assignment's role grants (a custom role of the template, or a known built-in)."""
    definition = assignment["properties"]["roleDefinitionId"]
    variables = TEMPLATE["variables"]
    for role in _resources("Microsoft.Authorization/roleDefinitions"):
        if definition == f"[resourceId('Microsoft.Authorization/roleDefinitions', {role['name'][1:-1]})]":
            actions = role["properties"]["permissions"][0]["actions"]
            return variables[actions.split("'")[1]] if isinstance(actions, str) else actions
    builtin = variables[definition.split("'")[1]] if definition.startswith("[variables(") else definition
    assert builtin.split("'")[-2] in DATA_ROLES, f"an unjudged role is assigned: {definition}"
    return []


def _may_assign_identities(actions: list[str]) -> bool:
    patterns = {
        "*",
        "Microsoft.ManagedIdentity/*",
        "Microsoft.ManagedIdentity/userAssignedIdentities/*",
        ASSIGN_IDENTITY,
    }
    return any(a in patterns for a in actions)


def test_pushpools_own_identity_can_never_be_given_to_a_container_group() -> None:
    """ACI gives a group a user-assigned identity only if the caller may ``assign/action`` it. The functions' identity
    (which reads the Key Vault) may assign exactly one identity — the jobs' — by a role assignment scoped to that
    identity alone: at the resource group's scope it could assign its own, and a deployment author naming it in
    ``identities`` would run as pushpool (pushpool's allowlist refuses that too; this is the cloud's own guard)."""
    variables = TEMPLATE["variables"]
    functions = "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', variables('identityName'))"
    jobs_scope = "[variables('jobsIdentityScope')]"
    granted = [
        a
        for a in _resources("Microsoft.Authorization/roleAssignments")
        if a["properties"]["principalId"].startswith(functions) and _may_assign_identities(_actions_of(a))
    ]
    assert [a.get("scope") for a in granted] == [jobs_scope]  # one grant, on the jobs' identity only
    assert variables["jobsIdentityScope"] == (
        "[format('Microsoft.ManagedIdentity/userAssignedIdentities/{0}', variables('jobsIdentityName'))]"
    )
    assert variables["jobsIdentityName"] != variables["identityName"]
    names = {i["name"] for i in _resources("Microsoft.ManagedIdentity/userAssignedIdentities")}
    assert names == {"[variables('identityName')]", "[variables('jobsIdentityName')]"}
    # The jobs' identity itself is given nothing here: a container that has it reads no secret of pushpool's.
    jobs = "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', variables('jobsIdentityName'))"
    assert not [
        a for a in _resources("Microsoft.Authorization/roleAssignments") if jobs in a["properties"]["principalId"]
    ]
    assert TEMPLATE["outputs"]["jobsIdentityId"]["value"].endswith("variables('jobsIdentityName'))]")


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
