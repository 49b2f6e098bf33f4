"""The push path end to end on a real Prefect server with the process backend: real flows, real processes."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_run_event, handle_submit
from pushpool.providers.base import JobHandle, JobState

from tests.helpers import PrefectHelper, make_deps, pool_tick

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token", "Content-Type": "application/json"}


def _submit(deps, run_id: str):
    auth = WebhookAuth(deps.settings.webhook_tokens)
    return handle_submit(deps, auth, AUTH, json.dumps({"flow_run_id": run_id}).encode(), trigger="test")


def _job_state(deps, run: dict) -> JobState:
    backend = deps.backend("process")
    pid = run["infrastructure_pid"]
    return backend.status([JobHandle("process", pid)])[pid].state


def test_flow_runs_to_completed_with_no_worker(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:hello")
    run_id = prefect.create_run(dep, parameters={"who": "pushpool"})

    response = _submit(deps, run_id)
    assert response.status == 200, response.body
    assert response.body["outcome"] == "submitted"

    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "COMPLETED"
    assert run["infrastructure_pid"] == response.body["job_id"]
    names = [name for _, name in prefect.states(run_id)]
    assert names[:3] == ["Scheduled", "Pending", "InfrastructurePending"]
    assert names[-2:] == ["Running", "Completed"]
    # The job ends by itself; its output is readable by a later, separate backend instance.
    backend = make_deps(prefect.api_url, deps.settings.process_dir.parent).backend("process")
    handle = JobHandle("process", run["infrastructure_pid"])
    for _ in range(100):
        if backend.status([handle])[handle.id].state is JobState.SUCCEEDED:
            break
        time.sleep(0.1)
    assert backend.status([handle])[handle.id].state is JobState.SUCCEEDED
    assert any("hello pushpool" in line for line in backend.logs(handle, lines=200))


def test_failing_flow_ends_failed_and_job_exit_is_clean(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:fail")
    run_id = prefect.create_run(dep, parameters={"reason": "expected failure"})
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "FAILED"
    # The monitor leaves a run the engine finished alone.
    time.sleep(1)
    pool_tick(deps, pool)
    assert prefect.state(run_id)[0] == "FAILED"


def test_non_zero_exit_crashes_with_reason_and_last_lines(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(
        pool, job_variables={"command": "sh -c 'echo preparing; echo something broke >&2; exit 3'"}
    )
    run_id = prefect.create_run(dep)
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    message = run["state"]["message"]
    assert "exit code 3" in message
    assert "something broke" in message


def test_killed_process_is_crashed(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:sleeper")
    run_id = prefect.create_run(dep, parameters={"seconds": 120})
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    run = prefect.wait_for(run_id, {"RUNNING"}, timeout=60)
    from pushpool.providers.process.backend import _job_processes

    pids = next(p for key, p in _job_processes().items() if key.startswith(run_id))
    assert len(pids) >= 3  # supervisor, `prefect flow-run execute`, and the engine in a session of its own
    for pid in pids:  # the whole job dies at once, as on an OOM kill of a container or a lost machine
        os.kill(pid, signal.SIGKILL)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    assert "disappeared" in run["state"]["message"]
    assert not [key for key in _job_processes() if key.startswith(run_id)]


def test_cancel_running_run_stops_process(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:sleeper")
    run_id = prefect.create_run(dep, parameters={"seconds": 120})
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    run = prefect.wait_for(run_id, {"RUNNING"}, timeout=60)
    prefect.set_state(run_id, "CANCELLING")
    # The Cancelling event reaches submit (webhook/event stream) or the monitor: either reconciles it.
    handle_run_event(deps, run_id, trigger="test")
    run = prefect.wait_for(run_id, {"CANCELLED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    assert _job_state(deps, run) in (JobState.STOPPED, JobState.SUCCEEDED, JobState.FAILED)
    from pushpool.providers.process.backend import _job_processes

    assert not [k for k in _job_processes() if k.startswith(run_id)]  # no process of the job is left, engine too


def test_maximum_run_time_stops_job_and_crashes_run(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, "flows.py:sleeper", job_variables={"max_run_time_seconds": 3})
    run_id = prefect.create_run(dep, parameters={"seconds": 120})
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    prefect.wait_for(run_id, {"RUNNING"}, timeout=60)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    assert "maximum run time of 3 s" in run["state"]["message"]
    assert _job_state(deps, run) is not JobState.RUNNING


def test_a_job_that_hangs_before_the_engine_starts_is_stopped_at_its_maximum_run_time(
    deps, prefect: PrefectHelper, pool: str
) -> None:
    """Issue 23, item 1: a job that never reaches the flow engine (a pull step that hangs, a package install) keeps
    its run Pending; the maximum run time counts from the job all the same. The run is Crashed with the reason, the
    job's whole process tree is stopped, and its directory cleaned up."""
    from pushpool.providers.process.backend import _job_processes

    hang = "sh -c 'sleep 300 & sleep 300'"  # a step that hangs, with a child process of its own
    dep = prefect.create_deployment(pool, job_variables={"command": hang, "max_run_time_seconds": 3})
    run_id = prefect.create_run(dep)
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    started = time.monotonic()
    deadline = started + 10
    while len([p for k, pids in _job_processes().items() if k.startswith(run_id) for p in pids]) < 3:
        assert time.monotonic() < deadline, "the job's processes did not start"
        time.sleep(0.1)  # the supervisor, sh and its background sleep (and the foreground one)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    assert time.monotonic() - started >= 2.5  # not before its time
    assert "maximum run time of 3 s" in run["state"]["message"] and "Pending" in run["state"]["message"]
    assert ("RUNNING", "Running") not in prefect.states(run_id)  # the flow never ran: the job's clock did it
    assert not [k for k in _job_processes() if k.startswith(run_id)]  # the whole tree is gone
    pool_tick(deps, pool)  # the run is final and its job ended: the job's directory is removed
    assert not [d for d in os.listdir(deps.settings.process_dir) if d.startswith(run_id)]


