"""A local Coiled control plane: a REST server on 127.0.0.1 (``DASK_COILED__SERVER``) answering the endpoints the
``coiled`` backend calls, as the coiled SDK 1.135.6 calls them (paths, ``Authorization: ApiToken``, the gzip body of
``/api/v2/jobs/compressed``), recording every request body, and driving job states.

Coiled's behaviour it keeps, as far as its client shows it: authentication first (``/api/v2/user/me``, 401 for an
unknown token); a cluster name is unique while its cluster lives (a second create answers ``existing``); a job runs
only once a cluster names it in ``batch_job_ids``; task states ``pending``/``assigned``/``running``/``done``/``error``
with an exit code; stopping a cluster (DELETE) stops its job; logs are lines tagged ``__BATCH <job>.<task>__``;
a workspace's batch jobs are listed newest first in pages (``GET /api/v2/jobs/``, as ``coiled batch list`` asks).
Unknown workspaces and VM types are refused as Coiled refuses them (404, 400 with a message).

Every body is checked against Coiled's API as its SDK sends it (tests/coiled_api_schema.py): a field the SDK never
sends, or a value of another type, is 400 and recorded in ``refused`` — so pushpool cannot agree with a fake on a body
Coiled's client would not send. The other calls of the coiled SDK's batch path are answered too (memberships, the
workspace's cloud, the VM type list the SDK chooses from, software environments, cluster details, a job's state,
analytics), so prefect-coiled's worker runs against this server unchanged (tests/compat_coiled).

Accounts: each token is one user's (``token``/``account`` the default one, a member of ``account`` and
``other-workspace``; ``add_account`` adds others). A workspace the token's user is not a member of is 403 (Django REST
framework's "You do not have permission"), a cluster of such a workspace asked for by id is 404 (the user's
querysets hold only their workspaces' clusters) — an assumption from Coiled's REST framework, not from its
documentation. ``callers`` records which token made each call.

A job either stays as it is until a test drives it (``run_commands=False``), or its command runs on this machine
with the environment it was sent (``env_vars`` and ``secret_env_vars``) when its cluster is created.

``bad_days`` (tests/faults.py) answers the cloud's bad days on ``"METHOD /path"``: 429 with ``Retry-After``, 503, 500;
a cluster found by name only some time after its creation.
"""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests import coiled_api_schema as schema
from tests.faults import Faults, coiled_answer
from tests.local_http import LocalHTTPServer

# Coiled's VM type list (a few of each cloud): name -> (provider, cores, memory in MB as Coiled lists it, GPUs, arch).
VM_CATALOGUE: dict[str, tuple[str, int, int, int, str]] = {
    "t3.medium": ("aws", 2, 4096, 0, "x86_64"),
    "t3.large": ("aws", 2, 8192, 0, "x86_64"),
    "t3.xlarge": ("aws", 4, 16384, 0, "x86_64"),
    "m5.xlarge": ("aws", 4, 16384, 0, "x86_64"),
    "m6i.large": ("aws", 2, 8192, 0, "x86_64"),
    "m6i.xlarge": ("aws", 4, 16384, 0, "x86_64"),
    "m6i.2xlarge": ("aws", 8, 32768, 0, "x86_64"),
    "m6i.4xlarge": ("aws", 16, 65536, 0, "x86_64"),
    "r6i.xlarge": ("aws", 4, 32768, 0, "x86_64"),
    "c6i.xlarge": ("aws", 4, 8192, 0, "x86_64"),
    "g4dn.xlarge": ("aws", 4, 16384, 1, "x86_64"),
    "g4dn.2xlarge": ("aws", 8, 32768, 1, "x86_64"),
    "g5.xlarge": ("aws", 4, 16384, 1, "x86_64"),
    "t4g.medium": ("aws", 2, 4096, 0, "arm64"),
    "m6g.xlarge": ("aws", 4, 16384, 0, "arm64"),
    "m7g.xlarge": ("aws", 4, 16384, 0, "arm64"),
    "m7g.2xlarge": ("aws", 8, 32768, 0, "arm64"),
    "e2-standard-4": ("gcp", 4, 16384, 0, "x86_64"),
    "e2-standard-8": ("gcp", 8, 32768, 0, "x86_64"),
    "n1-standard-4": ("gcp", 4, 15360, 0, "x86_64"),
    "t2a-standard-4": ("gcp", 4, 16384, 0, "arm64"),
}
VM_TYPES = set(VM_CATALOGUE)


