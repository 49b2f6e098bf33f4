"""Local Service Usage, Artifact Registry, IAM and Resource Manager APIs on 127.0.0.1 (one port), for the Cloud Run
provisioner's real google-api-python-client discovery clients.

Request checking comes from Google, not from us: requests are routed by the methods' ``flatPath`` and ``httpMethod``
in the discovery documents google-api-python-client ships (serviceusage v1, artifactregistry v1, iam v1,
cloudresourcemanager v1); query parameters must be ones the method declares (required ones present), and every body
is validated against the method's request schema (tests/gcp_emulator.py's ``schema_errors``: unknown fields, wrong
types, enum values) — a body Google would refuse is refused with 400 INVALID_ARGUMENT. Google's own rules on top:
account and repository ids, a disabled API answers 403 SERVICE_DISABLED, ``setIamPolicy`` with a stale etag answers 409
ABORTED, a member that is not an existing service account 400, a role that is neither predefined (``roles/``) nor an
existing, undeleted custom role of the project 400. A service account has its own IAM policy (resource-level, read
and written like the project's, gone with the account); a deleted custom role stays readable (``deleted``) and can be
undeleted, and its id cannot be used again meanwhile. ``requests`` records (method id, HTTP method, path).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import googleapiclient

from tests.gcp_emulator import ApiError, schema_errors, service_account_info
from tests.local_http import LocalHTTPServer

_DOCS = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")
DOCS = {
    name: json.load(open(os.path.join(_DOCS, f"{name}.json")))  # noqa: SIM115
    for name in ("serviceusage.v1", "artifactregistry.v1", "iam.v1", "cloudresourcemanager.v1")
}
IMPLEMENTED = (
    "serviceusage.services.batchGet",
    "serviceusage.services.enable",
    "serviceusage.operations.get",
    "artifactregistry.projects.locations.repositories.get",
    "artifactregistry.projects.locations.repositories.create",
    "artifactregistry.projects.locations.repositories.delete",
    "artifactregistry.projects.locations.operations.get",
    "iam.projects.serviceAccounts.get",
    "iam.projects.serviceAccounts.create",
    "iam.projects.serviceAccounts.delete",
    "iam.projects.serviceAccounts.keys.create",
    "iam.projects.serviceAccounts.getIamPolicy",
    "iam.projects.serviceAccounts.setIamPolicy",
    "iam.projects.roles.get",
    "iam.projects.roles.create",
    "iam.projects.roles.patch",
    "iam.projects.roles.delete",
    "iam.projects.roles.undelete",
    "cloudresourcemanager.projects.get",
    "cloudresourcemanager.projects.getIamPolicy",
    "cloudresourcemanager.projects.setIamPolicy",
)
READ_ONLY = frozenset({m for m in IMPLEMENTED if m.endswith((".get", ".batchGet", ".getIamPolicy"))})
REGIONS = frozenset({"us-central1", "us-east1", "europe-west1", "asia-east1"})
_ROLE_ID = re.compile(r"^[A-Za-z0-9_.]{3,64}$")
_ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
_REPOSITORY_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def _walk(node: Mapping[str, Any]) -> Any:
    yield from node.get("methods", {}).values()
    for child in node.get("resources", {}).values():
        yield from _walk(child)


def _routes() -> list[tuple[str, re.Pattern[str], str, Mapping[str, Any], Mapping[str, Any]]]:
    found = []
    for doc in DOCS.values():
        for method in _walk(doc):
            if method["id"] in IMPLEMENTED:
                pattern = re.sub(r"\\\{[^}]+\\\}", "([^/:]+)", re.escape("/" + method["flatPath"]))
                found.append((method["httpMethod"], re.compile(pattern + "$"), method["id"], method, doc))
    assert {r[2] for r in found} == set(IMPLEMENTED)
    return found


ROUTES = _routes()


class ProvisionEmulator:
    def __init__(self, project: str = "pushpool-test") -> None:
        self.lock = threading.RLock()
        self.projects = {project}
        self.enabled: set[tuple[str, str]] = set()  # (project, service)
        self.repositories: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}  # email -> ServiceAccount
        self.keys: dict[str, list[str]] = {}  # email -> key names
        self.account_policies: dict[str, dict[str, Any]] = {}  # email -> the service account's own IAM policy
        self.roles: dict[str, dict[str, Any]] = {}  # projects/<p>/roles/<id> -> Role (custom roles)
        self.policies: dict[str, dict[str, Any]] = {
            project: {
                "version": 1,
                "etag": "BwXXXXXX0=",
                "bindings": [{"role": "roles/owner", "members": ["user:owner@example.com"]}],
            }
        }
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.bodies: list[Any] = []
        self.answers: list[str] = []  # every response body sent, to check secrets never appear elsewhere
        self.policy_conflicts = 0  # setIamPolicy calls to answer 409 ABORTED (a concurrent change meanwhile)
        self.iam_lag = 0  # setIamPolicy calls that do not yet know a service account just created (400)
        self._unseen: dict[str, int] = {}
        self.server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ProvisionEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests read -------------------------------------------------------------------------------------------

    def mutations(self) -> list[str]:
        with self.lock:
            return [m for m, _, _ in self.requests if m not in READ_ONLY]

    def members(self, project: str, role: str) -> list[str]:
        with self.lock:
            return [m for b in self.policies[project]["bindings"] if b["role"] == role for m in b["members"]]

    def account_members(self, email: str, role: str) -> list[str]:
        """The members of ``role`` in the service account ``email``'s own IAM policy."""
        with self.lock:
            policy = self.account_policies.get(email, {})
            return [m for b in policy.get("bindings", []) if b["role"] == role for m in b["members"]]

    # -- the API -------------------------------------------------------------------------------------------------------

    def handle(self, verb: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        for http_method, pattern, method_id, method, doc in ROUTES:
            match = pattern.match(path) if http_method == verb else None
            if match is None:
                continue
            with self.lock:
                self.requests.append((method_id, verb, path))
                self.bodies.append(body)
            self._check(doc, method, query, body)
            handler = getattr(self, "_" + method_id.split(".", 1)[1].replace(".", "_"))
            with self.lock:
                return handler(*(unquote(g) for g in match.groups()), query=query, body=body or {})
        raise ApiError(404, f"Method not found: {verb} {path}")

    def _check(self, doc: Mapping[str, Any], method: Mapping[str, Any], query: Mapping[str, Any], body: Any) -> None:
        declared = {k for k, v in method.get("parameters", {}).items() if v["location"] == "query"}
        standard = set(doc.get("parameters", {}))
        unknown = [k for k in query if k not in declared | standard]
        if unknown:
            raise ApiError(
                400, f"Invalid JSON payload received. Unknown name {unknown[0]!r}: Cannot bind query parameter"
            )
        for name in declared:
            if method["parameters"][name].get("required") and name not in query:
                raise ApiError(400, f"Required parameter {name!r} is missing")
        schema = method.get("request", {}).get("$ref")
        if schema is None:
            if body:
                raise ApiError(400, "Invalid JSON payload received: this method takes no body")
            return
        errors = schema_errors(doc, schema, body if body is not None else {})
        if errors:
            raise ApiError(400, "; ".join(errors))

    def _project(self, project: str) -> None:
        if project not in self.projects:
            raise ApiError(403, f"The caller does not have permission, or project {project} does not exist")

    def _needs(self, project: str, service: str) -> None:
        self._project(project)
        if (project, service) not in self.enabled:
            raise ApiError(
                403, f"{service} API has not been used in project {project} before or it is disabled (SERVICE_DISABLED)"
            )

    def _operation(self, name: str, response: dict[str, Any] | None) -> dict[str, Any]:
        self.operations[name] = {"name": name, "done": True, "response": response or {}}
        return {"name": name, "done": False}

    # serviceusage

    def _services_batchGet(self, kind: str, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        names = query.get("names", [])
        if not names or kind != "projects":
            raise ApiError(400, "names: at least one service name is required")
        services = []
        for name in names:
            service = name.rsplit("/", 1)[-1]
            state = "ENABLED" if (project, service) in self.enabled else "DISABLED"
            services.append(
                {"name": f"projects/123456/services/{service}", "config": {"name": service}, "state": state}
            )
        return 200, {"services": services}

    def _services_enable(self, kind: str, project: str, service: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        if service not in ("run.googleapis.com", "artifactregistry.googleapis.com", "iam.googleapis.com"):
            raise ApiError(403, f"Not found or permission denied for service(s): {service}")
        self.enabled.add((project, service))
        return 200, self._operation(f"operations/acf.p2-{uuid.uuid4().hex[:12]}", {"service": {"state": "ENABLED"}})

    def _operations_get(self, operation: str, *, query: Any, body: Any) -> tuple[int, Any]:
        return self._get_operation(f"operations/{operation}")

    def _get_operation(self, name: str) -> tuple[int, Any]:
        if name not in self.operations:
            raise ApiError(404, f"Operation {name} not found")
        return 200, self.operations[name]

    # artifactregistry

    def _projects_locations_repositories_get(
        self, project: str, region: str, repo: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._needs(project, "artifactregistry.googleapis.com")
        name = f"projects/{project}/locations/{region}/repositories/{repo}"
        if name not in self.repositories:
            raise ApiError(404, f"Requested entity was not found: {name}")
        return 200, self.repositories[name]

    def _projects_locations_repositories_create(
        self, project: str, region: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._needs(project, "artifactregistry.googleapis.com")
        if region not in REGIONS:
            raise ApiError(400, f"Invalid location {region!r}")
        repo = query["repositoryId"][0]
        if not _REPOSITORY_ID.match(repo):
            raise ApiError(400, f"Invalid repository id {repo!r}")
        if body.get("format") != "DOCKER":
            raise ApiError(400, "format: this test expects DOCKER repositories")
        name = f"projects/{project}/locations/{region}/repositories/{repo}"
        if name in self.repositories:
            raise ApiError(409, f"the repository already exists: {name}")
        self.repositories[name] = {**body, "name": name, "createTime": "2026-01-01T00:00:00Z"}
        operation = f"projects/{project}/locations/{region}/operations/{uuid.uuid4()}"
        return 200, self._operation(
            operation,
            {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.Repository", **self.repositories[name]},
        )

    def _projects_locations_repositories_delete(
        self, project: str, region: str, repo: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._projects_locations_repositories_get(project, region, repo, query=query, body=body)
        del self.repositories[f"projects/{project}/locations/{region}/repositories/{repo}"]
        return 200, self._operation(f"projects/{project}/locations/{region}/operations/{uuid.uuid4()}", {})

    def _projects_locations_operations_get(
        self, project: str, region: str, operation: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        return self._get_operation(f"projects/{project}/locations/{region}/operations/{operation}")

    # iam

    def _projects_serviceAccounts_get(self, project: str, email: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        if email not in self.accounts:
            raise ApiError(404, f"Unknown service account {email}")
        return 200, self.accounts[email]

    def _projects_serviceAccounts_create(self, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        account_id = body.get("accountId", "")
        if not _ACCOUNT_ID.match(account_id):
            raise ApiError(400, f"Invalid account id {account_id!r}: 6-30 lowercase letters, digits and hyphens")
        account = body.get("serviceAccount") or {}
        if len(account.get("displayName", "")) > 100 or len(account.get("description", "")) > 256:
            raise ApiError(400, "displayName is limited to 100 characters, description to 256")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise ApiError(409, f"Service account {account_id} already exists within project projects/{project}.")
        self._unseen[email] = self.iam_lag
        self.accounts[email] = {
            **account,
            "name": f"projects/{project}/serviceAccounts/{email}",
            "projectId": project,
            "uniqueId": str(uuid.uuid4().int)[:21],
            "email": email,
            "etag": "MDEwMjE5MjA=",
        }
        return 200, self.accounts[email]

    def _projects_serviceAccounts_delete(self, project: str, email: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._projects_serviceAccounts_get(project, email, query=query, body=body)
        del self.accounts[email]
        self.keys.pop(email, None)
        self.account_policies.pop(email, None)
        return 200, {}

    def _projects_serviceAccounts_getIamPolicy(
        self, project: str, email: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._projects_serviceAccounts_get(project, email, query=query, body=body)
        policy = self.account_policies.setdefault(email, {"version": 1, "etag": "ACAB"})
        return 200, copy.deepcopy(policy)

    def _projects_serviceAccounts_setIamPolicy(
        self, project: str, email: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._projects_serviceAccounts_get(project, email, query=query, body=body)
        current = self.account_policies.setdefault(email, {"version": 1, "etag": "ACAB"})
        policy = body.get("policy") or {}
        if policy.get("etag") != current["etag"]:
            raise ApiError(
                409, "There were concurrent policy changes. Please retry the whole read-modify-write (ABORTED)"
            )
        self._check_bindings(project, policy)
        self.account_policies[email] = {**policy, "etag": base64.b64encode(uuid.uuid4().bytes[:8]).decode()}
        return 200, copy.deepcopy(self.account_policies[email])

    def _projects_roles_get(self, project: str, role: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        name = f"projects/{project}/roles/{role}"
        if name not in self.roles:
            raise ApiError(404, f"The role named {name} was not found.")
        return 200, copy.deepcopy(self.roles[name])

    def _projects_roles_create(self, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        role_id = body.get("roleId", "")
        if not _ROLE_ID.match(role_id):
            raise ApiError(400, f"Invalid role id {role_id!r}")
        name = f"projects/{project}/roles/{role_id}"
        if name in self.roles:  # also while deleted: the id is taken until the role is purged
            raise ApiError(409, f"A role named {role_id} in projects/{project} already exists.")
        role = body.get("role") or {}
        self._check_permissions(role)
        self.roles[name] = {**role, "name": name, "etag": "BwW0"}
        return 200, copy.deepcopy(self.roles[name])

    def _projects_roles_patch(self, project: str, role: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._projects_roles_get(project, role, query=query, body=body)
        name = f"projects/{project}/roles/{role}"
        if self.roles[name].get("deleted"):
            raise ApiError(400, f"You can't update a deleted role: {name}")
        self._check_permissions(body)
        fields = (query.get("updateMask") or [""])[0].split(",")
        self.roles[name].update({k: v for k, v in body.items() if k in fields})
        self.roles[name]["etag"] = base64.b64encode(uuid.uuid4().bytes[:4]).decode()
        return 200, copy.deepcopy(self.roles[name])

    def _projects_roles_delete(self, project: str, role: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._projects_roles_get(project, role, query=query, body=body)
        name = f"projects/{project}/roles/{role}"
        if self.roles[name].get("deleted"):
            raise ApiError(400, f"The role {name} is already deleted.")
        self.roles[name]["deleted"] = True
        return 200, copy.deepcopy(self.roles[name])

    def _projects_roles_undelete(self, project: str, role: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._projects_roles_get(project, role, query=query, body=body)
        name = f"projects/{project}/roles/{role}"
        if not self.roles[name].get("deleted"):
            raise ApiError(400, f"The role {name} is not deleted.")
        self.roles[name].pop("deleted")
        return 200, copy.deepcopy(self.roles[name])

    @staticmethod
    def _check_permissions(role: Mapping[str, Any]) -> None:
        for permission in role.get("includedPermissions", []):
            if not re.match(r"^[a-z]+\.[a-zA-Z]+\.[a-zA-Z]+$", permission):
                raise ApiError(400, f"Permission {permission} is not valid.")

    def _projects_serviceAccounts_keys_create(
        self, project: str, email: str, *, query: Any, body: Any
    ) -> tuple[int, Any]:
        self._projects_serviceAccounts_get(project, email, query=query, body=body)
        info = service_account_info(project, f"{self.endpoint}/token", email)
        key_id = info["private_key_id"]
        name = f"projects/{project}/serviceAccounts/{email}/keys/{key_id}"
        self.keys.setdefault(email, []).append(name)
        data = base64.b64encode(json.dumps(info).encode()).decode()
        return 200, {"name": name, "privateKeyType": body.get("privateKeyType"), "privateKeyData": data}

    # cloudresourcemanager

    def _projects_get(self, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        return 200, {"projectId": project, "projectNumber": "123456", "lifecycleState": "ACTIVE"}

    def _projects_getIamPolicy(self, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        return 200, copy.deepcopy(self.policies[project])

    def _projects_setIamPolicy(self, project: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._project(project)
        current = self.policies[project]
        if self.policy_conflicts > 0:  # someone else changed the policy just now
            self.policy_conflicts -= 1
            current["etag"] = base64.b64encode(uuid.uuid4().bytes[:8]).decode()
        policy = body.get("policy") or {}
        if policy.get("etag") != current["etag"]:
            raise ApiError(
                409, "There were concurrent policy changes. Please retry the whole read-modify-write (ABORTED)"
            )
        self._check_bindings(project, policy)
        self.policies[project] = {**policy, "etag": base64.b64encode(uuid.uuid4().bytes[:8]).decode()}
        return 200, copy.deepcopy(self.policies[project])

    def _check_bindings(self, project: str, policy: Mapping[str, Any]) -> None:
        for binding in policy.get("bindings", []):
            role = binding.get("role", "")
            custom = role.startswith(f"projects/{project}/roles/")
            if custom and (role not in self.roles or self.roles[role].get("deleted")):
                raise ApiError(400, f"Role {role} does not exist or is deleted.")
            if not (role.startswith("roles/") or custom) or not binding.get("members"):
                raise ApiError(400, f"Invalid binding {binding!r}")
            for member in binding["members"]:
                email = member.split(":", 1)[-1]
                if not (member.startswith("serviceAccount:") and email.endswith(".iam.gserviceaccount.com")):
                    continue
                unseen = self._unseen.get(email, 0) > 0  # created, but not yet known to IAM
                if unseen:
                    self._unseen[email] -= 1
                if email not in self.accounts or unseen:
                    raise ApiError(400, f"Service account {email} does not exist.")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    try:
                        body = json.loads(raw) if raw else None
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    code, answer = emulator.handle(self.command, url.path, parse_qs(url.query), body)
                except ApiError as exc:
                    code = exc.code
                    status = "ABORTED" if "ABORTED" in exc.message else _STATUS.get(exc.code, "UNKNOWN")
                    answer = {"error": {"code": exc.code, "message": exc.message, "status": status}}
                data = json.dumps(answer).encode()
                with emulator.lock:
                    emulator.answers.append(data.decode())
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        return Handler
