"""`pushpool work-pool …` against a real Prefect server and real `pushpool serve` processes: the webhook points at the
serve that runs (issue 13, item 5), a pool is deleted with everything pushpool made for it (item 4), and the
Prefect-like commands (item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.helpers import EXITS_AT_ONCE, PrefectHelper
from tests.integration.serve_process import ServeProcess, start_serve

pytestmark = pytest.mark.integration


def pushpool(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pushpool.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "pp"


@pytest.fixture
def env(prefect_api: str, home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    return {**keep, "PREFECT_API_URL": prefect_api, "PUSHPOOL_HOME": str(home)}


@pytest.fixture(scope="module")
def serve_env(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the module's running serve (its own PUSHPOOL_HOME): `work-pool create` finds it there."""
    home = tmp_path_factory.mktemp("served") / "pp"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    return {**keep, "PREFECT_API_URL": prefect_api, "PUSHPOOL_HOME": str(home)}


@pytest.fixture(scope="module")
def serve(serve_env: dict[str, str]):
    """One serve for the tests that need one running (each starts in seconds, more under load); the tests that need
    none, or one of their own, use ``env`` and ``home``."""
    process = start_serve(serve_env, Path(serve_env["PUSHPOOL_HOME"]))
    yield process
    process.stop()


def webhook_url(prefect: PrefectHelper, pool: str) -> str:
    block = prefect.json(
        "GET", f"/block_types/slug/webhook/block_documents/name/pushpool-{pool}", params={"include_secrets": "true"}
    )
    return str(block["data"]["url"])


def automations(prefect: PrefectHelper, pool: str) -> list[dict]:
    found = prefect.json(
        "POST", "/automations/filter", json={"automations": {"name": {"any_": [f"pushpool-{pool}"]}}, "limit": 50}
    )
    return [a for a in found if a["name"] == f"pushpool-{pool}"]


def exists(prefect: PrefectHelper, path: str) -> bool:
    status = prefect.request("GET", path).status_code
    assert status in (200, 404), status
    return status == 200


# --- item 5: the webhook points at the serve that is running --------------------------------------------------------


def test_create_points_the_webhook_at_the_running_serve(
    serve: ServeProcess, serve_env: dict[str, str], prefect: PrefectHelper
) -> None:
    """serve listens on a port that is not the default one; `work-pool create` without --port finds it."""
    pool = prefect.unique("found")
    created = pushpool("work-pool", "create", pool, "--type", "process:push", "--events", "webhook", env=serve_env)
    assert created.returncode == 0, created.stderr
    assert webhook_url(prefect, pool) == f"{serve.address}/submit"
    assert [a["enabled"] for a in automations(prefect, pool)] == [True]
    # Prefect's automation calls that serve: the run is submitted through the webhook alone (no monitor tick).
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
    assert prefect.wait_submitted(run_id, timeout=90)["infrastructure_pid"]
    deadline = time.monotonic() + 30  # serve logs the webhook's answer a moment after submit wrote the job's id
    while f'"flow_run_id": "{run_id}"' not in serve.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f'"flow_run_id": "{run_id}"' in serve.log()


def test_for_a_serve_reading_the_event_stream_the_automation_stays_disabled(
    env: dict[str, str], home: Path, prefect: PrefectHelper
) -> None:
    """Issue 14, item 5: each firing of an automation costs Prefect's database several writes; serve's event stream
    delivers the same events at no cost, so by default the automation is kept, pointed at serve, but disabled."""
    serve = start_serve(env, home, event_stream=True)
    try:
        _serve_through_the_stream(serve, env, prefect)
    finally:
        serve.stop()


