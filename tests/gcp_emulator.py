"""A local Cloud Run Admin API v2 (and the Cloud Logging ``entries:list`` it needs) on 127.0.0.1, for the real
``google.cloud.run_v2`` clients over REST.

Request checking comes from Google, not from us: every request body is validated against the method's request schema
in the ``run.v2`` (``logging.v2``) discovery document that google-api-python-client ships — unknown fields, wrong
types, values outside an enum are refused with 400 INVALID_ARGUMENT, as Google would. Resource names follow Google's
rules (job ids, project ids, known regions). Executions move only when the test says so (``exit``, ``vanish``, …);
``fail_next`` injects 429/5xx answers, and ``bad_days`` (tests/faults.py) the cloud's bad days: throttling and 5xx as
Google spells them, operations ``done: false`` for K polls, jobs and executions listed late, a jobs-per-region quota
(Cloud Run's 1,000); ``requests`` records every call (method, path) for counting. RunJob does not refuse a stale
``etag`` unless ``run_checks_etag`` (Cloud Run does not document that it does: the strictest reading), so a second
RunJob of one job makes a second execution. ``/token``
issues access tokens for a service-account key file whose ``token_uri`` points here (Application Default
Credentials without Google).

Accounts (``add_account``): once any is added, every call must be signed by a known service account — a self-signed JWT
of its key (what the run_v2 REST clients send) or an access token ``/token`` issued for it — else 401 UNAUTHENTICATED,
and may touch only the projects that account was given, else 403 PERMISSION_DENIED (Google's answer for a resource
in a project the caller has no role in). Without accounts every call is accepted, as before. ``callers`` records
which account signed each call (None: anonymous or unknown).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os
import re
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import googleapiclient

from tests.faults import Faults, google_error, google_quota
from tests.local_http import LocalHTTPServer

_DOCS = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")
RUN = json.load(open(os.path.join(_DOCS, "run.v2.json")))  # noqa: SIM115
RUN_V1 = json.load(open(os.path.join(_DOCS, "run.v1.json")))  # noqa: SIM115 - Prefect's `cloud-run` (v1) worker's API
LOGGING = json.load(open(os.path.join(_DOCS, "logging.v2.json")))  # noqa: SIM115

REGIONS = frozenset({"us-central1", "us-east1", "us-east4", "us-west1", "europe-west1", "europe-west4", "asia-east1"})
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_JOB_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def service_account_info(project: str, token_uri: str, email: str | None = None) -> dict[str, Any]:
    """A service-account key file's contents (a real RSA key) whose ``token_uri`` is ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem.decode(),
        "client_email": email or f"pushpool-test@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


V1_PREFIX = "/apis/run.googleapis.com/v1/"


def _drop_nulls(value: Any) -> Any:
    """``value`` without its JSON nulls (proto3 JSON reads a null field as unset)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(resource: Mapping[str, Any]) -> float:
    """A job's or execution's ``createTime`` in epoch seconds."""
    return (
        dt.datetime.strptime(resource["createTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=dt.timezone.utc)
        .timestamp()
    )


class ApiError(Exception):
    def __init__(self, code: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or []

    def body(self) -> dict[str, Any]:
        """Google's error body (``GoogleRpcStatus`` with the HTTP code and its canonical status)."""
        error = {"code": self.code, "message": self.message, "status": _STATUS.get(self.code, "UNKNOWN")}
        return {"error": {**error, "details": self.details} if self.details else error}


# -- validation against Google's discovery documents ---------------------------------------------------------------


def schema_errors(doc: Mapping[str, Any], schema: str, value: Any, path: str = "") -> list[str]:
    """What Google's discovery document says is wrong with ``value`` as a ``schema``."""
    if not isinstance(value, dict):
        return [f"{path or schema}: expected an object"]
    properties = doc["schemas"][schema].get("properties", {})
    errors: list[str] = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in properties:
            errors.append(f"Invalid JSON payload received. Unknown name \"{key}\" at '{path or schema}'")
            continue
        errors += _value_errors(doc, properties[key], item, where)
    return errors


