"""Property-based bad input: whatever the body, submit and provision answer 4xx, never 5xx, and change nothing.

The Prefect API is a scripted transport that knows no runs and records any state-changing call.
"""

from __future__ import annotations

import json
import os

import httpx
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pushpool.api import handle_provision, handle_submit
from pushpool.auth import WebhookAuth
from pushpool.clock import FixedClock
from pushpool.deps import Deps
from pushpool.orchestrator import PrefectClient
from pushpool.settings import Settings

WRITES: list[str] = []
EXAMPLES = int(os.environ.get("PUSHPOOL_FUZZ_EXAMPLES", "300"))  # `make soak`: 10,000


def _handler(request: httpx.Request) -> httpx.Response:
    if request.method != "GET" and not request.url.path.endswith("/filter"):
        WRITES.append(f"{request.method} {request.url.path}")
    return httpx.Response(404, json={"detail": "Not found"})


def _deps() -> Deps:
    client = PrefectClient("http://127.0.0.1:1/api", transport=httpx.MockTransport(_handler), clock=FixedClock())
    return Deps(
        settings=Settings(
            prefect_api_url="http://127.0.0.1:1/api", webhook_tokens=("t",), submit_url="http://127.0.0.1:2/submit"
        ),
        orchestrator=client,
        clock=FixedClock(),
    )


DEPS, AUTH = _deps(), WebhookAuth(["t"])
HEADERS = {"Authorization": "Bearer t"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["flow_run_id", "event", "event_id", "x"]), json_values, max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
    st.uuids().map(lambda u: json.dumps({"flow_run_id": str(u)}).encode()),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies)
def test_submit_answers_4xx_and_changes_nothing(body: bytes) -> None:
    WRITES.clear()
    response = handle_submit(DEPS, AUTH, HEADERS, body, trigger="fuzz")
    assert 400 <= response.status < 500, (response.status, response.body)
    assert "error" in response.body and "\n" not in response.body["error"]
    assert WRITES == []


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    body=bodies,
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "webhook-signature", "webhook-id", "webhook-timestamp"]), st.text(max_size=30)
    ),
)
def test_unauthenticated_bodies_are_401(body: bytes, headers: dict[str, str]) -> None:
    WRITES.clear()
    if headers.get("Authorization") == "Bearer t":
        headers["Authorization"] = "Bearer nope"
    assert handle_submit(DEPS, AUTH, headers, body, trigger="fuzz").status == 401
    assert WRITES == []


def _valid_provision_request(body: bytes) -> bool:
    from pushpool.api import ProvisionRequest, parse_body
    from pushpool.errors import PushpoolError
    from pushpool.provision import validate_pool_name
    from pushpool.templates import pool_type

    try:
        request = parse_body(ProvisionRequest, body)
        validate_pool_name(request.name)
        pool_type(request.type)
    except PushpoolError:
        return False
    return True


provision_bodies = st.one_of(
    bodies,
    st.dictionaries(
        st.sampled_from(["name", "type", "concurrency_limit", "dry_run", "provision_infra", "region", "zzz"]),
        json_values | st.sampled_from(["process:push", "ecs:push", "nomad:push", "prefect-x", "ok-name"]),
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=provision_bodies)
def test_provision_answers_4xx_for_bad_requests_and_changes_nothing(body: bytes) -> None:
    assume(not _valid_provision_request(body))
    WRITES.clear()
    response = handle_provision(DEPS, AUTH, HEADERS, body)
    assert 400 <= response.status < 500, (response.status, response.body)
    assert WRITES == []


templates = st.fixed_dictionaries(
    {
        "job_configuration": st.dictionaries(
            st.text(min_size=1, max_size=8),
            json_values
            | st.sampled_from(
                [
                    "{{ image }}",
                    "{{ env }}",
                    "x-{{ cpu }}",
                    "{{ $HOME }}",
                    "{{ a.b[0] }}",
                    "{{ prefect.variables.v }}",
                    {"$ref": "bad"},
                    {"$ref": {"x": 1}},
                ]
            ),
            max_size=5,
        ),
        "variables": st.fixed_dictionaries(
            {
                "properties": st.dictionaries(
                    st.sampled_from(["image", "env", "cpu", "a"]),
                    st.fixed_dictionaries({}, optional={"default": json_values}),
                    max_size=4,
                )
            }
        ),
    }
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    template=templates,
    values=st.dictionaries(st.sampled_from(["image", "env", "cpu", "a", "env.X", "a.b"]), json_values, max_size=4),
)
def test_rendering_fails_only_with_template_errors(template: dict, values: dict) -> None:
    from pushpool.errors import ObjectNotFoundError, TemplateError
    from pushpool.templates.render import NOTSET, render_job_configuration

    class Nothing:  # a Prefect with no blocks and no variables
        def block_data_by_id(self, block_document_id: str) -> dict:
            raise ObjectNotFoundError("no block")

        def block_data_by_name(self, slug: str, name: str) -> dict:
            raise ObjectNotFoundError("no block")

        def variable(self, name: str) -> object:
            return NOTSET

    try:
        rendered = render_job_configuration(template, values, resolver=Nothing(), environ={"HOME": "/h"})
    except TemplateError as exc:
        assert exc.one_line()
        return
    assert isinstance(rendered, dict)