@dataclass
class FakeJob:
    id: int
    spec: dict[str, Any]
    cluster_id: int | None = None
    state: str = "pending"
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    created: float = field(default_factory=time.time)


@dataclass
class FakeCluster:
    id: int
    workspace: str
    body: dict[str, Any]
    state: str = "running"
    created: float = field(default_factory=time.time)


class CoiledEmulator:
    def __init__(self, *, token: str, account: str = "pushpool-tests", run_commands: bool = False) -> None:
        self.token = token
        self.account = account
        self.workspaces = {account, "other-workspace"}  # every workspace Coiled knows
        self.users: dict[str, tuple[str, set[str]]] = {token: (account, {account, "other-workspace"})}
        self.callers: list[tuple[str, str, str | None]] = []  # (method, path, token) of each call
        self.run_commands = run_commands
        self.jobs: dict[int, FakeJob] = {}
        self.clusters: dict[int, FakeCluster] = {}
        self.requests: list[tuple[str, str, Any]] = []  # method, path, body
        self.faults: dict[str, list[int]] = {}  # path prefix -> statuses to answer next
        self.bad_days = Faults()  # operations: "METHOD /path" (tests/faults.py)
        self.providers: dict[str, str] = {}  # workspace -> Coiled backend ("vm_aws" unless set)
        self.software_environments: dict[tuple[str, str], dict[str, Any]] = {}
        self.refused: list[tuple[str, list[str]]] = []  # (path, problems) of each body refused by the schema
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> CoiledEmulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, answer, *headers = emulator.answer(self.command, self.path, dict(self.headers), raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                for key, value in (headers[0] if headers else {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

        self._server = LocalHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for job in self.jobs.values():
            if job.process and job.process.poll() is None:
                job.process.kill()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what tests drive and read -----------------------------------------------------------------------------------

    def finish(self, job_id: int, code: int, lines: list[str]) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.output += lines
            job.state, job.exit_code = ("done", code) if code == 0 else ("error", code)

    def vanish(self, cluster_id: int) -> None:
        with self._lock:
            cluster = self.clusters.pop(cluster_id)
            for job in [j for j in self.jobs.values() if j.cluster_id == cluster.id]:
                del self.jobs[job.id]

    def clusters_of_attempt(self, run_id: str, attempt: str) -> list[FakeCluster]:
        return [
            c
            for c in self.clusters.values()
            if c.body.get("tags", {}).get("pushpool-run") == run_id
            and c.body.get("tags", {}).get("pushpool-attempt") == attempt
        ]

    def sent(self, job_id: int) -> str:
        """What Coiled shows of a job: its spec without the secret values, and its cluster."""
        job = self.jobs[job_id]
        spec = {k: v for k, v in job.spec.items() if k != "secret_env_vars"}
        spec["secret_env_names"] = sorted(job.spec.get("secret_env_vars") or {})
        cluster = self.clusters.get(job.cluster_id or -1)
        return json.dumps({"job": spec, "cluster": cluster.body if cluster else None})

    def wait_process(self, job_id: int, timeout: float = 120) -> FakeJob:
        job = self.jobs[job_id]
        if job.process is not None:
            job.process.wait(timeout)
            assert job.reader is not None
            job.reader.join(timeout)
        return job

    # -- the API ---------------------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[Any, ...]:
        url = urlparse(path)
        body: Any = None
        if raw:
            try:
                body = json.loads(gzip.decompress(raw) if url.path.endswith("/compressed") else raw)
            except (ValueError, OSError):
                return 400, {"detail": "JSON parse error"}
        self.requests.append((method, url.path, body))
        for prefix, statuses in self.faults.items():
            if url.path.startswith(prefix) and statuses:
                return statuses.pop(0), {"message": "injected fault"}
        if bad := self.bad_days.check(f"{method} {url.path}"):
            status, extra, detail = coiled_answer(bad)
            return status, detail, extra
        user = self._caller(method, url.path, headers)
        if user is None:
            return 401, {"detail": "Invalid token."}
        username, member_of = user
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if url.path == "/api/v2/user/me":
            return 200, {"username": username}
        if url.path == "/api/v2/user/me/memberships":
            return 200, [
                {"account": {"slug": w, "name": w}, "is_admin": False, "is_default_account": w == username}
                for w in sorted(member_of)
            ]
        if method == "POST" and url.path == "/api/v2/interactions/interaction":
            return 201, {}
        if parts[:2] == ["api", "v1"] and parts[3:4] == ["backend_options"]:
            if refused := self._workspace_refused(parts[2], member_of):
                return refused
            backend = self.providers.get(parts[2], "vm_aws")
            return 200, {"backend": backend, "options": {"region_name": "us-east-1"}}
        if url.path == "/api/v1/vm-types/":
            return 200, {"results": _vm_types(query), "next": None}
        if parts[:4] == ["api", "v2", "user", "workspace"] and parts[5:6] == ["dask-config-overrides"]:
            return 200, {}
        if url.path == "/api/v2/packages/":
            return 200, []  # no package Coiled holds critical: package sync never halts here
        if method == "POST" and url.path == "/api/v2/software-environment/approximate-packages":
            return 200, [  # every package installable as it is installed locally
                {"name": p.get("name"), "conda_name": p.get("conda_name"), "specifier": p.get("specifier") or "",
                 "include": True, "note": None, "error": None, "channel_url": p.get("channel_url"),
                 "client_version": None}
                for p in (body or {}).get("packages") or []
            ]  # fmt: skip
        software = parts[:4] == ["api", "v2", "software-environment", "account"] and len(parts) >= 5
        if software and (refused := self._workspace_refused(parts[4], member_of)):
            return refused
        if parts[:4] == ["api", "v2", "software-environment", "account"] and parts[5:6] == ["package-upload"]:
            return 201, {"id": len(self.requests), "should_upload": False}  # as if Coiled had the wheel already
        if parts[:4] == ["api", "v2", "software-environment", "account"] and method == "POST":
            if problems := schema.software_environment_problems(body):
                return self._refuse(url.path, problems)
            self.software_environments[(parts[4], body["name"])] = body
            return 201, {"id": len(self.software_environments), "name": body["name"], "latest_spec": None}
        if method == "GET" and parts[:3] == ["api", "v2", "jobs"] and len(parts) == 4 and parts[3].isdigit():
            job = self.jobs.get(int(parts[3]))
            if job is None:
                return 404, {"message": f"Job {parts[3]} not found"}
            return 200, {"id": job.id, "state": job.state}
        if method == "POST" and url.path == "/api/v2/jobs/compressed":
            if problems := schema.job_problems(body):
                return self._refuse(url.path, problems)
            if body.get("workspace") not in self.workspaces:
                return 404, {"message": f"Workspace '{body.get('workspace')}' not found"}
            if body.get("workspace") not in member_of:
                return 403, {"detail": "You do not have permission to perform this action."}
            with self._lock:
                job = FakeJob(next(self._ids), body)
                self.jobs[job.id] = job
            return 201, {"id": job.id}
        if parts[:4] == ["api", "v2", "clusters", "account"] and len(parts) >= 5:
            workspace = parts[4]
            if workspace not in self.workspaces:
                return 404, {"message": f"Workspace '{workspace}' not found"}
            if workspace not in member_of:
                return 403, {"detail": "You do not have permission to perform this action."}
            if method == "POST" and len(parts) == 5:
                return self._create_cluster(workspace, body)
            if parts[5:6] == ["name"]:
                found = [
                    c
                    for c in self.clusters.values()
                    if c.workspace == workspace and c.body["name"] == parts[6] and self.bad_days.listed(c.created)
                ]
                if not found:
                    return 404, {"message": f"Cluster {parts[6]} not found"}
                return 200, {"id": max(found, key=lambda c: c.id).id, "name": parts[6]}
            if parts[5:6] == ["id"]:
                cluster = self.clusters.get(int(parts[6]))
                if cluster is None or cluster.workspace != workspace:
                    return 404, {"message": f"Cluster {parts[6]} not found"}
                if method == "DELETE":
                    self._stop_cluster(cluster)
                    return 204, None
                if method == "GET" and len(parts) == 7:
                    return 200, {"id": cluster.id, "name": cluster.body["name"], "coiled_hosted": False}
                if parts[7:8] == ["better-logs"]:
                    pattern = (query.get("filter_pattern") or [""])[0]
                    job_id = int(pattern.removeprefix("__BATCH ").rstrip("."))
                    job = self.jobs.get(job_id)
                    return 200, {"events": [{"message": line} for line in (job.output if job else [])]}
        if method == "GET" and url.path == "/api/v2/jobs/":
            return self._list_jobs(query, member_of, username)
        if parts[:4] == ["api", "v2", "jobs", "cluster"]:
            cluster = self.clusters.get(int(parts[4]))
            if cluster is None or cluster.workspace not in member_of:
                return 404, {"message": f"Cluster {parts[4]} not found"}
            return 200, [
                {
                    "id": j.id,
                    "cluster_id": cluster.id,
                    "cluster_state": cluster.state,
                    "state": j.state,
                    "tasks": [{"array_task_id": 0, "state": j.state, "exit_code": j.exit_code}],
                }
                for j in self.jobs.values()
                if j.cluster_id == cluster.id
            ]
        return 404, {"message": f"no such endpoint: {method} {url.path}"}

    def _list_jobs(self, query: dict[str, list[str]], member_of: set[str], username: str) -> tuple[int, Any]:
        """``GET /api/v2/jobs/?workspace=&limit=&offset=`` as ``coiled batch list`` reads it: a page of the workspace's
        batch jobs (all the caller's workspaces without one), newest first, ``{"items": [...], "count": n}``
        (django-ninja's limit/offset pagination; the CLI reads ``items``), each job with the fields the CLI shows."""
        workspace = (query.get("workspace") or [""])[0]
        if workspace and workspace not in self.workspaces:
            return 404, {"message": f"Workspace '{workspace}' not found"}
        if workspace and workspace not in member_of:
            return 403, {"detail": "You do not have permission to perform this action."}
        limit = int((query.get("limit") or ["100"])[0] or 100)
        offset = int((query.get("offset") or ["0"])[0] or 0)
        with self._lock:
            jobs = sorted(
                (
                    j
                    for j in self.jobs.values()
                    if (j.spec.get("workspace") == workspace if workspace else j.spec.get("workspace") in member_of)
                    and self.bad_days.listed(j.created)
                ),
                key=lambda j: j.id,
                reverse=True,
            )
            items = [
                {
                    "id": j.id,
                    "cluster_id": j.cluster_id,
                    "workspace_name": j.spec.get("workspace"),
                    "user_name": username,
                    "state": j.state,
                    "n_tasks": 1,
                    "n_tasks_succeeded": int(j.state == "done"),
                    "n_tasks_failed": int(j.state == "error"),
                    "created": _iso(j.created),
                    "completed": None,
                    "user_command": j.spec.get("user_command"),
                    "approximate_cloud_total_cost": None,
                }
                for j in jobs[offset : offset + min(limit, 100)]
            ]
        return 200, {"items": items, "count": len(jobs)}

    # -- accounts: who may see what ----------------------------------------------------------------------------------

    def add_account(self, token: str, username: str, workspaces: set[str]) -> None:
        """Another user (token) and the workspaces they are a member of (created if new)."""
        with self._lock:
            self.users[token] = (username, set(workspaces) | {username})
            self.workspaces |= set(workspaces) | {username}

    def tokens_for_cluster(self, cluster_id: int | str) -> set[str | None]:
        """The tokens of the calls about a cluster (its jobs, logs, stop: ``/cluster/<id>``, ``/id/<id>``)."""
        with self._lock:
            return {
                token
                for _, path, token in self.callers
                if any(a in ("cluster", "id") and b == str(cluster_id) for a, b in itertools.pairwise(path.split("/")))
            }

    def _caller(self, method: str, path: str, headers: dict[str, str]) -> tuple[str, set[str]] | None:
        """The caller (username and workspaces) of an ``Authorization: ApiToken`` header; None: 401."""
        auth = headers.get("Authorization") or ""
        token = auth.removeprefix("ApiToken ") if auth.startswith("ApiToken ") else None
        with self._lock:
            self.callers.append((method, path, token))
            return self.users.get(token) if token is not None else None

    def _workspace_refused(self, workspace: str, member_of: set[str]) -> tuple[int, Any] | None:
        if workspace not in self.workspaces:
            return 404, {"message": f"Workspace '{workspace}' not found"}
        if workspace not in member_of:
            return 403, {"detail": "You do not have permission to perform this action."}
        return None

    def _refuse(self, path: str, problems: list[str]) -> tuple[int, Any]:
        with self._lock:
            self.refused.append((path, problems))
        return 400, {"message": "; ".join(problems)}

    def _create_cluster(self, workspace: str, body: dict[str, Any]) -> tuple[int, Any]:
        if problems := schema.cluster_problems(body):
            return self._refuse(f"/api/v2/clusters/account/{workspace}/", problems)
        provider = self.providers.get(workspace, "vm_aws").removeprefix("vm_")
        for vm in (body.get("scheduler_instance_types") or []) + (body.get("worker_instance_types") or []):
            if VM_CATALOGUE.get(vm, ("",))[0] != provider:
                return 400, {"message": f"VM type '{vm}' is not available in this workspace's region"}
        env_name = body.get("env_name")
        if env_name and body.get("extra_user_container") and (workspace, env_name) not in self.software_environments:
            return 400, {"message": f"Software environment '{env_name}' not found"}
        with self._lock:
            same = [
                c
                for c in self.clusters.values()
                if c.workspace == workspace and c.body["name"] == body["name"] and c.state not in ("stopped", "error")
            ]
            if same:
                return 200, {"id": same[0].id, "existing": True}
            cluster = FakeCluster(next(self._ids), workspace, body)
            self.clusters[cluster.id] = cluster
            jobs = [self.jobs[j] for j in body.get("batch_job_ids") or [] if j in self.jobs]
            for job in jobs:
                job.cluster_id = cluster.id
        if self.run_commands:
            for job in jobs:
                self._run(job)
        return 201, {"id": cluster.id, "existing": False}

    def _stop_cluster(self, cluster: FakeCluster) -> None:
        with self._lock:
            cluster.state = "stopped"
            jobs = [j for j in self.jobs.values() if j.cluster_id == cluster.id]
            for job in jobs:
                if job.state in ("pending", "assigned", "running"):
                    job.state, job.exit_code = "error", None  # the VM went away under the task
        for job in jobs:
            if job.process and job.process.poll() is None:
                job.process.terminate()

    def _run(self, job: FakeJob) -> None:
        env = {"PATH": _path(), "HOME": os.environ.get("HOME", "/tmp")}
        env.update({k: str(v) for k, v in (job.spec.get("env_vars") or {}).items()})
        env.update({k: str(v) for k, v in (job.spec.get("secret_env_vars") or {}).items()})
        if "PREFECT_HOME" in os.environ:
            env.setdefault("PREFECT_HOME", os.environ["PREFECT_HOME"])
        job.state = "running"
        job.process = subprocess.Popen(
            shlex.split(job.spec["user_command"]),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def read() -> None:
            assert job.process and job.process.stdout
            for line in job.process.stdout:
                job.output.append(line.rstrip("\n"))
            code = job.process.wait()
            with self._lock:
                if job.state == "running":
                    job.state, job.exit_code = ("done", 0) if code == 0 else ("error", code)

        job.reader = threading.Thread(target=read, daemon=True)
        job.reader.start()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def _vm_types(query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Coiled's VM type list filtered as ``/api/v1/vm-types/`` filters it (exact, ``__gte``/``__lte`` bounds)."""

    def number(key: str) -> int | None:
        return int(query[key][0]) if key in query else None

    found = []
    for name, (provider, cores, memory, gpus, arch) in VM_CATALOGUE.items():
        if query.get("backend_type", [f"vm_{provider}"])[0] != f"vm_{provider}" or query.get("arch", [arch])[0] != arch:
            continue
        checks = [(cores, "cores"), (memory, "memory"), (gpus, "gpus")]
        if any(
            (number(k) is not None and value != number(k))
            or (number(f"{k}__gte") is not None and value < number(f"{k}__gte"))
            or (number(f"{k}__lte") is not None and value > number(f"{k}__lte"))
            for value, k in checks
        ):
            continue
        found.append({"name": name, "cores": cores, "memory": memory, "gpus": gpus, "arch": arch})
    return found


def _path() -> str:
    """This machine's PATH with this Python's own bin first: the emulated image has `prefect` on its PATH."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