def _value_errors(doc: Mapping[str, Any], prop: Mapping[str, Any], value: Any, where: str) -> list[str]:
    if "$ref" in prop:
        return schema_errors(doc, prop["$ref"], value, where)
    kind = prop.get("type")
    if kind == "string":
        if "enum" in prop:  # the client sends enums as numbers (enum-encoding=int) or names
            ok = value in prop["enum"] or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            return [] if ok else [f"{where}: invalid value {value!r} for enum"]
        if prop.get("format") in ("int64", "uint64"):
            ok = isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
            return [] if ok else [f"{where}: invalid int64 {value!r}"]
        if prop.get("format") == "google-duration":
            ok = isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?s", value) is not None
            return [] if ok else [f"{where}: invalid duration {value!r}"]
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    if kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.lstrip("-").isdigit()
        )
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if kind == "number":
        return [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{where}: not a number"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in _value_errors(doc, prop["items"], v, f"{where}[{i}]")]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        inner = prop.get("additionalProperties")
        return [e for k, v in value.items() for e in (_value_errors(doc, inner, v, f"{where}.{k}") if inner else [])]
    return []


def _method(doc: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = doc
    for resource in path[:-1]:
        node = node["resources"][resource]
    return node["methods"][path[-1]]  # type: ignore[no-any-return]


def request_schema(doc: Mapping[str, Any], *path: str) -> str:
    return str(_method(doc, *path)["request"]["$ref"])


# -- who may call: service accounts and their projects ----------------------------------------------------------------


class GoogleAccounts:
    """Service accounts and the projects each may touch, as Google's IAM answers for them (shared by the Google
    emulators). Until one is added, every call is accepted. Then a call must be signed by a known account — a
    self-signed JWT of its key (what the Cloud client libraries send over REST) or an access token ``/token`` issued for
    it — else 401 UNAUTHENTICATED, and may touch only its account's projects, else 403 PERMISSION_DENIED (Google's
    answer for a resource in a project the caller has no role in, whether or not it exists)."""

    def __init__(self, default_token: str) -> None:
        self.lock = threading.Lock()
        self.default_token = default_token  # what /token issues for a key of no known account
        self.projects: dict[str, set[str]] = {}  # service-account email -> the projects it may touch
        self._issued: dict[str, str] = {}  # access token -> the account it was issued to

    def add(self, email: str, projects: set[str]) -> None:
        with self.lock:
            self.projects[email] = set(projects)

    def account_of(self, authorization: str | None) -> str | None:
        """The account that signed a call (its ``Authorization`` header), or None."""
        token = (authorization or "").removeprefix("Bearer ")
        with self.lock:
            if token in self._issued:
                return self._issued[token]
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        return str(claims.get("iss") or "") or None if isinstance(claims, dict) else None

    def check(self, projects: list[str], authorization: str | None) -> None:
        """Raises the ApiError Google answers a call about ``projects`` signed so."""
        account = self.account_of(authorization)
        with self.lock:
            if not self.projects:
                return
            allowed = self.projects.get(account or "")
        if allowed is None:
            raise ApiError(401, "Request had invalid authentication credentials.")
        for project in projects:
            if project not in allowed:
                raise ApiError(403, f"Permission denied on resource project {project} (or it may not exist).")

    def issue(self, form: Mapping[str, list[str]]) -> str:
        """The access token ``/token`` issues for a key's JWT-bearer assertion (its account's, once accounts exist)."""
        account = self.account_of(f"Bearer {form.get('assertion', [''])[0]}")
        with self.lock:
            if account is None or account not in self.projects:
                return self.default_token
            token = f"ya29.local-{uuid.uuid4().hex}"
            self._issued[token] = account
            return token


# -- the emulator ----------------------------------------------------------------------------------------------------


class CloudRunEmulator:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}  # full name -> Job JSON (as created, plus output fields)
        self.executions: dict[str, dict[str, Any]] = {}  # full name -> {"json": Execution, "task": Task, "lines": []}
        self.operations: dict[str, dict[str, Any]] = {}
        self.v1_jobs: dict[str, dict[str, Any]] = {}  # namespaces/<p>/jobs/<name> -> {"json": ..., "received": ...}
        self.v1_executions: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.missing_images: set[str] = set()
        self.service_accounts = {"runner@pushpool-test.iam.gserviceaccount.com"}
        self.secrets = {"prefect-api-key", "db"}
        self.auto_start = True
        self.refuse_runs = 0  # RunJob calls to answer 503
        # Whether RunJob refuses a stale etag. Cloud Run documents RunJob's etag only as "may be used to detect
        # modification conflict during updates", not that a second run of a job is refused, nor that a run changes the
        # job's etag: by default this emulator takes the strictest reading (a second RunJob makes a second execution).
        self.run_checks_etag = False
        self.run_conflicts = 0  # runs refused for a stale etag (run_checks_etag)
        self.authorizations: list[str | None] = []  # the Authorization header of every request
        self.access_token = f"ya29.local-{uuid.uuid4().hex}"  # what /token issues for a service-account key
        self.google_accounts = GoogleAccounts(self.access_token)
        self.callers: list[tuple[str, str, str | None]] = []  # (method, path, account) of each API call
        self._faults: list[int] = []
        self.bad_days = Faults()  # operations: "METHOD /v2/path" (tests/faults.py)
        self._ids = itertools.count(1)
        self.server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> CloudRunEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests drive ------------------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 429) -> None:
        with self.lock:
            self._faults += [status] * count

    def set_running(self, execution: str) -> None:
        with self.lock:
            data = self.executions[execution]["json"]
            data.update(startTime=data.get("startTime") or _now(), runningCount=1)

    def exit(self, execution: str, code: int, lines: list[str] | None = None, *, timed_out: bool = False) -> None:
        """The execution's one task ends with ``code`` (timed out: killed at its timeout), printing ``lines``."""
        with self.lock:
            entry = self.executions[execution]
            data = entry["json"]
            entry["lines"] += list(lines or [])
            data.update(startTime=data.get("startTime") or _now(), completionTime=_now(), runningCount=0)
            result: dict[str, Any] = (
                {"status": {"code": 0}}
                if code == 0
                else {"exitCode": code, "status": {"code": 2, "message": f"Task failed with exit code {code}"}}
            )
            if timed_out:
                result = {"termSignal": 9, "status": {"code": 4, "message": "The configured timeout was reached"}}
            entry["task"]["lastAttemptResult"] = result
            if code == 0 and not timed_out:
                data.update(succeededCount=1)
                data["conditions"] = [
                    {
                        "type": "Completed",
                        "state": "CONDITION_SUCCEEDED",
                        "message": "Execution completed successfully",
                        "lastTransitionTime": _now(),
                    }
                ]
            else:
                data.update(failedCount=1)
                data["conditions"] = [
                    {
                        "type": "Completed",
                        "state": "CONDITION_FAILED",
                        "lastTransitionTime": _now(),
                        "executionReason": "NON_ZERO_EXIT_CODE",
                        "message": "Task "
                        f"{entry['task']['name'].rsplit('/', 1)[-1]} failed: {result['status']['message']}",
                    }
                ]

    def age_job(self, name: str, seconds: float) -> None:
        """The job was created ``seconds`` ago (a submitter that died between CreateJob and RunJob a while ago)."""
        when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
        with self.lock:
            self.jobs[name]["createTime"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def vanish(self, execution: str) -> None:
        with self.lock:
            job = execution.rsplit("/executions/", 1)[0]
            self.executions.pop(execution, None)
            self.jobs.pop(job, None)

    def received(self, job_name: str) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self.jobs[job_name]["__received"]))

    def count(self, method: str, fragment: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and fragment in p)

    # -- the API -------------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            self.bodies.append((method, path, body))
            if self._faults:
                code = self._faults.pop(0)
                raise ApiError(code, "Injected by the test: try again later")
            if bad := self.bad_days.check(f"{method} {path}"):
                raise ApiError(*google_error(bad))
        if path == "/v2/entries:list" and method == "POST":
            return self._entries(body)
        if path.startswith(V1_PREFIX):
            with self.lock:
                return self._v1(method, path.removeprefix(V1_PREFIX).split("/"), body)
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[0] != "v2" or parts[1] != "projects" or parts[3] != "locations":
            raise ApiError(404, f"Not found: {path}")
        project, region = parts[2], parts[4]
        if not _PROJECT.match(project):
            raise ApiError(400, f"Invalid project id '{project}'")
        if region not in REGIONS:
            raise ApiError(404, f"Location '{region}' not found for project '{project}'")
        rest = parts[5:]
        base = f"projects/{project}/locations/{region}"
        with self.lock:
            if rest[:1] == ["operations"] and len(rest) == 2 and method == "GET":
                return self._operation(f"{base}/operations/{rest[1]}")
            if rest == ["jobs"] and method == "POST":
                return self._create_job(base, query.get("jobId", [""])[0], body)
            if rest == ["jobs"] and method == "GET":
                return self._list_jobs(base, query)
            if len(rest) == 2 and rest[0] == "jobs":
                job, _, action = rest[1].partition(":")
                name = f"{base}/jobs/{job}"
                if action == "run" and method == "POST":
                    return self._run_job(name, body)
                if not action and method == "GET":
                    return 200, self._job(name)
                if not action and method == "DELETE":
                    return self._delete_job(name, query.get("etag", [""])[0])
            if len(rest) == 3 and rest[0] == "jobs" and rest[2] == "executions" and method == "GET":
                return self._list_executions(base, rest[1], query)
            if len(rest) == 4 and rest[0] == "jobs" and rest[2] == "executions":
                execution, _, action = rest[3].partition(":")
                name = f"{base}/jobs/{rest[1]}/executions/{execution}"
                if action == "cancel" and method == "POST":
                    return self._cancel(name, body)
                if not action and method == "GET":
                    return 200, self._execution(name)["json"]
            if len(rest) == 5 and rest[0] == "jobs" and rest[4] == "tasks" and method == "GET":
                entry = self._execution(f"{base}/jobs/{rest[1]}/executions/{rest[3]}")
                return 200, {"tasks": [entry["task"]]}
        raise ApiError(404, f"Method not found: {method} {path}")

    # -- the v1 (Knative-shaped) surface Prefect's `cloud-run` worker calls: create, get, run a job, get an execution --

    def _v1(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        """``namespaces/<project>/jobs[/<name>[:run]]`` and ``namespaces/<project>/executions/<name>``. A created job's
        body is checked against the ``Job`` schema of the run.v1 discovery document (a JSON null is unset, as Google
        reads it) and kept for ``received_v1``; it is Ready at once; a run's execution runs until the test ends."""
        if len(parts) < 3 or parts[0] != "namespaces" or not _PROJECT.match(parts[1]):
            raise ApiError(404, f"Not found: {'/'.join(parts)}")
        project, rest = parts[1], parts[2:]
        if rest == ["jobs"] and method == "POST":
            body = _drop_nulls(body or {})
            self._check(RUN_V1, request_schema(RUN_V1, "namespaces", "jobs", "create"), body)
            name = (body.get("metadata") or {}).get("name") or ""
            if not _JOB_ID.match(name):
                raise ApiError(400, f"Invalid job name '{name}'")
            task = body["spec"]["template"]["spec"]["template"]["spec"]
            if not (task.get("containers") or [{}])[0].get("image"):
                raise ApiError(400, "spec.template.spec.template.spec.containers[0].image: Required")
            job = {**json.loads(json.dumps(body)), "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
            self.v1_jobs[f"namespaces/{project}/jobs/{name}"] = {"json": job, "received": body}
            return 200, job
        if len(rest) == 2 and rest[0] == "jobs":
            job_name, _, action = rest[1].partition(":")
            entry = self.v1_jobs.get(f"namespaces/{project}/jobs/{job_name}")
            if entry is None:
                raise ApiError(404, f"Job {job_name} not found")
            if not action and method == "GET":
                return 200, entry["json"]
            if action == "run" and method == "POST":
                execution = f"{job_name}-{next(self._ids):05d}"
                data = {
                    "metadata": {"name": execution, "namespace": project},
                    "spec": entry["json"]["spec"]["template"]["spec"],
                    "status": {"logUri": f"https://console.cloud.google.com/logs/{execution}"},
                }
                self.v1_executions[f"namespaces/{project}/executions/{execution}"] = data
                return 200, data
        if len(rest) == 2 and rest[0] == "executions" and method == "GET":
            found = self.v1_executions.get(f"namespaces/{project}/executions/{rest[1]}")
            if found is None:
                raise ApiError(404, f"Execution {rest[1]} not found")
            return 200, found
        raise ApiError(404, f"Method not found: {method} {'/'.join(parts)}")

    def received_v1(self, job_name: str) -> dict[str, Any]:
        """The body a v1 ``namespaces/<project>/jobs/<name>`` was created with (its JSON nulls dropped)."""
        with self.lock:
            return json.loads(json.dumps(self.v1_jobs[job_name]["received"]))

    # -- accounts: who may touch which project -------------------------------------------------------------------

    def add_account(self, email: str, projects: set[str]) -> None:
        """A service account that may touch only ``projects`` (and from now on, every call must be signed)."""
        self.google_accounts.add(email, projects)

    def accounts_for(self, fragment: str) -> set[str | None]:
        """The accounts that signed the calls whose path (or logging filter) holds ``fragment``."""
        with self.lock:
            return {account for _, path, account in self.callers if fragment in path}

    def _authorize(self, method: str, path: str, body: Any, authorization: str | None) -> None:
        if path == "/v2/entries:list":
            names = ((body or {}).get("resourceNames") or []) if isinstance(body, dict) else []
            projects = [str(n).split("/")[1] for n in names if str(n).startswith("projects/")]
            where = path + " " + " ".join(names) + " " + str((body or {}).get("filter", ""))
        else:
            parts = path.strip("/").split("/")
            projects = [parts[2]] if len(parts) > 2 and parts[1] == "projects" else []
            where = path
        with self.lock:
            self.callers.append((method, where, self.google_accounts.account_of(authorization)))
        self.google_accounts.check(projects, authorization)

    def _check(self, doc: Mapping[str, Any], schema: str, body: Any) -> None:
        errors = schema_errors(doc, schema, body if body is not None else {})
        if errors:
            raise ApiError(400, "; ".join(errors))

    def _new_operation(
        self, base: str, metadata: dict[str, Any], response: dict[str, Any] | None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        name = f"{base}/operations/{uuid.uuid4()}"
        done = {"name": name, "done": True, "metadata": metadata}
        done.update({"error": error} if error else {"response": response})
        self.operations[name] = done
        return {"name": name, "done": False, "metadata": metadata}

    def _operation(self, name: str) -> tuple[int, Any]:
        if name not in self.operations:
            raise ApiError(404, f"Operation {name} not found")
        if self.bad_days.still_running(name):
            return 200, {"name": name, "done": False, "metadata": self.operations[name]["metadata"]}
        return 200, self.operations[name]

    def _create_job(self, base: str, job_id: str, body: Any) -> tuple[int, Any]:
        self._check(RUN, request_schema(RUN, "projects", "locations", "jobs", "create"), body)
        if not _JOB_ID.match(job_id or ""):
            raise ApiError(
                400,
                f"Invalid job id '{job_id}': must be at most 63 lowercase letters, digits or hyphens, "
                "start with a letter and not end with a hyphen",
            )
        name = f"{base}/jobs/{job_id}"
        if name in self.jobs:
            raise ApiError(409, f"Resource '{job_id}' already exists.")
        if self.bad_days.over_quota(sum(1 for n in self.jobs if n.startswith(base + "/jobs/"))):
            raise ApiError(*google_quota(self.bad_days.quota or 0, f"jobs in {base}"))
        containers = (((body or {}).get("template") or {}).get("template") or {}).get("containers") or []
        if not containers or not containers[0].get("image"):
            raise ApiError(400, "spec.template.spec.containers[0].image: Required")
        account = body["template"]["template"].get("serviceAccount")
        if account and account not in self.service_accounts:
            raise ApiError(400, f"Service account {account} does not exist.")
        job = {
            **json.loads(json.dumps(body)),
            "name": name,
            "uid": str(uuid.uuid4()),
            "etag": f'"{uuid.uuid4()}"',
            "createTime": _now(),
            "updateTime": _now(),
            "generation": "1",
            "observedGeneration": "1",
            "creator": "pushpool-test@pushpool-test.iam.gserviceaccount.com",
            "executionCount": 0,
            "latestCreatedExecution": {},
            "conditions": [],
            "__received": json.loads(json.dumps(body)),
        }
        image = containers[0]["image"]
        self.jobs[name] = job
        metadata = {"@type": "type.googleapis.com/google.cloud.run.v2.Job", **self._public(job)}
        if image in self.missing_images:
            job["terminalCondition"] = {
                "type": "Ready",
                "state": "CONDITION_FAILED",
                "reason": "CONTAINER_MISSING",
                "message": f"Image '{image}' not found.",
            }
            error = {"code": 5, "message": f"Image '{image}' not found."}
            return 200, self._new_operation(base, metadata, None, error)
        for entry in containers[0].get("env") or []:
            ref = (entry.get("valueSource") or {}).get("secretKeyRef")
            if ref and ref["secret"].rsplit("/", 1)[-1] not in self.secrets:
                message = (
                    f"Secret projects/{name.split('/')[1]}/secrets/{ref['secret']}/versions/"
                    f"{ref.get('version', 'latest')} was not found"
                )
                job["terminalCondition"] = {"type": "Ready", "state": "CONDITION_FAILED", "message": message}
                return 200, self._new_operation(base, metadata, None, {"code": 5, "message": message})
        job["terminalCondition"] = {"type": "Ready", "state": "CONDITION_SUCCEEDED"}
        return 200, self._new_operation(base, metadata, {**metadata, **self._public(job)})

    def _public(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("__")}

    def _job(self, name: str) -> dict[str, Any]:
        if name not in self.jobs:
            raise ApiError(
                404,
                f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'JOB' in region "
                f"'{name.split('/')[3]}' in project '{name.split('/')[1]}' does not exist.",
            )
        return self._public(self.jobs[name])

    def _run_job(self, name: str, body: Any) -> tuple[int, Any]:
        self._check(RUN, request_schema(RUN, "projects", "locations", "jobs", "run"), body)
        job = self.jobs.get(name)
        if job is None:
            self._job(name)
        assert job is not None
        if (job.get("terminalCondition") or {}).get("state") != "CONDITION_SUCCEEDED":
            raise ApiError(412, f"Job {name} is not ready")
        if self.refuse_runs > 0:  # RunJob failing while CreateJob worked: a job that never starts
            self.refuse_runs -= 1
            raise ApiError(503, "Injected by the test: RunJob unavailable")
        if self.run_checks_etag and (body or {}).get("etag") and body["etag"] != job["etag"]:
            self.run_conflicts += 1
            raise ApiError(409, "The etag does not match: the job was changed meanwhile (ABORTED)")
        short = f"{name.rsplit('/', 1)[-1]}-{uuid.uuid4().hex[:5]}"
        execution = f"{name}/executions/{short}"
        base = name.split("/jobs/")[0]
        data = {
            "name": execution,
            "uid": str(uuid.uuid4()),
            "job": name.rsplit("/", 1)[-1],
            "createTime": _now(),
            "generation": "1",
            "observedGeneration": "1",
            "taskCount": 1,
            "parallelism": 1,
            "runningCount": 0,
            "succeededCount": 0,
            "failedCount": 0,
            "cancelledCount": 0,
            "etag": f'"{uuid.uuid4()}"',
            "template": job["template"]["template"],
            "logUri": f"https://console.cloud.google.com/logs/viewer?project={name.split('/')[1]}"
            f"&advancedFilter=labels.%22run.googleapis.com/execution_name%22%3D{short}",
            "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}],
        }
        self.executions[execution] = {
            "json": data,
            "lines": [],
            "task": {"name": f"{execution}/tasks/{short}-task0", "job": name.rsplit("/", 1)[-1], "execution": short},
        }
        if self.auto_start:
            self.set_running(execution)
        job.update(
            etag=f'"{uuid.uuid4()}"',
            executionCount=job["executionCount"] + 1,
            latestCreatedExecution={"name": execution, "createTime": data["createTime"]},
        )
        metadata = {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **data}
        return 200, self._new_operation(base, metadata, metadata)

    def _list_jobs(self, base: str, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        names = sorted(
            n for n in self.jobs if n.startswith(base + "/jobs/") and self.bad_days.listed(_epoch(self.jobs[n]))
        )
        size = int(query.get("pageSize", ["100"])[0] or 100)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        answer: dict[str, Any] = {"jobs": [self._public(self.jobs[n]) for n in names[start : start + size]]}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    def _delete_job(self, name: str, etag: str = "") -> tuple[int, Any]:
        job = self._job(name)
        if etag and etag != job["etag"]:
            raise ApiError(409, f"The etag of job {name} does not match: it was changed meanwhile (ABORTED)")
        self.jobs.pop(name)
        for execution in [e for e in self.executions if e.startswith(name + "/executions/")]:
            del self.executions[execution]
        metadata = {"@type": "type.googleapis.com/google.cloud.run.v2.Job", **job}
        operation = self._new_operation(name.split("/jobs/")[0], metadata, metadata)
        return 200, self.operations[operation["name"]]

    def _execution(self, name: str) -> dict[str, Any]:
        if name not in self.executions:
            raise ApiError(404, f"Execution {name.rsplit('/', 1)[-1]} does not exist.")
        return self.executions[name]

    def _list_executions(self, base: str, job: str, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        prefix = f"{base}/jobs/" + ("" if job == "-" else f"{job}/executions/")
        if job != "-" and f"{base}/jobs/{job}" not in self.jobs:
            self._job(f"{base}/jobs/{job}")
        names = sorted(
            n
            for n in self.executions
            if n.startswith(prefix) and self.bad_days.listed(_epoch(self.executions[n]["json"]))
        )
        size = int(query.get("pageSize", ["100"])[0] or 100)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        page = names[start : start + size]
        answer: dict[str, Any] = {"executions": [self.executions[n]["json"] for n in page]}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    def _cancel(self, name: str, body: Any) -> tuple[int, Any]:
        self._check(RUN, request_schema(RUN, "projects", "locations", "jobs", "executions", "cancel"), body)
        data = self._execution(name)["json"]
        if data.get("completionTime"):
            raise ApiError(412, f"Execution {name.rsplit('/', 1)[-1]} has already completed")
        data.update(completionTime=_now(), runningCount=0, cancelledCount=1)
        data["conditions"] = [
            {
                "type": "Completed",
                "state": "CONDITION_FAILED",
                "executionReason": "CANCELLED",
                "message": "The execution was cancelled",
                "lastTransitionTime": _now(),
            }
        ]
        metadata = {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **data}
        return 200, self._new_operation(name.split("/jobs/")[0], metadata, metadata)

    def _entries(self, body: Any) -> tuple[int, Any]:
        self._check(LOGGING, request_schema(LOGGING, "entries", "list"), body)
        found = re.search(r'labels\."run\.googleapis\.com/execution_name"="([^"]+)"', body.get("filter", ""))
        with self.lock:
            lines: list[str] = []
            for name, entry in self.executions.items():
                if found and name.rsplit("/", 1)[-1] == found.group(1):
                    lines = list(entry["lines"])
        size = int(body.get("pageSize") or 50)
        entries = [{"textPayload": line, "logName": "run.googleapis.com%2Fstdout"} for line in reversed(lines)]
        return 200, {"entries": entries[:size]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with emulator.lock:
                    emulator.authorizations.append(self.headers.get("Authorization"))
                if url.path == "/token" and self.command == "POST":  # OAuth 2.0 JWT bearer grant of a key file
                    form = parse_qs(raw.decode())
                    grant = form.get("grant_type", [""])[0]
                    ok = grant == "urn:ietf:params:oauth:grant-type:jwt-bearer"
                    token = emulator.google_accounts.issue(form)
                    answer = {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
                    data = json.dumps(answer if ok else {"error": "unsupported_grant_type"}).encode()
                    self.send_response(200 if ok else 400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                try:
                    try:
                        body = json.loads(raw) if raw else None
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    emulator._authorize(self.command, url.path, body, self.headers.get("Authorization"))
                    code, answer = emulator.handle(self.command, url.path, parse_qs(url.query), body)
                except ApiError as exc:
                    code, answer = exc.code, exc.body()
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        return Handler
