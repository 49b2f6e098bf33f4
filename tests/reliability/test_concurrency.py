"""Concurrency storm: a pool limit holds while webhook deliveries (3 per run) and the monitor race."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.providers.process.backend import _job_processes

from tests.helpers import PrefectHelper, pool_tick

pytestmark = pytest.mark.integration


def test_pool_limit_holds_under_a_storm(deps, prefect: PrefectHelper, report, scale: int) -> None:
    limit, runs_n = 2, 8 * scale
    pool = prefect.unique("storm")
    prefect.create_pool(pool, concurrency_limit=limit)
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 1"})
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    auth, headers = WebhookAuth(deps.settings.webhook_tokens), {"Authorization": "Bearer test-token"}
    stop, peak, ran = threading.Event(), {"jobs": 0}, set()

    def watch() -> None:  # live job processes of this test's runs, sampled continuously
        while not stop.is_set():
            live = {key.split("_")[0] for key in _job_processes()} & set(runs)
            peak["jobs"] = max(peak["jobs"], len(live))
            ran.update(live)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=12) as ex:
            list(
                ex.map(
                    lambda r: handle_submit(
                        deps, auth, headers, json.dumps({"flow_run_id": r}).encode(), trigger="storm"
                    ),
                    runs * 3,
                )
            )
        deadline = time.monotonic() + 60 * scale
        while time.monotonic() < deadline:
            if all(prefect.state(r)[0] == "CRASHED" for r in runs):  # `sleep 1` never reports: clean-exit rule
                break
            pool_tick(deps, pool)
            time.sleep(0.1)
    finally:
        stop.set()
        watcher.join()
    report.add(
        f"pool limit {limit} under a storm (3 deliveries per run + monitor)",
        runs=runs_n,
        faults=2 * runs_n,
        duplicated=max(0, peak["jobs"] - limit),
        stuck=runs_n - len(ran),
        longest_repair=time.monotonic() - started,
    )
    assert 1 <= peak["jobs"] <= limit, peak  # the watcher saw jobs, never more than the limit
    assert ran == set(runs)
