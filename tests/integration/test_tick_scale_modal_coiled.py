"""A monitor tick's cost grows with apps and workspaces, not with runs (issue 23): over N in-flight runs of a Modal or
Coiled pool, one tick makes the same number of listing calls whatever N, and reads a job on its own only when it
changed (finished, vanished).

The runs are submitted through pushpool's submit use-case and ticked by its monitor, against the orchestration fake
(tests/fake_prefect.py, held to the real server by tests/contract/test_orchestration_contract.py) — a tick over 50 runs
of a real server would measure Prefect — and the provider's emulator, reached through the real SDK or REST client.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pushpool.clock import SystemClock
from pushpool.prefect_api.models import StateType
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import submit_run

from tests.fake_prefect import FakePrefect

pytestmark = pytest.mark.integration
POOL = "scale"


def _in_flight(pool_type: str, n: int, tmp_path: Path) -> tuple[FakePrefect, Settings, list[str]]:
    """``n`` runs of a ``pool_type`` pool, each with its job, Running."""
    fake = FakePrefect(clock=SystemClock())
    settings = Settings.of(prefect_api_url="http://fake-prefect/api", webhook_tokens=("t",), process_dir=tmp_path)
    fake.add_pool(POOL, pool_type)
    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment) for _ in range(n)]
    submitter, pool = Deps(settings=settings, orchestrator=fake), fake.read_work_pool(POOL)
    with ThreadPoolExecutor(8) as workers:
        outcomes = list(
            workers.map(lambda r: submit_run(submitter, fake.read_flow_run(r), pool, trigger="t").outcome, runs)
        )
    assert outcomes == ["submitted"] * n
    for run_id in runs:
        fake.force_state(run_id, StateType.RUNNING)
    return fake, settings, runs


def _tick(fake: FakePrefect, settings: Settings, deps: Deps | None = None) -> tuple[Deps, dict]:
    deps = deps or Deps(settings=settings, orchestrator=fake)  # a monitor process that never saw the submits
    report = tick(deps, pools=[fake.read_work_pool(POOL)])
    assert report.errors == []
    return deps, dict(report.reconciled)


@pytest.mark.parametrize("n", [5, 50])
def test_a_modal_tick_lists_each_app_once_and_reads_only_what_changed(modal_server, tmp_path: Path, n: int) -> None:
    pytest.importorskip("modal")
    modal_server.run_commands = False
    try:
        fake, settings, runs = _in_flight("modal:push", n, tmp_path)
        before = len(modal_server.callers)
        deps, reconciled = _tick(fake, settings)
        calls = Counter(method for method, _, _ in modal_server.callers[before:])
        # A fresh process: one read names the app, one listing answers for every run.
        assert calls == {"SandboxWaitV2": 1, "SandboxListV2": 1}, calls
        assert reconciled == {"none": n}
        before = len(modal_server.callers)
        _tick(fake, settings, deps)
        assert Counter(m for m, _, _ in modal_server.callers[before:]) == {"SandboxListV2": 1}  # warm: the app only
        ended = fake.read_flow_run(runs[0]).infrastructure_pid
        modal_server.finish(ended, 1, ["boom"])
        before = len(modal_server.callers)
        _, reconciled = _tick(fake, settings, deps)
        asked = [(m, s) for m, _, s in modal_server.callers[before:]]
        app, task = modal_server.sandboxes[ended].app_id, modal_server.sandboxes[ended].task_id
        # The listing (paged to its end: one run left it), then only calls about the run that changed: its result,
        # the monitor's re-check of it, its logs for the crash message.
        assert asked[:2] == [("SandboxListV2", app)] * 2, asked
        assert {s for _, s in asked[2:]} <= {ended, task} and ("SandboxWaitV2", ended) in asked[2:], asked
        assert reconciled["crash"] == 1 and fake.read_flow_run(runs[0]).state_type is StateType.CRASHED
    finally:
        modal_server.run_commands = True
        for sandbox in list(modal_server.sandboxes.values()):
            if sandbox.result is None:
                modal_server.fail(sandbox.id, 4, "ended by the test")  # GENERIC_STATUS_TERMINATED


@pytest.mark.parametrize("n", [5, 50])
def test_a_coiled_tick_lists_each_workspace_once_and_reads_only_what_changed(
    coiled_server, tmp_path: Path, n: int
) -> None:
    coiled_server.run_commands = False
    try:
        fake, settings, runs = _in_flight("coiled:push", n, tmp_path)
        before = len(coiled_server.callers)
        deps, reconciled = _tick(fake, settings)
        assert [p for _, p, _ in coiled_server.callers[before:]] == ["/api/v2/jobs/"]
        assert reconciled == {"none": n}
        pid = fake.read_flow_run(runs[0]).infrastructure_pid
        coiled_server.finish(int(pid.split("/")[2]), 2, ["boom"])
        before = len(coiled_server.callers)
        _, reconciled = _tick(fake, settings, deps)
        cluster = pid.split("/")[1]
        asked = [p for _, p, _ in coiled_server.callers[before:]]
        assert asked[:2] == ["/api/v2/jobs/", f"/api/v2/jobs/cluster/{cluster}"], asked  # then the crash's logs, stop
        assert all(cluster in p for p in asked[1:]), asked
        assert reconciled["crash"] == 1 and fake.read_flow_run(runs[0]).state_type is StateType.CRASHED
    finally:
        coiled_server.run_commands = True
        for job in list(coiled_server.jobs.values()):
            if job.state in ("pending", "assigned", "running"):
                job.state, job.exit_code = "error", None