def _serve_through_the_stream(serve: ServeProcess, env: dict[str, str], prefect: PrefectHelper) -> None:
    pool = prefect.unique("stream")
    created = pushpool("work-pool", "create", pool, "--type", "process:push", env=env)
    assert created.returncode == 0, created.stderr
    assert "disabled: serve's event stream delivers the events" in created.stdout
    (automation,) = automations(prefect, pool)
    assert automation["enabled"] is False and "pushpool:events=stream" in automation["tags"]
    assert webhook_url(prefect, pool) == f"{serve.address}/submit"
    listed = json.loads(pushpool("work-pool", "ls", "--output", "json", env=env).stdout)
    assert [p["automation"] for p in listed if p["name"] == pool] == ["event stream"]
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
    assert prefect.wait_submitted(run_id, timeout=90)["infrastructure_pid"]
    # Prefect records no firing of the disabled automation: the stream alone triggered the run.
    automation_events = prefect.json(
        "POST",
        "/events/filter",
        json={"filter": {"any_resource": {"id": [f"prefect.automation.{automation['id']}"]}}, "limit": 10},
    )["events"]
    assert [e["event"] for e in automation_events if e["event"] != "prefect.automation.created"] == []
    again = pushpool("work-pool", "create", pool, "--type", "process:push", "--events", "webhook", env=env)
    assert again.returncode == 0, again.stderr
    assert [a["enabled"] for a in automations(prefect, pool)] == [True]


def test_a_port_that_is_not_the_running_serves_is_refused(
    serve: ServeProcess, serve_env: dict[str, str], prefect: PrefectHelper
) -> None:
    pool = prefect.unique("wrongport")
    other = serve.port + 1 if serve.port < 65535 else serve.port - 1
    refused = pushpool("work-pool", "create", pool, "--type", "process:push", "--port", str(other), env=serve_env)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushpool: error:"), refused.stderr
    assert str(serve.port) in lines[0] and str(other) in lines[0]
    assert not exists(prefect, f"/work_pools/{pool}")  # nothing changed
    same = pushpool("work-pool", "create", pool, "--type", "process:push", "--port", str(serve.port), env=serve_env)
    assert same.returncode == 0, same.stderr
    assert webhook_url(prefect, pool) == f"{serve.address}/submit"


def test_without_a_running_serve_create_says_where_the_webhook_points(
    env: dict[str, str], home: Path, prefect: PrefectHelper
) -> None:
    """No serve under PUSHPOOL_HOME (one that ran and stopped left no record behind): the default port, said aloud."""
    stopped = start_serve(env, home)
    assert stopped.stop() == 0
    pool = prefect.unique("noserve")
    created = pushpool("work-pool", "create", pool, "--type", "process:push", env=env)
    assert created.returncode == 0, created.stderr
    assert webhook_url(prefect, pool) == "http://127.0.0.1:4280/submit"
    assert "no pushpool serve is running" in created.stderr and "http://127.0.0.1:4280/submit" in created.stderr
    with_port = pushpool("work-pool", "create", pool, "--type", "process:push", "--port", "4999", env=env)
    assert with_port.returncode == 0, with_port.stderr
    assert webhook_url(prefect, pool) == "http://127.0.0.1:4999/submit" and "4999" in with_port.stderr


def test_an_explicit_submit_url_wins_over_the_running_serve(
    serve: ServeProcess, serve_env: dict[str, str], prefect: PrefectHelper
) -> None:
    pool = prefect.unique("explicit")
    url = "https://pushpool.example.invalid/submit"
    created = pushpool("work-pool", "create", pool, "--type", "process:push", "--submit-url", url, env=serve_env)
    assert created.returncode == 0, created.stderr
    assert webhook_url(prefect, pool) == url and "warning" not in created.stderr


# --- item 4: deleting a pool and everything pushpool made for it ----------------------------------------------------


def test_delete_removes_the_pool_its_webhook_and_its_automation(env: dict[str, str], prefect: PrefectHelper) -> None:
    pool = prefect.unique("del")
    assert pushpool("work-pool", "create", pool, "--type", "process:push", env=env).returncode == 0
    assert automations(prefect, pool) and exists(prefect, f"/work_pools/{pool}")
    deleted = pushpool("work-pool", "delete", pool, env=env)  # no terminal: no question
    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted work pool {pool!r}" in deleted.stdout
    assert not exists(prefect, f"/work_pools/{pool}")
    assert not exists(prefect, f"/block_types/slug/webhook/block_documents/name/pushpool-{pool}")
    assert automations(prefect, pool) == []


