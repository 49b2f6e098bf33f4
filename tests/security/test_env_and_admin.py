"""The hostile deployment author against two trust boundaries (issue 22, items 3 and 6).

* **The operator's environment never reaches a job.** pushpool runs with the operator's cloud keys and Prefect
  credentials in its environment. A flow that dumps its own environment — on a plain ``process:push`` pool and on a
  managed pool (the process backend, code from git) — and ``{{ $NAME }}`` placeholders in the ``env`` job variable
  find none of them; the job has what it needs (the API URL, its run id) and completes.
* **Provisioning is not the webhook.** The webhook token is in the pool's Webhook block, readable by any Prefect API
  user. Read back from there, it is refused (403, saying what to send) by ``pushpool serve``'s ``/provision`` (also
  with ``provision_infra``) and ``/monitor``, and nothing changes: no pool, no Webhook block, no automation, no cloud
  provisioner, no monitor tick (a due run stays Scheduled, no worker heartbeat). The admin token does both.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.managed import MANAGED_POOL_TYPE
from pushpool.providers import Provider, base_job_template
from pushpool.usecases.monitor import tick
from pushpool.usecases.provision import provision_pool

from tests.helpers import EXITS_AT_ONCE, PrefectHelper, make_deps

pytestmark = pytest.mark.integration

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# What the operator's environment holds where pushpool runs (fake values, each marked so a leak is easy to find).
OPERATOR_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAOPERATORLEAK0001",
    "AWS_SECRET_ACCESS_KEY": "operator-leak-aws-secret",
    "AWS_SESSION_TOKEN": "operator-leak-aws-session",
    "AZURE_CLIENT_SECRET": "operator-leak-azure-secret",
    "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=operator-leak-azure-storage",
    "GOOGLE_APPLICATION_CREDENTIALS": "/operator-leak/google-sa.json",
    "MODAL_TOKEN_ID": "ak-operator-leak-modal-id",
    "MODAL_TOKEN_SECRET": "as-operator-leak-modal-secret",
    "DASK_COILED__TOKEN": "operator-leak-coiled-token",
    "PREFECT_API_KEY": "pnu_operatorleakprefectkey",
    "PREFECT_SERVER_API_AUTH_STRING": "admin:operator-leak-prefect-server",
    "DATABASE_URL": "postgresql://u:operator-leak-db@db/x",
}
DUMP_FLOW = """
import json
import os

from prefect import flow


@flow
def dump_env(path: str) -> None:
    with open(path, "w") as fh:
        json.dump(dict(os.environ), fh)
"""
# Placeholders asking for the operator's variables by name, in the deployment's `env`. On a pool whose template gives
# `env` defaults they are rendered (Prefect's rule: the deployment's env is merged into the defaults, then rendered) —
# from the allowlisted environment, where these names are not; otherwise (the managed pool) they stay as written.
STEAL = {"STOLEN_AWS": "{{ $AWS_SECRET_ACCESS_KEY }}", "STOLEN_AZ": "x{{ $AZURE_STORAGE_CONNECTION_STRING }}x"}


@pytest.fixture(scope="module")
def flows_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the dumping flow that is also a git repository (its name ends in .git)."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.git"
    path.mkdir()
    (path / "hostile_flows.py").write_text(DUMP_FLOW)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    subprocess.run([*git, "-C", str(path), "add", "."], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-qm", "flows"], check=True)
    return path


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in OPERATOR_SECRETS.items():
        monkeypatch.setenv(name, value)


def _delete_managed_pools(prefect: PrefectHelper) -> None:
    for pool in prefect.json("POST", "/work_pools/filter", json={}):
        if pool["type"] == MANAGED_POOL_TYPE:
            prefect.request("DELETE", f"/work_pools/{pool['name']}")


def _run_to_the_end(deps, prefect: PrefectHelper, pool: str, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
        run = prefect.read_run(run_id)
        if run["state"]["type"] in FINAL:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} not final after {timeout}s: {prefect.state(run_id)}")


def _assert_nothing_of_the_operator(seen: dict[str, str], run_id: str) -> None:
    leaked = sorted(name for name, value in seen.items() if "operator-leak" in value or "OPERATORLEAK" in value)
    assert leaked == [], f"the operator's secrets reached the job as {leaked}"
    assert not set(OPERATOR_SECRETS) & set(seen), sorted(set(OPERATOR_SECRETS) & set(seen))
    assert seen["PREFECT__FLOW_RUN_ID"] == run_id and seen["MINE"] == "1"  # the job's own, with its own env


def _template_with_env_defaults() -> dict:
    """process:push's template with an operator's `env` default, as many pools have."""
    template = base_job_template("process:push")
    template["variables"]["properties"]["env"]["default"] = {"TEAM": "data"}
    return template


@pytest.mark.parametrize("kind", ["process:push", "managed"])
def test_a_job_never_sees_the_operators_environment(
    kind: str, prefect: PrefectHelper, tmp_path: Path, flows_repo: Path, operator_env: None
) -> None:
    dump = tmp_path / "seen-env.json"
    if kind == "managed":
        _delete_managed_pools(prefect)
        deps = make_deps(
            prefect.api_url,
            tmp_path,
            managed_tiers={"test": {"concurrent_runs": 1, "pools": 1, "compute_hours": 10}},
            managed_tier="test",
        )
        pool = prefect.unique("hostile-managed")
        provision_pool(deps, name=pool, type_name=MANAGED_POOL_TYPE)
        pull = [{"prefect.deployments.steps.git_clone": {"repository": f"file://{flows_repo}", "branch": None}}]
        env = {**STEAL, "MINE": "1"}
        dep = prefect.create_deployment(pool, "hostile_flows.py:dump_env", job_variables={"env": env}, pull_steps=pull)
        rendered = dict(STEAL)  # as written
    else:
        deps = make_deps(prefect.api_url, tmp_path)
        pool = prefect.unique("hostile-process")
        prefect.create_pool(pool, base_job_template=_template_with_env_defaults())
        pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_repo)}}]
        env = {**STEAL, "MINE": "1"}
        dep = prefect.create_deployment(pool, "hostile_flows.py:dump_env", job_variables={"env": env}, pull_steps=pull)
        rendered = {"STOLEN_AWS": "", "STOLEN_AZ": "xx"}  # rendered, and found nothing
    try:
        run_id = prefect.create_run(dep, parameters={"path": str(dump)})
        run = _run_to_the_end(deps, prefect, pool, run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        seen = json.loads(dump.read_text())
        _assert_nothing_of_the_operator(seen, run_id)
        assert {k: seen[k] for k in STEAL} == rendered
        assert kind == "managed" or seen["TEAM"] == "data"
    finally:
        deps.orchestrator.close()
        if kind == "managed":
            _delete_managed_pools(prefect)


# -- provisioning is not the webhook ------------------------------------------------------------------------------


@pytest.fixture
def served(prefect_api: str, tmp_path: Path):
    port = localserver.free_port()
    deps = make_deps(prefect_api, tmp_path, submit_url=f"http://127.0.0.1:{port}/submit")
    server = Server(deps, port=port, monitor_interval=3600, event_stream=False)
    server.stopping.set()  # no monitor tick of its own: only /monitor could tick
    server.start()
    yield server, httpx.Client(base_url=server.address, timeout=60)
    server.stop()
    deps.orchestrator.close()


def _webhook_token_from_prefect(prefect: PrefectHelper, pool: str) -> str:
    """The token as any Prefect API user reads it: out of the pool's Webhook block, secrets included."""
    block = prefect.json(
        "GET", f"/block_types/slug/webhook/block_documents/name/pushpool-{pool}", params={"include_secrets": "true"}
    )
    scheme, _, token = block["data"]["headers"]["Authorization"].partition(" ")
    assert scheme == "Bearer" and token
    return token


