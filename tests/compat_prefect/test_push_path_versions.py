"""The push path end to end against Prefect servers of other releases (issue 25): ``make compat-prefect``.

Each server runs from an environment of its own built with the dependencies of its release date
(``.venv-prefect-<version>``, see the Makefile); ``PUSHPOOL_PREFECT_COMPAT`` names them as ``version=python`` pairs.
Per server: ``work-pool create`` (the pool, its Webhook block and its automation — the 422 of issue 25 on 3.0–3.4.6),
a run through the automation's webhook, a failing run, a scheduled run, a cancel, a run through ``pushpool serve``'s
event stream, and the pool Ready while the monitor ticks. A server whose environment is missing is skipped, saying so.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import httpx
import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.usecases.pools import list_pools
from pushpool.usecases.provision import provision_pool

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

FLOWS = Path(__file__).resolve().parents[1] / "flows"
ADMIN = {"Authorization": "Bearer test-admin-token"}
VERSIONS = tuple(  # the Makefile's (PREFECT_COMPAT), or another list: PUSHPOOL_PREFECT_COMPAT="3.2.15=<python> …"
    p.split("=", 1)[0] for p in os.environ.get("PUSHPOOL_PREFECT_COMPAT", "").split() if "=" in p
) or ("3.0.11", "3.4.25", "3.9.1")


def _pythons() -> dict[str, str]:
    pairs = (p.split("=", 1) for p in os.environ.get("PUSHPOOL_PREFECT_COMPAT", "").split() if "=" in p)
    return dict(pairs)


def _python_for(version: str) -> str:
    if not _pythons():  # like the other compat suites: run by its own target, never inside `make test`'s session
        pytest.skip("run by `make compat-prefect` (PUSHPOOL_PREFECT_COMPAT names each server's python)")
    python = _pythons().get(version) or str(Path(__file__).resolve().parents[2] / f".venv-prefect-{version}/bin/python")
    if not Path(python).exists():
        pytest.skip(f"no Prefect {version} environment at {python}: `make compat-prefect` builds it")
    return python


@pytest.fixture(params=VERSIONS)
def server(request: pytest.FixtureRequest, tmp_path: Path):
    version = request.param
    python = _python_for(version)
    started = localserver.start(
        tmp_path / "prefect",
        python=python,
        extra_env={
            "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "true",
            "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
        },
    )
    # The flow runs under the Prefect of the server's release (a client no newer than its server, as Prefect requires:
    # 3.8's engine cannot open a 3.0 server's event stream): what a deployment's image holds in real use.
    started.flow_command = f"{Path(python).parent / 'prefect'} flow-run execute"  # type: ignore[attr-defined]
    yield version, started
    started.stop()


def _served(api_url: str, tmp: Path, *, stream: bool) -> Server:
    """The webhook serve: no event stream, no monitor (only the automation's webhook can submit); the stream serve:
    Prefect's event stream and a monitor ticking every second (scheduled runs, heartbeats)."""
    port = localserver.free_port()
    deps = make_deps(api_url, tmp / ("stream" if stream else "hook"), submit_url=f"http://127.0.0.1:{port}/submit")
    served = Server(deps, port=port, monitor_interval=1 if stream else 3600, event_stream=stream)
    if not stream:
        served.stopping.set()  # the monitor thread exits at once
    served.start()
    return served


def _pushpool_events(prefect: PrefectHelper, run_id: str, name: str, timeout: float = 45) -> dict:
    """The run's event ``name`` as the run page of Prefect's UI finds it (any resource is the run), once stored."""
    body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}"]}, "event": {"name": [name]}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while True:
        found = prefect.json("POST", "/events/filter", json=body)["events"]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.5)


def _automation_live(prefect: PrefectHelper, deployment: str, within: float = 90.0) -> None:
    """Wait until the pool's new automation acts: Prefect's triggers service loads a new automation after it is
    created, and on 3.0.11 a run created at once was seen (twice, once on an idle machine) to get no webhook at all —
    its Scheduled event evaluated before the automation was loaded. A probe run every 10 s until one is submitted;
    the probes left Scheduled are deleted."""
    deadline = time.monotonic() + within
    while True:
        probe = prefect.create_run(deployment)
        waited = time.monotonic() + 10
        while time.monotonic() < waited and prefect.read_run(probe)["state"]["type"] == "SCHEDULED":
            time.sleep(0.25)
        if prefect.read_run(probe)["state"]["type"] != "SCHEDULED":
            _finished(prefect, probe)
            return
        prefect.request("DELETE", f"/flow_runs/{probe}")
        assert time.monotonic() < deadline, f"the pool's automation never called the webhook within {within:.0f} s"


