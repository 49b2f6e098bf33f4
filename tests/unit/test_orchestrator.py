"""The orchestration client's retry, translation and idempotency rules, against a scripted transport."""

from __future__ import annotations

import json

import httpx
import pytest
from pushpool.clock import FixedClock
from pushpool.errors import ObjectNotFoundError, OrchestratorAuthError, OrchestratorError, OrchestratorUnavailableError
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import SetStateStatus, StateType


def client_for(answers: list, **kw: object) -> tuple[PrefectClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = PrefectClient("http://127.0.0.1:1/api", transport=httpx.MockTransport(handler), clock=FixedClock(), **kw)
    return client, seen


def test_503_and_connection_errors_are_retried_then_succeed() -> None:
    client, seen = client_for(
        [
            httpx.Response(503, json={"exception_message": "Service Unavailable"}),
            httpx.ConnectError("refused"),
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(200, json={"id": "p", "name": "p", "type": "process:push"}),
        ]
    )
    assert client.read_work_pool("p").name == "p"
    assert len(seen) == 4


def test_exhausted_retries_raise_unavailable() -> None:
    client, _ = client_for([httpx.Response(502)] * 3, max_retries=2)
    with pytest.raises(OrchestratorUnavailableError, match="failed 3 times"):
        client.read_work_pool("p")


def test_errors_are_translated_and_carry_no_credentials() -> None:
    client, _ = client_for(
        [httpx.Response(401), httpx.Response(404), httpx.Response(422, json={"detail": "bad"})],
        api_key="pnu_very_secret",
    )
    with pytest.raises(OrchestratorAuthError) as auth:
        client.read_flow_run("r")
    assert "pnu_very_secret" not in str(auth.value)
    with pytest.raises(ObjectNotFoundError):
        client.read_flow_run("r")
    with pytest.raises(OrchestratorError, match="HTTP 422: bad"):
        client.read_flow_run("r")


def test_auth_headers() -> None:
    client, seen = client_for([httpx.Response(200, json=True)], api_key="k")
    client._json("GET", "/health")
    assert seen[0].headers["Authorization"] == "Bearer k"
    client, seen = client_for([httpx.Response(200, json=True)], auth_string="admin:pass")
    client._json("GET", "/health")
    assert seen[0].headers["Authorization"] == "Basic YWRtaW46cGFzcw=="


def test_a_retried_proposal_the_server_already_applied_counts_as_accepted() -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        if len(sent) == 1:
            raise httpx.ReadTimeout("lost answer")  # the server applied it, the answer was lost
        tid = body["state"]["state_details"]["transition_id"]
        return httpx.Response(
            200,
            json={
                "status": "REJECT",
                "details": {"reason": "already made this transition"},
                "state": {"type": "PENDING", "state_details": {"transition_id": tid}},
            },
        )

    client = PrefectClient("http://127.0.0.1:1/api", transport=httpx.MockTransport(handler), clock=FixedClock())
    result = client.propose_state("r", StateType.PENDING)
    assert result.status is SetStateStatus.ACCEPT
    assert sent[0]["state"]["state_details"]["transition_id"] == sent[1]["state"]["state_details"]["transition_id"]


def test_wait_is_honoured_within_the_budget() -> None:
    clock = FixedClock()
    answers = [
        httpx.Response(200, json={"status": "WAIT", "details": {"delay_seconds": 2}}),
        httpx.Response(201, json={"status": "ACCEPT", "state": {"type": "RUNNING"}}),
    ]
    client = PrefectClient(
        "http://127.0.0.1:1/api", transport=httpx.MockTransport(lambda r: answers.pop(0)), clock=clock
    )
    assert client.propose_state("r", StateType.RUNNING, max_wait_seconds=5).accepted
    assert clock.monotonic() == 2
    answers[:] = [httpx.Response(200, json={"status": "WAIT", "details": {"delay_seconds": 600}})]
    assert client.propose_state("r", StateType.RUNNING, max_wait_seconds=5).status is SetStateStatus.WAIT


# What Prefect 3.8.8 answers to POST /automations/ with a field it does not know (recorded from a real server; an
# older server answers so to a field newer ones accept). ``input`` and ``request_body`` echo what was sent.
_REFUSED = {
    "exception_message": "Invalid request received.",
    "exception_detail": [
        {
            "type": "missing",
            "loc": ["body", "trigger", "EventTrigger", "posture"],
            "msg": "Field required",
            "input": {"type": "event"},
        },
        {
            "type": "literal_error",
            "loc": ["body", "trigger", "function-after[validate_require(), CompoundTrigger]", "type"],
            "msg": "Input should be 'compound'",
            "input": "event",
        },
        {
            "type": "extra_forbidden",
            "loc": ["body", "secret_field"],
            "msg": "Extra inputs are not permitted",
            "input": "hunter2",
        },
    ],
    "request_body": {"secret_field": "hunter2"},
}


def test_a_422_names_the_refused_fields_and_never_the_values_sent() -> None:
    client, _ = client_for([httpx.Response(422, json=_REFUSED)])
    with pytest.raises(OrchestratorError) as refused:
        client.read_flow_run("r")
    text = refused.value.one_line()
    assert "HTTP 422: Invalid request received. (secret_field: Extra inputs are not permitted;" in text
    assert "trigger.EventTrigger.posture: Field required" in text
    assert "trigger.type: Input should be 'compound'" in text  # the union branch's name is dropped
    assert "hunter2" not in text and "function-after" not in text