def test_duplicate_webhook_deliveries_start_exactly_one_process(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 5"})
    run_id = prefect.create_run(dep)
    with ThreadPoolExecutor(max_workers=20) as ex:
        responses = list(ex.map(lambda _: _submit(deps, run_id), range(20)))
    outcomes = [r.body.get("outcome") for r in responses]
    assert outcomes.count("submitted") == 1, outcomes
    assert all(r.status == 200 for r in responses)
    pending = [s for s in prefect.states(run_id) if s == ("PENDING", "Pending")]
    assert len(pending) == 1
    jobs = os.listdir(deps.settings.process_dir)
    assert len(jobs) == 1 and jobs[0].startswith(run_id)


def test_pool_concurrency_limit_holds(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("pp-limit")
    prefect.create_pool(pool, concurrency_limit=1)
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 2"})
    runs = [prefect.create_run(dep) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=6) as ex:  # all three at once, twice each
        list(ex.map(lambda r: _submit(deps, r), runs * 2))
    deadline = time.monotonic() + 90
    max_seen = 0
    while time.monotonic() < deadline:
        states = [prefect.state(r)[0] for r in runs]
        in_flight = sum(s in ("PENDING", "RUNNING", "CANCELLING") for s in states)
        max_seen = max(max_seen, in_flight)
        if all(s in ("COMPLETED", "CRASHED", "FAILED") for s in states):
            break
        pool_tick(deps, pool)
        time.sleep(0.2)
    assert max_seen == 1
    # `sleep 2` never reports a state, so each run ends Crashed by the monitor's clean-exit rule; all were run.
    assert [prefect.state(r)[0] for r in runs] == ["CRASHED"] * 3
    pids = {prefect.read_run(r)["infrastructure_pid"] for r in runs}
    assert len(pids) == 3 and None not in pids  # one job each


def test_run_scheduled_ahead_is_dispatched_by_the_monitor_when_due(deps, prefect: PrefectHelper, pool: str) -> None:
    import datetime as dt

    dep = prefect.create_deployment(pool, job_variables={"command": "true"})
    due = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)
    run_id = prefect.create_run(dep, state={"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}})
    response = _submit(deps, run_id)
    assert response.body["outcome"] == "deferred"
    pool_tick(deps, pool)
    assert prefect.state(run_id)[0] == "SCHEDULED"
    while dt.datetime.now(dt.timezone.utc) < due:
        time.sleep(0.2)
    report = pool_tick(deps, pool)
    assert report.dispatched["submitted"] == 1
    assert prefect.state(run_id)[0] == "PENDING"


def test_orchestration_calls_per_submitted_run(deps, prefect: PrefectHelper, pool: str) -> None:
    """API economy guard (counts, not timings): run, pool, queue, claim, deployment, pid, progress."""
    dep = prefect.create_deployment(pool, job_variables={"command": "true"})
    run_id = prefect.create_run(dep)
    before = deps.orchestrator.calls
    assert handle_run_event(deps, run_id, trigger="test")["outcome"] == "submitted"
    calls = deps.orchestrator.calls - before
    print(f"orchestration API calls for one submitted run: {calls}")
    assert calls <= 7


def test_status_lists_in_flight_runs_with_their_jobs(deps, prefect: PrefectHelper, pool: str) -> None:
    from pushpool.usecases.in_flight import in_flight

    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 20"}))
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    rows = [r for r in in_flight(deps, pool=pool) if r["run_id"] == run_id]
    assert len(rows) == 1
    assert rows[0]["job_state"] == "RUNNING" and rows[0]["state"] == "InfrastructurePending"
    assert f"::{run_id}_" in rows[0]["job_id"]
    deps.backend("process").cancel(JobHandle("process", rows[0]["job_id"]), grace_seconds=1)


def test_deployment_concurrency_is_honoured(deps, prefect: PrefectHelper, pool: str) -> None:
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 20"}, concurrency_limit=1)
    first, second = prefect.create_run(dep), prefect.create_run(dep)
    assert _submit(deps, first).body["outcome"] == "submitted"
    outcome = _submit(deps, second).body
    assert outcome["outcome"] == "not-claimed"
    assert prefect.state(second) == ("SCHEDULED", "AwaitingConcurrencySlot")
    assert not [j for j in os.listdir(deps.settings.process_dir) if j.startswith(second)]
    handle = JobHandle("process", prefect.read_run(first)["infrastructure_pid"])
    deps.backend("process").cancel(handle, grace_seconds=1)


def test_a_retried_run_gets_a_new_job(deps, prefect: PrefectHelper, pool: str) -> None:
    """A run scheduled again (the UI's Retry, a SIGTERM reschedule) must not be handed its old, finished job."""
    dep = prefect.create_deployment(pool, job_variables={"command": "sh -c 'exit 4'"})
    run_id = prefect.create_run(dep)
    first = _submit(deps, run_id).body["job_id"]
    prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
    prefect.set_state(run_id, "SCHEDULED", name="AwaitingRetry", force=True)
    second = _submit(deps, run_id).body
    assert second["outcome"] == "submitted"
    assert second["job_id"] != first
    assert len([j for j in os.listdir(deps.settings.process_dir) if j.startswith(run_id)]) == 2


def test_runs_waiting_for_a_slot_start_in_the_order_they_became_due(
    deps, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limit 1, three runs: the second loses a claim race and gives its slot back; it must still go before the third
    (giving a slot back must not move a run to the end of the queue)."""
    from pushpool.usecases import admission

    pool = prefect.unique("order")
    prefect.create_pool(pool, concurrency_limit=1)
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    first, second, third = (prefect.create_run(dep) for _ in range(3))
    assert _submit(deps, first).body["outcome"] == "submitted"

    real_full = admission.full

    def raced(client, applicable, *, claimed):  # `first`'s claim lands just after `second` counted
        return None if not claimed else real_full(client, applicable, claimed=claimed)

    monkeypatch.setattr(admission, "full", raced)
    assert _submit(deps, second).body["outcome"] == "waiting"  # claimed, then gave its slot back
    monkeypatch.setattr(admission, "full", real_full)
    assert prefect.state(second) == ("SCHEDULED", "AwaitingConcurrencySlot")
    assert _submit(deps, third).body["outcome"] == "waiting"

    deps.backend("process").cancel(JobHandle("process", prefect.read_run(first)["infrastructure_pid"]), grace_seconds=1)
    prefect.set_state(first, "COMPLETED", force=True)  # the slot frees
    report = pool_tick(deps, pool)
    assert report.dispatched["submitted"] == 1, report.as_dict()
    assert prefect.state(second)[0] == "PENDING", "the run that was due first takes the free slot"
    assert prefect.state(third)[0] == "SCHEDULED"
    for run_id in (second, third):
        pid = prefect.read_run(run_id)["infrastructure_pid"]
        if pid:
            deps.backend("process").cancel(JobHandle("process", pid), grace_seconds=1)


def test_a_missing_working_dir_crashes_the_run_with_that_reason(deps, prefect: PrefectHelper, pool: str) -> None:
    """Not "exit code 127 (command not found)": the run says which directory is missing, and no job is left."""
    missing = "/nonexistent/pushpool-working-dir"
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"working_dir": missing}))
    outcome = _submit(deps, run_id).body
    assert outcome["outcome"] == "crashed", outcome
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED"
    assert f"working directory {missing!r} does not exist" in state["message"], state["message"]
    assert "127" not in state["message"]
    jobs = [j for j in os.listdir(deps.settings.process_dir) if j.startswith(run_id)]
    assert not any((deps.settings.process_dir / j / "job.json").exists() for j in jobs)  # no job was started
