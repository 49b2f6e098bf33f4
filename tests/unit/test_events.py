"""Prefect's event stream as a trigger: which events act on what, and one event handled once in serve."""

from __future__ import annotations

import pytest
from pushpool.entrypoints.event_stream import RunEvent, SeenEvents, classify

SERVED = ("process:push", "ecs:push")


def _event(state: str, pool_type: str = "ecs:push", **extra) -> dict:
    return {
        "id": "5f4c2a8e-0000-4000-8000-000000000001",
        "event": f"prefect.flow-run.{state}",
        "resource": {"prefect.resource.id": "prefect.flow-run.0b7c3d2e-0000-4000-8000-000000000002"},
        "related": [
            {"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"},
            {
                "prefect.resource.id": "prefect.work-pool.3",
                "prefect.resource.role": "work-pool",
                "prefect.resource.name": "fargate",
                "prefect.work-pool.type": pool_type,
            },
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("state", "kind"),
    [("Scheduled", "submit"), ("Late", "submit"), ("AwaitingRetry", "submit"), ("Cancelling", "cancel")]
    + [(s, "final") for s in ("Completed", "Failed", "Crashed", "Cancelled")],
)
def test_flow_run_events_of_push_pools_are_classified(state: str, kind: str) -> None:
    assert classify(_event(state), SERVED) == RunEvent(
        kind, "0b7c3d2e-0000-4000-8000-000000000002", "fargate", "5f4c2a8e-0000-4000-8000-000000000001"
    )


@pytest.mark.parametrize(
    "event",
    [
        _event("Running"),  # nothing to do
        _event("Pending"),
        _event("Scheduled", pool_type="ecs"),  # a worker's pool, not a push pool
        {**_event("Scheduled"), "related": []},  # no pool
        {**_event("Scheduled"), "resource": {"prefect.resource.id": "prefect.task-run.1"}},
        {},
    ],
)
def test_other_events_are_ignored(event: dict) -> None:
    assert classify(event, SERVED) is None


def test_an_event_without_an_id_is_classified_without_one() -> None:
    event = _event("Scheduled")
    del event["id"]
    hit = classify(event, SERVED)
    assert hit is not None and hit.event_id is None


def test_seen_events_answer_first_once_forget_and_stay_bounded() -> None:
    seen = SeenEvents(size=3)
    assert seen.first("a") and not seen.first("a")
    assert seen.first(None) and seen.first(None)  # no id: never deduplicated
    seen.forget("a")
    assert seen.first("a")
    for name in ("b", "c", "d"):
        assert seen.first(name)
    assert seen.first("a")  # the oldest id was dropped to stay within size
    assert not seen.first("d")


@pytest.mark.parametrize(
    "name",
    [
        "prefect.work-pool.updated",
        "prefect.work-pool.paused",
        "prefect.work-queue.paused",
        "prefect.work-queue.updated",
        "prefect.deployment.updated",  # its job variables are shared between runs too (usecases/pool_reads.py)
        "prefect.deployment.deleted",
    ],
)
def test_pool_and_queue_events_make_serve_read_them_again(name: str) -> None:
    event = {
        "id": "e-1",
        "event": name,
        "resource": {"prefect.resource.id": "prefect.work-pool.3", "prefect.resource.name": "fargate"},
    }
    assert classify(event, SERVED) == RunEvent("pool-changed", "", "fargate", "e-1")


@pytest.mark.parametrize(
    "name", ["prefect.deployment.ready", "prefect.deployment.not-ready", "prefect.deployment.created"]
)
def test_deployment_status_events_are_not_a_change(name: str) -> None:
    """A deployment's readiness (a worker polled or not) or its creation changes nothing serve keeps."""
    event = {"id": "e-2", "event": name, "resource": {"prefect.resource.id": "prefect.deployment.3"}}
    assert classify(event, SERVED) is None
