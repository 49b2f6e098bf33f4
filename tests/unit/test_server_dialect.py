"""The server-version table (issue 25): what pushpool sends to each Prefect 3.x server, and what it reads back.

Requests go through a real :class:`PrefectClient` over an httpx MockTransport that plays a server of one version and,
like Prefect's schemas (``extra="forbid"``), answers 422 to a field that version does not know.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pushpool.entrypoints.http import FlowRunEvent, parse_body
from pushpool.errors import InvalidRequestError, OrchestratorError
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.dialect import ServerDialect, UnsupportedServerError, labels_from_tags, parse_version
from pushpool.usecases.provision import automation_body

RUN = "00000000-0000-4000-8000-000000000001"


class _Server:
    """A Prefect server of ``version``: automations (with ``tags`` from 3.4.7), runs (``labels`` from 3.1)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.dialect = ServerDialect.of(version)
        self.automations: list[dict[str, Any]] = []
        self.run: dict[str, Any] = {"id": RUN, "name": "r", "flow_id": RUN, "tags": ["team-a"]}
        if self.dialect.has("flow_run_labels"):
            self.run["labels"] = {}
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path.removeprefix("/api")
        self.requests.append((request.method, path, body))
        if path == "/admin/version":
            return httpx.Response(200, json=self.version)
        if path == "/automations/" and request.method == "POST":
            if "tags" in body and not self.dialect.has("automation_tags"):
                detail = [{"type": "extra_forbidden", "loc": ["body", "tags"], "msg": "Extra inputs are not permitted"}]
                return httpx.Response(
                    422, json={"exception_message": "Invalid request received.", "exception_detail": detail}
                )
            self.automations.append({**body, "id": f"a{len(self.automations)}"})
            return httpx.Response(201, json=self.automations[-1])
        if path == "/automations/filter":
            return httpx.Response(200, json=self.automations)
        if path == f"/flow_runs/{RUN}/labels":
            if not self.dialect.has("flow_run_labels"):
                return httpx.Response(404, json={"detail": "Not Found"})
            self.run["labels"].update(body)
            return httpx.Response(204)
        if path == f"/flow_runs/{RUN}" and request.method == "PATCH":
            self.run.update(body)
            return httpx.Response(204)
        if path == f"/flow_runs/{RUN}":
            return httpx.Response(200, json=self.run)
        return httpx.Response(404, json={"detail": "Not Found"})


def _client(server: _Server) -> PrefectClient:
    return PrefectClient("http://prefect.test/api", transport=httpx.MockTransport(server), max_retries=0)


@pytest.mark.parametrize(
    ("text", "version"), [("3.0.11", (3, 0, 11)), ("3.9.1.dev3+g1a2b", (3, 9, 1)), ("3.4", (3, 4, 0))]
)
def test_versions_are_read(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["2.20.3", "4.0.0", "nonsense"])
def test_a_server_outside_prefect_3_is_refused_by_name(text: str) -> None:
    with pytest.raises(OrchestratorError, match=r"not supported|cannot read") as caught:
        ServerDialect.of(text)
    assert text in str(caught.value)


@pytest.mark.parametrize(
    ("version", "has"),
    [
        ("3.0.11", set()),
        ("3.2.15", {"flow_run_labels"}),
        ("3.4.6", {"flow_run_labels", "webhook_json_payload"}),
        ("3.4.25", {"flow_run_labels", "webhook_json_payload", "automation_tags"}),
        (
            "3.9.1",
            {"flow_run_labels", "webhook_json_payload", "automation_tags", "bulk_set_state", "pending_substates"},
        ),
    ],
)
def test_the_table_by_version(version: str, has: set[str]) -> None:
    from pushpool.prefect_api.dialect import FEATURES

    assert {f for f in FEATURES if ServerDialect.of(version).has(f)} == has


