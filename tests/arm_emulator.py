"""A local Azure Resource Manager endpoint for Container Instances, over TLS on 127.0.0.1.

The real ``azure-mgmt-containerinstance`` client reaches it with its production pipeline: the bearer-token policy
(which refuses plain HTTP), azure-core's retry policy and ARM's long-running-operation handling. Tests pass a fake
credential object (no network, no IMDS) and ``connection_verify=<this server's self-signed certificate>``.

What the endpoint checks, and from where:

* every request carries ``Authorization: Bearer <a known token>`` (else 401 ``InvalidAuthenticationToken``, as ARM),
  and a token reaches only its own subscriptions (else 403 ``AuthorizationFailed``): ``TOKEN`` reaches every
  subscription unless ``add_account`` gives accounts their own; ``callers`` records which token made each call;
* ``api-version`` is the one the SDK was generated for (``ContainerInstanceManagementClient``'s configuration);
* every PUT body is deserialised with the SDK's own models (generated from Azure's published API description,
  ``containerInstance.json`` 2023-05-01): a value of the wrong type, a field the API does not define (dropped by the
  models: compared key by key), or a required field left empty (the models' ``_validation``) is a 400
  ``InvalidRequestContent``; the group name is checked against ACI's documented rule (1-63 characters, lowercase
  letters, digits, single hyphens inside), identities and registries against what the test declared.

What it mimics from ARM and ACI as documented (and where that is an assumption, said so):

* PUT answers 201 with ``Azure-AsyncOperation`` (an operation that is ``InProgress`` once, then ``Succeeded``);
  ``If-None-Match: *`` on an existing group is 412 (ARM's conditional create; whether ACI honours it cannot be proved
  here); a PUT on an existing group without it counts as a restart (``restarts``);
* the list of a resource group carries no instance views (Azure/azure-sdk-for-python#27068): only GET does;
* GET never returns ``secureValue``; stop deallocates (group state ``Stopped``, no container instance view); delete
  answers 200; logs are a capped tail (``tail``);
* faults on the test's command: the next N matching requests answer 429 (``Retry-After``) or 5xx; and the cloud's
  bad days of tests/faults.py (``bad_days``): throttling, 5xx, operations in progress for K polls, groups listed late,
  a container-group quota per subscription.

Groups move through their states only on the test's command (``start``, ``exit``, ``fail_provisioning``, ``vanish``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.faults import Faults, arm_answer
from tests.local_http import LocalHTTPServer

TOKEN = "fake-arm-token"
_GROUP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z0-9]$")
_RG = r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
_GROUPS = _RG + r"/providers/microsoft\.containerinstance/containergroups"
ROUTES = [
    ("GET", re.compile(rf"^{_RG}$", re.I), "resource_group"),
    ("GET", re.compile(rf"^{_GROUPS}$", re.I), "list"),
    ("PUT", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)$", re.I), "put"),
    ("GET", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)$", re.I), "get"),
    ("DELETE", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)$", re.I), "delete"),
    ("PATCH", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)$", re.I), "patch"),
    ("POST", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)/stop$", re.I), "stop"),
    ("GET", re.compile(rf"^{_GROUPS}/(?P<name>[^/]+)/containers/(?P<container>[^/]+)/logs$", re.I), "logs"),
    (
        "GET",
        re.compile(
            r"^/subscriptions/[^/]+/providers/microsoft\.containerinstance/locations/[^/]+/operations/"
            r"(?P<op>[^/]+)$",
            re.I,
        ),
        "operation",
    ),
]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, written to ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "arm.pem", directory / "arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeCredential:
    """A TokenCredential that never leaves the process (no IMDS, no login endpoint); counts its calls. ``token``: the
    bearer token it issues (an account of the emulator: ``ArmEmulator.add_account``)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.calls = 0
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.token, int(dt.datetime.now().timestamp()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.calls += 1
        return AccessTokenInfo(self.token, int(dt.datetime.now().timestamp()) + 3600)


@dataclass
class Group:
    sub: str
    rg: str
    body: dict[str, Any]  # as received (secureValues included: the container command and env to run locally)
    provisioning: str = "Creating"
    group_state: str | None = None
    container: dict[str, Any] | None = None  # currentState
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())