def _finished(prefect: PrefectHelper, run_id: str) -> str:
    return str(prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, timeout=120)["state"]["type"])


def test_the_push_path_on_each_server_version(server, tmp_path: Path) -> None:
    version, prefect_server = server
    jobvars = {"command": prefect_server.flow_command}
    prefect = PrefectHelper(prefect_server.api_url, FLOWS)
    hooked = _served(prefect_server.api_url, tmp_path, stream=False)
    try:
        assert hooked.deps.orchestrator.server_dialect().name == version
        http = httpx.Client(base_url=hooked.address, timeout=60)
        pool = prefect.unique("hooked")
        first = http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN)
        assert first.status_code == 200, first.text  # 3.0-3.4.6: the automation's tags were refused (HTTP 422)
        assert [s["action"] for s in first.json()["steps"]] == ["created"] * 3
        again = http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN).json()
        assert [s["action"] for s in again["steps"]] == ["unchanged"] * 3  # its tags read back on every server
        (row,) = [r for r in list_pools(hooked.deps) if r["name"] == pool]
        assert row["automation"] == "enabled", row

        # The webhook path: only the automation's webhook can submit here.
        hello = prefect.create_deployment(pool, "flows.py:hello", job_variables=jobvars)
        _automation_live(prefect, hello)
        # One run at a time: three flows starting at once on a slow day kept the 3.4.25 server from answering one
        # flow's event-stream handshake within its client's 10 s (websockets' default): that flow exited 1 before it
        # began, and its run stayed Pending, as this serve has no monitor to crash it (a fresh-clone run, 2026-12-07).
        done = prefect.create_run(hello)
        assert _finished(prefect, done) == "COMPLETED"
        assert prefect.read_run(done)["infrastructure_pid"]
        # serve's events (issue 26) on the run's page, as the UI asks for them: accepted and stored by every server.
        submitted = _pushpool_events(prefect, done, "pushpool.run.submitted")
        assert submitted["related"][-1]["prefect.resource.role"] == "creator", submitted
        # pushpool's Pending sub-state (Pending → InfrastructurePending): servers before 3.6.22 ABORT it, harmlessly
        # (the answer still carries the run's state, which is all submit reads from it); newer ones record it.
        substate = ("PENDING", "InfrastructurePending") in prefect.states(done)
        assert substate == hooked.deps.orchestrator.server_dialect().has("pending_substates"), prefect.states(done)
        failing = prefect.create_run(prefect.create_deployment(pool, "flows.py:fail", job_variables=jobvars))
        assert _finished(prefect, failing) == "FAILED"
        sleeper = prefect.create_run(prefect.create_deployment(pool, "flows.py:sleeper", job_variables=jobvars))
        prefect.wait_for(sleeper, {"RUNNING"}, timeout=120)
        prefect.set_state(sleeper, "CANCELLING", name="Cancelling")
        assert _finished(prefect, sleeper) == "CANCELLED"
    finally:
        hooked.stop()
        hooked.deps.orchestrator.close()

    # The event-stream path: serve reads the events (the automation is kept disabled); its monitor submits a run
    # scheduled for later when it is due and keeps the pool Ready (Prefect's foreman judges the heartbeats).
    streamed = _served(prefect_server.api_url, tmp_path, stream=True)
    try:
        pool = prefect.unique("streamed")
        made = provision_pool(streamed.deps, name=pool, type_name="process:push", events="stream")
        assert [s.action for s in made.steps] == ["created"] * 3
        (row,) = [r for r in list_pools(streamed.deps) if r["name"] == pool]
        assert row["automation"] == "event stream", row
        hello = prefect.create_deployment(pool, "flows.py:hello", job_variables=jobvars)
        run_id = prefect.create_run(hello)
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
        scheduled = prefect.create_run(
            hello, state={"type": "SCHEDULED", "state_details": {"scheduled_time": later.isoformat()}}
        )
        assert _finished(prefect, run_id) == "COMPLETED"
        assert _finished(prefect, scheduled) == "COMPLETED"
        started = prefect.read_run(scheduled)["start_time"]
        # Not before its time, less the process provider's dispatch lead (3 s: its job starts that early so that the
        # flow starts on time; a quick engine start may begin the flow a fraction of a second before ``later``).
        lead = dt.timedelta(seconds=3)
        assert dt.datetime.fromisoformat(started.replace("Z", "+00:00")) >= later - lead
        deadline = time.monotonic() + 30
        while prefect.json("GET", f"/work_pools/{pool}")["status"] != "READY" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prefect.json("GET", f"/work_pools/{pool}")["status"] == "READY"
    finally:
        streamed.stop()
        streamed.deps.orchestrator.close()
        prefect.close()