def _traces(prefect: PrefectHelper, *names: str) -> dict[str, tuple]:
    """What provisioning makes or changes for these pools: the pool (as Prefect stores it), its Webhook block and its
    automations — read by name, so other tests' objects on the shared server (and its listings' page size) do not
    matter."""
    found: dict[str, tuple] = {}
    for name in names:
        pool = prefect.request("GET", f"/work_pools/{name}")
        block = prefect.request("GET", f"/block_types/slug/webhook/block_documents/name/pushpool-{name}")
        automations = prefect.json(
            "POST", "/automations/filter", json={"automations": {"name": {"any_": [f"pushpool-{name}"]}}}
        )
        found[name] = (
            pool.json() if pool.status_code == 200 else pool.status_code,
            block.json().get("id") if block.status_code == 200 else block.status_code,
            sorted((a["id"], a["updated"]) for a in automations),
        )
    return found


def test_the_webhook_token_read_from_prefect_cannot_provision_or_tick(
    served, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, http = served
    existing = prefect.unique("hooked")
    provision_pool(server.deps, name=existing, type_name="process:push")  # as `pushpool work-pool create` does
    token = _webhook_token_from_prefect(prefect, existing)
    stolen = {"Authorization": f"Bearer {token}"}
    assert http.post("/submit", json={}, headers=stolen).status_code == 400  # it is submit's token: past auth

    provisioners: list[str] = []
    monkeypatch.setattr(Provider, "create_provisioner", lambda self, **_: provisioners.append(self.name))
    quiet = prefect.unique("quiet")  # no automation: only a monitor tick would start its run
    prefect.create_pool(quiet)
    due = prefect.create_run(prefect.create_deployment(quiet, job_variables=EXITS_AT_ONCE))
    new = prefect.unique("stolen")
    server.pool_names = (existing, quiet)  # a tick covers these (the shared server holds every other test's pools)
    before = _traces(prefect, existing, quiet, new)
    assert before[new] == (404, 404, [])
    attempts = [
        ("/provision", {"name": new, "type": "process:push"}),
        ("/provision", {"name": new, "type": "ecs:push", "provision_infra": True}),
        ("/provision", {"name": existing, "type": "process:push", "concurrency_limit": 0}),
        ("/monitor", {}),
    ]
    for path, body in attempts:
        answer = http.post(path, json=body, headers=stolen)
        assert answer.status_code == 403, (path, answer.text)
        error = answer.json()["error"]
        assert "webhook token authorizes submit only" in error and "admin token" in error, error
        assert token not in answer.text
    time.sleep(0.5)
    assert _traces(prefect, existing, quiet, new) == before
    assert provisioners == []
    assert prefect.json("GET", f"/work_pools/{existing}")["concurrency_limit"] is None
    assert prefect.states(due) == [("SCHEDULED", "Scheduled")]  # no tick dispatched it
    assert prefect.json("POST", f"/work_pools/{quiet}/workers/filter", json={}) == []  # nor heartbeated

    # The admin token does what the webhook token could not (the checks above can see a change).
    admin = {"Authorization": "Bearer test-admin-token"}
    assert http.post("/monitor", json={}, headers=admin).status_code == 200
    assert prefect.state(due)[0] != "SCHEDULED"
    made = http.post("/provision", json={"name": new, "type": "process:push"}, headers=admin)
    assert made.status_code == 200, made.text
    assert _traces(prefect, new)[new][0] != 404