class ArmEmulator:
    api_version = "2023-05-01"
    log_tail_cap = 4096  # lines ACI keeps

    def __init__(self, workdir: Path, *, page_size: int = 100) -> None:
        from azure.mgmt.containerinstance import ContainerInstanceManagementClient  # noqa: F401 - the SDK is here
        from azure.mgmt.containerinstance._configuration import ContainerInstanceManagementClientConfiguration

        self.api_version = ContainerInstanceManagementClientConfiguration(FakeCredential(), "x").api_version
        self.cert, key = self_signed_certificate(workdir)
        self.lock = threading.RLock()
        self.resource_groups: dict[tuple[str, str], str] = {}
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.identities: set[str] = set()
        self.pullable: dict[str, set[str]] = {}  # registry server -> identities that may pull from it
        self.quota: int | None = None  # groups per subscription
        self.restarts = 0
        self.requests: list[tuple[str, str]] = []  # (method, route)
        self.paths: list[tuple[str, str]] = []  # (route, path) of each call, beside ``requests``: which group it read
        self.faults: list[list[Any]] = []  # [method, route, status, code, times]
        self.bad_days = Faults()  # operations: "METHOD /path" (tests/faults.py)
        self.page_size = page_size
        self.operations: dict[str, int] = {}
        self.resources: dict[str, dict[str, Any]] = {}  # other ARM resources, by lowercased id
        self.puts: list[str] = []  # their PUTs, in order
        self.deployed: list[tuple[str, dict[str, Any]]] = []  # groups created by ARM deployments (name, body)
        self.accounts: dict[str, set[str] | None] = {TOKEN: None}  # token -> its subscriptions (None: every one)
        self.callers: list[tuple[str, str, str, str | None]] = []  # (method, route, subscription, token) of each call
        self.server = LocalHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ArmEmulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the test's commands ---------------------------------------------------------------------------------

    def add_resource_group(self, sub: str, rg: str, location: str = "westeurope") -> None:
        self.resource_groups[(sub, rg.lower())] = location

    def fail_next(self, method: str, route: str, status: int, code: str, times: int = 1) -> None:
        with self.lock:
            self.faults.append([method, route, status, code, times])

    def count(self, route: str | None = None, method: str | None = None) -> int:
        return sum(1 for m, r in self.requests if (route is None or r == route) and (method is None or m == method))

    def group(self, resource_id: str) -> Group:
        parts = resource_id.split("/")
        return self.groups[(parts[2], parts[4].lower(), parts[-1])]

    def groups_of(self, run_id: str, attempt: str) -> int:
        return sum(
            1
            for g in self.groups.values()
            if g.body.get("tags", {}).get("pushpool-flow-run-id") == run_id
            and g.body.get("tags", {}).get("pushpool-attempt") == attempt
        )

    def start_container(self, resource_id: str) -> None:
        with self.lock:
            group = self.group(resource_id)
            group.provisioning, group.group_state = "Succeeded", "Running"
            group.container = {"state": "Running", "startTime": _now(), "detailStatus": ""}

    def exit(self, resource_id: str, code: int, lines: list[str]) -> None:
        with self.lock:
            group = self.group(resource_id)
            group.provisioning, group.group_state = "Succeeded", "Succeeded" if code == 0 else "Failed"
            group.logs += lines
            group.container = {
                "state": "Terminated",
                "exitCode": code,
                "startTime": (group.container or {}).get("startTime", _now()),
                "finishTime": _now(),
                "detailStatus": "Completed" if code == 0 else "Error",
            }

    def fail_provisioning(self, resource_id: str, message: str) -> None:
        with self.lock:
            group = self.group(resource_id)
            group.provisioning = "Failed"
            group.events.append({"type": "Warning", "name": "Failed", "message": message, "count": 1})

    def vanish(self, resource_id: str) -> None:
        with self.lock:
            parts = resource_id.split("/")
            self.groups.pop((parts[2], parts[4].lower(), parts[-1]), None)

    # -- ARM -----------------------------------------------------------------------------------------------------

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route, match = next(
            ((r, m) for verb, pattern, r in ROUTES if verb == method and (m := pattern.match(parts.path))), ("", None)
        )
        if match is None:
            if not parts.path.lower().startswith("/subscriptions/") and "/operations/" not in parts.path:
                return 404, {}, _error("NoRegisteredProviderFound", f"no route for {method} {parts.path}")
            route = "resource"
        with self.lock:
            self.requests.append((method, route))
            self.paths.append((route, parts.path))
            for fault in self.faults:
                if fault[0] == method and fault[1] == route and fault[4] > 0:
                    fault[4] -= 1
                    extra = {"Retry-After": "0"} if fault[2] == 429 else {}
                    return fault[2], extra, _error(fault[3], f"injected {fault[2]}")
            if bad := self.bad_days.check(f"{method} {parts.path}"):
                return arm_answer(bad)
        refused = self._authorize(method, route, parts.path, headers)
        if refused is not None:
            return refused
        if route == "resource":
            with self.lock:
                return self._resource(method, parts.path, query, body)
        expected = "2021-04-01" if route == "resource_group" else self.api_version
        if route != "operation" and query.get("api-version") != expected:
            return 400, {}, _error("InvalidApiVersionParameter", f"api-version {query.get('api-version')!r}")
        args = {k.lower(): v for k, v in match.groupdict().items()}
        with self.lock:
            return getattr(self, f"_{route}")(args, headers, body, query)

    # -- accounts: who may call what ---------------------------------------------------------------------------------

    def add_account(self, token: str, subscriptions: set[str]) -> None:
        """A token (a service principal's) that reaches only ``subscriptions``."""
        with self.lock:
            self.accounts[token] = set(subscriptions)

    def tokens_for(self, subscription: str | None = None, route: str | None = None) -> set[str | None]:
        """The tokens that made calls (about ``subscription``, on ``route``)."""
        with self.lock:
            return {
                t
                for _, r, sub, t in self.callers
                if (subscription is None or sub == subscription) and (route is None or r == route)
            }

    def _authorize(self, method: str, route: str, path: str, headers: dict[str, str]) -> tuple[int, dict, Any] | None:
        """ARM's answer to a call its token may not make: 401 for an unknown token, 403 for another's subscription."""
        auth = headers.get("authorization") or ""
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        found = re.match(r"^/subscriptions/([^/]+)", path, re.I)
        subscription = found.group(1) if found else ""
        with self.lock:
            self.callers.append((method, route, subscription, token))
            if token is None or token not in self.accounts:
                return 401, {}, _error("InvalidAuthenticationToken", "The access token is invalid.")
            allowed = self.accounts[token]
        if allowed is not None and subscription not in allowed:
            return (
                403,
                {},
                _error(
                    "AuthorizationFailed",
                    "The client does not have authorization to perform action over scope "
                    f"'/subscriptions/{subscription}' or the scope is invalid.",
                ),
            )
        return None

    def _resource_group(self, a, headers, body, query):
        location = self.resource_groups.get((a["sub"], a["rg"].lower()))
        if location is None:
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{a['rg']}' could not be found.")
        rid = f"/subscriptions/{a['sub']}/resourceGroups/{a['rg']}"
        tags = self.resources.get(rid.lower(), {}).get("tags", {})
        answer = {"id": rid, "name": a["rg"], "location": location, "tags": tags}
        return 200, {}, {**answer, "properties": {"provisioningState": "Succeeded"}}

    # -- other ARM resources (the provisioner's): stored as sent, with what ARM adds --------------------------

    def _resource(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, dict, Any]:
        key = path.lower().rstrip("/")
        parts = key.split("/")
        if "/operations/" in key:
            return self._operation({"op": parts[-1]}, {}, b"", {})
        if "api-version" not in query:
            return 400, {}, _error("MissingApiVersionParameter", "api-version is required")
        if len(parts) == 3:  # the subscription itself
            return 200, {}, {"subscriptionId": parts[2], "state": "Enabled"}
        in_rg = len(parts) >= 5 and parts[3] == "resourcegroups"
        if method == "GET":
            if key not in self.resources:
                return 404, {}, _error("ResourceNotFound", f"The Resource '{path}' was not found.")
            return 200, {}, self.resources[key]
        if method == "DELETE":
            if key not in self.resources:
                return 204, {}, None
            for other in [k for k in self.resources if k == key or k.startswith(key + "/")]:
                del self.resources[other]
            if len(parts) == 5 and in_rg:  # a resource group: with everything in it
                self.resource_groups.pop((parts[2], parts[4]), None)
                self.groups = {k: g for k, g in self.groups.items() if (k[0], k[1]) != (parts[2], parts[4])}
            op = uuid.uuid4().hex
            self.operations[op] = 0
            return 202, {"Location": f"{self.url}/subscriptions/{parts[2]}/operations/{op}", "Retry-After": "0"}, None
        data = json.loads(body or b"{}")
        if "/providers/microsoft.resources/deployments/" in key:
            return self._deployment(path, parts, data)
        if len(parts) > 5 and in_rg and (parts[2], parts[4]) not in self.resource_groups:
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{parts[4]}' could not be found.")
        self.puts.append(key)
        created = {"id": path, "name": path.rsplit("/", 1)[-1], **data}
        properties = created.setdefault("properties", {})
        headers: dict[str, str] = {}
        if re.search(r"/microsoft\.managedidentity/userassignedidentities/[^/]+$", key):  # not what is scoped to one
            properties.update(principalId=str(uuid.uuid4()), clientId=str(uuid.uuid4()))
        if "/microsoft.containerregistry/registries/" in key:
            properties.update(loginServer=f"{created['name']}.azurecr.io", provisioningState="Succeeded")
            op = uuid.uuid4().hex
            self.operations[op] = 0
            headers["Azure-AsyncOperation"] = f"{self.url}/subscriptions/{parts[2]}/operations/{op}?api-version=x"
        if "/roleassignments/" in key and not (properties.get("roleDefinitionId") and properties.get("principalId")):
            return 400, {}, _error("InvalidRoleAssignmentRequest", "roleDefinitionId and principalId are required")
        if "/roledefinitions/" in key and not (properties.get("assignableScopes") and properties.get("permissions")):
            return 400, {}, _error("InvalidRoleDefinition", "permissions and assignableScopes are required")
        if len(parts) == 5 and in_rg:  # a resource group
            self.resource_groups[(parts[2], parts[4])] = data["location"]
        self.resources[key] = created
        return 201, headers, created

    def _list(self, a, headers, body, query):
        if (a["sub"], a["rg"].lower()) not in self.resource_groups:
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{a['rg']}' could not be found.")
        mine = [
            (k, g)
            for k, g in sorted(self.groups.items())
            if k[:2] == (a["sub"], a["rg"].lower()) and self.bad_days.listed(_epoch(g.created))
        ]
        start = int(query.get("$skiptoken", 0))
        page = mine[start : start + self.page_size]
        answer: dict[str, Any] = {"value": [self._view(k, g, listed=True) for k, g in page]}
        if start + self.page_size < len(mine):
            base = f"{self.url}/subscriptions/{a['sub']}/resourceGroups/{a['rg']}/providers/Microsoft.ContainerInstance"
            answer["nextLink"] = (
                f"{base}/containerGroups?api-version={self.api_version}&$skiptoken={start + self.page_size}"
            )
        return 200, {}, answer

    def _put(self, a, headers, body, query):
        if (a["sub"], a["rg"].lower()) not in self.resource_groups:
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{a['rg']}' could not be found.")
        name = a["name"]
        if not (_GROUP_NAME.match(name) and len(name) <= 63):
            return 400, {}, _error("InvalidContainerGroupName", f"The container group name '{name}' is invalid.")
        key = (a["sub"], a["rg"].lower(), name)
        if key in self.groups and headers.get("if-none-match") == "*":
            return 412, {}, _error("PreconditionFailed", "The resource already exists.")
        try:
            data = json.loads(body)
        except ValueError:
            return 400, {}, _error("InvalidRequestContent", "the body is not JSON")
        problems = check_body(data)
        if problems:
            return 400, {}, _error("InvalidRequestContent", "; ".join(problems))
        refused = self._refusal(a["sub"], data)
        if refused:
            return refused
        if key in self.groups:
            self.restarts += 1
        self.groups[key] = Group(a["sub"], a["rg"], data)
        op = uuid.uuid4().hex
        self.operations[op] = 0
        location = self.resource_groups[(a["sub"], a["rg"].lower())]
        provider = f"{self.url}/subscriptions/{a['sub']}/providers/Microsoft.ContainerInstance"
        poll = f"{provider}/locations/{location}/operations/{op}?api-version={self.api_version}"
        return 201, {"Azure-AsyncOperation": poll, "Retry-After": "0"}, self._view(key, self.groups[key])

    def _refusal(self, sub: str, data: dict) -> tuple[int, dict, Any] | None:
        identities = set((data.get("identity") or {}).get("userAssignedIdentities") or {})
        known = {x.lower() for x in self.identities} | {k for k in self.resources if "/userassignedidentities/" in k}
        unknown = sorted(i for i in identities if i.lower() not in known)
        if unknown:
            return 400, {}, _error("InvalidIdentity", f"The user-assigned identity '{unknown[0]}' was not found.")
        for credential in data["properties"].get("imageRegistryCredentials") or []:
            server, identity = credential.get("server"), credential.get("identity")
            if identity and identity not in self.pullable.get(server, set()) and not self._acr_pull(server, identity):
                image = data["properties"]["containers"][0]["properties"]["image"]
                return (
                    400,
                    {},
                    _error(
                        "InaccessibleImage",
                        f"The image '{image}' in container group is not accessible. Please check the image and "
                        "registry credential.",
                    ),
                )
        count = sum(1 for k in self.groups if k[0] == sub)
        limit = self.quota if self.quota is not None else self.bad_days.quota
        if (self.quota is not None and count >= self.quota) or self.bad_days.over_quota(count):
            return (
                409,
                {},
                _error(
                    "ContainerGroupQuotaReached",
                    f"Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota "
                    f"'StandardCores' exceeded in region. Limit: '{limit}'.",
                ),
            )
        return None

    def _deployment(self, path: str, parts: list[str], data: dict) -> tuple[int, dict, Any]:
        """An ARM deployment (what Prefect's ACI worker sends): its container-group resource is evaluated the way ARM
        does for the expressions that template uses, then created as a PUT of that group would be."""
        sub, rg = path.split("/")[2], path.split("/")[4]
        if (sub, rg.lower()) not in self.resource_groups:
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        template = data["properties"]["template"]
        given = {k: v.get("value") for k, v in (data["properties"].get("parameters") or {}).items()}
        context = {
            "rg_id": f"/subscriptions/{sub}/resourceGroups/{rg}",
            "location": self.resource_groups[(sub, rg.lower())],
        }
        parameters: dict[str, Any] = {}
        variables = template.get("variables") or {}
        for name, declared in (template.get("parameters") or {}).items():
            parameters[name] = (
                given[name] if name in given else _arm(declared.get("defaultValue"), parameters, context, variables)
            )
        (resource,) = [
            r for r in template["resources"] if r["type"].lower() == "microsoft.containerinstance/containergroups"
        ]
        evaluated = _arm(resource, parameters, context, variables)
        name = evaluated.pop("name")
        body = {k: v for k, v in evaluated.items() if k not in ("type", "apiVersion", "dependsOn")}
        status, headers, answer = self._put({"sub": sub, "rg": rg, "name": name}, {}, json.dumps(body).encode(), {})
        if status >= 400:
            return status, headers, answer
        self.deployed.append((name, body))
        key = (sub, rg.lower(), name)  # a deployment ends when its group is provisioned: the container runs
        self.groups[key].provisioning, self.groups[key].group_state = "Succeeded", "Running"
        self.groups[key].container = {"state": "Running", "startTime": _now(), "detailStatus": ""}
        created = {
            "id": path,
            "name": path.rsplit("/", 1)[-1],
            "properties": {"provisioningState": "Succeeded", "mode": "Incremental"},
        }
        self.resources[path.lower()] = created
        return 201, {}, created

    def _acr_pull(self, server: str, identity: str) -> bool:
        """Whether a role assignment of AcrPull on the registry ``server`` names ``identity``'s principal."""
        principal = (self.resources.get(identity.lower(), {}).get("properties") or {}).get("principalId")
        scope = f"/microsoft.containerregistry/registries/{server.split('.')[0].lower()}/providers/"
        return bool(principal) and any(
            scope in key
            and "/roleassignments/" in key
            and value["properties"].get("principalId") == principal
            and value["properties"].get("roleDefinitionId", "").endswith("7f951dda-4ed3-4680-a7ca-43fe172d538d")
            for key, value in self.resources.items()
        )

    def _get(self, a, headers, body, query):
        key = (a["sub"], a["rg"].lower(), a["name"])
        if key not in self.groups:
            return 404, {}, _error("ResourceNotFound", f"The Resource '{a['name']}' was not found.")
        return 200, {}, self._view(key, self.groups[key])

    def _delete(self, a, headers, body, query):
        key = (a["sub"], a["rg"].lower(), a["name"])
        if key not in self.groups:
            return 204, {}, None
        group = self.groups.pop(key)
        return 200, {}, self._view(key, group)

    def _patch(self, a, headers, body, query):
        key = (a["sub"], a["rg"].lower(), a["name"])
        if key not in self.groups:
            return 404, {}, _error("ResourceNotFound", f"The Resource '{a['name']}' was not found.")
        self.groups[key].body["tags"] = json.loads(body).get("tags") or {}
        return 200, {}, self._view(key, self.groups[key])

    def _stop(self, a, headers, body, query):
        key = (a["sub"], a["rg"].lower(), a["name"])
        if key not in self.groups:
            return 404, {}, _error("ResourceNotFound", f"The Resource '{a['name']}' was not found.")
        group = self.groups[key]
        group.provisioning, group.group_state, group.container = "Succeeded", "Stopped", None
        return 204, {}, None

    def _logs(self, a, headers, body, query):
        key = (a["sub"], a["rg"].lower(), a["name"])
        group = self.groups.get(key)
        names = [c["name"] for c in (group.body["properties"]["containers"] if group else [])]
        if group is None or a["container"] not in [n.lower() for n in names]:
            return 404, {}, _error("ResourceNotFound", f"The Resource '{a['name']}' was not found.")
        tail = int(query.get("tail", self.log_tail_cap))
        lines = group.logs[-self.log_tail_cap :][-tail:] if tail else []
        return 200, {}, {"content": "".join(f"{line}\n" for line in lines)}

    def _operation(self, a, headers, body, query):
        polls = self.operations.get(a["op"])
        if polls is None:
            return 404, {}, _error("OperationNotFound", "no such operation")
        self.operations[a["op"]] = polls + 1
        return 200, {}, {"status": "InProgress" if polls < max(1, self.bad_days.lro_polls) else "Succeeded"}

    def _view(self, key: tuple[str, str, str], group: Group, *, listed: bool = False) -> dict[str, Any]:
        sub, _, name = key
        data = json.loads(json.dumps(group.body))
        data.update(
            id=f"/subscriptions/{sub}/resourceGroups/{group.rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}",
            name=name,
            type="Microsoft.ContainerInstance/containerGroups",
        )
        props = data["properties"]
        props["provisioningState"] = group.provisioning
        for container in props["containers"]:
            for env in container["properties"].get("environmentVariables") or []:
                env.pop("secureValue", None)  # never returned by ARM
        if not listed:
            props["instanceView"] = {"state": group.group_state, "events": group.events}
            if group.container is not None:
                props["containers"][0]["properties"]["instanceView"] = {
                    "restartCount": 0,
                    "currentState": group.container,
                    "events": [],
                }
        return data


