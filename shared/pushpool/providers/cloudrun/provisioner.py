"""The Cloud Run provisioner: what a ``cloud-run-v2:push`` / ``cloud-run:push`` pool needs in a Google Cloud project,
made with Google's discovery clients (google-api-python-client: Service Usage, Artifact Registry, IAM, Resource
Manager) — no gcloud CLI.

Resources (a second run finds them all and changes nothing):

======================================  ===================================  ================================
resource                                name                                 pool variable it fills
======================================  ===================================  ================================
APIs ``run.googleapis.com`` and          enabled with Service Usage          ``project``, ``region``
``artifactregistry.googleapis.com``      (never disabled by deprovision:
                                         other things may use them)
Artifact Registry Docker repository      ``pushpool-<pool>`` in the region   (printed: ``<region>-docker.pkg.dev/
                                         (labels ``pushpool-pool``,           <project>/<repo>``, the image
                                         description names the pool)         namespace)
service account (what jobs run as)       ``pushpool-<pool>@<project>…``       ``service_account_name``
                                         (its description names the pool)
custom role (only with                   ``projects/<project>/roles/           —
``--credentials key``)                   pushpoolCloudRunJobs``: the Cloud
                                         Run calls pushpool makes, nothing
                                         else (shared by the project's pools)
project IAM binding (only with key)      that role for the service account     —
service-account IAM binding (only with   ``roles/iam.serviceAccountUser`` on   —
key)                                     the pool's account itself, for itself
service-account key + ``gcp-credentials``  ``<pool>-gcp-credentials``          ``credentials`` (``$ref``)
block (only with ``--credentials key``)  (made once: never while it exists)
======================================  ===================================  ================================

What the pool's service account (the identity its flows run as) holds, and why:

* ``--credentials role`` (the default): nothing. pushpool's own functions identity makes every Cloud Run call (it
  needs ``roles/run.developer`` and ``roles/iam.serviceAccountUser`` on the pool's account: said in the notes).
* ``--credentials key``: the pool's key signs pushpool's Cloud Run calls, so the account needs the job operations.
  ``iam.serviceAccounts.actAs`` (to create a job that runs as the account) is granted on the account itself, never on
  the project: a flow can act as no other service account. The Cloud Run operations go in a custom role at the
  project (Cloud Run has no IAM Conditions on resource names, and a job made per attempt cannot hold a grant before
  it exists): create, get, list, run and delete jobs, get, list and cancel executions, list tasks, read operations.
  Not ``roles/run.developer``: no ``run.jobs.update`` / ``runWithOverrides`` (which would let a flow change what
  another pool's job runs, as that job's account), no services, no IAM. What remains on other jobs of the project
  (run, delete, cancel) is what Google does not let be narrowed.

Earlier versions bound the account to ``roles/run.developer`` and ``roles/iam.serviceAccountUser`` on the whole
project (``LEGACY_ROLES``): provisioning again removes those bindings. The project IAM policy is read, modified and
written back with its ``etag`` (version 3, conditions kept); a write that meets a concurrent change (409 /
``ABORTED``) is read and tried again. Deprovision removes only what carries the pool's mark: the repository and the
service account (with its own IAM policy) whose description names the pool, that account's members in the project
roles above, the custom role once no member is left in it, and the pool's credentials block.

Project: ``--project``, else ``GOOGLE_CLOUD_PROJECT`` / ``CLOUDSDK_CORE_PROJECT`` / ``GCLOUD_PROJECT``, else the
credentials' own project (said in the plan's header). Region: ``--region``, else ``CLOUDSDK_RUN_REGION`` /
``GOOGLE_CLOUD_REGION`` / ``CLOUDSDK_COMPUTE_REGION``. Neither is guessed: missing → one line, before any call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pushpool.errors import BackendError, ConfigurationError, InvalidRequestError
from pushpool.providers.cloudrun.gcp import api_errors, google_status, http_status
from pushpool.providers.provisioning import (
    CREATE,
    DELETE,
    EXISTS,
    UPDATE,
    Marker,
    ProvisioningError,
    Step,
    wait_until,
)
from pushpool.providers.token_blocks import TokenBlock

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient

SERVICES = ("run.googleapis.com", "artifactregistry.googleapis.com")
# What earlier versions granted the pool's account on the whole project: removed when found.
LEGACY_ROLES = ("roles/run.developer", "roles/iam.serviceAccountUser")
ACT_AS_ROLE = "roles/iam.serviceAccountUser"  # on the pool's account itself (key mode): create jobs that run as it
JOB_ROLE_ID = "pushpoolCloudRunJobs"
# The Cloud Run calls the backend makes with a pool's key (providers/cloudrun/backend.py), and nothing else.
JOB_PERMISSIONS = (
    "run.jobs.create",
    "run.jobs.get",
    "run.jobs.list",
    "run.jobs.run",
    "run.jobs.delete",
    "run.executions.get",
    "run.executions.list",
    "run.executions.cancel",
    "run.tasks.list",
    "run.operations.get",
)
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
SETTLE_ATTEMPTS = 10  # setIamPolicy tries while a new service account is not yet known to IAM (~85 s at 2 s)
PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "GCLOUD_PROJECT")
REGION_VARIABLES = ("CLOUDSDK_RUN_REGION", "GOOGLE_CLOUD_REGION", "CLOUDSDK_COMPUTE_REGION")
CREDENTIALS_BLOCK_TYPE = "gcp-credentials"
# prefect-gcp's GcpCredentials block schema (its fields as the cloud-run templates' definitions name them).
BLOCK_SCHEMA: dict[str, Any] = {
    "title": "GcpCredentials",
    "description": "A Google Cloud service account key (or file): what cloud-run push pools sign their calls with.",
    "type": "object",
    "properties": {
        "service_account_file": {
            "title": "Service Account File",
            "description": "Path to the service account JSON keyfile.",
            "anyOf": [{"type": "string", "format": "path"}, {"type": "null"}],
        },
        "service_account_info": {
            "title": "Service Account Info",
            "description": "The contents of the keyfile as a dict.",
            "anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}],
        },
        "project": {
            "title": "Project",
            "description": "The GCP project.",
            "anyOf": [{"type": "string"}, {"type": "null"}],
        },
    },
    "block_type_slug": CREDENTIALS_BLOCK_TYPE,
    "secret_fields": ["service_account_info.*"],
    "block_schema_references": {},
}
BLOCK = TokenBlock(
    CREDENTIALS_BLOCK_TYPE,
    "GCP Credentials",
    BLOCK_SCHEMA,
    "credentials",
    "the service account key could not be made",
    "a new key of the pool's service account, made once (never while this block exists)",
)
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\Z")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+\Z")
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


def resource_id(pool: str, limit: int) -> str:
    """``pushpool-<pool>`` as a Google resource id (lowercase letters, digits, ``-``; starts with a letter, ends with a
    letter or digit) of at most ``limit`` characters; a pool name that had to be changed or shortened gets a digest of
    itself, so two pools never share one."""
    slug = re.sub(r"[^a-z0-9]+", "-", pool.lower()).strip("-")
    name = f"pushpool-{slug}"
    if slug == pool and len(name) <= limit:
        return name
    digest = hashlib.sha256(pool.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"


class CloudRunProvisioner:
    def __init__(
        self,
        *,
        region: str | None = None,
        credentials: str = "role",
        project: str | None = None,
        credential: Any = None,
        endpoint: str | None = None,
        environ: Mapping[str, str] | None = None,
        interval: float = 2.0,
        timeout: float = 300.0,
        retries: int = 3,
        policy_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``credential``/``endpoint``: Google credentials and one API root for every service (tests); by default
        Application Default Credentials and Google's endpoints."""
        if credentials not in ("role", "key"):
            raise InvalidRequestError(
                f"--credentials {credentials} is not available for Cloud Run pools: 'role' (the functions' own "
                "identity) or 'key' (a service-account key stored once in a gcp-credentials block)"
            )
        env = os.environ if environ is None else environ
        self.credentials = credentials
        self.project, self.project_source = _first(project, "--project", env, PROJECT_VARIABLES)
        self.region, self.region_source = _first(region, "--region", env, REGION_VARIABLES)
        self._credential = credential
        self.endpoint = endpoint
        self.interval, self.timeout, self.retries = interval, timeout, retries
        self.policy_attempts = policy_attempts
        self.sleep = sleep
        self._apis: dict[str, Any] = {}

    # -- the Provisioner Protocol ------------------------------------------------------------------------------

    def check_access(self) -> str:
        """Where pools go and as whom; one clear line (nothing sent) when the project, region or credentials lack."""
        credential = self._google_credential()  # no credentials → ConfigurationError, nothing sent
        if not self.project:
            raise ConfigurationError(
                "no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT (nothing was changed)"
            )
        if not self.region:
            raise ConfigurationError(
                "no Cloud Run region: pass --region or set CLOUDSDK_RUN_REGION (nothing was changed)"
            )
        if not _PROJECT.match(self.project):
            raise InvalidRequestError(f"{self.project!r} ({self.project_source}) is not a Google Cloud project id")
        if not _REGION.match(self.region):
            raise InvalidRequestError(f"{self.region!r} ({self.region_source}) is not a Google Cloud region")
        with api_errors(f"reading project {self.project}"):
            self._call(self._api("cloudresourcemanager", "v1").projects().get(projectId=self.project))
        who = getattr(credential, "service_account_email", None) or "Application Default Credentials"
        return f"project {self.project} ({self.project_source}), region {self.region} ({self.region_source}), as {who}"

    def plan(self, pool: str) -> list[Step]:
        self._check_pool(pool)
        enabled = self._enabled()
        steps = [self._service_step(service, service in enabled) for service in SERVICES]
        steps.append(self._repository_step(pool, readable="artifactregistry.googleapis.com" in enabled))
        account = self._read_account(self._email(pool))
        steps.append(self._service_account_step(pool, account))
        if self.credentials == "key":
            steps.append(self._job_role_step())
        bindings = self._bindings_step(pool, new_account=account is None)
        if bindings is not None:
            steps.append(bindings)
        if self.credentials == "key":
            steps.append(self._act_as_step(pool, new_account=account is None))
        return steps

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        if self.credentials != "key":
            return []  # the functions sign with their own identity: nothing to store
        return BLOCK.steps(pool, prefect, lambda: self._new_key(pool))

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        self._check_pool(pool)
        steps = list(BLOCK.deletions(pool, prefect))
        email = self._email(pool)
        account = self._read_account(email)
        if account is not None and self._ours(account, pool):
            member = f"serviceAccount:{email}"
            policy = self._policy()
            held = [r for r in self._project_roles() if member in _members(policy, r)]
            if held:
                steps.append(Step("IAM bindings", ", ".join(held), DELETE, email, self._unbind(email)))
            job_role = self._job_role_name()
            role = self._read_role(job_role) if job_role in held and _members(policy, job_role) == {member} else None
            if role is not None and not role.get("deleted"):  # the last pool using the role
                steps.append(Step("custom role", job_role, DELETE, "no pool uses it now", self._delete_role()))
            steps.append(
                Step("service account", email, DELETE, "with its keys and IAM policy", self._delete_account(email))
            )
        repository = self._repository_name(pool)
        found = self._read_repository(repository) if "artifactregistry.googleapis.com" in self._enabled() else None
        if found is not None and self._ours(found, pool):
            steps.append(
                Step(
                    "Artifact Registry repository",
                    repository.rsplit("/", 1)[-1],
                    DELETE,
                    "with the images in it",
                    self._delete_repository(repository),
                )
            )
        return steps

    def errors(self) -> AbstractContextManager[None]:
        return api_errors()

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        registry = defaults.get("_registry")
        notes = [f"push images to {registry}/<image>:<tag> (image namespace {registry})"] if registry else []
        if self.credentials == "role":
            notes.append(
                f"the functions use their own identity: it needs roles/run.developer in project {self.project} and "
                f"roles/iam.serviceAccountUser on {defaults.get('service_account_name', 'the pool service account')} "
                "(the pool's service account itself is given no role)"
            )
        return notes

    # -- steps -------------------------------------------------------------------------------------------------

    def _service_step(self, service: str, enabled: bool) -> Step:
        def run() -> dict[str, Any]:
            if not enabled:
                api = self._api("serviceusage", "v1")
                name = f"projects/{self.project}/services/{service}"
                operation = self._call(api.services().enable(name=name, body={}))
                self._wait(operation, lambda op: api.operations().get(name=op), f"enabling {service}")
            return {"project": self.project, "region": self.region}

        return Step("Google API", service, EXISTS if enabled else CREATE, "enabled with Service Usage", run=run)

    def _repository_step(self, pool: str, *, readable: bool) -> Step:
        name = self._repository_name(pool)
        found = self._read_repository(name) if readable else None
        if found is not None and not self._ours(found, pool):
            raise BackendError(
                f"Artifact Registry repository {name} exists and is not pushpool's for pool {pool}", backend="cloudrun"
            )
        repo = name.rsplit("/", 1)[-1]
        registry = f"{self.region}-docker.pkg.dev/{self.project}/{repo}"

        def run() -> dict[str, Any]:
            if found is None:
                api = self._api("artifactregistry", "v1")
                locations = api.projects().locations()
                operation = self._call(
                    locations.repositories().create(
                        parent=f"projects/{self.project}/locations/{self.region}",
                        repositoryId=repo,
                        body={
                            "format": "DOCKER",
                            "description": Marker(pool).description(),
                            "labels": Marker(pool).labels(),
                        },
                    )
                )
                self._wait(operation, lambda op: locations.operations().get(name=op), f"creating {name}")
            return {"_registry": registry}

        return Step("Artifact Registry repository", repo, EXISTS if found else CREATE, registry, run=run)

    def _service_account_step(self, pool: str, found: dict[str, Any] | None) -> Step:
        email = self._email(pool)
        if found is not None and not self._ours(found, pool):
            raise BackendError(
                f"service account {email} exists and is not pushpool's for pool {pool}", backend="cloudrun"
            )

        def run() -> dict[str, Any]:
            if found is None:
                self._call(
                    self._api("iam", "v1")
                    .projects()
                    .serviceAccounts()
                    .create(
                        name=f"projects/{self.project}",
                        body={
                            "accountId": email.split("@", 1)[0],
                            "serviceAccount": {
                                "displayName": f"pushpool {pool}"[:100],
                                "description": Marker(pool).description(),
                            },
                        },
                    )
                )
            return {"service_account_name": email}

        return Step("service account", email, EXISTS if found else CREATE, "what the pool's jobs run as", run=run)

    def _job_role_step(self) -> Step:
        """The project's custom role of Cloud Run job operations (key mode): made once, brought back if a deprovision
        deleted it (a deleted custom role keeps its id for weeks), its permissions set again if they differ."""
        name = self._job_role_name()
        found = self._read_role(name)
        held = sorted((found or {}).get("includedPermissions", []))
        action = CREATE if found is None or found.get("deleted") else EXISTS
        if action == EXISTS and held != sorted(JOB_PERMISSIONS):
            action = UPDATE

        def run() -> dict[str, Any]:
            roles = self._api("iam", "v1").projects().roles()
            body = {
                "title": "pushpool Cloud Run jobs",
                "description": "pushpool: the Cloud Run job operations a pool's key makes, nothing else",
                "includedPermissions": list(JOB_PERMISSIONS),
                "stage": "GA",
            }
            if found is None:
                self._call(roles.create(parent=f"projects/{self.project}", body={"roleId": JOB_ROLE_ID, "role": body}))
            elif found.get("deleted"):
                self._call(roles.undelete(name=name, body={"etag": found.get("etag")}))
            if action == UPDATE or (found or {}).get("deleted"):
                mask = "includedPermissions,title,description,stage"
                self._call(roles.patch(name=name, updateMask=mask, body=body))
            return {}

        return Step("custom role", name, action, f"{len(JOB_PERMISSIONS)} Cloud Run job permissions", run=run)

    def _bindings_step(self, pool: str, *, new_account: bool) -> Step | None:
        """The account's project bindings: the custom job role in key mode, none in role mode; any other binding of
        the account pushpool ever made (the legacy project-wide run.developer and serviceAccountUser; the job role of
        a pool now in role mode) is removed. None when there is nothing to say."""
        email = self._email(pool)
        member = f"serviceAccount:{email}"
        policy = self._policy()
        wanted = [self._job_role_name()] if self.credentials == "key" else []
        missing = [role for role in wanted if member not in _members(policy, role)]
        legacy = [role for role in self._project_roles() if role not in wanted and member in _members(policy, role)]
        if not wanted and not legacy:
            return None

        def run() -> dict[str, Any]:
            if missing or legacy:
                self._modify_policy(
                    lambda bindings: _set_member(bindings, member, add=wanted, remove=self._project_roles()),
                    new_member=new_account and bool(missing),
                )
            return {}

        if legacy:
            detail = f"{email} on project {self.project}: remove {', '.join(legacy)}"
            return Step("IAM bindings", ", ".join(wanted) or "none", UPDATE, detail, run=run)
        action = CREATE if missing else EXISTS
        return Step("IAM bindings", ", ".join(wanted), action, f"{email} on project {self.project}", run=run)

    def _act_as_step(self, pool: str, *, new_account: bool) -> Step:
        """``roles/iam.serviceAccountUser`` on the pool's account itself, for itself (key mode): the key may create
        jobs that run as this account, and as no other."""
        email = self._email(pool)
        member = f"serviceAccount:{email}"
        held = not new_account and member in _members(self._account_policy(email), ACT_AS_ROLE)

        def run() -> dict[str, Any]:
            if not held:
                self._grant_on_account(email, member, new_account=new_account)
            return {}

        detail = f"{email} on itself only (not the project)"
        return Step("service-account IAM binding", ACT_AS_ROLE, EXISTS if held else CREATE, detail, run=run)

    # -- deprovision -------------------------------------------------------------------------------------------

    def _unbind(self, email: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            member = f"serviceAccount:{email}"
            self._modify_policy(lambda bindings: _set_member(bindings, member, remove=self._project_roles()))
            return {}

        return run

    def _delete_role(self) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            self._call_absent(self._api("iam", "v1").projects().roles().delete(name=self._job_role_name()))
            return {}

        return run

    def _delete_account(self, email: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            accounts = self._api("iam", "v1").projects().serviceAccounts()
            self._call_absent(accounts.delete(name=f"projects/{self.project}/serviceAccounts/{email}"))
            return {}

        return run

    def _delete_repository(self, name: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            locations = self._api("artifactregistry", "v1").projects().locations()
            operation = self._call_absent(locations.repositories().delete(name=name))
            if operation:
                self._wait(operation, lambda op: locations.operations().get(name=op), f"deleting {name}")
            return {}

        return run

    # -- the key (only with --credentials key, only when the block is missing) ------------------------------

    def _new_key(self, pool: str) -> dict[str, Any]:
        """A new key of the pool's service account, as the block's data. Never logged, never returned elsewhere."""
        email = self._email(pool)
        keys = self._api("iam", "v1").projects().serviceAccounts().keys()
        with api_errors(f"creating a key for {email}"):
            key = self._call(
                keys.create(
                    name=f"projects/{self.project}/serviceAccounts/{email}",
                    body={"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"},
                )
            )
        try:
            info = json.loads(base64.b64decode(key["privateKeyData"]))
        except (KeyError, ValueError, TypeError):
            raise ProvisioningError(f"Google answered a key for {email} that is not a key file") from None
        return {"service_account_info": info, "project": self.project}

    # -- Google ------------------------------------------------------------------------------------------------

    def _google_credential(self) -> Any:
        if self._credential is None:
            import google.auth
            from google.auth import exceptions as auth_exceptions

            try:
                self._credential, found = google.auth.default(scopes=SCOPES)
            except auth_exceptions.DefaultCredentialsError:
                raise ConfigurationError(
                    "no Google credentials: run `gcloud auth application-default login` or set "
                    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (nothing was changed)"
                ) from None
            if not self.project and found:
                self.project, self.project_source = str(found), "the credentials' project"
        return self._credential

    def _api(self, name: str, version: str) -> Any:
        if name not in self._apis:
            from googleapiclient.discovery import build

            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            self._apis[name] = build(
                name,
                version,
                credentials=self._google_credential(),
                client_options=options,
                static_discovery=True,  # the discovery document shipped with the library: no fetch
                cache_discovery=False,
            )
        return self._apis[name]

    def _call(self, request: Any) -> Any:
        """Execute a request; 429 and 5xx are retried by the library (exponential backoff)."""
        return request.execute(num_retries=self.retries)

    def _call_absent(self, request: Any) -> Any:
        """Execute; a resource already gone (404) is success (None)."""
        from googleapiclient.errors import HttpError

        try:
            return self._call(request)
        except HttpError as exc:
            if http_status(exc) == 404:
                return None
            raise

    def _wait(self, operation: Mapping[str, Any], get: Callable[[str], Any], what: str) -> None:
        """Follow a long-running operation until done; its error leaves as the step's failure."""
        state = dict(operation)

        def done() -> bool:
            if not state.get("done"):
                state.update(self._call(get(str(state["name"]))))
            return bool(state.get("done"))

        wait_until(done, what=what, timeout=self.timeout, interval=self.interval, sleep=self.sleep)
        if state.get("error"):
            error = state["error"]
            raise BackendError(f"{what}: {error.get('code')}: {error.get('message', '')}", backend="cloudrun")

    def _enabled(self) -> set[str]:
        api = self._api("serviceusage", "v1")
        answer = self._call(
            api.services().batchGet(
                parent=f"projects/{self.project}", names=[f"projects/{self.project}/services/{s}" for s in SERVICES]
            )
        )
        return {
            str(s.get("config", {}).get("name") or s["name"].rsplit("/", 1)[-1])
            for s in answer.get("services", [])
            if s.get("state") == "ENABLED"
        }

    def _read_repository(self, name: str) -> dict[str, Any] | None:
        repositories = self._api("artifactregistry", "v1").projects().locations().repositories()
        return self._read(repositories.get(name=name))

    def _read_account(self, email: str) -> dict[str, Any] | None:
        accounts = self._api("iam", "v1").projects().serviceAccounts()
        return self._read(accounts.get(name=f"projects/{self.project}/serviceAccounts/{email}"))

    def _read(self, request: Any) -> dict[str, Any] | None:
        from googleapiclient.errors import HttpError

        try:
            return self._call(request)  # type: ignore[no-any-return]
        except HttpError as exc:
            if http_status(exc) == 404:
                return None
            raise

    def _read_role(self, name: str) -> dict[str, Any] | None:
        return self._read(self._api("iam", "v1").projects().roles().get(name=name))

    def _account_policy(self, email: str) -> dict[str, Any]:
        accounts = self._api("iam", "v1").projects().serviceAccounts()
        resource = f"projects/{self.project}/serviceAccounts/{email}"
        return self._call(accounts.getIamPolicy(resource=resource))  # type: ignore[no-any-return]

    def _grant_on_account(self, email: str, member: str, *, new_account: bool) -> None:
        """``member`` in ``ACT_AS_ROLE`` on the account's own IAM policy. A new account may be unknown to IAM for a
        while: its policy answers 404, or 400 on the write."""
        accounts = self._api("iam", "v1").projects().serviceAccounts()
        resource = f"projects/{self.project}/serviceAccounts/{email}"
        self._read_modify_write(
            email,
            read=lambda: self._account_policy(email),
            write=lambda policy: self._call(accounts.setIamPolicy(resource=resource, body={"policy": policy})),
            change=lambda bindings: _set_member(bindings, member, add=[ACT_AS_ROLE]),
            settle=(400, 404) if new_account else (),
        )

    def _policy(self) -> dict[str, Any]:
        api = self._api("cloudresourcemanager", "v1")
        body = {"options": {"requestedPolicyVersion": 3}}
        return self._call(api.projects().getIamPolicy(resource=self.project, body=body))  # type: ignore[no-any-return]

    def _modify_policy(self, change: Callable[[list[dict[str, Any]]], None], *, new_member: bool = False) -> None:
        """``change`` made on the project's IAM policy, written as version 3 (conditional bindings are kept as read).
        ``new_member``: the member is a service account just created, which IAM may not know for a while (400
        INVALID_ARGUMENT on the write)."""
        api = self._api("cloudresourcemanager", "v1")
        self._read_modify_write(
            f"project {self.project}",
            read=self._policy,
            write=lambda policy: self._call(
                api.projects().setIamPolicy(resource=self.project, body={"policy": {**policy, "version": 3}})
            ),
            change=change,
            settle=(400,) if new_member else (),
        )

    def _read_modify_write(
        self,
        what: str,
        *,
        read: Callable[[], dict[str, Any]],
        write: Callable[[dict[str, Any]], Any],
        change: Callable[[list[dict[str, Any]]], None],
        settle: tuple[int, ...],
    ) -> None:
        """The one read-modify-write of an IAM policy (the project's, an account's): read it, make ``change`` on its
        bindings (a binding left with no member is dropped), write it back with the etag it was read with. A
        concurrent change (409 ABORTED) is read again and the change made again on it, up to ``policy_attempts``;
        an answer in ``settle`` (a service account just created, not yet known to IAM) is tried again, with backoff,
        up to ``SETTLE_ATTEMPTS``."""
        from googleapiclient.errors import HttpError

        conflicts = unsettled = 0
        while True:
            try:
                policy = read()
                bindings = policy.setdefault("bindings", [])
                change(bindings)
                policy["bindings"] = [b for b in bindings if b.get("members")]
                write(policy)
                return
            except HttpError as exc:
                if http_status(exc) in settle and unsettled < SETTLE_ATTEMPTS:
                    unsettled += 1
                    self.sleep(min(self.interval * 2**unsettled, 10.0))
                    continue
                if http_status(exc) != 409 and google_status(exc) != "ABORTED":
                    raise
                conflicts += 1
                if conflicts == self.policy_attempts:
                    raise ProvisioningError(
                        f"the IAM policy of {what} kept changing meanwhile ({self.policy_attempts} attempts): run again"
                    ) from None
                self.sleep(min(0.5 * 2**conflicts, 8.0))

    # -- names ---------------------------------------------------------------------------------------------------

    def _check_pool(self, pool: str) -> None:
        if not _POOL.match(pool):
            raise InvalidRequestError(
                f"pool name {pool!r} cannot name Google resources (letters, digits, '-', '_', '.')"
            )

    def _job_role_name(self) -> str:
        return f"projects/{self.project}/roles/{JOB_ROLE_ID}"

    def _project_roles(self) -> tuple[str, ...]:
        """Every project role pushpool ever bound a pool's account to (what deprovision removes)."""
        return (*LEGACY_ROLES, self._job_role_name())

    def _email(self, pool: str) -> str:
        return f"{resource_id(pool, 30)}@{self.project}.iam.gserviceaccount.com"

    def _repository_name(self, pool: str) -> str:
        return f"projects/{self.project}/locations/{self.region}/repositories/{resource_id(pool, 63)}"

    @staticmethod
    def _ours(resource: Mapping[str, Any], pool: str) -> bool:
        return resource.get("description") == Marker(pool).description()


def _first(given: str | None, flag: str, env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str]:
    if given:
        return given, flag
    for name in names:
        if env.get(name):
            return env[name], name
    return None, ""


def _members(policy: Mapping[str, Any], role: str) -> set[str]:
    return {
        m
        for b in policy.get("bindings", [])
        if b.get("role") == role and not b.get("condition")
        for m in b.get("members", [])
    }


def _set_member(
    bindings: list[dict[str, Any]], member: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> None:
    """``member`` in the unconditional bindings of the roles ``add``, and out of those of ``remove`` (not in ``add``);
    conditional bindings and every other member are kept as they are."""
    for role in add:
        binding = next((b for b in bindings if b.get("role") == role and not b.get("condition")), None)
        if binding is None:
            bindings.append({"role": role, "members": [member]})
        elif member not in binding.setdefault("members", []):
            binding["members"].append(member)
    for binding in bindings:
        role = binding.get("role")
        if role in remove and role not in add and not binding.get("condition") and member in binding.get("members", []):
            binding["members"].remove(member)
