"""`pushpool serve` over HTTP: provision makes Prefect's automation call submit, and bad input changes nothing."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from pushpool import localserver
from pushpool.entrypoints.http import handle_run_event
from pushpool.entrypoints.serve import Server
from pushpool.providers.base import JobHandle
from pushpool.tls import default_context

from tests.helpers import EXITS_AT_ONCE, PrefectHelper, make_deps

pytestmark = pytest.mark.integration


@pytest.fixture
def served(prefect_api: str, tmp_path: Path):
    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp_path, submit_url=f"http://127.0.0.1:{port}/submit")
    # Only the webhook can submit here: no event stream, and a monitor that never ticks during the test.
    server = Server(deps, port=port, monitor_interval=3600, event_stream=False)
    server.stopping.set()  # the monitor thread exits at once
    server.start()
    yield server, httpx.Client(base_url=server.address, timeout=30, verify=default_context())
    server.stop()
    deps.orchestrator.close()


AUTH = {"Authorization": "Bearer test-token"}
ADMIN = {"Authorization": "Bearer test-admin-token"}  # /provision and /monitor: never the webhook token


def test_provision_then_automation_webhook_submits_the_run(served, prefect: PrefectHelper) -> None:
    _, http = served
    pool = prefect.unique("hooked")
    first = http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN)
    assert first.status_code == 200, first.text
    assert [s["action"] for s in first.json()["steps"]] == ["created", "created", "created"]
    second = http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN).json()
    assert second["changed"] is False
    assert [s["action"] for s in second["steps"]] == ["unchanged"] * 3

    dep = prefect.create_deployment(pool, "flows.py:hello")
    run_id = prefect.create_run(dep)
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "COMPLETED"
    assert run["infrastructure_pid"]


def test_provision_of_an_existing_pool_keeps_operator_defaults(served, prefect: PrefectHelper) -> None:
    _, http = served
    pool = prefect.unique("kept")
    assert http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN).status_code == 200
    template = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    template["variables"]["properties"]["max_run_time_seconds"]["default"] = 600
    prefect.json("PATCH", f"/work_pools/{pool}", json={"base_job_template": template})
    again = http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN).json()
    assert again["changed"] is False
    kept = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    assert kept["variables"]["properties"]["max_run_time_seconds"]["default"] == 600


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b"{}", 400, "flow_run_id"),
        (b'{"flow_run_id": "nope"}', 400, "UUID"),
        (b'{"flow_run_id": "00000000-0000-4000-8000-000000000000"}', 404, "unknown flow run"),
        (b"", 400, "empty body"),
    ],
)
def test_malformed_webhooks_get_a_4xx_with_a_reason(served, body: bytes, status: int, fragment: str) -> None:
    _, http = served
    response = http.post("/submit", content=body, headers=AUTH)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert "\n" not in response.json()["error"]


def test_oversized_body_is_refused_before_parsing(served) -> None:
    _, http = served
    response = http.post("/submit", content=b"{" + b" " * (70 * 1024) + b"}", headers=AUTH)
    assert response.status_code == 413


def test_unauthenticated_requests_change_nothing(served, prefect: PrefectHelper) -> None:
    _, http = served
    pool = prefect.unique("auth")
    prefect.create_pool(pool)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    body = json.dumps({"flow_run_id": run_id})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}):
        assert http.post("/submit", content=body, headers=headers).status_code == 401
    assert http.post("/provision", json={"name": "x", "type": "process:push"}).status_code == 401
    time.sleep(0.5)
    assert prefect.states(run_id) == [("SCHEDULED", "Scheduled")]


def test_runs_of_other_pools_are_refused_and_left_alone(served, prefect: PrefectHelper) -> None:
    _, http = served
    hybrid = prefect.unique("hybrid")
    prefect.create_pool(hybrid, "process")
    unknown = prefect.unique("unknownpush")
    prefect.create_pool(unknown, "nomad:push")
    for pool, fragment in ((hybrid, "not a push pool"), (unknown, "unknown push pool type")):
        run_id = prefect.create_run(prefect.create_deployment(pool))
        response = http.post("/submit", json={"flow_run_id": run_id}, headers=AUTH)
        assert response.status_code == 422
        assert fragment in response.json()["error"]
        assert prefect.states(run_id) == [("SCHEDULED", "Scheduled")]


def test_template_that_does_not_render_crashes_the_run(served, prefect: PrefectHelper) -> None:
    _, http = served
    pool = prefect.unique("badtpl")
    prefect.create_pool(pool)
    dep = prefect.create_deployment(pool, job_variables={"env": {"TOKEN": "{{ prefect.blocks.secret.no-such-block }}"}})
    run_id = prefect.create_run(dep)
    response = http.post("/submit", json={"flow_run_id": run_id}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["outcome"] == "crashed"
    state_type, _ = prefect.state(run_id)
    assert state_type == "CRASHED"
    assert "no-such-block" in prefect.read_run(run_id)["state"]["message"]


def test_paused_pool_and_queue_leave_the_run_scheduled(served, prefect: PrefectHelper) -> None:
    _, http = served
    pool = prefect.unique("paused")
    prefect.create_pool(pool, is_paused=True)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    assert http.post("/submit", json={"flow_run_id": run_id}, headers=AUTH).json()["outcome"] == "paused"
    prefect.json("PATCH", f"/work_pools/{pool}", json={"is_paused": False})
    prefect.json("PATCH", f"/work_pools/{pool}/queues/default", json={"is_paused": True})
    assert http.post("/submit", json={"flow_run_id": run_id}, headers=AUTH).json()["outcome"] == "paused"
    assert prefect.states(run_id) == [("SCHEDULED", "Scheduled")]


def test_with_both_triggers_each_event_is_acted_on_once(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, caplog: pytest.LogCaptureFixture
) -> None:
    """The event stream and the automation's webhook deliver the same Prefect event: serve acts on it once."""
    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp_path, submit_url=f"http://127.0.0.1:{port}/submit")
    server = Server(deps, port=port, monitor_interval=3600, event_stream=True)
    server.stopping.set()  # no monitor ticks: only the two triggers can submit
    caplog.set_level("DEBUG", logger="pushpool.serve")
    server.start()
    try:
        http = httpx.Client(base_url=server.address, timeout=30)
        pool = prefect.unique("twice")
        assert http.post("/provision", json={"name": pool, "type": "process:push"}, headers=ADMIN).status_code == 200
        assert server.events is not None and server.events.connected.wait(15)
        run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
        prefect.wait_submitted(run_id, timeout=90)

        def outcomes() -> list[str]:
            lines = [r.getMessage() for r in caplog.records if r.name == "pushpool.serve"]
            found = []
            for line in lines:
                kind, _, payload = line.partition(": ")
                if kind in ("submit", "event") and payload.startswith("{"):
                    data = json.loads(payload)
                    if data.get("flow_run_id") == run_id and data.get("outcome") in ("submitted", "duplicate"):
                        found.append(data["outcome"])
            return sorted(found)

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(outcomes()) < 2:
            time.sleep(0.2)
        # The Scheduled event: submitted by whichever trigger came first, a duplicate for the other.
        assert outcomes() == ["duplicate", "submitted"]
        # A second delivery is normal: it is logged for debugging only, never where it reads like a problem.
        loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "duplicate" in r.getMessage()]
        assert loud == []
        claims = [s for s in prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})]
        assert [s["name"] for s in claims].count("Pending") == 1
    finally:
        server.stop()
        deps.orchestrator.close()


