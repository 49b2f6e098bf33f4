"""A pool pushpool serves shows Ready in Prefect while the monitor ticks, and Not Ready once pushpool stops serving
it (issue 13, item 7). On a server of its own with Prefect's foreman on (it judges worker liveness), every second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import PrefectHelper, make_deps, pool_tick, start_server

pytestmark = pytest.mark.integration

FLOWS = Path(__file__).resolve().parents[1] / "flows"


def _status_becomes(prefect: PrefectHelper, pool: str, wanted: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = prefect.json("GET", f"/work_pools/{pool}")["status"]
        if status == wanted:
            break
        time.sleep(0.25)
    return status


def test_a_served_pool_is_ready_while_the_monitor_ticks_and_not_ready_after(tmp_path: Path, migrated_db: Path) -> None:
    from pushpool.usecases.heartbeat import stop_serving

    server = start_server(
        tmp_path / "prefect",
        migrated_db,
        extra_env={
            "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "true",
            "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
        },
    )
    deps = make_deps(server.api_url, tmp_path)
    # Offline after 3 x 30 s without a heartbeat: within this test only stop_serving can make the pool Not Ready.
    deps.settings = deps.settings.replace(heartbeat_interval_seconds=30)
    prefect = PrefectHelper(server.api_url, FLOWS)
    try:
        served, hybrid = prefect.unique("served"), prefect.unique("hybrid")
        prefect.create_pool(served)
        prefect.create_pool(hybrid, "process")  # not a push pool: pushpool never claims it is served
        assert prefect.json("GET", f"/work_pools/{served}")["status"] == "NOT_READY"

        for _ in range(3):  # three ticks, more than one foreman pass: the pool stays Ready while they come
            assert pool_tick(deps, served).errors == []
            time.sleep(1)
        assert _status_becomes(prefect, served, "READY") == "READY"
        workers = prefect.json("POST", f"/work_pools/{served}/workers/filter", json={})
        assert [(w["name"], w["heartbeat_interval_seconds"], w["status"]) for w in workers] == [
            ("pushpool", 30, "ONLINE")
        ]
        assert prefect.json("GET", f"/work_pools/{hybrid}")["status"] == "NOT_READY"

        stop_serving(deps, [served])  # what `pushpool serve` does when it stops
        assert _status_becomes(prefect, served, "NOT_READY", timeout=15) == "NOT_READY"
    finally:
        prefect.close()
        deps.orchestrator.close()
        server.stop()
