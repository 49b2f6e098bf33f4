"""A local Cloud Tasks API v2 (``tasks.create``) on 127.0.0.1 that really dispatches: the real
``google.cloud.tasks_v2`` client creates HTTP tasks over REST, and at each task's ``scheduleTime`` the emulator POSTs
the task's body to its URL (the ``delayed`` function under functions-framework, or a test's sink), with an OIDC token
for the task's service account, the way Cloud Tasks does.

Request checking comes from Google: every body is validated against ``CreateTaskRequest`` in the ``cloudtasks.v2``
discovery document that google-api-python-client ships (unknown fields, wrong types refused with 400). What the
document cannot say is checked by hand from Cloud Tasks' documentation: the task name must sit in the parent queue
and be ``[A-Za-z0-9_-]{1,500}``; a name already used (a task pending, or dispatched — Cloud Tasks keeps a tombstone)
is 409 ALREADY_EXISTS; ``scheduleTime`` at most 30 days ahead; an unknown queue is 404; an OIDC service account the
caller may not act as is 403. Dispatch waits on a condition until the earliest time (no polling); a target answering
non-2xx is retried (``max_attempts``), as a queue's retry config does. ``dispatches`` records what was delivered.
``bad_days`` (tests/faults.py) makes calls fail as Google spells it (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE).
Accounts (``add_account``, tests/gcp_emulator.py's ``GoogleAccounts``): once any is added, a call must be signed by a
known service account (401 UNAUTHENTICATED) that may touch the queue's project (403 PERMISSION_DENIED); ``callers``
records which account signed each call.
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import googleapiclient
import httpx

from tests.faults import Faults, google_error
from tests.gcp_emulator import ApiError, GoogleAccounts, request_schema, schema_errors
from tests.local_http import LocalHTTPServer

_DOCS = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")
TASKS = json.load(open(os.path.join(_DOCS, "cloudtasks.v2.json")))  # noqa: SIM115
_TASK_NAME = re.compile(r"^(projects/[^/]+/locations/[^/]+/queues/[^/]+)/tasks/([A-Za-z0-9_-]{1,500})$")
MAX_AHEAD = dt.timedelta(days=30)


def _time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Invalid value at 'task.schedule_time' (Timestamp), {text!r}") from None


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _oidc(service_account: str, audience: str) -> str:
    """An ID-token-shaped JWT (unsigned here: no Google key signs it) naming who Cloud Tasks would mint it for."""

    def part(value: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "email": service_account,
        "exp": time.time() + 3600,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _method_name(value: Any) -> str:
    """The HTTP method of an ``HttpMethod`` enum value, sent as a number (enum-encoding=int) or a name."""
    names = TASKS["schemas"]["HttpRequest"]["properties"]["httpMethod"]["enum"]
    name = names[value] if isinstance(value, int) and 0 <= value < len(names) else value or "POST"
    if name not in names or name == "HTTP_METHOD_UNSPECIFIED":
        return "POST"  # Cloud Tasks' default
    return str(name)


class CloudTasksEmulator:
    def __init__(self, *, act_as: set[str] | None = None, max_attempts: int = 3) -> None:
        self.lock = threading.RLock()
        self.queues: set[str] = set()
        self.act_as = act_as  # the service accounts the caller may mint OIDC tokens for (None: any)
        self.max_attempts = max_attempts
        self.tasks: dict[str, dict[str, Any]] = {}  # task name -> Task JSON (pending or dispatched: tombstones)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call
        self.bodies: list[Any] = []  # every CreateTaskRequest body
        self.dispatches: list[dict[str, Any]] = []  # {"task", "at", "scheduled", "status", "attempt"}
        self.authorizations: list[str | None] = []
        self.bad_days = Faults()  # operations: "METHOD /v2/path" (tests/faults.py)
        self.access_token = f"ya29.local-{uuid.uuid4().hex}"
        self.google_accounts = GoogleAccounts(self.access_token)
        self.callers: list[tuple[str, str, str | None]] = []  # (method, path, account) of each API call
        self._heap: list[tuple[dt.datetime, str]] = []
        self._cond = threading.Condition(self.lock)
        self._stopped = False
        self._http = httpx.Client(timeout=30)
        self.server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._dispatcher, daemon=True),
        ]

    def start(self) -> CloudTasksEmulator:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._http.close()

    def add_queue(self, project: str, location: str, queue: str) -> str:
        name = f"projects/{project}/locations/{location}/queues/{queue}"
        with self.lock:
            self.queues.add(name)
        return name

    def count(self, method: str, fragment: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and fragment in p)

    # -- the API -----------------------------------------------------------------------------------------------------

    def add_account(self, email: str, projects: set[str]) -> None:
        """A service account that may touch only ``projects`` (and from now on, every call must be signed)."""
        self.google_accounts.add(email, projects)

    def _authorize(self, method: str, path: str, authorization: str | None) -> None:
        """Google's answer to a call its signer may not make (see ``GoogleAccounts``); records the signer."""
        with self.lock:
            self.callers.append((method, path, self.google_accounts.account_of(authorization)))
        self.google_accounts.check([path.split("/")[3]] if path.startswith("/v2/projects/") else [], authorization)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
        if bad := self.bad_days.check(f"{method} {path}"):
            raise ApiError(*google_error(bad))
        found = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/queues/[^/]+)/tasks", path)
        if method != "POST" or not found:
            raise ApiError(404, f"no such method: {method} {path}")
        errors = schema_errors(TASKS, request_schema(TASKS, "projects", "locations", "queues", "tasks", "create"), body)
        if errors:
            raise ApiError(400, "; ".join(errors))
        return self._create(found.group(1), body)

    def _create(self, parent: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.bodies.append(body)
        if parent not in self.queues:
            raise ApiError(404, f"Queue does not exist: {parent}")
        task = dict(body.get("task") or {})
        request = task.get("httpRequest")
        if not isinstance(request, dict) or not request.get("url"):
            raise ApiError(400, "Task.http_request.url is required for an HTTP target")
        if not re.match(r"^https?://", request["url"]):
            raise ApiError(400, f"Invalid URL: {request['url']}")
        name = task.get("name") or f"{parent}/tasks/{uuid.uuid4().int}"
        match = _TASK_NAME.match(name)
        if not match or match.group(1) != parent:
            raise ApiError(400, f"Task name {name!r} is not a task of queue {parent}")
        now = dt.datetime.now(dt.timezone.utc)
        scheduled = _time(task["scheduleTime"]) if task.get("scheduleTime") else now
        if scheduled > now + MAX_AHEAD:
            raise ApiError(400, "The scheduled time must be less than 30 days in the future")
        try:
            payload = base64.b64decode(request.get("body") or "", validate=True)
        except ValueError:
            raise ApiError(400, "Invalid value at 'task.http_request.body' (TYPE_BYTES)") from None
        oidc = request.get("oidcToken")
        if oidc and self.act_as is not None and oidc.get("serviceAccountEmail") not in self.act_as:
            raise ApiError(403, "The principal lacks iam.serviceAccounts.actAs on the task's service account")
        stored = {
            "name": name,
            "scheduleTime": _rfc3339(scheduled),
            "createTime": _rfc3339(now),
            "dispatchCount": 0,
            "view": "BASIC",
            "httpRequest": {**request, "httpMethod": _method_name(request.get("httpMethod"))},
            "_payload": payload,
        }
        with self._cond:
            if name in self.tasks:
                raise ApiError(409, "Requested entity already exists")
            self.tasks[name] = stored
            heapq.heappush(self._heap, (scheduled, name))
            self._cond.notify_all()
        public = {k: v for k, v in stored.items() if not k.startswith("_")}
        public["httpRequest"] = {k: v for k, v in public["httpRequest"].items() if k not in ("body", "headers")}
        return 200, public

    # -- dispatch ----------------------------------------------------------------------------------------------------

    def _dispatcher(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                at, name = self._heap[0]
                wait = (at - dt.datetime.now(dt.timezone.utc)).total_seconds()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                threading.Thread(target=self._dispatch, args=(name, at), daemon=True).start()

    def _dispatch(self, name: str, scheduled: dt.datetime) -> None:
        with self.lock:
            task = self.tasks[name]
        request = task["httpRequest"]
        headers = {k: str(v) for k, v in (request.get("headers") or {}).items()}
        queue = name.split("/tasks/")[0].rsplit("/", 1)[-1]
        headers.update({"X-CloudTasks-QueueName": queue, "X-CloudTasks-TaskName": name.rsplit("/", 1)[-1]})
        oidc = request.get("oidcToken")
        if oidc:
            audience = oidc.get("audience") or request["url"]
            headers["Authorization"] = f"Bearer {_oidc(oidc['serviceAccountEmail'], audience)}"
        for attempt in range(self.max_attempts):
            headers["X-CloudTasks-TaskRetryCount"] = str(attempt)
            started = dt.datetime.now(dt.timezone.utc)
            try:
                status = self._http.request(
                    request["httpMethod"], request["url"], content=task["_payload"], headers=headers
                ).status_code
            except httpx.HTTPError:
                status = 0
            with self.lock:
                task["dispatchCount"] += 1
                self.dispatches.append(
                    {"task": name, "at": started, "scheduled": scheduled, "status": status, "attempt": attempt}
                )
            if 200 <= status < 300 or self._stopped:
                return
            time.sleep(0.2 * 2**attempt)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, answer: Any) -> None:
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with emulator.lock:
                    emulator.authorizations.append(self.headers.get("Authorization"))
                if url.path == "/token" and self.command == "POST":  # OAuth 2.0 JWT bearer grant of a key file
                    form = parse_qs(raw.decode())
                    if form.get("grant_type", [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                        self._send(400, {"error": "unsupported_grant_type"})
                    else:
                        token = emulator.google_accounts.issue(form)
                        self._send(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
                    return
                try:
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    emulator._authorize(self.command, url.path, self.headers.get("Authorization"))
                    code, answer = emulator.handle(self.command, url.path, body)
                except ApiError as exc:
                    code, answer = exc.code, exc.body()
                self._send(code, answer)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        return Handler


class Sink:
    """An HTTP target on 127.0.0.1 that records what Cloud Tasks delivered: (body, headers, when)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict[str, Any], dict[str, str], dt.datetime]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.received.append((json.loads(raw), dict(self.headers), dt.datetime.now(dt.timezone.utc)))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = LocalHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
