"""The ACI provisioner: what an ``azure-container-instance:push`` pool needs in an Azure subscription, made through
ARM with the SDK's own pipeline (azure-mgmt-core's ``ARMPipelineClient``: bearer token, retries, long-running
operations) — no az CLI, no subscription-wide Contributor.

Resources (named after the pool, tagged ``pushpool-pool=<pool>``; a second run finds them and changes nothing):

=======================================  ==================================  ==============================
resource                                 name                                pool variable it fills
=======================================  ==================================  ==============================
resource group                           ``pushpool-<pool>``                 ``resource_group_name``,
                                                                             ``subscription_id``, ``location``
user-assigned identity (for the groups)  ``pushpool-<pool>-groups``          ``identities``,
                                                                             ``allowed_identities`` (literal)
container registry (Basic)               ``pushpool<pool, letters+digits>``  ``image_registry`` (login
                                                                             server + the identity)
role assignment ``AcrPull``              the identity on the registry only
custom role ``pushpool-<pool>-submitter``  assignable in the resource group
                                         only: exactly the ACI operations
                                         pushpool makes
custom role ``pushpool-<pool>-assigner``   ``assign/action`` and nothing else
                                         (assignable in the resource group:
                                         Azure takes no resource as an
                                         assignable scope)
role assignments of those roles          to ``PUSHPOOL_AZURE_PRINCIPAL_ID``
                                         (the functions' managed identity):
                                         submitter at the resource group's
                                         scope, assigner at the identity's
=======================================  ==================================  ==============================

Prefect's ``--provision-infra`` gives a service principal ``Contributor`` on the resource group
(Prefect issue #13102 asks for less); here the functions get a role with the ACI operations they make, scoped to the
one resource group, and ``assign/action`` on the pool's one identity (a role assignment whose scope is that
identity's resource id): never at a resource group's scope, where it would cover any identity put there later.
Client secrets (an app registration through Microsoft Graph) are not made: ``credentials`` other than ``role`` are
refused.
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pushpool.errors import BackendError, ConfigurationError, InvalidRequestError
from pushpool.providers.aci.azure import NAME, arm_status, azure_errors
from pushpool.providers.provisioning import CREATE, DELETE, EXISTS, UPDATE, Marker, Step, wait_until

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient

TAG = Marker.LABEL_KEY  # "pushpool-pool": ARM tag names cannot hold ":" for every resource type
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # Azure's built-in AcrPull role definition id
API = {
    "resourcegroups": "2021-04-01",
    "Microsoft.ManagedIdentity": "2023-01-31",
    "Microsoft.ContainerRegistry": "2023-07-01",
    "Microsoft.Authorization": "2022-04-01",
}
# What the functions do with ACI (providers/aci/backend.py), and nothing else.
ACI_ACTIONS = (
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.ContainerInstance/containerGroups/read",
    "Microsoft.ContainerInstance/containerGroups/write",
    "Microsoft.ContainerInstance/containerGroups/delete",
    "Microsoft.ContainerInstance/containerGroups/stop/action",
    "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
)
# Giving a container group a user-assigned identity needs this on the identity. It is granted on the pool's own
# identity alone (the assignment's scope is the identity's resource id), as infra/azure grants it only on the jobs'
# identity: at a resource group's scope it would cover every identity there, now or later.
ASSIGN_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
SUBMITTER_ACTIONS = ACI_ACTIONS
ASSIGNER_ACTIONS = (ASSIGN_IDENTITY,)
ROLES = {"submitter": SUBMITTER_ACTIONS, "assigner": ASSIGNER_ACTIONS}
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}\Z")


class AciProvisioner:
    def __init__(
        self,
        *,
        region: str | None = None,
        credentials: str = "role",
        subscription: str | None = None,
        principal_id: str | None = None,
        credential: Any = None,
        base_url: str = "https://management.azure.com",
        connection_verify: Any = None,
        timeout: float = 600.0,
        interval: float = 5.0,
    ) -> None:
        if credentials != "role":
            raise InvalidRequestError(
                f"--credentials {credentials} is not available for ACI pools: the functions use their managed "
                "identity (an app registration and client secret are not made by pushpool)"
            )
        self.credentials = credentials
        self.location = region or os.environ.get("AZURE_LOCATION") or os.environ.get("AZURE_DEFAULTS_LOCATION")
        self.subscription = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
        self.principal_id = principal_id or os.environ.get("PUSHPOOL_AZURE_PRINCIPAL_ID")
        self._credential = credential
        self.base_url = base_url
        self.connection_verify = connection_verify
        self.timeout, self.interval = timeout, interval
        self._client: Any = None

    # -- the Provisioner Protocol ------------------------------------------------------------------------------

    def check_access(self) -> str:
        if not self.subscription:
            raise ConfigurationError("no Azure subscription: set AZURE_SUBSCRIPTION_ID (nothing was changed)")
        if not self.location:
            raise ConfigurationError("no Azure location: pass --region or set AZURE_LOCATION (nothing was changed)")
        self._get(f"/subscriptions/{self.subscription}", "2022-12-01")  # the credential works, the subscription exists
        return f"subscription {self.subscription} ({self.location})"

    def plan(self, pool: str) -> list[Step]:
        if not _POOL.match(pool):
            raise InvalidRequestError(
                f"pool name {pool!r} cannot name Azure resources (letters, digits, '-', '_', '.')"
            )
        rg = f"pushpool-{pool}"
        steps = [self._resource_group_step(pool, rg), self._identity_step(pool, rg), self._registry_step(pool, rg)]
        steps.append(self._assignment_step(pool, rg, "AcrPull", "the groups' identity may pull from the registry only"))
        steps += [self._role_step(pool, rg, kind) for kind in ROLES]
        if self.principal_id:
            steps.append(self._assignment_step(pool, rg, "submitter", "the functions' identity, this group only"))
            steps.append(self._assignment_step(pool, rg, "assigner", "the functions' identity, this identity only"))
        return steps

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        return []  # the functions use their managed identity: nothing to store in Prefect

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        rg = f"pushpool-{pool}"
        steps = []
        for kind in ("submitter", "assigner", "AcrPull"):
            path = self._assignment_path(pool, rg, kind)
            if self._get(path, API["Microsoft.Authorization"]) is not None:
                steps.append(Step("role assignment", kind, DELETE, run=self._deleter(path, "Microsoft.Authorization")))
        for kind in ROLES:
            role = self._role_path(pool, rg, kind)
            if self._get(role, API["Microsoft.Authorization"]) is not None:
                steps.append(
                    Step(
                        "custom role",
                        f"pushpool-{pool}-{kind}",
                        DELETE,
                        run=self._deleter(role, "Microsoft.Authorization"),
                    )
                )
        group = self._get(self._rg_path(rg), API["resourcegroups"])
        if group is not None and (group.get("tags") or {}).get(TAG) == pool:
            steps.append(
                Step(
                    "resource group",
                    rg,
                    DELETE,
                    "with the identity and registry in it",
                    run=self._deleter(self._rg_path(rg), "resourcegroups", wait=True),
                )
            )
        return steps

    def errors(self) -> AbstractContextManager[None]:
        return azure_errors()

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        registry = (defaults.get("image_registry") or {}).get("registry_url")
        notes = [f"push images to {registry}/<image>:<tag> (docker login {registry})"] if registry else []
        if not self.principal_id:
            notes.append(
                f"assign the custom role pushpool-<pool>-submitter to the functions' managed identity at scope "
                f"{defaults.get('_rg_scope', 'the resource group')} and pushpool-<pool>-assigner at scope "
                f"{(defaults.get('identities') or ['the pool identity'])[0]} (or set PUSHPOOL_AZURE_PRINCIPAL_ID and "
                "run again)"
            )
        return notes

    # -- steps -------------------------------------------------------------------------------------------------

    def _resource_group_step(self, pool: str, rg: str) -> Step:
        path = self._rg_path(rg)
        found = self._get(path, API["resourcegroups"])
        if found is not None and (found.get("tags") or {}).get(TAG) not in (pool,):
            raise BackendError(f"resource group {rg} exists and is not pushpool's for pool {pool}", backend=NAME)

        def run() -> dict[str, Any]:
            if found is None:
                self._put(path, API["resourcegroups"], {"location": self.location, "tags": {TAG: pool}})
            return {
                "subscription_id": self.subscription,
                "resource_group_name": rg,
                "location": (found or {}).get("location", self.location),
                "_rg_scope": path,
            }

        return Step("resource group", rg, EXISTS if found else CREATE, str(self.location), run=run)

    def _identity_step(self, pool: str, rg: str) -> Step:
        path = f"{self._rg_path(rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pushpool-{pool}-groups"
        found = self._get(path, API["Microsoft.ManagedIdentity"])

        def run() -> dict[str, Any]:
            body = found or self._put(
                path, API["Microsoft.ManagedIdentity"], {"location": self.location, "tags": {TAG: pool}}
            )
            # The pool's own identity is the one its jobs may have (plus any the operator allows with
            # --allowed-identity); the functions' identity lives elsewhere and is never on the list.
            return {
                "identities": [path],
                "allowed_identities": [path],
                "_identity_principal": body["properties"]["principalId"],
            }

        return Step("managed identity", f"pushpool-{pool}-groups", EXISTS if found else CREATE, run=run)

    def _registry_step(self, pool: str, rg: str) -> Step:
        name = ("pushpool" + re.sub(r"[^a-z0-9]", "", pool.lower()))[:50]
        path = f"{self._rg_path(rg)}/providers/Microsoft.ContainerRegistry/registries/{name}"
        api = API["Microsoft.ContainerRegistry"]
        found = self._get(path, api)

        def run() -> dict[str, Any]:
            body = found
            if body is None:
                self._put(
                    path, api, {"location": self.location, "sku": {"name": "Basic"}, "tags": {TAG: pool}}, wait=True
                )
                body = self._get(path, api)
            identity = (
                f"{self._rg_path(rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pushpool-{pool}-groups"
            )
            return {
                "image_registry": {"registry_url": body["properties"]["loginServer"], "identity": identity},
                "_registry_scope": path,
            }

        return Step("container registry", name, EXISTS if found else CREATE, "Basic", run=run)

    def _role_step(self, pool: str, rg: str, kind: str) -> Step:
        """The custom role ``kind``: ``submitter`` (the ACI actions) or ``assigner`` (``assign/action`` alone, assigned
        on the pool's identity only), both assignable in the pool's resource group. A role of an earlier version whose
        actions differ (the submitter once held ``assign/action`` at the group's scope) is written again."""
        path = self._role_path(pool, rg, kind)
        api = API["Microsoft.Authorization"]
        found = self._get(path, api)
        scope = self._rg_path(rg)
        properties = {
            "roleName": f"pushpool-{pool}-{kind}",
            "description": Marker(pool).description(),
            "type": "CustomRole",
            "permissions": [{"actions": list(ROLES[kind]), "notActions": []}],
            "assignableScopes": [scope],
        }
        held = (found or {}).get("properties") or {}
        current = found is not None and all(held.get(k) == properties[k] for k in ("permissions", "assignableScopes"))

        def run() -> dict[str, Any]:
            if not current:
                self._put(path, api, {"properties": properties})
            return {f"_{kind}_role": path}

        action = EXISTS if current else UPDATE if found else CREATE
        where = "the ACI operations pushpool makes" if kind == "submitter" else "assign/action, nothing else"
        return Step("custom role", f"pushpool-{pool}-{kind}", action, where, run=run)

    def _assignment_step(self, pool: str, rg: str, kind: str, detail: str) -> Step:
        path = self._assignment_path(pool, rg, kind)
        api = API["Microsoft.Authorization"]
        found = self._get(path, api)

        def run() -> dict[str, Any]:
            if found is None:
                if kind == "AcrPull":
                    definitions = (
                        f"/subscriptions/{self.subscription}/providers/Microsoft.Authorization/roleDefinitions"
                    )
                    role, principal = f"{definitions}/{ACR_PULL}", self._identity_principal(pool, rg)
                else:
                    role, principal = self._role_path(pool, rg, kind), self.principal_id
                kind_of = "ServicePrincipal"
                self._put(
                    path,
                    api,
                    {
                        "properties": {
                            "roleDefinitionId": role,
                            "principalId": principal,
                            "principalType": kind_of,
                            "description": Marker(pool).description(),
                        }
                    },
                )
            return {}

        return Step("role assignment", kind, EXISTS if found else CREATE, detail, run=run)

    # -- ARM ---------------------------------------------------------------------------------------------------

    def _identity_principal(self, pool: str, rg: str) -> str:
        return str(
            self._get(self._identity_path(pool, rg), API["Microsoft.ManagedIdentity"])["properties"]["principalId"]
        )

    def _identity_path(self, pool: str, rg: str) -> str:
        return f"{self._rg_path(rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pushpool-{pool}-groups"

    def _rg_path(self, rg: str) -> str:
        return f"/subscriptions/{self.subscription}/resourcegroups/{rg}"

    def _role_path(self, pool: str, rg: str, kind: str = "submitter") -> str:
        suffix = "role" if kind == "submitter" else f"role:{kind}"  # the submitter role keeps its earlier name
        name = uuid.uuid5(uuid.NAMESPACE_URL, f"pushpool:{self.subscription}:{rg}:{pool}:{suffix}")
        return f"{self._rg_path(rg)}/providers/Microsoft.Authorization/roleDefinitions/{name}"

    def _assignment_path(self, pool: str, rg: str, kind: str) -> str:
        name = uuid.uuid5(uuid.NAMESPACE_URL, f"pushpool:{self.subscription}:{rg}:{pool}:{kind}")
        registry = ("pushpool" + re.sub(r"[^a-z0-9]", "", pool.lower()))[:50]
        scope = self._rg_path(rg)
        if kind == "AcrPull":
            scope += f"/providers/Microsoft.ContainerRegistry/registries/{registry}"
        elif kind == "assigner":
            scope = self._identity_path(pool, rg)
        return f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"

    def _pipeline(self) -> Any:
        if self._client is None:
            from azure.core.configuration import Configuration
            from azure.core.pipeline import policies
            from azure.mgmt.core import ARMPipelineClient
            from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = self._credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
            config: Any = Configuration()
            config.authentication_policy = ARMChallengeAuthenticationPolicy(
                credential, "https://management.azure.com/.default"
            )
            config.retry_policy = policies.RetryPolicy()
            config.headers_policy = policies.HeadersPolicy()
            config.user_agent_policy = policies.UserAgentPolicy(sdk_moniker="pushpool-aci-provisioner")
            config.logging_policy = policies.NetworkTraceLoggingPolicy()
            config.redirect_policy = policies.RedirectPolicy()
            options = {"connection_verify": self.connection_verify} if self.connection_verify is not None else {}
            self._client = ARMPipelineClient(base_url=self.base_url, config=config, **options)
        return self._client

    def _send(self, method: str, path: str, api: str, body: Any = None) -> Any:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        client = self._pipeline()
        request = HttpRequest(method, client.format_url(path), params={"api-version": api}, json=body)
        response = client.send_request(request)
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response

    def _get(self, path: str, api: str) -> Any:
        from azure.core.exceptions import HttpResponseError

        try:
            return self._send("GET", path, api).json()
        except HttpResponseError as exc:
            if arm_status(exc) == 404:
                return None
            raise

    def _put(self, path: str, api: str, body: dict[str, Any], *, wait: bool = False) -> Any:
        response = self._send("PUT", path, api, body)
        if wait:
            self._wait(response, path)
        return response.json() if response.content else {}

    def _deleter(self, path: str, provider: str, *, wait: bool = False) -> Any:
        def run() -> dict[str, Any]:
            from azure.core.exceptions import HttpResponseError

            try:
                response = self._send("DELETE", path, API[provider])
            except HttpResponseError as exc:
                if arm_status(exc) == 404:
                    return {}
                raise
            if wait:
                self._wait(response, path)
            return {}

        return run

    def _wait(self, response: Any, what: str) -> None:
        """Follow ARM's long-running operation (Azure-AsyncOperation, else Location) until it ends."""
        url = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
        if not url or response.status_code not in (201, 202):
            return
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        status: dict[str, str] = {}

        def done() -> bool:
            answer = self._pipeline().send_request(HttpRequest("GET", url))
            if answer.status_code >= 400:
                raise HttpResponseError(response=answer)
            if answer.status_code == 202:
                return False
            status["value"] = str((answer.json() if answer.content else {}).get("status", "Succeeded"))
            return status["value"] not in ("InProgress", "Accepted", "Running", "Creating", "Updating", "Deleting")

        wait_until(done, what=what, timeout=self.timeout, interval=self.interval)
        if status.get("value") not in ("Succeeded", None):
            raise BackendError(f"{what}: the operation ended {status['value']}", backend=NAME)
