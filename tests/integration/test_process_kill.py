"""kill -9 of any process of a process job (its supervisor, ``prefect flow-run execute``, Prefect's engine) is seen
within a tick: the whole tree is stopped and the run Crashed with the real reason (issue 28, item 2).

Before: killing ``flow-run execute`` left Prefect's engine orphaned (re-parented to pid 1) running the flow, the job
read RUNNING, and the run stayed Running until the flow body ended.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from pushpool.providers.base import JobHandle
from pushpool.providers.process.backend import MARKER
from pushpool.usecases.submit import submit_run

from tests.helpers import PrefectHelper, pool_tick

pytestmark = pytest.mark.integration


def _tree(key: str) -> dict[str, int]:
    """The job's processes by role: supervisor, execute (``prefect flow-run execute``), engine."""
    roles: dict[str, int] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.environ().get(MARKER) != key:
                continue
        except psutil.Error:
            continue
        line = " ".join(proc.info["cmdline"] or ())
        role = "supervisor" if "process.supervisor" in line else "engine" if "prefect.engine" in line else "execute"
        roles[role] = proc.info["pid"]
    return roles


# What the run's Crashed state says, by the process killed: the real reason, not "exited cleanly" or a flow timeout.
EXPECTED = {
    "execute": "command was killed by signal 9 (SIGKILL); 1 remaining process of the job (Prefect's engine) stopped",
    "engine": "-9",  # Prefect's runner reports its engine's exit status
    "supervisor": "died without recording how the job's command ended; 2 remaining processes of the job stopped",
}


@pytest.mark.parametrize("target", ["execute", "engine", "supervisor"])
def test_kill_9_of_any_process_of_the_job_stops_the_tree_and_crashes_the_run(
    deps, prefect: PrefectHelper, pool: str, target: str
) -> None:
    dep = prefect.create_deployment(pool, "flows.py:sleeper", parameters={"seconds": 600})
    run_id = prefect.create_run(dep)
    client = deps.orchestrator
    submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="test")
    pid = prefect.wait_for(run_id, {"RUNNING"}, timeout=120, tick=lambda: pool_tick(deps, pool))["infrastructure_pid"]
    key = pid.split("::")[-1]
    try:
        deadline = time.monotonic() + 30
        while set(_tree(key)) != {"supervisor", "execute", "engine"} and time.monotonic() < deadline:
            time.sleep(0.2)
        tree = _tree(key)
        assert set(tree) == {"supervisor", "execute", "engine"}, tree
        os.kill(tree[target], signal.SIGKILL)
        run = prefect.wait_for(
            run_id, {"CRASHED", "COMPLETED", "FAILED"}, timeout=60, tick=lambda: pool_tick(deps, pool)
        )
        assert run["state"]["type"] == "CRASHED", run["state"]
        deadline = time.monotonic() + 15
        while _tree(key) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _tree(key) == {}, f"processes of the job outlived it: {_tree(key)}"
        history = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
        messages = " ".join(state.get("message") or "" for state in history)
        assert EXPECTED[target] in messages, messages
    finally:
        deps.backend("process").cancel(JobHandle("process", pid), grace_seconds=1)