def test_a_pool_paused_moments_after_a_run_holds_for_the_next_one(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper
) -> None:
    """serve shares pool reads between runs (bounded: read_cache_seconds), and forgets them when Prefect's event
    stream says a pool or queue changed: here the reads would be kept 60 s, and the pause still holds at once."""
    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp_path, submit_url=f"http://127.0.0.1:{port}/submit", read_cache_seconds=60)
    server = Server(deps, port=port, monitor_interval=3600, event_stream=True)
    server.stopping.set()  # no monitor ticks
    server.start()
    try:
        assert server.events is not None and server.events.connected.wait(15)
        pool = prefect.unique("pausenow")
        prefect.create_pool(pool)
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 20"})
        first = prefect.create_run(dep)
        # serve submitted it: its pool is now shared. (The bound allows one stall of the shared SQLite server: a write
        # waiting out its 60 s busy timeout, seen once in a full run on 3 workers.)
        prefect.wait_for(first, {"PENDING", "RUNNING"}, timeout=90)
        prefect.json("PATCH", f"/work_pools/{pool}", json={"is_paused": True})
        time.sleep(1.0)  # the pause event reaches serve in tens of milliseconds
        second = prefect.create_run(dep)  # its Scheduled event reaches serve too
        time.sleep(1.0)
        assert prefect.state(second)[0] == "SCHEDULED"
        assert handle_run_event(deps, second, trigger="test")["outcome"] == "paused"
        deps.backend("process").cancel(
            JobHandle("process", prefect.read_run(first)["infrastructure_pid"]), grace_seconds=1
        )
    finally:
        server.stop()
        deps.orchestrator.close()


