"""The bench's test bed: moto in server mode with a call counter and RunTask timestamps, local Prefect servers
(SQLite, or PostgreSQL 15 in a throw-away cluster), pools for pushpool and for Prefect's ECS worker, run creation,
and the processes under test (``pushpool serve``, ``prefect worker start``), all on 127.0.0.1 and stopped by pid.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import httpx
from pushpool import localserver

ROOT = Path(__file__).resolve().parent.parent
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "false",
}


# -- moto ------------------------------------------------------------------------------------------------------


class CountingApp:
    """WSGI middleware in front of moto: counts AWS calls per (service, action)."""

    def __init__(self, app) -> None:
        self.app = app
        self.counts: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            action = target.rsplit(".", 1)[-1]
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            query = parse_qs(environ.get("QUERY_STRING", ""))
            query.update(parse_qs(body.decode("utf-8", "replace")))
            action = (query.get("Action") or [environ.get("PATH_INFO", "?")])[0]
        scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(1) if scope else "?"
        with self.lock:
            self.counts[f"{service}:{action}"] += 1
        return self.app(environ, start_response)

    def take(self) -> Counter:
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts


class Moto:
    """moto server on 127.0.0.1 in this process; ``run_task_at[flow_run_id]`` = when RunTask accepted its job."""

    def __init__(self) -> None:
        from moto.ecs import models as ecs_models
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.port = localserver.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_task_at: dict[str, float] = {}
        self.run_tasks: Counter = Counter()  # flow run id -> RunTask calls that created a task for it
        self.app = CountingApp(DomainDispatcherApplication(create_backend_app))

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args, **kwargs) -> None:
                return

        self._server = make_server("127.0.0.1", self.port, self.app, True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        # moto returns no createdAt for tasks: stamp the moment RunTask created one, keyed by flow run id.
        original = ecs_models.EC2ContainerServiceBackend.run_task
        bench = self

        def run_task(backend, *args, **kwargs):
            tasks = original(backend, *args, **kwargs)
            now = time.time()
            for task in tasks:
                run_id = _flow_run_id(task)
                if run_id:
                    bench.run_task_at.setdefault(run_id, now)
                    bench.run_tasks[run_id] += 1
            return tasks

        ecs_models.EC2ContainerServiceBackend.run_task = run_task

    def start(self) -> Moto:
        self._thread.start()
        os.environ.update({**AWS_ENV, "AWS_ENDPOINT_URL": self.url})
        os.environ.pop("AWS_PROFILE", None)
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def env(self) -> dict[str, str]:
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.url}


def _flow_run_id(task) -> str | None:
    for override in (getattr(task, "overrides", None) or {}).get("containerOverrides", []) or []:
        for pair in override.get("environment", []) or []:
            if pair.get("name") == "PREFECT__FLOW_RUN_ID":
                return str(pair.get("value"))
    started_by = getattr(task, "started_by", "") or ""
    return started_by.split("/")[0] if started_by else None


@dataclass
class Network:
    cluster: str
    subnets: list[str]
    security_group: str
    vpc: str


def aws_network(name: str = "bench") -> Network:
    import boto3

    ecs, ec2 = boto3.client("ecs"), boto3.client("ec2")
    ecs.create_cluster(clusterName=name)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    group = ec2.create_security_group(GroupName=name, Description="bench", VpcId=vpc)["GroupId"]
    return Network(name, subnets[:2], group, vpc)


# -- Prefect ---------------------------------------------------------------------------------------------------


class Postgres:
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1 (run as the ``postgres`` user when we are root)."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pushpool-bench-pg-"))  # its own: the postgres user must enter it
        self.data = self.base / "pgdata"
        self.port = localserver.free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    @classmethod
    def available(cls) -> bool:
        return (cls.BIN / "initdb").exists()

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp")
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {(result.stderr or result.stdout)[-500:]}")
        return result

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=/tmp -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.data / "log"), "-w", "start")
        self.psql("CREATE DATABASE prefect", db="postgres")
        return self

    def psql(self, sql: str, db: str = "prefect") -> str:
        result = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-Atc", sql)
        return result.stdout

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_prefect(home: Path, database_url: str | None = None) -> localserver.LocalPrefectServer:
    env = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}  # uvicorn's access log: the orchestration call counter
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return localserver.start(home, extra_env=env)


class AccessLog:
    """Counts orchestration API calls in the server's uvicorn access log between two marks."""

    LINE = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (/api/[^ ?"]*)[^"]*" (\d+)')
    IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def __init__(self, server: localserver.LocalPrefectServer) -> None:
        self.path = server.home / "server.log"
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def take(self, exclude: re.Pattern | None = None) -> Counter:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode("utf-8", "replace")
        self.offset += len(text.encode())
        counts: Counter = Counter()
        for method, path, status in self.LINE.findall(text):
            endpoint = f"{method} {self.IDS.sub('{id}', path)}"
            if exclude is not None and exclude.search(endpoint):
                continue
            counts[endpoint] += 1
            if status == "503":
                counts["503 answers (retried)"] += 1
        return counts


class Api:
    """The bench's own Prefect client (creation of pools, deployments and runs), retrying SQLite's 503s."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=180)  # SQLite can stall the server for 60 s
        self.retried: Counter = Counter()  # status -> answers retried (503: SQLite busy, 429)
        self._lock = threading.Lock()

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(60):
            response = self.http.request(method, path, **kwargs)
            if response.status_code not in (503, 429):
                response.raise_for_status()
                return response
            with self._lock:
                self.retried[response.status_code] += 1
            time.sleep(min(0.05 * 2**attempt, 1.0))
        response.raise_for_status()
        return response

    def deployment(self, pool: str, name: str) -> str:
        flow = self.call("POST", "/flows/", json={"name": "bench-flow"}).json()["id"]
        body = {"name": name, "flow_id": flow, "work_pool_name": pool, "entrypoint": "flows.py:noop"}
        return self.call("POST", "/deployments/", json=body).json()["id"]

    def create_run(self, deployment_id: str) -> tuple[str, float]:
        data = self.call("POST", f"/deployments/{deployment_id}/create_flow_run", json={}).json()
        return data["id"], _epoch(data["created"])

    def delete_pool(self, name: str) -> None:
        self.http.delete(f"/work_pools/{name}")


def _epoch(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pushpool_template(net: Network) -> dict:
    from pushpool.providers import base_job_template

    template = copy.deepcopy(base_job_template("ecs:push"))
    _moto_defaults(template, net)
    return template


def worker_template(net: Network, python: str) -> dict:
    """prefect-aws's own default ECS template, with the same moto adaptations as pushpool's."""
    code = (
        "import json; from prefect_aws.workers.ecs_worker import ECSWorker; "
        "print(json.dumps(ECSWorker.get_default_base_job_template()))"
    )
    template = json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)
    _moto_defaults(template, net)
    template["variables"]["properties"]["vpc_id"]["default"] = net.vpc  # the worker wants it with a custom network
    return template


def _moto_defaults(template: dict, net: Network) -> None:
    props = template["variables"]["properties"]
    props["cluster"]["default"] = net.cluster
    props["network_configuration"]["default"] = {
        "subnets": net.subnets,
        "securityGroups": [net.security_group],
        "assignPublicIp": "ENABLED",
    }
    props["image"]["default"] = "prefecthq/prefect:3-latest"
    # moto cannot place a Fargate task whose memory is set at task level only (both templates get the same fix).
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512


# -- processes under test ---------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def spawn(name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    out = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
    process = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return Child(name, process, log_path)


def serve(api_url: str, moto: Moto, log_dir: Path, *, event_stream: bool, monitor_interval: float, token: str):
    port = localserver.free_port()
    env = {
        **os.environ,
        **moto.env(),
        "PREFECT_API_URL": api_url,
        "PUSHPOOL_WEBHOOK_TOKEN": token,
        "PUSHPOOL_PROCESS_DIR": str(log_dir / "jobs"),
    }
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", "serve", "--port", str(port)]
    cmd += ["--monitor-interval", str(monitor_interval)]
    if not event_stream:
        cmd.append("--no-event-stream")
    child = spawn(f"serve-{port}", cmd, env, log_dir)
    child.extra["url"] = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{child.extra['url']}/health", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"pushpool serve did not start; see {child.log_path}")


def worker(api_url: str, moto: Moto, log_dir: Path, pool: str, query_seconds: float | None) -> Child:
    env = {**os.environ, **moto.env(), "PREFECT_API_URL": api_url, "PREFECT_HOME": str(log_dir / "prefect-home")}
    if query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    name = f"worker-{pool}"
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "ecs", "--name", name]
    return spawn(name, cmd, env, log_dir)


def served_lines(child: Child, prefix: str) -> list[dict]:
    """The JSON payloads of ``prefix: {...}`` lines in a serve log."""
    out = []
    for line in child.log_text().splitlines():
        index = line.find(prefix + ": {")
        if index >= 0:
            try:
                out.append(json.loads(line[index + len(prefix) + 2 :]))
            except ValueError:
                continue
    return out


def wait_for_jobs(moto: Moto, run_ids: list[str], timeout: float, api: Api | None = None) -> float:
    """Wait until every run has a RunTask, or (with ``api``) has ended without one (e.g. a worker crashed it on a
    503); returns the wall time waited."""
    started = time.monotonic()
    ended: set[str] = set()
    checked = started
    while time.monotonic() - started < timeout:
        missing = [r for r in run_ids if r not in moto.run_task_at and r not in ended]
        if not missing:
            break
        if api is not None and time.monotonic() - checked > 5:
            checked = time.monotonic()
            body = {"flow_runs": {"id": {"any_": missing[:200]}, "state": {"type": {"any_": ["CRASHED", "FAILED"]}}}}
            # /paginate: an endpoint neither actor uses, excluded from the call counts (dispatch.CREATES).
            page = api.call("POST", "/flow_runs/paginate", json={**body, "limit": 200}).json()
            ended.update(r["id"] for r in page.get("results", []))
        time.sleep(0.1)
    return time.monotonic() - started


def token() -> str:
    return uuid.uuid4().hex