def check_body(data: Any) -> list[str]:
    """A PUT body judged with the SDK's own models: types, fields the API defines, required fields."""
    from azure.mgmt.containerinstance.models import ContainerGroup

    if not isinstance(data, dict):
        return ["the body is not an object"]
    try:
        model = ContainerGroup.deserialize(data)
    except Exception as exc:  # noqa: BLE001 - DeserializationError: a value of the wrong type
        return [f"not a ContainerGroup: {str(exc).splitlines()[0]}"]
    problems = _required(model, "")
    dropped = sorted(_paths(data) - _paths(model.serialize(keep_readonly=True)))
    problems += [f"unknown field {path}" for path in dropped]
    if not data.get("location"):
        problems.append("location is required")
    return problems


def _required(model: Any, path: str) -> list[str]:
    found = []
    for attr, rules in model._validation.items():
        if rules.get("required") and not rules.get("readonly") and getattr(model, attr, None) is None:
            found.append(f"{path}{model._attribute_map[attr]['key']} is required")
    for attr, spec in model._attribute_map.items():
        value = getattr(model, attr, None)
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "_validation"):
                found += _required(item, f"{path}{spec['key']}.")
    return found


def _paths(data: Any, prefix: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            if key not in ("tags", "userAssignedIdentities"):
                found |= _paths(value, path)
    elif isinstance(data, list):
        for item in data:
            found |= _paths(item, prefix + "[]")
    return found


class _Obj(dict):
    """An ARM object: members by ``.name``, case-insensitively (resourceGroup().location)."""

    def __getattr__(self, name: str) -> Any:
        for key, value in self.items():
            if key.lower() == name.lower():
                return _Obj(value) if isinstance(value, dict) else value
        raise AttributeError(name)


def _arm_functions(parameters: dict[str, Any], variables: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    """ARM's template functions as documented (learn.microsoft.com/azure/azure-resource-manager/templates/
    template-functions-*), written for the emulator independently of pushpool's evaluator, keyed by lower-case name."""
    sub = context["rg_id"].split("/")[2]

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v)
        return json.dumps(v, separators=(",", ":")) if isinstance(v, dict | list) else ("" if v is None else str(v))

    def fmt(template: str, *args: Any) -> str:
        return re.sub(r"{(\d+)}", lambda m: text(args[int(m[1])]), template)

    def resource_id(*parts: str) -> str:
        namespace, *types = parts[0].split("/")
        names = parts[1:]
        return f"{context['rg_id']}/providers/{namespace}/" + "/".join(
            f"{t}/{n}" for t, n in zip(types, names, strict=True)
        )

    def unique_string(*parts: str) -> str:  # ARM's is a 13-character hash; this one is a stand-in of the same shape
        return hashlib.sha256("-".join(p.lower() for p in parts).encode()).hexdigest()[:13]

    return {
        "parameters": lambda n: parameters[n],
        "variables": lambda n: _arm(variables[n], parameters, context, variables),
        "resourcegroup": lambda: _Obj(
            id=context["rg_id"], name=context["rg_id"].rsplit("/", 1)[-1], location=context["location"]
        ),
        "subscription": lambda: _Obj(id=f"/subscriptions/{sub}", subscriptionId=sub),
        "uniquestring": unique_string,
        "resourceid": resource_id,
        "concat": lambda *a: (
            [x for v in a for x in v] if a and all(isinstance(x, list) for x in a) else "".join(map(text, a))
        ),
        "format": fmt,
        "string": text,
        "tolower": lambda s: s.lower(),
        "toupper": lambda s: s.upper(),
        "trim": lambda s: s.strip(),
        "replace": lambda s, a, b: s.replace(a, b),
        "substring": lambda s, i, n=None: s[i:] if n is None else s[i : i + n],
        "length": len,
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "int": int,
        "if": lambda c, a, b: a if c else b,
        "equals": lambda a, b: a == b,
        "not": lambda a: not a,
        "createarray": lambda *a: list(a),
        "empty": lambda v: not v,
        "true": True,
        "false": False,
        "null": None,
    }


def _arm(value: Any, parameters: dict[str, Any], context: dict[str, str], variables: dict | None = None) -> Any:
    """An ARM template value with its expressions evaluated: each expression is translated to a Python expression
    over :func:`_arm_functions` (names case-insensitive, '' inside a string literal is a quote)."""
    if isinstance(value, dict):
        return {k: _arm(v, parameters, context, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_arm(v, parameters, context, variables) for v in value]
    if not isinstance(value, str) or not value.startswith("["):
        return value
    if value.startswith("[["):
        return value[1:]
    if not value.endswith("]"):
        return value
    functions = _arm_functions(parameters, variables or {}, context)
    python = re.sub(
        r"'((?:[^']|'')*)'|([A-Za-z_]\w*)",
        lambda m: (
            repr(m[1].replace("''", "'"))
            if m[1] is not None
            else (f"_f[{m[2].lower()!r}]" if m.start() == 0 or m.string[m.start() - 1] != "." else m[2])
        ),
        value[1:-1],
    )
    try:
        return eval(python, {"__builtins__": {}, "_f": functions})  # the emulator's own test templates, no builtins
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"the emulator cannot evaluate {value!r}: {exc}") from None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _handler(emulator: ArmEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: request bodies may hold secureValues
            return None

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, answer = emulator.handle(self.command, self.path, headers, body)
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            if answer is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

    return Handler
