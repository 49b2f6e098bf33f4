"""A deployment with a schedule, made by the stock `prefect deploy` from a `prefect.yaml`, has its runs executed when
due by `pushpool serve`, with nobody triggering them (issue 13, item 1).

Prefect's scheduler services create the runs (a Prefect server whose scheduler is broken — as with SQLAlchemy 2.1 —
creates none, and this test fails); pushpool's monitor dispatches them when due; `prefect flow-run execute` runs
them. The lateness of each run (due → job accepted) is printed, never asserted against a time budget.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from pushpool import localserver

from tests.helpers import start_server

pytestmark = pytest.mark.e2e

FLOW = """
from prefect import flow


@flow(log_prints=True)
def ping() -> str:
    print("ping")
    return "pong"
"""


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _get(client: httpx.Client, method: str, path: str, **kwargs):
    for _ in range(50):
        response = client.request(method, path, **kwargs)
        if response.status_code != 503:  # SQLite busy: retry
            response.raise_for_status()
            return response.json() if response.content else None
        time.sleep(0.1)
    response.raise_for_status()
    return None


def test_scheduled_runs_of_a_prefect_yaml_deployment_execute_when_due(tmp_path: Path, migrated_db: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOW)
    pool = "scheduled-pool"
    (project / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: scheduled-e2e
            prefect-version: 3.8.8
            build: null
            push: null
            pull:
              - prefect.deployments.steps.set_working_directory:
                  directory: {project}
            deployments:
              - name: every-ten-seconds
                entrypoint: flows.py:ping
                work_pool:
                  name: {pool}
                schedules:
                  - interval: 10
            """
        )
    )
    server = start_server(tmp_path / "prefect", migrated_db, scheduler=True)
    env = {
        **os.environ,
        "PREFECT_API_URL": server.api_url,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PUSHPOOL_HOME": str(tmp_path / "pushpool"),
    }
    port = localserver.free_port()
    serve = None
    try:
        serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed with the process
        serve = subprocess.Popen(
            [sys.executable, "-m", "pushpool.entrypoints.cli", "serve", "--port", str(port)],
            env=env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        cli = [sys.executable, "-m", "pushpool.entrypoints.cli"]
        subprocess.run(
            [*cli, "work-pool", "create", pool, "--type", "process:push", "--port", str(port)],
            env=env,
            check=True,
            capture_output=True,
        )
        deploy = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]

        client = httpx.Client(base_url=server.api_url, timeout=30)
        deployment = _get(client, "GET", "/deployments/name/ping/every-ten-seconds")
        query = {"deployments": {"id": {"any_": [deployment["id"]]}}}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # two runs dispatched: pause, so that no third starts (nor outlives us)
            runs = _get(client, "POST", "/flow_runs/filter", json=query)
            if sum(r["state"]["type"] != "SCHEDULED" for r in runs) >= 2:
                break
            time.sleep(1)
        _get(client, "POST", f"/deployments/{deployment['id']}/pause_deployment")
        while time.monotonic() < deadline:  # and the dispatched ones end
            runs = _get(client, "POST", "/flow_runs/filter", json=query)
            if all(r["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "SCHEDULED"} for r in runs):
                break
            time.sleep(1)
        completed = [r for r in runs if r["state"]["type"] == "COMPLETED"]
        assert len(completed) >= 2, (
            f"{len(completed)} scheduled runs completed; serve log:\n" + (tmp_path / "serve.log").read_text()[-3000:]
        )

        for run in completed:
            assert run["auto_scheduled"], run["name"]  # made by Prefect's scheduler, not by a manual trigger
            history = _get(client, "GET", "/flow_run_states/", params={"flow_run_id": run["id"]})
            accepted = next(s for s in history if s["name"] == "InfrastructurePending")
            lateness = (_time(accepted["timestamp"]) - _time(run["expected_start_time"])).total_seconds()
            print(f"scheduled run {run['name']}: job accepted {lateness:+.2f} s after it was due (lead 3 s)")
            # Started ahead by the pool's lead (process: 3 s, so the flow starts on time), never earlier.
            assert lateness >= -3.5, (run["name"], lateness)
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=30)
        server.stop()