def test_a_deployment_changed_moments_after_a_run_is_used_by_the_next_one(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper
) -> None:
    """serve shares deployment reads between runs too (issue 25) and forgets them when Prefect's event stream says a
    deployment was updated (Prefect 3.8.8 emits prefect.deployment.updated): here the reads would be kept 60 s, and the
    next run gets the new job variables at once."""
    from tests.fakes import LatencyBackend

    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp_path, submit_url=f"http://127.0.0.1:{port}/submit", read_cache_seconds=60)
    backend = LatencyBackend()
    deps._backends["process"] = backend
    server = Server(deps, port=port, monitor_interval=3600, event_stream=True)
    server.stopping.set()  # no monitor ticks
    server.start()
    try:
        assert server.events is not None and server.events.connected.wait(15)
        pool = prefect.unique("depnow")
        prefect.create_pool(pool)
        dep = prefect.create_deployment(pool, job_variables={"command": "echo old"})
        first = prefect.create_run(dep)
        prefect.wait_for(first, {"PENDING"}, timeout=30)  # serve submitted it: its deployment is now shared
        prefect.json("PATCH", f"/deployments/{dep}", json={"job_variables": {"command": "echo new"}})
        time.sleep(1.0)  # the update event reaches serve in tens of milliseconds
        second = prefect.create_run(dep)  # serve submits it from its Scheduled event
        prefect.wait_for(second, {"PENDING"}, timeout=30)
        commands = {job.spec.run_id: list(job.spec.command) for job in backend.jobs.values()}
        assert commands == {first: ["echo", "old"], second: ["echo", "new"]}
    finally:
        server.stop()
        deps.orchestrator.close()


# -- the HTTP surface: every answer JSON with the right status (issue 28 item 3) ---------------------------------------

UNKNOWN_RUN = b'{"flow_run_id": "00000000-0000-4000-8000-000000000000"}'


def raw_request(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is on its own connection; the answer's status, headers (lower-case) and body."""
    import socket

    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int, fragment: str) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    assert fragment in json.loads(body)["error"], body


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/submit", 405, "GET is not allowed on /submit: use POST"),
        ("PUT", "/submit", 405, "use POST"),
        ("DELETE", "/provision", 405, "use POST"),
        ("PATCH", "/monitor", 405, "use POST"),
        ("POST", "/health", 405, "use GET"),
        ("GET", "/nope", 404, "no such path '/nope'"),
        ("POST", "/submit/extra", 404, "POST /submit"),
        ("BREW", "/submit", 501, "method 'BREW' is not supported"),
    ],
)
def test_other_methods_and_paths_get_a_json_404_405_or_501(
    served, method: str, path: str, status: int, fragment: str
) -> None:
    _, http = served
    response = http.request(method, path, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]
    if status == 405:
        assert response.headers["allow"] == ("GET, HEAD" if path == "/health" else "POST")


