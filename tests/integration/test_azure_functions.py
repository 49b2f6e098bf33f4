"""pushpool's Azure Functions (functions/azure/function_app.py, the v2 programming model), called through the app's
built functions with real ``HttpRequest`` and ``TimerRequest`` objects (Core Tools cannot be installed here).

End to end: the provision function makes an ACI pool whose automation calls a local bridge (an HTTP server turning
each request into an ``HttpRequest`` for the submit function); Prefect's automation webhook fires on a new run; submit
creates the container group on the local ARM endpoint; the container command and environment ARM received run here
and the real flow completes; the monitor's timer tick then deletes the finished group.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from pushpool.entrypoints import azure_functions

from tests.conftest import AZ_RG, AZ_SUB
from tests.helpers import PrefectHelper, run_as_its_container
from tests.local_http import LocalHTTPServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fn-azure-token"


@pytest.fixture(scope="module")
def functions() -> dict:
    spec = importlib.util.spec_from_file_location(
        "azure_function_app", ROOT / "functions" / "azure" / "function_app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f.get_user_function() for f in module.app.get_functions()}


class Bridge:
    """What the Functions host does for an HTTP trigger, on 127.0.0.1: the request becomes an HttpRequest."""

    def __init__(self, function) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = func.HttpRequest("POST", f"{outer.url}{self.path}", headers=dict(self.headers), body=body)
                answer = function(request)
                outer.calls.append(answer.status_code)
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(answer.get_body())))
                self.end_headers()
                self.wfile.write(answer.get_body())

        self.calls: list[int] = []
        self.server = LocalHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, prefect_api: str, aci_options: dict, functions: dict):
    bridge = Bridge(functions["submit"])
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("PUSHPOOL_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PUSHPOOL_SUBMIT_URL", f"{bridge.url}/api/submit")
    monkeypatch.setenv("PUSHPOOL_POOL_TYPES", "azure-container-instance:push")
    azure_functions.azure_deps.cache_clear()
    deps, _ = azure_functions.azure_deps()
    deps.backend_options["aci"] = aci_options  # the local endpoint and a fake credential, before the backend exists
    yield bridge
    azure_functions.azure_deps.cache_clear()
    bridge.stop()


def _post(function, path: str, body: dict, token: str = TOKEN) -> func.HttpResponse:
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return function(func.HttpRequest("POST", f"http://localhost/api/{path}", headers=headers, body=data))


def test_webhook_to_submit_function_to_aci_runs_the_flow_and_the_timer_cleans_up(
    env: Bridge, functions: dict, prefect: PrefectHelper, arm, tmp_path: Path
) -> None:
    pool = prefect.unique("az-fn")
    answer = _post(functions["provision"], "provision", {"name": pool, "type": "azure-container-instance:push"})
    assert answer.status_code == 200, answer.get_body()
    try:
        entrypoint = tmp_path / "entrypoint.sh"
        entrypoint.write_text('#!/bin/sh\nexec "$@"\n')
        entrypoint.chmod(0o755)
        dep = prefect.create_deployment(
            pool,
            job_variables={"subscription_id": AZ_SUB, "resource_group_name": AZ_RG, "entrypoint": str(entrypoint)},
        )
        run_id = prefect.create_run(dep)
        deadline = time.monotonic() + 60
        # submit records the job id before it answers Prefect's webhook: wait for both, or the answer is a race
        while not (prefect.read_run(run_id)["infrastructure_pid"] and 200 in env.calls) and time.monotonic() < deadline:
            time.sleep(0.25)
        job_id = prefect.read_run(run_id)["infrastructure_pid"]
        assert job_id and 200 in env.calls, env.calls  # Prefect's automation called the function
        container = arm.group(job_id).body["properties"]["containers"][0]["properties"]
        environment = {e["name"]: e.get("value", e.get("secureValue")) for e in container["environmentVariables"]}
        arm.start_container(job_id)
        run_as_its_container(container["command"], environment, tmp_path)
        assert prefect.state(run_id)[0] == "COMPLETED"
        arm.exit(job_id, 0, [])
        functions["monitor"](TimerRequest(past_due=False))
        assert arm.count("delete") >= 1 and job_id.rsplit("/", 1)[-1] not in {k[2] for k in arm.groups}
    finally:
        prefect.request("DELETE", f"/work_pools/{pool}")


def test_a_wrong_token_is_refused_before_anything_happens(env: Bridge, functions: dict, arm) -> None:
    before = len(arm.requests)
    answer = _post(functions["submit"], "submit", {"id": "x"}, token="wrong")
    assert answer.status_code == 401
    assert len(arm.requests) == before


def test_a_body_not_declared_json_is_415_and_an_unknown_run_404(env: Bridge, functions: dict, arm) -> None:
    """serve's HTTP rules hold on Azure too (issue 28 item 3), and nothing reaches ARM."""
    before = len(arm.requests)
    body = json.dumps({"flow_run_id": "00000000-0000-4000-8000-000000000000"}).encode()
    for content_type, status, fragment in (
        ("text/plain", 415, "send Content-Type: application/json"),
        ("application/json; charset=utf-8", 404, "unknown flow run"),
    ):
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
        answer = functions["submit"](
            func.HttpRequest("POST", "http://localhost/api/submit", headers=headers, body=body)
        )
        assert answer.status_code == status and fragment in json.loads(answer.get_body())["error"]
        assert answer.mimetype == "application/json"
    assert len(arm.requests) == before
