"""The Prefect server stopped in the middle of a monitor tick and started again: no wrong transition, and
everything is repaired on the next ticks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pushpool import localserver
from pushpool.errors import PushpoolError
from pushpool.prefect_api.models import StateType
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import submit_run

from tests.conftest import FLOWS_DIR
from tests.helpers import PrefectHelper, make_deps, skip_ahead

pytestmark = pytest.mark.integration


def test_prefect_stopped_mid_tick(tmp_path: Path, report) -> None:
    port = localserver.free_port()
    server = localserver.start(tmp_path / "server", port=port)
    deps = make_deps(server.api_url, tmp_path)
    deps.orchestrator.max_retries = 2
    prefect = PrefectHelper(server.api_url, FLOWS_DIR)
    try:
        pool = prefect.unique("outage")
        prefect.create_pool(pool)
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 60"})
        client = deps.orchestrator
        alive, cancelling, stale = (prefect.create_run(dep) for _ in range(3))
        for run_id in (alive, cancelling):
            assert submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool)).outcome == "submitted"
        prefect.set_state(cancelling, "CANCELLING")
        assert client.propose_state(stale, StateType.PENDING).accepted  # a submitter that died after the claim
        skip_ahead(deps, deps.settings.pending_timeout_seconds + 0.2)

        calls = {"n": 0}
        original = client._request

        def failing_midway(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:  # pools, due runs, in-flight runs and ended runs read: now the server goes away
                server.stop()
            return original(*args, **kwargs)

        client._request = failing_midway  # type: ignore[method-assign]
        try:
            report_during = tick(deps)
        except PushpoolError:
            report_during = None
        client._request = original  # type: ignore[method-assign]
        assert server.process.poll() is not None  # it really was down

        restarted = time.monotonic()
        server = localserver.start(tmp_path / "server", port=port)
        for _ in range(2):
            tick(deps)
        repaired = time.monotonic() - restarted
        backend = deps.backend("process")
        states = {r: prefect.read_run(r) for r in (alive, cancelling, stale)}
        alive_job = backend.status([JobHandle("process", states[alive]["infrastructure_pid"])])
        right = {
            "alive untouched": states[alive]["state"]["type"] == "PENDING"
            and next(iter(alive_job.values())).state is JobState.RUNNING,
            "cancelling finished": states[cancelling]["state"]["type"] == "CANCELLED",
            "stale recovered": states[stale]["state"]["type"] in ("SCHEDULED", "PENDING"),
        }
        report.add(
            "Prefect server stopped mid-tick, restarted",
            runs=3,
            faults=1,
            stuck=sum(not ok for ok in right.values()),
            longest_repair=repaired,
        )
        assert all(right.values()), (right, report_during)
        handle = JobHandle("process", states[cancelling]["infrastructure_pid"])
        assert backend.status([handle])[handle.id].state in (JobState.STOPPED, JobState.MISSING)  # MISSING: cleaned up
    finally:
        for run in prefect.json("POST", "/flow_runs/filter", json={}) if server.process.poll() is None else []:
            if run.get("infrastructure_pid"):
                deps.backend("process").cancel(JobHandle("process", run["infrastructure_pid"]), grace_seconds=1)
        prefect.close()
        deps.orchestrator.close()
        server.stop()
