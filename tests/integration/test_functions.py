"""The function entry points (functions/*/app.py) with real-shaped events against the real Prefect server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load(function: str):
    spec = importlib.util.spec_from_file_location(f"fn_{function}", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, prefect_api: str, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("PUSHPOOL_WEBHOOK_TOKEN", "fn-token")
    monkeypatch.setenv("PUSHPOOL_SUBMIT_URL", "http://127.0.0.1:9/submit")
    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(tmp_path / "jobs"))


def url_event(body: dict, token: str = "fn-token") -> dict:
    """A Lambda Function URL event, as AWS sends it (payload format 2.0)."""
    return {
        "version": "2.0",
        "rawPath": "/",
        "headers": {"authorization": f"Bearer {token}", "content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def test_provision_submit_and_monitor_handlers(env, prefect: PrefectHelper) -> None:
    provision, submit, monitor = load("provision"), load("submit"), load("monitor")
    pool = prefect.unique("fn")
    result = provision.lambda_handler({"name": pool, "type": "process:push"}, None)
    assert result["ok"] and result["changed"]
    assert provision.lambda_handler({"name": pool, "type": "process:push"}, None)["changed"] is False
    bad = provision.lambda_handler({"name": pool, "type": "nomad:push"}, None)
    assert bad["ok"] is False and bad["status"] == 422
    assert bad["error"].startswith("unknown push pool type 'nomad:push' (supported: ")

    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "sleep 20"}))
    refused = submit.lambda_handler(url_event({"flow_run_id": run_id}, token="nope"), None)
    assert refused["statusCode"] == 401
    answer = submit.lambda_handler(url_event({"flow_run_id": run_id}), None)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["outcome"] == "submitted"

    prefect.set_state(run_id, "CANCELLING")
    report = monitor.lambda_handler({"source": "aws.scheduler"}, None)
    assert report["reconciled"].get("stop-and-cancel", 0) >= 1
    assert prefect.state(run_id)[0] == "CANCELLED"
