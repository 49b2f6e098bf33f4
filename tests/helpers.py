"""Test helpers: create pools, deployments and runs on the real Prefect server, wait for states, read timelines."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pushpool import localserver
from pushpool.clock import SystemClock
from pushpool.settings import Settings
from pushpool.tls import default_context
from pushpool.usecases.deps import Deps

MIGRATED_DB = "migrated-prefect.db"
# A job that starts and exits 0 at once (process, Modal and Coiled pools: the ``command`` job variable), for a test
# whose meaning ends at "the run was submitted": a real flow (``prefect flow-run execute``) costs about 8 CPU-seconds
# here, three processes each importing Prefect. No final state is proposed: a monitor that ticks later crashes the run.
EXITS_AT_ONCE = {"command": "true"}
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prefect-api-key-AbCdEf"


class PrefectHelper:
    def __init__(self, api_url: str, flows_dir: Path) -> None:
        self.api_url = api_url
        self.flows_dir = flows_dir
        # SQLite's lock can stall the shared server for tens of seconds when many pools are swept at once.
        self.http = httpx.Client(base_url=api_url, timeout=90, verify=default_context())  # a shared TLS context

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # SQLite answers "database is locked" as 503: retry, for up to about a minute (the shared server can stall).
        for attempt in range(240):
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                # A pooled keep-alive connection the server closed as it was reused, or a reset from a server whose
                # accept queue overflowed (frequent on a loaded machine): again, a little later. Every POST that
                # creates something is made safe to repeat (create_run sends an idempotency key; names are unique).
                if attempt >= 9:
                    raise
                time.sleep(0.1 * (attempt + 1))
                continue
            if response.status_code != 503:
                return response
            time.sleep(0.1 if attempt < 30 else 0.25)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    # -- objects ------------------------------------------------------------------------------------------

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def create_pool(self, name: str, type_name: str = "process:push", **extra: Any) -> dict[str, Any]:
        from pushpool.providers import POOL_TYPES, base_job_template

        body = {"name": name, "type": type_name, **extra}
        if type_name in POOL_TYPES and "base_job_template" not in extra:
            body["base_job_template"] = base_job_template(type_name)
        return self.json("POST", "/work_pools/", json=body)

    def create_deployment(
        self, pool: str, entrypoint: str = "flows.py:hello", *, job_variables: dict | None = None, **extra: Any
    ) -> str:
        flow_name = entrypoint.split(":")[1]
        flow = self.json("POST", "/flows/", json={"name": flow_name})
        body = {
            "name": self.unique("dep"),
            "flow_id": flow["id"],
            "work_pool_name": pool,
            "entrypoint": entrypoint,
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(self.flows_dir)}}],
            "job_variables": job_variables or {},
            "enforce_parameter_schema": False,
            **extra,
        }
        return str(self.json("POST", "/deployments/", json=body)["id"])

    def create_run(self, deployment_id: str, **body: Any) -> str:
        body.setdefault("idempotency_key", uuid.uuid4().hex)  # a retried POST finds the run it made, never a second
        return str(self.json("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)["id"])

    def read_run(self, run_id: str) -> dict[str, Any]:
        return self.json("GET", f"/flow_runs/{run_id}")

    def state(self, run_id: str) -> tuple[str, str]:
        state = self.read_run(run_id)["state"]
        return state["type"], state.get("name") or ""

    def wait_for(self, run_id: str, types: set[str], timeout: float = 60, tick: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run = self.read_run(run_id)
        while time.monotonic() < deadline:
            run = self.read_run(run_id)
            if run["state"]["type"] in types:
                return run
            if tick is not None:
                tick()
            time.sleep(0.25)
        raise AssertionError(f"run {run_id} still {run['state']['type']}/{run['state']['name']} after {timeout}s")

    def wait_submitted(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        """The run once pushpool has started its job: submit writes the job's id (``infrastructure_pid``) only after
        the backend accepted the job. For a test whose meaning ends at "submitted" (its job: ``EXITS_AT_ONCE``)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.read_run(run_id)
            if run["infrastructure_pid"]:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} has no job after {timeout}s: {run['state']['type']}")
            time.sleep(0.25)

    def states(self, run_id: str) -> list[tuple[str, str]]:
        history = self.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
        history.sort(key=lambda s: s["timestamp"])
        return [(s["type"], s["name"]) for s in history]

    def set_state(self, run_id: str, type_: str, *, force: bool = False, **state: Any) -> dict[str, Any]:
        return self.json(
            "POST", f"/flow_runs/{run_id}/set_state", json={"state": {"type": type_, **state}, "force": force}
        )

    def set_pool_limit(self, pool: str, limit: int | None) -> None:
        self.json("PATCH", f"/work_pools/{pool}", json={"concurrency_limit": limit})

    def state_history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's states as the API lists them (``type``, ``name``, ``message``, ``timestamp``, ...), unordered."""
        return self.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})


