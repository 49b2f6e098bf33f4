"""Property-based bad input: whatever the body, submit and provision answer 4xx, never 5xx, and change nothing.

The Prefect API is a scripted transport that knows no runs and records any state-changing call.
"""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pushpool.clock import FixedClock
from pushpool.entrypoints.auth import AdminAuth, WebhookAuth
from pushpool.entrypoints.http import handle_admin, handle_submit
from pushpool.prefect_api.client import PrefectClient
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps

WRITES: list[str] = []
EXAMPLES = int(os.environ.get("PUSHPOOL_FUZZ_EXAMPLES", "300"))  # `make soak`: 10,000


def _handler(request: httpx.Request) -> httpx.Response:
    if request.method != "GET" and not request.url.path.endswith("/filter"):
        WRITES.append(f"{request.method} {request.url.path}")
    return httpx.Response(404, json={"detail": "Not found"})


def _deps() -> Deps:
    client = PrefectClient("http://127.0.0.1:1/api", transport=httpx.MockTransport(_handler), clock=FixedClock())
    return Deps(
        settings=Settings.of(
            prefect_api_url="http://127.0.0.1:1/api", webhook_tokens=("t",), submit_url="http://127.0.0.1:2/submit"
        ),
        orchestrator=client,
        clock=FixedClock(),
    )


DEPS, AUTH = _deps(), WebhookAuth(["t"])
HEADERS = {"Authorization": "Bearer t"}
ADMIN, ADMIN_HEADERS = AdminAuth(["a"], webhook=AUTH), {"Authorization": "Bearer a"}
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
    st.integers(min_value=500, max_value=30_000).map(lambda n: ("[" * n + "]" * n).encode()),
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


# The Content-Type of a submit (issue 28 item 3): application/json with any parameters, in any case, or none; any
# other media type is 415 with what to send, before the body is parsed, and changes nothing.
media_types = st.one_of(
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonx"]),
    st.from_regex(r"[a-z]{1,12}/[a-z0-9.+-]{1,20}", fullmatch=True).filter(lambda m: m != "application/json"),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies, media_type=media_types, params=st.sampled_from(["", "; charset=utf-8", ";charset=latin-1"]))
def test_bodies_not_declared_json_are_415(body: bytes, media_type: str, params: str) -> None:
    WRITES.clear()
    response = handle_submit(DEPS, AUTH, {**HEADERS, "Content-Type": media_type + params}, body, trigger="fuzz")
    assert response.status == 415, (response.status, response.body)
    assert response.body["error"].endswith("send Content-Type: application/json")
    assert WRITES == []


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON;charset=UTF-8"]
)
def test_json_bodies_are_read_and_an_unknown_run_is_404(content_type: str | None) -> None:
    WRITES.clear()
    headers = {**HEADERS, "content-type": content_type} if content_type else HEADERS
    body = b'{"flow_run_id": "00000000-0000-4000-8000-000000000000"}'
    response = handle_submit(DEPS, AUTH, headers, body, trigger="fuzz")
    assert (response.status, response.body) == (
        404,
        {"error": "unknown flow run 00000000-0000-4000-8000-000000000000"},
    )
    assert WRITES == []


# What a provision request is, as the README documents it (not as the product's validators decide): a JSON object
# with "name" (letters, digits, "-", "_", ".", at most 100, not starting with "prefect") and "type" (a pool type this
# build knows), and optionally concurrency_limit (an integer >= 0), the booleans dry_run, provision_infra and
# plan_only, credentials ("role" | "access-key"), region and submit_url. Each strategy below breaks one rule.
VALID = {"name": "ok-pool", "type": "process:push"}
KNOWN_TYPES = {"process:push", "ecs:push"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def _with(**changes: object) -> bytes:
    return json.dumps({**VALID, **changes}).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


not_an_object = st.one_of(
    st.binary(max_size=300).filter(lambda b: not _is_json_object(b)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
)
missing_field = st.sampled_from(["name", "type"]).map(
    lambda k: json.dumps({f: v for f, v in VALID.items() if f != k}).encode()
)
bad_name = st.one_of(
    st.text(max_size=120).filter(lambda s: not NAME.fullmatch(s)),
    st.from_regex(NAME, fullmatch=True).map(lambda s: ("prefect" + s)[:100]),
    json_values.filter(lambda v: not isinstance(v, str)),
).map(lambda name: _with(name=name))
bad_type = st.one_of(st.text(max_size=40).filter(lambda s: s not in KNOWN_TYPES), st.integers(), st.none()).map(
    lambda kind: _with(type=kind)
)
unknown_key = (
    st.tuples(st.text(min_size=1, max_size=12), json_values)
    .filter(
        lambda kv: (
            kv[0]
            not in {
                "name",
                "type",
                "submit_url",
                "concurrency_limit",
                "dry_run",
                "provision_infra",
                "plan_only",
                "credentials",
                "region",
            }
        )
    )
    .map(lambda kv: _with(**{kv[0]: kv[1]}))
)
bad_limit = st.one_of(
    st.integers(max_value=-1),
    st.text(min_size=1, max_size=5).filter(lambda s: not s.isdigit()),
    st.lists(st.integers(), max_size=2),
).map(lambda v: _with(concurrency_limit=v))
bad_flag = st.tuples(
    st.sampled_from(["dry_run", "provision_infra", "plan_only"]), st.sampled_from(["maybe", 2, -1, [], {}, "2"])
).map(lambda kv: _with(**{kv[0]: kv[1]}))
bad_credentials = (
    st.text(max_size=12).filter(lambda s: s not in ("role", "access-key")).map(lambda c: _with(credentials=c))
)
too_deep = st.integers(min_value=1_000, max_value=30_000).map(
    lambda depth: ('{"name": "ok-pool", "type": "process:push", "region": ' + _nested(depth) + "}").encode()
)
invalid_provision_bodies = st.one_of(
    not_an_object, missing_field, bad_name, bad_type, unknown_key, bad_limit, bad_flag, bad_credentials, too_deep
)


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=invalid_provision_bodies)
def test_provision_answers_4xx_for_bad_requests_and_changes_nothing(body: bytes) -> None:
    WRITES.clear()
    response = handle_admin(DEPS, ADMIN, "/provision", ADMIN_HEADERS, body)
    assert 400 <= response.status < 500, (response.status, response.body)
    assert "error" in response.body and "\n" not in response.body["error"]
    assert WRITES == []


@pytest.mark.parametrize("limit", ["-0", " 5", "5", 1.0, True])
def test_a_concurrency_limit_that_is_not_a_json_integer_is_400(limit: object) -> None:
    WRITES.clear()
    response = handle_admin(DEPS, ADMIN, "/provision", ADMIN_HEADERS, _with(concurrency_limit=limit))
    assert response.status == 400 and response.body["error"].startswith("concurrency_limit:"), response.body
    assert WRITES == []


@pytest.mark.parametrize("depth", [1_000, 32_000])
def test_deeply_nested_bodies_get_a_4xx_with_a_reason(depth: int) -> None:
    for body in (_nested(depth).encode(), ('{"flow_run_id": ' + _nested(depth) + "}").encode()):
        for answer in (
            handle_submit(DEPS, AUTH, HEADERS, body, trigger="fuzz"),
            handle_admin(DEPS, ADMIN, "/provision", ADMIN_HEADERS, body),
        ):
            assert 400 <= answer.status < 500 and answer.body["error"], answer


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