def test_require_names_the_server_version_and_the_release_to_upgrade_to() -> None:
    with pytest.raises(UnsupportedServerError) as caught:
        ServerDialect.of("3.0.11").require("flow_run_labels")
    assert "3.0.11" in str(caught.value) and "3.1.0 or newer" in str(caught.value)
    ServerDialect.of("3.1.0").require("flow_run_labels")  # no error


@pytest.mark.parametrize("version", ["3.0.11", "3.2.15", "3.4.6", "3.4.7", "3.9.1"])
def test_the_automation_is_created_on_every_server_and_reads_back_the_same(version: str) -> None:
    server = _Server(version)
    client = _client(server)
    body = automation_body("p1", "block-1", "process:push", "stream")
    client.create_automation(body)
    sent = server.requests[-1][2]
    assert ("tags" in sent) == (version >= "3.4.7")
    (found,) = client.find_automations("pushpool-p1")
    assert found["tags"] == body["tags"] and found["description"] == body["description"]
    assert client.read_automations()[0]["tags"] == body["tags"]
    assert [m for m, p, _ in server.requests].count("GET") == 1  # the version is read once per client


def test_a_field_a_3_0_server_does_not_know_is_refused_with_its_name() -> None:
    """The mutation guard: a dialect that let ``tags`` through to a 3.0 server would get this 422."""
    server = _Server("3.0.11")
    client = _client(server)
    client._dialect = ServerDialect.of("3.6.0")  # the client believing the server is newer than it is
    with pytest.raises(OrchestratorError, match=r"HTTP 422.*tags: Extra inputs are not permitted"):
        client.create_automation(automation_body("p1", "block-1", "process:push"))


@pytest.mark.parametrize("version", ["3.0.11", "3.1.0", "3.9.1"])
def test_pushpool_labels_are_kept_and_read_back_on_every_server(version: str) -> None:
    server = _Server(version)
    client = _client(server)
    client.update_flow_run_labels(RUN, {"pushpool.io/attempt": "k1"})
    client.update_flow_run_labels(RUN, {"pushpool.io/attempt": "k2", "pushpool.io/recoveries": "1"})
    run = client.read_flow_run(RUN)
    assert run.labels == {"pushpool.io/attempt": "k2", "pushpool.io/recoveries": "1"}
    if version == "3.0.11":  # kept as tags, the run's own tags untouched
        assert server.run["tags"] == ["team-a", "pushpool.io/attempt=k2", "pushpool.io/recoveries=1"]
    else:
        assert server.run["tags"] == ["team-a"]


def test_a_run_tag_shaped_like_a_label_is_a_label_only_on_a_server_without_labels() -> None:
    assert labels_from_tags(["pushpool.io/attempt=k", "other=x", "pushpool.io/bare"]) == {"pushpool.io/attempt": "k"}
    server = _Server("3.1.0")
    server.run["tags"] = ["pushpool.io/attempt=forged"]  # a deployment author's tag on a server with labels
    assert _client(server).read_flow_run(RUN).labels == {}


def test_pushpool_sends_an_honest_user_agent() -> None:
    server = _Server("3.9.1")
    seen: list[str] = []

    def transport(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["User-Agent"])
        return server(request)

    PrefectClient("http://prefect.test/api", transport=httpx.MockTransport(transport)).read_flow_run(RUN)
    assert seen[0].startswith("pushpool/") and "prefect/" not in seen[0]


def test_the_webhook_body_of_a_server_before_3_4_2_is_read() -> None:
    """Prefect < 3.4.2 posts the rendered payload as a JSON string: the object inside is the body."""
    inner = {"flow_run_id": RUN, "event": "prefect.flow-run.Scheduled"}
    assert parse_body(FlowRunEvent, json.dumps(json.dumps(inner)).encode()).flow_run_id == RUN
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_body(FlowRunEvent, json.dumps("not an object").encode())
    with pytest.raises(InvalidRequestError, match="not a JSON object"):
        parse_body(FlowRunEvent, json.dumps("{broken").encode())