class FakeHelper:
    """``PrefectHelper``'s methods over the orchestration fake (tests/fake_prefect.py), for a test whose runs need
    only what the orchestration contract covers: no flow is executed (a deployment's entrypoint names its flow and
    nothing else), and the test's own reads and writes are neither counted nor faulted."""

    unique = staticmethod(PrefectHelper.unique)

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def close(self) -> None:
        self.fake.close()

    def create_pool(self, name: str, type_name: str = "process:push", *, base_job_template: dict | None = None) -> Any:
        return self.fake.add_pool(name, type_name, base_job_template=base_job_template)

    def create_deployment(
        self, pool: str, entrypoint: str = "flows.py:hello", *, job_variables: dict | None = None
    ) -> str:
        return self.fake.add_deployment(pool, job_variables=job_variables, flow_name=entrypoint.split(":")[1])

    def create_run(self, deployment_id: str) -> str:
        return self.fake.add_run(deployment_id)

    def read_run(self, run_id: str) -> dict[str, Any]:
        """The run as ``GET /flow_runs/{id}`` answers it (its ``state_type`` included)."""
        run = self.fake.run(run_id).model_dump(mode="json")
        return {**run, "state_type": run["state"]["type"], "state_name": run["state"]["name"]}

    state = PrefectHelper.state
    wait_for = PrefectHelper.wait_for

    def set_state(self, run_id: str, type_: str, *, force: bool = False) -> Any:
        from pushpool.prefect_api.models import StateType

        return self.fake.set_state_raw(run_id, StateType(type_), force=force)

    def set_pool_limit(self, pool: str, limit: int | None) -> None:
        self.fake.set_pool(pool, concurrency_limit=limit)

    def state_history(self, run_id: str) -> list[dict[str, Any]]:
        return self.fake.state_history(run_id)


def make_deps(api_url: str, tmp: Path, **overrides: Any) -> Deps:
    return Deps.from_settings(settings_for(api_url, tmp, **overrides))


def fake_deps(fake: Any, tmp: Path, **overrides: Any) -> Deps:
    """``make_deps``' dependencies with the orchestration fake (tests/fake_prefect.py) in place of the real client."""
    return Deps.from_settings(settings_for(fake.api_url, tmp, **overrides), orchestrator=fake)


def settings_for(api_url: str, tmp: Path, **overrides: Any) -> Settings:
    """The settings of every test's pushpool: short monitor timeouts, a private job directory."""
    settings = Settings.of(
        prefect_api_url=api_url,
        webhook_tokens=("test-token",),
        admin_token="test-admin-token",  # serve's /provision and /monitor
        submit_url="http://127.0.0.1:9/submit",
        pending_timeout_seconds=3,
        exit_grace_seconds=2,
        cancel_grace_seconds=3,
        process_dir=tmp / "jobs",
        image_platform_check=False,  # tests reach no image registry (test_image_platform.py runs its own)
    )
    return settings.replace(**overrides)


class AheadClock(SystemClock):
    """The real clock, ``seconds`` ahead: the monitor sees timeouts expire without the test waiting for them."""

    def __init__(self, seconds: float) -> None:
        self.offset = dt.timedelta(seconds=seconds)

    def now(self) -> dt.datetime:
        return super().now() + self.offset


def skip_ahead(deps: Deps, seconds: float) -> None:
    """From now on ``deps``' monitor and submit see a clock ``seconds`` ahead of the real one."""
    deps.clock = AheadClock(seconds)


def submit(deps: Deps, run_id: str):
    """Submit one run as a trigger does (``submit_run`` on the run and its pool, read from the server): the outcome."""
    from pushpool.usecases.submit import submit_run

    run = deps.orchestrator.read_flow_run(run_id)
    return submit_run(deps, run, deps.orchestrator.read_work_pool(run.work_pool_name), trigger="test")