def test_delete_after_prefect_deleted_the_pool_removes_the_debris(env: dict[str, str], prefect: PrefectHelper) -> None:
    """`prefect work-pool delete` leaves the automation (still enabled) and the Webhook block: pushpool removes them."""
    pool = prefect.unique("behind")
    assert pushpool("work-pool", "create", pool, "--type", "process:push", env=env).returncode == 0
    prefect.json("DELETE", f"/work_pools/{pool}")  # what `prefect work-pool delete` does
    listed = pushpool("work-pool", "ls", "--output", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(p for p in json.loads(listed.stdout) if p["name"] == pool)
    assert row["type"] is None and row["leftover"] is True  # ls shows what a deleted pool left behind
    deleted = pushpool("work-pool", "delete", pool, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert automations(prefect, pool) == []
    assert not exists(prefect, f"/block_types/slug/webhook/block_documents/name/pushpool-{pool}")
    again = pushpool("work-pool", "delete", pool, env=env)  # nothing left: an unknown pool
    assert again.returncode == 2 and f"work pool {pool!r} does not exist" in again.stderr


def test_delete_of_an_unknown_or_a_hybrid_pool_is_refused_and_changes_nothing(
    env: dict[str, str], prefect: PrefectHelper
) -> None:
    unknown = prefect.unique("nosuch")
    result = pushpool("work-pool", "delete", unknown, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"pushpool: error: work pool {unknown!r} does not exist"
    hybrid = prefect.unique("hybrid")
    prefect.create_pool(hybrid, "process")
    result = pushpool("work-pool", "delete", hybrid, env=env)
    assert result.returncode == 2 and "not a push pool" in result.stderr and "prefect work-pool delete" in result.stderr
    assert exists(prefect, f"/work_pools/{hybrid}")


def cluster_exists(pool: str) -> bool:
    clusters = boto3.client("ecs", region_name="us-east-1").describe_clusters(clusters=[f"pushpool-{pool}"])
    return any(c["status"] == "ACTIVE" for c in clusters["clusters"])


def test_delete_removes_the_cloud_side_after_the_plan(
    env: dict[str, str], prefect: PrefectHelper, moto_endpoint: str
) -> None:
    cloud = {**env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    pool = prefect.unique("delecs")
    url = ("--submit-url", "http://127.0.0.1:9/submit")
    created = pushpool("work-pool", "create", pool, "--type", "ecs:push", "--provision-infra", *url, env=cloud)
    assert created.returncode == 0, created.stdout + created.stderr
    assert cluster_exists(pool)
    plan = pushpool("work-pool", "delete", pool, "--dry-run", env=cloud)
    assert plan.returncode == 0, plan.stderr
    assert f"delete ECS cluster pushpool-{pool}" in plan.stdout and f"delete work pool {pool}" in plan.stdout
    assert "nothing was changed" in plan.stdout
    assert cluster_exists(pool) and exists(prefect, f"/work_pools/{pool}")
    deleted = pushpool("work-pool", "delete", pool, "--yes", env=cloud)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert not cluster_exists(pool)
    assert not exists(prefect, f"/work_pools/{pool}") and automations(prefect, pool) == []


def test_deprovision_after_the_pool_was_deleted_behind_its_back(
    env: dict[str, str], prefect: PrefectHelper, moto_endpoint: str
) -> None:
    """`prefect work-pool delete` then `pushpool work-pool deprovision` failed with `not found`: the type is known
    from what pushpool made for the pool."""
    cloud = {**env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    pool = prefect.unique("deprov")
    url = ("--submit-url", "http://127.0.0.1:9/submit")
    created = pushpool("work-pool", "create", pool, "--type", "ecs:push", "--provision-infra", *url, env=cloud)
    assert created.returncode == 0, created.stdout + created.stderr
    prefect.json("DELETE", f"/work_pools/{pool}")
    removed = pushpool("work-pool", "deprovision", pool, "--yes", env=cloud)
    assert removed.returncode == 0 and "Removed." in removed.stdout, removed.stdout + removed.stderr
    assert not cluster_exists(pool)
    unknown = pushpool("work-pool", "deprovision", prefect.unique("never"), "--yes", env=cloud)
    assert unknown.returncode == 2 and "--type" in unknown.stderr and "Traceback" not in unknown.stderr


# --- item 6: a Prefect-like command line ----------------------------------------------------------------------------


def test_ls_lists_push_pools_like_prefect(env: dict[str, str], prefect: PrefectHelper) -> None:
    pool = prefect.unique("listed")
    assert (
        pushpool("work-pool", "create", pool, "--type", "process:push", "--concurrency-limit", "3", env=env).returncode
        == 0
    )
    hybrid = prefect.unique("notpush")
    prefect.create_pool(hybrid, "process")
    table = pushpool("work-pool", "ls", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["NAME", "TYPE", "ID", "CONCURRENCY", "LIMIT", "AUTOMATION"]
    row = next(line for line in table.stdout.splitlines() if line.startswith(pool + " "))
    pool_id = prefect.json("GET", f"/work_pools/{pool}")["id"]
    assert row.split() == [pool, "process:push", pool_id, "3", "enabled"]
    assert hybrid not in table.stdout  # pushpool lists the pools it runs
    for flag in (("--output", "json"), ("-o", "json")):
        as_json = pushpool("work-pool", "ls", *flag, env=env)
        (found,) = [p for p in json.loads(as_json.stdout) if p["name"] == pool]
        assert found["id"] == pool_id and found["concurrency_limit"] == 3 and found["automation"] == "enabled"
    bad = pushpool("work-pool", "ls", "--output", "yaml", env=env)
    assert bad.returncode == 2 and "only 'json'" in bad.stderr


def test_inspect_shows_the_pool_its_webhook_and_automation_and_never_the_token(
    env: dict[str, str], home: Path, prefect: PrefectHelper
) -> None:
    pool = prefect.unique("inspected")
    assert pushpool("work-pool", "create", pool, "--type", "process:push", env=env).returncode == 0
    token = (home / "webhook-token").read_text().strip()
    shown = pushpool("work-pool", "inspect", pool, env=env)
    assert shown.returncode == 0, shown.stderr
    assert pool in shown.stdout and "process:push" in shown.stdout
    assert "http://127.0.0.1:4280/submit" in shown.stdout and "enabled" in shown.stdout
    as_json = json.loads(pushpool("work-pool", "inspect", pool, "--output", "json", env=env).stdout)
    assert as_json["name"] == pool and as_json["type"] == "process:push"
    assert as_json["webhook"]["url"] == "http://127.0.0.1:4280/submit" and as_json["automation"]["enabled"] is True
    assert "max_run_time_seconds" in as_json["base_job_template"]["variables"]["properties"]
    assert token not in shown.stdout + shown.stderr + json.dumps(as_json)
    unknown = pushpool("work-pool", "inspect", prefect.unique("nosuch"), env=env)
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr and unknown.stdout == ""


def test_logs_show_the_state_history_and_the_jobs_output(
    serve: ServeProcess, serve_env: dict[str, str], prefect: PrefectHelper
) -> None:
    pool = prefect.unique("logged")
    assert pushpool("work-pool", "create", pool, "--type", "process:push", env=serve_env).returncode == 0
    run_id = prefect.create_run(prefect.create_deployment(pool, "flows.py:hello"), parameters={"who": "logs-test"})
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "COMPLETED"
    shown = pushpool("logs", run_id, env=serve_env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    history = [name for _, name in prefect.states(run_id)]
    assert history[:3] == ["Scheduled", "Pending", "InfrastructurePending"]
    section = out[out.index("State history:") : out.index("Job output:")].splitlines()[1:]
    assert [line.split()[2] for line in section] == history  # the state history, in order
    # Issue 28 item 5: the job on a line of its own, saying which backend its id belongs to.
    assert f"Job: {run['infrastructure_pid']} (process backend)" in out.splitlines()
    assert run["infrastructure_pid"] not in out.splitlines()[0]
    assert "hello logs-test from pid" in out  # the job's own output, read from its backend
    as_json = json.loads(pushpool("logs", run_id, "--output", "json", env=serve_env).stdout)
    assert [s["name"] for s in as_json["states"]] == history
    assert any("hello logs-test" in line for line in as_json["job_output"])
    by_name = pushpool("logs", run["name"], env=serve_env)
    assert by_name.returncode == 0 and run_id in by_name.stdout
    unknown = pushpool("logs", "00000000-0000-4000-8000-000000000000", env=serve_env)
    assert unknown.returncode == 2 and "no flow run" in unknown.stderr
    idle = prefect.unique("idle")
    prefect.create_pool(idle)  # no automation: the run below gets no job
    waiting = pushpool("logs", prefect.create_run(prefect.create_deployment(idle)), env=serve_env).stdout
    assert "Job: none started" in waiting.splitlines()
    assert "  note: no job was started for this run" in waiting.splitlines() and "((" not in waiting


def test_version_help_and_clear_errors(env: dict[str, str], prefect: PrefectHelper) -> None:
    from importlib.metadata import version

    shown = pushpool("--version", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == f"pushpool {version('pushpool')}"
    helped = pushpool("serve", "--help", env={**env, "COLUMNS": "200"})
    text = " ".join(helped.stdout.split())
    for fragment in ("/submit", "webhook-token", "PUSHPOOL_HOME", "default: 127.0.0.1", "default: 5.0", "4280"):
        assert fragment in text, fragment
    unknown = prefect.unique("nosuch")
    status = pushpool("status", "--pool", unknown, env=env)
    assert status.returncode == 2 and f"work pool {unknown!r} does not exist" in status.stderr
    hybrid = pushpool("work-pool", "create", prefect.unique("x"), "--type", "process", env=env)
    assert hybrid.returncode == 2 and "did you mean --type process:push?" in hybrid.stderr
    dry = pushpool("work-pool", "create", prefect.unique("dry"), "--type", "process:push", "--dry-run", env=env)
    assert dry.returncode == 0 and dry.stdout.splitlines()[-1] == "dry run: nothing was changed"
    # -o/--output json as on every command (issue 28 item 5), and --json, its alias scripts may use, alike.
    name = prefect.unique("dryjson")
    answers = [
        pushpool("work-pool", "create", name, "--type", "process:push", "--dry-run", *flag, env=env)
        for flag in (("-o", "json"), ("--output", "json"), ("--json",))
    ]
    assert all(a.returncode == 0 for a in answers), [a.stderr for a in answers]
    assert json.loads(answers[0].stdout) == json.loads(answers[1].stdout) == json.loads(answers[2].stdout)
    assert {step["action"] for step in json.loads(answers[0].stdout)["steps"]} == {"would create"}


def test_delete_on_a_terminal_shows_the_plan_and_asks(env: dict[str, str], prefect: PrefectHelper) -> None:
    from tests.integration.test_cli import in_terminal

    pool = prefect.unique("asked")
    assert pushpool("work-pool", "create", pool, "--type", "process:push", env=env).returncode == 0
    code, out = in_terminal(["work-pool", "delete", pool], env, answer="n")
    assert code == 1 and "cancelled: nothing was changed" in out, out
    assert out.index(f"delete automation pushpool-{pool}") < out.index("[y/n]")
    assert exists(prefect, f"/work_pools/{pool}") and automations(prefect, pool)
    assert not prefect.json("GET", f"/work_pools/{pool}")["is_paused"]
    code, out = in_terminal(["work-pool", "delete", pool], env, answer="y")
    assert code == 0 and f"Deleted work pool {pool!r}" in out, out
    assert not exists(prefect, f"/work_pools/{pool}") and automations(prefect, pool) == []
