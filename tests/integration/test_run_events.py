"""pushpool's actions as Prefect events on a real Prefect server (issue 26): the run's page shows them (the query
Prefect's UI makes), a retried delivery stores one event, and an automation triggers on one."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.providers.base import JobHandle, JobState
from pushpool.usecases.event_publisher import EventPublisher, to_prefect

from tests.helpers import EXITS_AT_ONCE, PrefectHelper, pool_tick

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token", "Content-Type": "application/json"}


def _submit(deps, run_id: str):
    auth = WebhookAuth(deps.settings.webhook_tokens)
    return handle_submit(deps, auth, AUTH, json.dumps({"flow_run_id": run_id}).encode(), trigger="test")


def _run_page_events(prefect: PrefectHelper, run_id: str) -> list[dict[str, Any]]:
    """The events of a run as the flow run page of Prefect's UI asks for them (``FlowRun`` graph: any resource is the
    run; log lines and task runs left out)."""
    body = {
        "filter": {
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "event": {"exclude_prefix": ["prefect.log.write", "prefect.task-run."]},
        },
        "limit": 50,
    }
    return prefect.json("POST", "/events/filter", json=body)["events"]


def _pushpool_events(prefect: PrefectHelper, run_id: str, want: set[str], timeout: float = 45) -> list[dict]:
    """The run's pushpool events once ``want`` (names) are all stored (the server persists events in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in _run_page_events(prefect, run_id) if e["event"].startswith("pushpool.")]
        if want <= {e["event"] for e in found} or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_push_run_shows_pushpool_events_on_its_page(deps, prefect: PrefectHelper, pool: str) -> None:
    publisher = EventPublisher(deps.events, deps.orchestrator)
    dep = prefect.create_deployment(pool, "flows.py:hello")
    run_id = prefect.create_run(dep, parameters={"who": "events"})
    answer = _submit(deps, run_id)
    assert answer.body["outcome"] == "submitted", answer.body
    job_id = answer.body["job_id"]
    prefect.wait_for(run_id, {"COMPLETED"}, timeout=90)
    handle = JobHandle("process", job_id)
    deadline = time.monotonic() + 30
    while deps.backend("process").status([handle])[job_id].state is not JobState.SUCCEEDED:
        assert time.monotonic() < deadline, "the job's process did not end"
        time.sleep(0.1)  # the engine reports Completed before its process exits
    pool_tick(deps, pool)  # the monitor sees the job's start and end
    pool_tick(deps, pool)  # and again: the same actions, no new events
    assert publisher.flush() == 3

    want = {"pushpool.run.submitted", "pushpool.run.job-started", "pushpool.run.job-ended"}
    events = _pushpool_events(prefect, run_id, want)
    names = [e["event"] for e in events]
    assert want <= set(names), names
    assert len(names) == len(set(names)), names  # one event per action
    submitted = next(e for e in events if e["event"] == "pushpool.run.submitted")
    run = prefect.read_run(run_id)
    pool_object = prefect.json("GET", f"/work_pools/{pool}")
    assert submitted["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run_id}"
    assert submitted["resource"]["prefect.resource.name"] == run["name"]
    assert submitted["resource"]["pushpool.provider"] == "process"
    related = {r["prefect.resource.role"]: r for r in submitted["related"]}
    assert related["flow"]["prefect.resource.id"] == f"prefect.flow.{run['flow_id']}"
    assert related["deployment"]["prefect.resource.id"] == f"prefect.deployment.{dep}"
    assert related["work-pool"]["prefect.resource.id"] == f"prefect.work-pool.{pool_object['id']}"
    assert related["work-pool"]["prefect.resource.name"] == pool
    assert related["work-pool"]["prefect.work-pool.type"] == "process:push"
    assert related["infrastructure"]["prefect.resource.id"] == f"pushpool.job.process.{job_id}"
    assert related["creator"]["prefect.resource.id"] == "pushpool"
    assert submitted["payload"]["job_id"] == job_id
    assert submitted["payload"]["dispatch_latency_seconds"] >= 0
    ended = next(e for e in events if e["event"] == "pushpool.run.job-ended")
    assert ended["payload"]["exit_code"] == 0 and ended["resource"]["pushpool.reason"] == "succeeded"
    # The run's progress state says where its job went.
    history = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    progress = next(s for s in history if s["name"] == "InfrastructurePending")
    assert progress["message"] == f"pushpool submitted job {job_id} to process"


def test_a_delivery_sent_twice_is_stored_once(deps, prefect: PrefectHelper, pool: str) -> None:
    """A flush whose answer was lost sends its batch again (the same ids): Prefect keeps one event."""
    dep = prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE)
    run_id = prefect.create_run(dep)
    assert _submit(deps, run_id).body["outcome"] == "submitted"
    held = deps.events.drain()
    batch = [to_prefect(e) for e in held]
    deps.orchestrator.emit_events(batch)
    deps.orchestrator.emit_events(batch)  # the retried POST
    deps.events.requeue(held)
    EventPublisher(deps.events, deps.orchestrator).flush()  # and the publisher's own, later
    events = _pushpool_events(prefect, run_id, {"pushpool.run.submitted"})
    time.sleep(3)  # any duplicate would be persisted by now too
    events = _pushpool_events(prefect, run_id, {"pushpool.run.submitted"})
    assert [e["event"] for e in events].count("pushpool.run.submitted") == 1


def test_an_automation_triggers_on_a_run_crashed_over_its_maximum_run_time(
    deps, prefect: PrefectHelper, pool: str
) -> None:
    """An automation an operator writes against pushpool's event: crashed with reason max-run-time → the run gets a
    state of the automation's own (its action ran on the run the event is about)."""
    name = prefect.unique("over-max-run-time")
    automation = {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["pushpool.run.crashed"],
            "match": {"prefect.resource.id": "prefect.flow-run.*", "pushpool.reason": "max-run-time"},
            "match_related": {"prefect.resource.role": "work-pool", "prefect.resource.name": pool},
            "threshold": 1,
            "within": 0,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "FAILED",
                "name": "OverMaxRunTime",
                "message": "failed by the automation on pushpool.run.crashed",
                "force": True,
            }
        ],
        "enabled": True,
    }
    automation_id = prefect.json("POST", "/automations/", json=automation)["id"]
    try:
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 300", "max_run_time_seconds": 2})
        other = prefect.create_deployment(pool, job_variables={"command": "sh -c 'exit 3'"})
        run_id, failing = prefect.create_run(dep), prefect.create_run(other)
        assert _submit(deps, run_id).body["outcome"] == "submitted"
        assert _submit(deps, failing).body["outcome"] == "submitted"
        prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
        prefect.wait_for(failing, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool))
        EventPublisher(deps.events, deps.orchestrator).flush()

        deadline = time.monotonic() + 60
        while prefect.state(run_id) != ("FAILED", "OverMaxRunTime") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prefect.state(run_id) == ("FAILED", "OverMaxRunTime")
        crashed = _pushpool_events(prefect, failing, {"pushpool.run.crashed"})
        assert [e["resource"].get("pushpool.reason") for e in crashed if e["event"] == "pushpool.run.crashed"] == [
            "job-failed"
        ]
        assert prefect.state(failing)[0] == "CRASHED"  # another reason: the automation left it alone
    finally:
        prefect.request("DELETE", f"/automations/{automation_id}")