def pool_tick(deps: Deps, pool_name: str):
    """One monitor tick over a single pool: counts in its report are this test's alone (the server is shared)."""
    from pushpool.usecases.monitor import tick

    return tick(deps, pools=[deps.orchestrator.read_work_pool(pool_name)])


def snapshot_database(home: Path, to: Path) -> None:
    """A consistent copy of the SQLite database of the server whose PREFECT_HOME is ``home`` (it may be running: the
    backup API copies one snapshot, whatever its write-ahead log holds)."""
    source, target = sqlite3.connect(home / "prefect.db"), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def server_python(*, schedules: bool = False) -> str | None:
    """The interpreter the tests' Prefect servers run in: ``PUSHPOOL_TEST_SERVER_PYTHON`` (the Makefile's
    ``.venv-server``: the same Prefect 3.8.8 on SQLAlchemy 2.1), else this one. On SQLAlchemy 2.0 a 3.8.8 server on
    SQLite stalls for 60 s at a time under routine polling (docs/development.md). On 2.1 it cannot make runs from
    schedules (its scheduler service, ``POST /deployments/{id}/schedule``: "Can't evaluate bulk DML statement"), so a
    server that must (``schedules``) runs here."""
    return None if schedules else os.environ.get("PUSHPOOL_TEST_SERVER_PYTHON") or None


# The tests' servers' site customization (tests/prefect_server_site/sitecustomize.py): jsonschema's check_schema
# remembers the schemas it found valid, the same answers sooner.
SERVER_SITE = Path(__file__).resolve().parent / "prefect_server_site"


def start_server(home: Path, migrated_db: Path, **options: Any) -> localserver.LocalPrefectServer:
    """``localserver.start`` on a copy of a database the same Prefect version migrated (the ``migrated_db`` fixture):
    the server skips the migrations a new database needs, and has nothing in it but what a fresh server makes. Its
    ``PYTHONPATH`` starts with ``SERVER_SITE``."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, home / "prefect.db")
    options.setdefault("python", server_python(schedules=options.get("scheduler", False)))
    path = os.pathsep.join(filter(None, [str(SERVER_SITE), os.environ.get("PYTHONPATH")]))
    options["extra_env"] = {"PYTHONPATH": path, **options.get("extra_env", {})}
    return localserver.start(home, **options)


def run_as_its_container(command: list[str], env: Mapping[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run a job's command here, as its container would run it: this interpreter's ``bin`` on ``PATH``, ``home`` as
    its home and working directory, the job's own ``env`` over those. The command must exit 0 (the failure shows the
    tail of its stderr)."""
    base = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(home),
        "PREFECT_HOME": str(home / "p"),
    }
    result = subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=120, cwd=home)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def run_through_serve(
    prefect_api: str, tmp: Path, prefect: PrefectHelper, pool_type: str, *, until: str = "COMPLETED"
) -> dict[str, Any]:
    """Prefect's automation calling ``pushpool serve``: a pool of ``pool_type`` made through serve's ``/provision``,
    one run of it submitted by the webhook alone (serve's own loop is stopped). ``until="COMPLETED"``: a real flow, and
    the run once it ended, which must have COMPLETED. ``until="submitted"``: a job that exits at once
    (``EXITS_AT_ONCE``), and the run once pushpool recorded the job the backend accepted."""
    from pushpool import localserver
    from pushpool.entrypoints.serve import Server

    assert until in ("COMPLETED", "submitted"), until
    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp, submit_url=f"http://127.0.0.1:{port}/submit")
    server = Server(deps, port=port, monitor_interval=3600, event_stream=False)
    server.stopping.set()  # only the webhook submits
    server.start()
    try:
        http = httpx.Client(base_url=server.address, timeout=30)
        pool = prefect.unique(f"{pool_type.split(':')[0]}-hooked")
        answer = http.post("/provision", json={"name": pool, "type": pool_type},
                           headers={"Authorization": "Bearer test-admin-token"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        if until == "submitted":
            return prefect.wait_submitted(
                prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
            )
        run_id = prefect.create_run(prefect.create_deployment(pool))
        started = time.monotonic()
        run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
        assert run["state"]["type"] == "COMPLETED", (run["state"], time.monotonic() - started)
        return run
    finally:
        server.stop()
        deps.orchestrator.close()