def test_health_answers_get_and_head(served) -> None:
    _, http = served
    assert http.get("/health").json() == {"ok": True}
    head = http.head("/health")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    ("content_type", "status", "fragment"),
    [
        ("text/plain", 415, "Content-Type text/plain is not accepted: send Content-Type: application/json"),
        ("application/x-www-form-urlencoded", 415, "send Content-Type: application/json"),
        ("application/jsonp", 415, "not accepted"),
        ("application/json", 404, "unknown flow run"),
        ("application/json; charset=utf-8", 404, "unknown flow run"),
        ("Application/JSON;charset=UTF-8", 404, "unknown flow run"),
        (None, 404, "unknown flow run"),  # no Content-Type: read as JSON
    ],
)
def test_submit_accepts_json_bodies_only(served, content_type: str | None, status: int, fragment: str) -> None:
    server, _ = served
    head = "POST /submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n"
    head += f"Content-Length: {len(UNKNOWN_RUN)}\r\n"
    head += f"Content-Type: {content_type}\r\n" if content_type else ""
    assert_json_error(*raw_request(server, head.encode() + b"\r\n" + UNKNOWN_RUN), status, fragment)


def test_provision_refuses_a_body_not_declared_json(served) -> None:
    _, http = served
    response = http.post(
        "/provision", content=b'{"name": "x", "type": "process:push"}', headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_a_chunked_submit_is_read_and_the_run_submitted(served, prefect: PrefectHelper) -> None:
    server, _ = served
    pool = prefect.unique("chunked")
    prefect.create_pool(pool)
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
    body = json.dumps({"flow_run_id": run_id}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    request = (
        b"POST /submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    status, _, answer = raw_request(server, request)
    assert status == 200, answer
    assert json.loads(answer)["outcome"] == "submitted"
    assert prefect.wait_submitted(run_id)["infrastructure_pid"]


@pytest.mark.parametrize(
    ("framing", "status", "fragment"),
    [
        (b"Transfer-Encoding: chunked\r\n\r\n" + b"zz\r\n{}\r\n0\r\n\r\n", 400, "malformed chunked body"),
        (b"Transfer-Encoding: chunked\r\n\r\n" + b"20000\r\n" + b" " * 100, 413, "over the 65536-byte limit"),
        (b"Transfer-Encoding: gzip\r\n\r\n" + b"xx", 411, "send the body with Content-Length"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400, "send one of them"),
        (b"Content-Length: ten\r\n\r\n", 400, "is not a number of bytes"),
        (b"Content-Length: 99999999\r\n\r\n{}", 413, "over the 65536-byte limit"),
    ],
)
def test_bodies_of_bad_framing_get_a_json_reason(served, framing: bytes, status: int, fragment: str) -> None:
    server, _ = served
    head = b"POST /submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\nContent-Type: application/json\r\n"
    status_, headers, body = raw_request(server, head + framing)
    assert_json_error(status_, headers, body, status, fragment)
    assert headers["connection"] == "close"  # the rest of what was sent is not read as another request


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        (b"X-Big: " + b"a" * 70_000 + b"\r\n", 431, "request headers too large"),
        (b"".join(b"X-%d: 1\r\n" % i for i in range(150)), 431, "send fewer or smaller headers"),
    ],
)
def test_oversized_headers_get_a_json_431(served, extra: bytes, status: int, fragment: str) -> None:
    server, _ = served
    request = b"POST /submit HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: 0\r\n\r\n"
    assert_json_error(*raw_request(server, request), status, fragment)


def test_a_malformed_request_line_gets_json(served) -> None:
    server, _ = served
    status, headers, body = raw_request(server, b"POST /submit HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert_json_error(status, headers, body, 400, "malformed HTTP request")
