"""The ``aci`` backend: each job is one Azure Container Instances container group, created with the ARM API.

* One group per attempt, named from it: ``<slug of the run's name>-<16 hex of sha256(run id/attempt)>`` (Azure's
  rule: 1-63 characters, lowercase letters, digits and single hyphens, a letter or digit at each end). A retried
  submit of the attempt finds the group; a run scheduled again (a retry) gets a new one.
* Found before created: a PUT on an existing group updates or restarts it, so submit GETs the group first and PUTs
  with ``If-None-Match: *`` (ARM's conditional create); concurrent submits in one process also take a lock per name.
* The group's body is the container-group resource of the pool's ``arm_template`` (Prefect's, or the operator's
  customised one; its ``[parameters(...)]``, ``[resourceGroup().location]`` … are evaluated here, since there is no ARM
  deployment), with the run's image, command (``entrypoint`` + command), environment, registry, identities, subnets
  and DNS added as Prefect's ACI worker adds them. It is validated with the SDK's own models before anything is sent.
* The Prefect credential goes as a ``secureValue`` environment variable (ARM never returns it), never as ``value`` —
  also one the job's ``env`` gives, and every variable whose name looks secret (``*_TOKEN``, ``*PASSWORD*`` …).
  Prefect's worker marks only ``PREFECT_API_KEY`` (docs/aci-compat.md).
* Identities: a group may have only the user-assigned identities its pool's operator allowed
  (``job_configuration.allowed_identities``, a literal no job variable reaches; none by default). Every identity the
  group would name — ``identities``, ``image_registry.identity``, or the ``arm_template``'s own — is compared with
  that list (ARM ids are case-insensitive: compared lower-cased, and only well-formed ids); one that is not on it
  refuses the job before any call to Azure, naming the variable. Without this a deployment author could give a
  container any identity pushpool's own may assign — pushpool's own included (infra/azure keeps that one
  unassignable too).
* State: the provisioning state, the group's instance view and the container's current state and exit code
  (``PROVISIONING_STATES``, ``GROUP_STATES``, ``CONTAINER_STATES``; a test keeps them complete). ``status`` lists each
  resource group once per identity (existence and provisioning state of all its groups, page by page). ARM's list
  carries no instance view (Azure/azure-rest-api-specs#21280), so a provisioned group whose end this process has not
  seen yet is then read with one GET — the floor on ARM: a running container's end shows nowhere else. A group seen
  ended (succeeded, failed, stopped) is not read again while the list shows it unchanged, and one this process deleted
  is not looked for again; a group missing from the list is read with one GET before it is called gone (a group
  created moments ago may not be listed yet). What is kept (``pushpool.providers.memo``: bounded, per identity) is an
  optimisation of a warm process; a cold one asks ARM again.
* Cancel = stop (POST .../stop); logs = ``list_logs`` (the monitor reads them before it crashes a run; cleanup comes
  on a later tick, once the run is final); cleanup deletes a finished group unless it was created with
  ``keep_container_group``.
* ARM 429 (with ``Retry-After``) and 5xx are retried by azure-core's retry policy; then the error surfaces as a
  BackendError with Azure's code and message.
* Credentials: pushpool's own (``DefaultAzureCredential``: the function's managed identity), or the pool's
  ``aci_credentials`` block (a service principal), on every call: submit and find with the spec's, status, cancel,
  logs and cleanup with the handle's (the job's pool's, which the monitor puts in the handle), never another pool's.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pushpool.errors import BackendError, JobNotFoundError
from pushpool.providers.aci.arm_expressions import ArmExpressionError, evaluate
from pushpool.providers.aci.azure import NAME, arm_error_code, arm_status, azure_errors
from pushpool.providers.aci.config import AciJobConfig, identity_key
from pushpool.providers.base import (
    BackendBase,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
    describe_exit,
    is_secret_name,
)
from pushpool.providers.memo import Memo

DEFAULT_IMAGE = "prefecthq/prefect:3-latest"
STAND_IN_LOCATION = "eastus"  # check_job's location when the pool names none (submit reads the resource group's)
DEFAULT_CONTAINER = "prefect"
GROUP_TYPE = "microsoft.containerinstance/containergroups"
KEEP_TAG = "pushpool-keep"  # set on groups created with keep_container_group: cleanup leaves them
RUN_TAG, ATTEMPT_TAG = "pushpool-flow-run-id", "pushpool-attempt"
# When pushpool asked ARM for the group (ISO 8601, UTC): ACI's model has no creation time, and a job's clock starts
# when the provider accepted it (providers/base.py); the group is created once per attempt (a conditional PUT).
SUBMITTED_TAG = "pushpool-submitted-at"

# Every provisioning state ACI documents (ContainerGroupProvisioningState in the 2024+ API descriptions).
PROVISIONING_STATES: Mapping[str, JobState] = MappingProxyType(
    {
        "NotSpecified": JobState.PENDING,
        "Accepted": JobState.PENDING,
        "Pending": JobState.PENDING,
        "PreProvisioned": JobState.PENDING,
        "Creating": JobState.PENDING,
        "Updating": JobState.PENDING,
        "Repairing": JobState.PENDING,
        "Succeeded": JobState.RUNNING,  # provisioned: the instance view tells what the container does
        "Failed": JobState.FAILED,
        "Canceled": JobState.FAILED,
        "Unhealthy": JobState.FAILED,
        "Deleting": JobState.MISSING,
        "NotAccessible": JobState.UNKNOWN,
    }
)
# The container group's instance view state.
GROUP_STATES: Mapping[str, JobState] = MappingProxyType(
    {
        "Pending": JobState.PENDING,
        "Running": JobState.RUNNING,
        "Succeeded": JobState.SUCCEEDED,  # refined by the container's exit code
        "Failed": JobState.FAILED,
        "Stopped": JobState.STOPPED,  # stopped through the API (cancel)
        "Repairing": JobState.PENDING,
    }
)
# The container's current state (instance view).
CONTAINER_STATES: Mapping[str, JobState] = MappingProxyType(
    {
        "Waiting": JobState.PENDING,
        "Running": JobState.RUNNING,
        "Terminated": JobState.FAILED,  # refined by the exit code
    }
)
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)  # an ended group: nothing pushpool does restarts it
# Detail statuses of a waiting container that mean it will never start.
START_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff"})

_GROUP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]\Z|^[a-z0-9]\Z")
_SLUG = re.compile(r"[^a-z0-9]+")
_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerInstance/"
    r"containerGroups/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")


class AciBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 600.0  # image pulls of multi-GB Prefect images take minutes
    keeps_finished_jobs = True  # a finished group stays (and bills nothing) until deleted
    dispatch_lead_seconds = 30.0

    def __init__(
        self,
        *,
        credential: Any = None,
        base_url: str | None = None,
        connection_verify: Any = None,
        retry_total: int = 5,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 30.0,
        block_credential: Any = None,
    ) -> None:
        self._credential = credential
        # tests: what an aci_credentials block resolves to (one credential, or one per client_id)
        self._block_credential = block_credential
        self.base_url = base_url
        self.connection_verify = connection_verify
        self.retry = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
        }
        self._clients: dict[tuple[str, str], Any] = {}
        self._locations: dict[tuple[str, str], str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # Keyed by (identity, resource id, lower-cased); see the module docstring.
        self._ended = Memo()  # (listed provisioning state, status) of a group seen ended
        self._deleted = Memo()  # groups this process deleted: MISSING without a call

    @classmethod
    def from_options(cls, **options: Any) -> AciBackend:
        return cls(**options)

    # -- the Protocol ----------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        config = _config(spec)
        check_identities(spec)  # before any call to Azure: a refused identity creates nothing
        name = group_name(spec)
        handle = spec.handle(NAME, resource_id(config.subscription_id, config.resource_group_name, name))
        client = self._client(config.subscription_id, config.aci_credentials)
        with self._lock(handle.id), azure_errors():
            if self._get(client, config.resource_group_name, name) is not None:
                return handle  # this attempt's group exists: never PUT it again (a PUT restarts it)
            body = self.container_group(spec, self._location(client, config))
            from azure.core.exceptions import HttpResponseError

            try:
                client.container_groups.begin_create_or_update(
                    config.resource_group_name,
                    name,
                    body,
                    headers={"If-None-Match": "*"},
                    polling=False,  # the monitor follows provisioning; submit returns once ARM accepted the group
                )
            except HttpResponseError as exc:
                if exc.status_code == 412:  # created meanwhile by a concurrent submit elsewhere (conditional PUT)
                    return handle
                raise
        return handle

    def check_job(self, spec: JobSpec) -> None:
        """What submit refuses before ARM creates anything: an identity the pool does not allow, an arm_template
        pushpool cannot evaluate (an ARM function it does not know, a parameter without a value) or whose container
        group ACI's API would not accept. Without a ``location`` the resource group's is stood in for (reading it is
        a call to Azure)."""
        check_identities(spec)
        self.container_group(spec, _config(spec).location or STAND_IN_LOCATION)

    def find(self, spec: JobSpec) -> JobHandle | None:
        config = _config(spec)
        name = group_name(spec)
        client = self._client(config.subscription_id, config.aci_credentials)
        with azure_errors():
            found = self._get(client, config.resource_group_name, name)
        if found is None:
            return None
        return spec.handle(NAME, resource_id(config.subscription_id, config.resource_group_name, name))

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        by_group: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        blocks: dict[str, Mapping[str, Any] | None] = {}
        for handle in handles:
            try:
                sub, rg, name = parse_handle(handle.id)
            except JobNotFoundError as exc:
                out[handle.id] = JobStatus(JobState.MISSING, reason=exc.one_line())
                continue
            block = _block_of(handle)
            blocks[_block_key(block)] = block
            by_group.setdefault((_block_key(block), sub, rg), []).append((handle.id, name))
        for (identity, sub, rg), items in by_group.items():
            try:
                client = self._client(sub, blocks[identity])
                with azure_errors():
                    listed = {g.name.lower(): g for g in client.container_groups.list_by_resource_group(rg)}
            except BackendError as exc:
                gone = arm_error_code(exc.__cause__) == "ResourceGroupNotFound"
                failed = JobStatus(JobState.MISSING if gone else JobState.UNKNOWN, reason=exc.one_line())
                out.update({handle_id: failed for handle_id, _ in items})
                continue
            for handle_id, name in items:
                key = (identity, handle_id.lower())
                summary = listed.get(name.lower())
                provisioning = str(summary.provisioning_state or "") if summary is not None else ""
                if summary is None and key in self._deleted:
                    out[handle_id] = JobStatus(JobState.MISSING, reason="container group deleted (cleaned up)")
                    continue
                if summary is not None and PROVISIONING_STATES.get(provisioning) in (
                    JobState.PENDING,
                    JobState.MISSING,
                ):
                    out[handle_id] = to_status(summary)  # no instance view needed (nor listed)
                    continue
                seen = self._ended.get(key) if summary is not None else None
                if seen is not None and seen[0] == provisioning:
                    out[handle_id] = seen[1]  # ended, and listed as it was then: no need to read it again
                    continue
                try:  # provisioned (the instance view says what the container does), or not listed (yet?)
                    with azure_errors():
                        group = self._get(client, rg, name)
                except BackendError as exc:
                    out[handle_id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                    continue
                if group is None:
                    out[handle_id] = JobStatus(JobState.MISSING, reason="container group not found")
                    continue
                out[handle_id] = to_status(group)
                if out[handle_id].state in ENDED:
                    self._ended.put(key, (str(group.provisioning_state or ""), out[handle_id]))
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        try:
            sub, rg, name = parse_handle(handle.id)
        except JobNotFoundError:
            return  # never a group of ours: nothing to stop
        client = self._client(sub, _block_of(handle))
        try:
            with azure_errors():
                client.container_groups.stop(rg, name)  # ACI has no grace period: the container is stopped
        except BackendError as exc:
            if arm_status(exc.__cause__) == 404:
                return  # gone (or its resource group): stopped
            raise

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        if lines <= 0:
            return []
        try:
            sub, rg, name = parse_handle(handle.id)
        except JobNotFoundError:
            return []
        client = self._client(sub, _block_of(handle))
        try:
            with azure_errors():
                group = self._get(client, rg, name)
                if group is None or not group.containers:
                    return []
                container = _main_container(group.containers)
                answer = client.containers.list_logs(rg, name, container.name, tail=lines)
        except BackendError as exc:
            if arm_status(exc.__cause__) in (404, 409):
                return []  # no logs (any more): a stopped or deleted group
            raise
        return (answer.content or "").splitlines()[-lines:]

    def cleanup(self, handle: JobHandle) -> None:
        try:
            sub, rg, name = parse_handle(handle.id)
        except JobNotFoundError:
            return
        client = self._client(sub, _block_of(handle))
        try:
            with azure_errors():
                group = self._get(client, rg, name)
                if group is not None and (group.tags or {}).get(KEEP_TAG) == "true":
                    return
                if group is not None and to_status(group).state.is_alive:
                    return  # never delete a live job
                if group is not None:
                    client.container_groups.begin_delete(rg, name, polling=False)
        except BackendError as exc:
            if arm_status(exc.__cause__) != 404:
                raise
        self._deleted.put((_block_key(_block_of(handle)), handle.id.lower()), True)

    # -- the container group ------------------------------------------------------------------------------------

    def container_group(self, spec: JobSpec, location: str) -> Any:
        """The ContainerGroup model sent for ``spec`` (validated with the SDK's models).

        Raises:
            BackendError: the arm_template has no container group, uses what pushpool cannot evaluate, or the result
                is not a container group ACI's API accepts (the field named).
        """
        from azure.mgmt.containerinstance.models import ContainerGroup

        body = group_body(spec, location)
        try:
            model = ContainerGroup.deserialize(body)
        except Exception as exc:  # noqa: BLE001 - the SDK's DeserializationError: a value of the wrong type
            raise BackendError(
                f"the container group for pool {spec.pool_name!r} is invalid: {str(exc).splitlines()[0]}", backend=NAME
            ) from None
        problems = missing_required(model)
        unknown = sorted(_paths(body) - _paths(model.serialize(keep_readonly=True)))
        if unknown:
            problems.append(f"not known to ACI's API (azure-mgmt-containerinstance): {', '.join(unknown)}")
        if problems:
            raise BackendError(
                f"the container group for pool {spec.pool_name!r} is invalid: {'; '.join(problems)}", backend=NAME
            )
        return model

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def _get(self, client: Any, rg: str, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return client.container_groups.get(rg, name)
        except ResourceNotFoundError:
            return None

    def _location(self, client: Any, config: AciJobConfig) -> str:
        """The group's region: ``location``, else the resource group's (read once per process and resource group).

        Raises:
            BackendError: the resource group does not exist (Azure's ResourceGroupNotFound).
        """
        if config.location:
            return config.location
        key = (config.subscription_id, config.resource_group_name.lower())
        if key not in self._locations:
            from azure.core.exceptions import HttpResponseError
            from azure.core.rest import HttpRequest

            request = HttpRequest(
                "GET",
                f"/subscriptions/{config.subscription_id}/resourcegroups/{config.resource_group_name}",
                params={"api-version": "2021-04-01"},
            )
            response = client._send_request(request)
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            self._locations[key] = str(response.json()["location"])
        return self._locations[key]

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _client(self, subscription: str, block: Mapping[str, Any] | None) -> Any:
        """A management client per subscription and identity (pushpool's own: ""), made once."""
        identity = _block_key(block)
        key = (subscription, identity)
        if key not in self._clients:
            from azure.mgmt.containerinstance import ContainerInstanceManagementClient

            with azure_errors():
                options: dict[str, Any] = dict(self.retry)
                if self.base_url:
                    options["base_url"] = self.base_url
                if self.connection_verify is not None:
                    options["connection_verify"] = self.connection_verify
                self._clients[key] = ContainerInstanceManagementClient(
                    self._credential_for(block) if identity else self._own_credential(),
                    subscription,
                    **options,
                )
        return self._clients[key]

    def _own_credential(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        return self._credential

    def _credential_for(self, block: Mapping[str, Any] | None) -> Any:
        block = block or {}
        fields = (block.get("tenant_id"), block.get("client_id"), block.get("client_secret"))
        if not all(fields):
            raise BackendError(
                "the aci_credentials block needs client_id, tenant_id and client_secret (or none of them, for "
                "pushpool's own identity)",
                backend=NAME,
            )
        if isinstance(self._block_credential, Mapping):
            return self._block_credential[block.get("client_id")]
        if self._block_credential is not None:
            return self._block_credential
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(*fields, **dict(block.get("credential_kwargs") or {}))


def group_name(spec: JobSpec) -> str:
    """The container group of ``spec``'s attempt: a slug of the run's name and a digest of run and attempt."""
    digest = hashlib.sha256(f"{spec.run_id}/{spec.attempt}".encode()).hexdigest()[:16]
    slug = _SLUG.sub("-", (spec.name or "").lower()).strip("-")[:46].strip("-") or "flow-run"
    name = f"{slug}-{digest}"
    assert _GROUP_NAME.match(name) and len(name) <= 63, name
    return name


def resource_id(subscription: str, rg: str, name: str) -> str:
    group = f"/subscriptions/{subscription}/resourceGroups/{rg}"
    return f"{group}/providers/Microsoft.ContainerInstance/containerGroups/{name}"


def parse_handle(job_id: str) -> tuple[str, str, str]:
    match = _RESOURCE_ID.match(job_id or "")
    if not match:
        raise JobNotFoundError(f"not an ACI container group id: {job_id!r}", backend=NAME)
    return match["sub"], match["rg"], match["name"]


def group_body(spec: JobSpec, location: str) -> dict[str, Any]:
    """The container group's ARM body (REST shape) for ``spec``: the arm_template's container-group resource, its
    expressions evaluated, with the run's job added as Prefect's ACI worker adds it."""
    config = _config(spec)
    name = group_name(spec)
    resource = _template_resource(config)
    parameters = _parameters(config, name)
    body = {
        k: _evaluate(v, parameters, config, location)
        for k, v in resource.items()
        if k not in ("apiVersion", "type", "name", "dependsOn", "condition", "comments", "copy")
    }
    body["location"] = body.get("location") or location
    properties = body.setdefault("properties", {})
    properties.setdefault("osType", "Linux")
    properties.setdefault("restartPolicy", "Never")
    containers = properties.get("containers") or []
    if not containers:
        containers = [{"name": DEFAULT_CONTAINER, "properties": {}}]
    properties["containers"] = containers
    container = containers[0]
    container.setdefault("name", DEFAULT_CONTAINER)
    props = container.setdefault("properties", {})
    props["image"] = config.image or DEFAULT_IMAGE  # the worker's too: a literal image of the arm_template is replaced
    props["command"] = [config.entrypoint, *spec.command] if config.entrypoint else list(spec.command)
    requests = props.setdefault("resources", {}).setdefault("requests", {})
    requests["cpu"] = _number(requests.get("cpu"), config.cpu)
    requests["memoryInGB"] = _number(requests.get("memoryInGB"), config.memory)
    if config.gpu_count and config.gpu_sku:  # ACI's GpuResource needs both; the worker sends neither (aci-compat.md)
        requests["gpu"] = {"count": config.gpu_count, "sku": config.gpu_sku}
    # The job's environment replaces the arm_template's, as the worker's does (its _get_arm_environment).
    environment = [_secured({"name": k, "value": str(v)}) for k, v in sorted(spec.env.items())]
    environment += [{"name": k, "secureValue": v} for k, v in sorted(spec.secret_env.items())]
    props["environmentVariables"] = environment

    identities = list(config.identities or [])
    registry = config.image_registry or {}
    if registry:
        server = str(registry.get("registry_url") or "").removeprefix("https://").removeprefix("http://").rstrip("/")
        if registry.get("identity"):
            credential = {"server": server, "identity": registry["identity"]}
            if registry["identity"] not in identities:
                identities.append(str(registry["identity"]))
        elif registry.get("username") and registry.get("password"):
            credential = {"server": server, "username": registry["username"], "password": registry["password"]}
        else:
            raise BackendError(
                "image_registry needs registry_url with identity (ACR, managed identity) or username and password",
                backend=NAME,
            )
        properties["imageRegistryCredentials"] = [credential]  # replaces the arm_template's, as the worker's does
    if identities:
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {i: {} for i in identities}}
    check_identities(spec, body)
    if config.subnet_ids:
        properties["subnetIds"] = [{"id": s} for s in config.subnet_ids]
    if config.dns_servers:
        properties["dnsConfig"] = {"nameServers": list(config.dns_servers)}

    tags = {_tag_name(k): str(v)[:256] for k, v in (body.get("tags") or {}).items() if v is not None}
    tags.update({_tag_name(k): str(v)[:256] for k, v in spec.labels.items() if v is not None})
    ours = {
        RUN_TAG: spec.run_id,
        ATTEMPT_TAG: spec.attempt[:256],
        SUBMITTED_TAG: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if config.keep_container_group:
        ours[KEEP_TAG] = "true"
    for name in (RUN_TAG, ATTEMPT_TAG, SUBMITTED_TAG, KEEP_TAG):  # a label of one of our names never stands in for it
        tags.pop(name, None)
    tags.update(ours)
    body["tags"] = dict(list(tags.items())[-50:])  # ARM allows 50 tags; ours come last and are kept
    return body


def check_identities(spec: JobSpec, body: Mapping[str, Any] | None = None) -> None:
    """Refuse a job whose group would have a user-assigned identity its pool's operator did not allow.

    Checked: ``identities`` and ``image_registry.identity`` (job variables), and — given the group's ``body`` — every
    identity it names (``identity.userAssignedIdentities``, ``imageRegistryCredentials[].identity``,
    ``encryptionProperties.identity``: the ``arm_template``'s own included). An id that is not a well-formed
    user-assigned identity id is refused too (ARM would resolve spellings pushpool's comparison might not).

    Raises:
        BackendError: naming the variable and the identity (its name and resource group; never a secret).
    """
    config = _config(spec)
    allowed = {identity_key(i) for i in config.allowed_identities}
    named: list[tuple[str, Any]] = [("identities", i) for i in config.identities or []]
    registry = config.image_registry or {}
    if registry.get("identity"):
        named.append(("image_registry.identity", registry["identity"]))
    if body is not None:
        properties = body.get("properties") or {}
        named += [
            ("arm_template identity", i) for i in ((body.get("identity") or {}).get("userAssignedIdentities") or {})
        ]
        named += [
            ("arm_template imageRegistryCredentials", c.get("identity"))
            for c in properties.get("imageRegistryCredentials") or []
            if isinstance(c, Mapping) and c.get("identity")
        ]
        encryption = properties.get("encryptionProperties") or {}
        if isinstance(encryption, Mapping) and encryption.get("identity"):
            named.append(("arm_template encryptionProperties.identity", encryption["identity"]))
    for variable, identity in named:
        key = identity_key(identity)
        if key is None:
            raise BackendError(
                f"{variable}: not a user-assigned identity's resource id (/subscriptions/<subscription id>/"
                "resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>); "
                "nothing was created",
                backend=NAME,
            )
        if key not in allowed:
            rg, name = key.split("/")[4], key.rsplit("/", 1)[-1]
            raise BackendError(
                f"{variable}: identity {name!r} (resource group {rg!r}) is not allowed for pool {spec.pool_name!r}; "
                f"its operator allows {len(allowed)} identit{'y' if len(allowed) == 1 else 'ies'} "
                "(job_configuration.allowed_identities: `pushpool work-pool create --allowed-identity <id>`); "
                "nothing was created",
                backend=NAME,
            )


def to_status(group: Any) -> JobStatus:
    """What a container group (SDK model) says about its job."""
    provisioning = str(group.provisioning_state or "")
    extra = {"provisioningState": provisioning, "id": group.id}
    state = PROVISIONING_STATES.get(provisioning)
    events = _events(group)
    accepted = _accepted_at(group)
    if state is None:
        return JobStatus(
            JobState.UNKNOWN,
            reason=f"unmapped ACI provisioning state {provisioning!r}",
            extra=extra,
            accepted_at=accepted,
        )
    if state is JobState.MISSING:
        return JobStatus(JobState.MISSING, reason="container group is being deleted", extra=extra, accepted_at=accepted)
    if state is JobState.UNKNOWN:
        return JobStatus(
            JobState.UNKNOWN, reason=f"ACI provisioning state {provisioning}", extra=extra, accepted_at=accepted
        )
    if state is JobState.FAILED:
        why = f"container group provisioning {provisioning.lower()}" + (f": {events}" if events else "")
        return JobStatus(JobState.FAILED, reason=why, extra=extra, accepted_at=accepted)
    container = _main_container(group.containers or [])
    view = getattr(container, "instance_view", None)
    current = getattr(view, "current_state", None)
    group_state = str(getattr(group.instance_view, "state", "") or "") if group.instance_view else ""
    extra["groupState"] = group_state
    started = getattr(current, "start_time", None)
    finished = getattr(current, "finish_time", None)
    if group_state == "Stopped":
        code = getattr(current, "exit_code", None)
        return JobStatus(JobState.STOPPED, code, "container group stopped", started, finished, extra, accepted)
    if current is None or not current.state:
        if state is JobState.PENDING:
            return JobStatus(JobState.PENDING, extra=extra, accepted_at=accepted)
        mapped = GROUP_STATES.get(group_state)
        if mapped in (JobState.PENDING, JobState.RUNNING):
            return JobStatus(mapped, extra=extra, accepted_at=accepted)
        return JobStatus(
            JobState.UNKNOWN,
            reason=f"no instance view (group state {group_state!r})",
            extra=extra,
            accepted_at=accepted,
        )
    container_state = CONTAINER_STATES.get(str(current.state))
    detail = str(current.detail_status or "")
    extra["containerState"] = str(current.state)
    if container_state is None:
        return JobStatus(
            JobState.UNKNOWN,
            reason=f"unmapped ACI container state {current.state!r}",
            extra=extra,
            accepted_at=accepted,
        )
    if container_state is JobState.PENDING:
        if detail in START_FAILURES:
            why = f"the container cannot start ({detail})" + (f": {events}" if events else "")
            return JobStatus(JobState.FAILED, reason=why, extra=extra, accepted_at=accepted)
        return JobStatus(JobState.PENDING, extra=extra, accepted_at=accepted)
    if container_state is JobState.RUNNING:
        return JobStatus(JobState.RUNNING, started_at=started, extra=extra, accepted_at=accepted)
    code = current.exit_code
    if code is None:
        why = f"container terminated without an exit code ({detail or 'no detail'})"
        return JobStatus(JobState.FAILED, None, why, started, finished, extra, accepted)
    if code == 0:
        return JobStatus(JobState.SUCCEEDED, 0, "container exited with code 0", started, finished, extra, accepted)
    why = f"container exited with {describe_exit(int(code))}" + (f" ({detail})" if detail else "")
    return JobStatus(JobState.FAILED, int(code), why, started, finished, extra, accepted)


def missing_required(model: Any, path: str = "") -> list[str]:
    """The required fields (per the SDK's generated ``_validation``) a model and its sub-models leave empty."""
    problems = []
    for attr, rules in getattr(model, "_validation", {}).items():
        key = model._attribute_map.get(attr, {}).get("key", attr)
        if rules.get("required") and not rules.get("readonly") and getattr(model, attr, None) is None:
            problems.append(f"{path}{key} is required")
    for attr, spec in getattr(model, "_attribute_map", {}).items():
        value = getattr(model, attr, None)
        key = f"{path}{spec.get('key', attr)}"
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if hasattr(item, "_attribute_map"):
                problems += missing_required(item, f"{key}[{i}]." if isinstance(value, list) else f"{key}.")
    return problems


def _events(group: Any) -> str:
    """The last warning events of the group and its main container (image pulls, quota …), as one line."""
    found = []
    sources = [getattr(group.instance_view, "events", None) if group.instance_view else None]
    container = _main_container(group.containers or [])
    view = getattr(container, "instance_view", None)
    sources.append(getattr(view, "events", None))
    for events in sources:
        for event in events or []:
            if str(getattr(event, "type", "")) != "Normal" and event.message:
                found.append(str(event.message).strip())
    return "; ".join(found[-3:])


def _accepted_at(group: Any) -> dt.datetime | None:
    """When ACI accepted the group: the time pushpool tagged on it when it asked for it, bounded by the earliest time
    the group shows (its events, its container's start), so that no tag can put the job's clock later than that."""
    found = []
    try:
        tagged = dt.datetime.fromisoformat(str((group.tags or {}).get(SUBMITTED_TAG, "")))
        found.append(tagged if tagged.tzinfo else tagged.replace(tzinfo=dt.timezone.utc))
    except ValueError:
        pass
    container = _main_container(group.containers or [])
    view = getattr(container, "instance_view", None)
    for events in (
        getattr(group.instance_view, "events", None) if group.instance_view else None,
        getattr(view, "events", None),
    ):
        found += [
            e.first_timestamp for e in events or [] if isinstance(getattr(e, "first_timestamp", None), dt.datetime)
        ]
    for state in (getattr(view, "current_state", None), getattr(view, "previous_state", None)):
        if isinstance(getattr(state, "start_time", None), dt.datetime):
            found.append(state.start_time)
    return min(found) if found else None


def _secured(variable: dict[str, Any]) -> dict[str, Any]:
    """An environment variable whose name looks secret as a ``secureValue`` (ARM never returns it), not a ``value``."""
    if "value" in variable and is_secret_name(str(variable.get("name", ""))):
        variable["secureValue"] = variable.pop("value")
    return variable


def _main_container(containers: Sequence[Any]) -> Any:
    return containers[0] if containers else None


def _template_resource(config: AciJobConfig) -> dict[str, Any]:
    template = config.arm_template or {}
    resources = template.get("resources") or []
    if not isinstance(resources, list):
        raise BackendError("arm_template resources must be a list", backend=NAME)
    groups = [r for r in resources if isinstance(r, dict) and str(r.get("type", "")).lower() == GROUP_TYPE]
    others = [str(r.get("type")) for r in resources if isinstance(r, dict) and r not in groups]
    if not template:
        return {}
    if len(groups) != 1 or others:
        raise BackendError(
            f"arm_template must define exactly one Microsoft.ContainerInstance/containerGroups resource and nothing "
            f"else (found {len(groups)} container group(s){', and ' + ', '.join(others) if others else ''}): "
            "pushpool creates the container group itself, without an ARM deployment",
            backend=NAME,
        )
    return copy.deepcopy(groups[0])


def _parameters(config: AciJobConfig, name: str) -> dict[str, Any]:
    """The template's parameters: pushpool's group name, container name and location (the worker passes the group's
    name as ARM deployment parameter too), else each declared parameter's ``defaultValue`` (evaluated on use)."""
    declared = (config.arm_template or {}).get("parameters") or {}
    ours = {"container_group_name": name, "container_name": DEFAULT_CONTAINER}
    values: dict[str, Any] = {}
    for key, spec in declared.items():
        if key in ours:
            continue
        default = spec.get("defaultValue") if isinstance(spec, dict) else None
        if default is None:
            raise BackendError(f"arm_template parameter {key!r} has no defaultValue", backend=NAME)
        values[key] = default
    values.setdefault("location", "[resourceGroup().location]")
    return {**values, **ours}


def _evaluate(value: Any, parameters: Mapping[str, Any], config: AciJobConfig, location: str) -> Any:
    """``value`` with its ARM template expressions evaluated as an ARM deployment would (arm_expressions.py)."""
    context = {
        "parameters": parameters,
        "variables": (config.arm_template or {}).get("variables") or {},
        "subscription_id": config.subscription_id,
        "resource_group": config.resource_group_name,
        "location": location,
    }
    try:
        return evaluate(value, context)
    except (ArmExpressionError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ArmExpressionError) else "arm_template parameters refer to each other"
        raise BackendError(message, backend=NAME) from None


def _number(value: Any, default: float) -> float:
    if value in (None, ""):
        return float(default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BackendError(f"not a number in the container's resource requests: {value!r}", backend=NAME) from None


def _tag_name(name: str) -> str:
    return _TAG_FORBIDDEN.sub("_", str(name))[:512]


def _paths(data: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list items share their list's path)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            if key not in ("tags", "userAssignedIdentities"):  # free-form maps
                found |= _paths(value, path)
    elif isinstance(data, list):
        for item in data:
            found |= _paths(item, prefix + "[]")
    return found


def _block_key(block: Mapping[str, Any] | None) -> str:
    """ "" for pushpool's own identity, else a digest of the block (never the block itself)."""
    if not isinstance(block, Mapping) or not any(block.get(k) for k in ("client_id", "tenant_id", "client_secret")):
        return ""
    fields = {k: block.get(k) for k in ("client_id", "tenant_id", "client_secret", "credential_kwargs")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _block_of(handle: JobHandle) -> Mapping[str, Any] | None:
    """The ``aci_credentials`` block a handle carries (its pool's); None: pushpool's own identity."""
    block = (handle.credentials or {}).get("aci_credentials")
    return block if isinstance(block, Mapping) else None


def _config(spec: JobSpec) -> AciJobConfig:
    if not isinstance(spec.config, AciJobConfig):
        raise BackendError(f"not an ACI job configuration: {type(spec.config).__name__}", backend=NAME)
    return spec.config
