"""Run events into Prefect (issue 26): shaped as Prefect's own events (validated by Prefect's models), delivery that
never blocks or raises, a bound with a drop count when Prefect is unreachable; and each provider's console URL."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import httpx
import pytest
from prefect.events.schemas.events import Event
from prefect.server.events.schemas.events import Event as ServerEvent
from pushpool.prefect_api.client import PrefectClient
from pushpool.providers import PROVIDERS, provider_named
from pushpool.usecases.event_publisher import EventPublisher, to_prefect
from pushpool.usecases.events import ACTIONS, EventSink, RunEvent

RUN, POOL_ID, FLOW, DEPLOYMENT = (str(uuid.uuid4()) for _ in range(4))


def _event(action: str = "crashed", **changes) -> RunEvent:
    fields = {
        "action": action,
        "run_id": RUN,
        "attempt": "claim-1",
        "run_name": "brave-otter",
        "pool": "fargate",
        "pool_id": POOL_ID,
        "pool_type": "ecs:push",
        "provider": "ecs",
        "deployment_id": DEPLOYMENT,
        "flow_id": FLOW,
        "job_id": "prefect::arn:aws:ecs:eu-west-1:123456789012:task/prefect/0a1b2c",
        "reason": "max-run-time",
        "payload": {"exit_code": 137, "console_url": "https://eu-west-1.console.aws.amazon.com/x", "n": 1.5},
        "occurred": dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.timezone.utc),
    }
    fields.update(changes)
    return RunEvent(**fields)


@pytest.mark.parametrize("action", ACTIONS)
def test_each_event_is_a_valid_prefect_event_about_the_run(action: str) -> None:
    body = to_prefect(_event(action))
    for model in (Event, ServerEvent):  # what the client sends and what the server accepts
        event = model.model_validate(body)
        assert event.event == f"pushpool.run.{action}"
        assert str(event.id) == body["id"]
    assert body["resource"] == {
        "prefect.resource.id": f"prefect.flow-run.{RUN}",
        "prefect.resource.name": "brave-otter",
        "pushpool.action": action,
        "pushpool.reason": "max-run-time",
        "pushpool.provider": "ecs",
    }
    roles = {r["prefect.resource.role"]: r for r in body["related"]}
    assert roles["flow"]["prefect.resource.id"] == f"prefect.flow.{FLOW}"
    assert roles["deployment"]["prefect.resource.id"] == f"prefect.deployment.{DEPLOYMENT}"
    assert roles["work-pool"] == {
        "prefect.resource.id": f"prefect.work-pool.{POOL_ID}",
        "prefect.resource.role": "work-pool",
        "prefect.resource.name": "fargate",
        "prefect.work-pool.type": "ecs:push",
    }
    job = roles["infrastructure"]
    assert (
        job["prefect.resource.id"] == "pushpool.job.ecs.prefect::arn:aws:ecs:eu-west-1:123456789012:task/prefect/0a1b2c"
    )
    assert job["pushpool.console-url"] == "https://eu-west-1.console.aws.amazon.com/x"
    assert roles["creator"]["prefect.resource.id"] == "pushpool"
    assert body["payload"]["reason"] == "max-run-time" and body["payload"]["exit_code"] == 137
    assert body["occurred"] == "2026-12-06T10:00:00+00:00"


def test_the_id_is_the_same_for_the_same_action_and_differs_otherwise() -> None:
    one = _event()
    assert _event(occurred=dt.datetime.now(dt.timezone.utc), payload={}).id == one.id  # the same action, seen again
    assert _event(attempt="claim-2").id != one.id
    assert _event(reason="start-timeout").id != one.id
    assert _event("cancelled").id != one.id
    assert _event("retried", sequence=2).id != _event("retried", sequence=1).id
    assert uuid.UUID(one.id).version == 5


def test_prefect_unreachable_keeps_events_within_the_bound_and_counts_what_it_drops(caplog) -> None:
    sink = EventSink(capacity=5)
    client = PrefectClient("http://127.0.0.1:9/api")  # nothing listens there
    publisher = EventPublisher(sink, client, timeout=1.0)
    for n in range(5):
        sink.emit(_event(run_id=f"run-{n}"))
    caplog.set_level(logging.WARNING, "pushpool.usecases.event_publisher")
    started = time.monotonic()
    assert publisher.flush() == 0
    assert time.monotonic() - started < 3  # one attempt, a short timeout: never in an action's way
    assert len(sink) == 5 and sink.dropped == 0  # requeued
    for n in range(5, 8):
        sink.emit(_event(run_id=f"run-{n}"))
    assert publisher.flush() == 0
    assert len(sink) == 5 and sink.dropped == 3
    assert [e.run_id for e in sink.drain()] == [f"run-{n}" for n in range(3, 8)]  # the newest kept, oldest first
    warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage
    client.close()


def test_delivery_resumes_and_says_how_many_were_dropped(caplog) -> None:
    up = {"ok": False}
    sent: list[list[dict]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if not up["ok"]:
            return httpx.Response(503)
        import json

        sent.append(json.loads(request.content))
        return httpx.Response(204)

    sink = EventSink(capacity=2)
    client = PrefectClient("http://prefect.test/api", transport=httpx.MockTransport(answer))
    publisher = EventPublisher(sink, client)
    caplog.set_level(logging.WARNING, "pushpool.usecases.event_publisher")
    for n in range(2):
        sink.emit(_event(run_id=f"run-{n}"))
    assert publisher.flush() == 0
    sink.emit(_event(run_id="run-2"))  # while Prefect is down: the oldest goes
    assert sink.dropped == 1
    up["ok"] = True
    assert publisher.flush() == 2
    assert [e["resource"]["prefect.resource.id"] for e in sent[0]] == [
        "prefect.flow-run.run-1",
        "prefect.flow-run.run-2",
    ]
    assert any("1 were dropped while Prefect could not be reached" in r.getMessage() for r in caplog.records)


def test_a_batch_prefect_refuses_is_dropped_and_counted_not_retried_forever() -> None:
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"detail": "invalid"})

    sink = EventSink()
    publisher = EventPublisher(sink, PrefectClient("http://prefect.test/api", transport=httpx.MockTransport(refuse)))
    sink.emit(_event())
    assert publisher.flush() == 0
    assert publisher.refused == 1 and len(sink) == 0
    assert publisher.flush() == 0 and len(calls) == 1


def test_serve_style_thread_flushes_and_stops() -> None:
    got: list[int] = []
    client = PrefectClient(
        "http://prefect.test/api", transport=httpx.MockTransport(lambda r: got.append(1) or httpx.Response(204))
    )
    sink = EventSink()
    publisher = EventPublisher(sink, client)
    publisher.start(interval=0.05)
    sink.emit(_event())
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    sink.emit(_event("cancelled"))
    publisher.stop(timeout=1.0)  # the last flush sends what is left
    assert len(got) == 2 and publisher.delivered == 2 and len(sink) == 0


# -- the link from a run to its job --------------------------------------------------------------------------------

CONSOLE_URLS = {
    "ecs": (
        "arn:aws:ecs:us-east-1:123456789012:cluster/prefect::arn:aws:ecs:us-east-1:123456789012:task/prefect/abc123",
        "https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/prefect/tasks/abc123/configuration?region=us-east-1",
    ),
    "cloudrun": (
        "projects/my-proj/locations/europe-west1/jobs/prefect-run-1/executions/prefect-run-1-x7k2p#keep",
        "https://console.cloud.google.com/run/jobs/executions/details/europe-west1/prefect-run-1-x7k2p/tasks"
        "?project=my-proj",
    ),
    "aci": (
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/prefect-rg/providers/"
        "Microsoft.ContainerInstance/containerGroups/prefect-run-1",
        "https://portal.azure.com/#resource/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/"
        "prefect-rg/providers/Microsoft.ContainerInstance/containerGroups/prefect-run-1/overview",
    ),
    "modal": ("sb-Qx3Lm9Zt2", "https://modal.com/id/sb-Qx3Lm9Zt2"),
    "coiled": ("team-a/48213/977", "https://cloud.coiled.io/clusters/48213/information?workspace=team-a"),
}


@pytest.mark.parametrize("provider", sorted(CONSOLE_URLS))
def test_each_provider_links_its_job_to_its_console(provider: str, monkeypatch) -> None:
    monkeypatch.delenv("DASK_COILED__SERVER", raising=False)
    job_id, url = CONSOLE_URLS[provider]
    assert provider_named(provider).job_console_url(job_id) == url
    assert provider_named(provider).job_console_url("not-a-job-of-" + provider) is None


def test_the_process_provider_has_no_console_and_every_other_one_has() -> None:
    assert provider_named("process").job_console_url("host::tag::key") is None
    assert {p.name for p in PROVIDERS if p.console_url} == set(CONSOLE_URLS)


def test_a_hostile_job_id_never_breaks_out_of_the_console_url(monkeypatch) -> None:
    """A cluster or project a deployment author chose ends up in the URL escaped, never as a new host or query."""
    monkeypatch.delenv("DASK_COILED__SERVER", raising=False)  # the session's Coiled emulator sets it (conftest.py)
    ecs = provider_named("ecs").job_console_url("x::arn:aws:ecs:us-east-1:1:task/evil?x=1&y=@attacker.example/abc")
    assert ecs == (
        "https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/evil%3Fx%3D1%26y%3D%40attacker.example/tasks/abc/"
        "configuration?region=us-east-1"
    )
    assert provider_named("ecs").job_console_url("x::arn:aws:ecs:evil.example/#:1:task/c/t") is None  # not a region
    assert provider_named("coiled").job_console_url("w?x=@evil.example/1/2") == (
        "https://cloud.coiled.io/clusters/1/information?workspace=w%3Fx%3D%40evil.example"
    )


# -- logs that join up -----------------------------------------------------------------------------------------------


def test_lambda_log_lines_are_powertools_json_with_the_run_fields(capsys, monkeypatch) -> None:
    import json

    from aws_lambda_powertools import Logger
    from pushpool.entrypoints import aws_lambda
    from pushpool.usecases.run_events import run_context

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "submit")
    root = logging.getLogger("pushpool")
    saved = (list(root.handlers), root.propagate, root.level)
    try:
        aws_lambda.configure_logging(Logger())
        with run_context("run-1", "pool-a", "job-9"):
            logging.getLogger("pushpool.usecases.submit").info("claimed run %s", "run-1")
        logging.getLogger("pushpool.usecases.submit").info("not about a run")
    finally:
        root.handlers[:], root.propagate = saved[0], saved[1]
        root.setLevel(saved[2])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [
        (line["message"], line.get("flow_run_id"), line.get("work_pool"), line.get("job_id")) for line in lines
    ] == [
        ("claimed run run-1", "run-1", "pool-a", "job-9"),
        ("not about a run", None, None, None),
    ]
