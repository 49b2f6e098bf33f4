"""`pushpool work-pool …` against a real Prefect server and real `pushpool serve` processes: the webhook points at the
serve that runs (issue 13, item 5), a pool is deleted with everything pushpool made for it (item 4), and the
Prefect-like commands (item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.helpers import PrefectHelper
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


@pytest.fixture
def serve(env: dict[str, str], home: Path):
    process = start_serve(env, home)
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
    serve: ServeProcess, env: dict[str, str], prefect: PrefectHelper
) -> None:
    """serve listens on a port that is not the default one; `work-pool create` without --port finds it."""
    pool = prefect.unique("found")
    created = pushpool("work-pool", "create", pool, "--type", "process:push", env=env)
    assert created.returncode == 0, created.stderr
    assert webhook_url(prefect, pool) == f"{serve.address}/submit"
    # Prefect's automation calls that serve: the run is submitted through the webhook alone (no monitor tick).
    run_id = prefect.create_run(prefect.create_deployment(pool, "flows.py:hello"))
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "COMPLETED"
    assert f'"flow_run_id": "{run_id}"' in serve.log()


def test_a_port_that_is_not_the_running_serves_is_refused(
    serve: ServeProcess, env: dict[str, str], prefect: PrefectHelper
) -> None:
    pool = prefect.unique("wrongport")
    other = serve.port + 1 if serve.port < 65535 else serve.port - 1
    refused = pushpool("work-pool", "create", pool, "--type", "process:push", "--port", str(other), env=env)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushpool: error:"), refused.stderr
    assert str(serve.port) in lines[0] and str(other) in lines[0]
    assert not exists(prefect, f"/work_pools/{pool}")  # nothing changed
    same = pushpool("work-pool", "create", pool, "--type", "process:push", "--port", str(serve.port), env=env)
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
    serve: ServeProcess, env: dict[str, str], prefect: PrefectHelper
) -> None:
    pool = prefect.unique("explicit")
    url = "https://pushpool.example.invalid/submit"
    created = pushpool("work-pool", "create", pool, "--type", "process:push", "--submit-url", url, env=env)
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
