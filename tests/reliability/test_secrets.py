"""No secret value appears in logs, errors, job files or job definitions, over the whole path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.providers import base_job_template

from tests.helpers import PrefectHelper, make_deps, pool_tick

pytestmark = pytest.mark.integration

API_KEY = "pnu_SECRET_api_key_0123456789"
TOKEN = "SECRET-webhook-token-abcdef"
DB_PASSWORD = "SECRET-db-password-ghijkl"


def test_no_secret_in_logs_errors_or_jobs(
    prefect_api: str,
    prefect: PrefectHelper,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    report,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The secrets are in pushpool's environment, as they are where it runs: a template must not be able to read them.
    monkeypatch.setenv("PUSHPOOL_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("WAREHOUSE_DB_PASSWORD", DB_PASSWORD)
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=API_KEY, webhook_tokens=(TOKEN,))
    auth = WebhookAuth([TOKEN])
    pool = prefect.unique("secrets")
    # Anyone who can edit a pool can write its template; `{{ $NAME }}` inside its text reads pushpool's environment.
    template = base_job_template("process:push")
    template["job_configuration"]["env"] = {
        "LEAK": "token:{{ $PUSHPOOL_WEBHOOK_TOKEN }}",
        "LEAK2": "db:{{ $WAREHOUSE_DB_PASSWORD }}",
    }
    for name in ("$PUSHPOOL_WEBHOOK_TOKEN", "$WAREHOUSE_DB_PASSWORD"):  # declared, so that Prefect accepts them
        template["variables"]["properties"][name] = {"type": "string"}
    prefect.create_pool(pool, base_job_template=template)
    dep = prefect.create_deployment(pool, job_variables={"command": "sh -c 'echo leak=$LEAK/$LEAK2; exit 3'"})
    answers = []
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}, {}):
        run_id = prefect.create_run(dep)
        answers.append(handle_submit(deps, auth, headers, json.dumps({"flow_run_id": run_id}).encode(), trigger="t"))
    answers.append(handle_submit(deps, auth, {"Authorization": f"Bearer {TOKEN}"}, b"{not json", trigger="t"))
    prefect.wait_for(
        json.loads(answers[0].json_bytes())["flow_run_id"], {"CRASHED"}, timeout=30, tick=lambda: pool_tick(deps, pool)
    )
    surfaces = {
        "logs": caplog.text,
        "answers": " ".join(a.json_bytes().decode() for a in answers),
        "job files": " ".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()),
        "settings repr": repr(deps.settings),
        "run states": json.dumps([prefect.states(json.loads(a.json_bytes())["flow_run_id"]) for a in answers[:1]]),
        "run messages": json.dumps(prefect.read_run(json.loads(answers[0].json_bytes())["flow_run_id"])["state"]),
    }
    assert "leak=token:" in surfaces["run messages"]  # the job ran and printed both, unresolved
    leaks = [name for name, text in surfaces.items() if any(s in text for s in (API_KEY, TOKEN, DB_PASSWORD))]
    report.add("secrets in logs, errors, job files, states", runs=4, faults=3, stuck=len(leaks))
    assert leaks == []
