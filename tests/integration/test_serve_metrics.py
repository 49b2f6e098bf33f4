"""`pushpool serve`'s GET /metrics (issue 26) after a real run on a real Prefect server: Prometheus' text format, read
by prometheus-client's own parser, with the series docs/metrics.md lists — Prefect API calls by route template (no
run id or pool name in a route), the backend's calls, the monitor's ticks, the in-flight runs per pool, and the run
events the use-cases emit."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.usecases.events import RunEvent
from pushpool.usecases.metrics import CATALOGUE

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def served(prefect_api: str, prefect: PrefectHelper, tmp_path: Path):
    pool = prefect.unique("metered")
    prefect.create_pool(pool)
    deps = make_deps(prefect_api, tmp_path)
    # The monitor alone dispatches (no event stream, no webhook), every second, over this test's pool only.
    server = Server(deps, port=localserver.free_port(), monitor_interval=1, event_stream=False, pool_names=[pool])
    server.start()
    yield server, pool, httpx.Client(base_url=server.address, timeout=30)
    server.stop()
    deps.orchestrator.close()


def scrape(http: httpx.Client) -> tuple[str, dict[str, list]]:
    answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        found.setdefault(family.name, [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return answer.text, found


def value(found: dict[str, list], name: str, **labels: str) -> float | None:
    matching = [s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matching) if matching else None


def test_metrics_after_a_real_run_through_serve(served, prefect: PrefectHelper) -> None:
    server, pool, http = served
    run_id = prefect.create_run(prefect.create_deployment(pool, "flows.py:hello"))
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert run["state"]["type"] == "COMPLETED"
    # What the use-cases emit at each action (usecases/events.py) counts through the listener serve registered.
    server.deps.events.emit(RunEvent("crashed", run_id, pool=pool, provider="process", reason="max-run-time"))
    # The monitor sees the job end a tick or two after the run's Completed (the engine reports it before its process
    # exits): scrape until the job's end is counted and the pool has nothing in flight.
    deadline = time.monotonic() + 60
    while True:
        text, found = scrape(http)
        ended = value(found, "pushpool_runs_total", pool=pool, provider="process", action="job-ended")
        if (ended and value(found, "pushpool_runs_in_flight", pool=pool) == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for spec in CATALOGUE:  # every series docs/metrics.md lists is declared
        family = spec.name.removesuffix("_total")
        assert family in found, f"{family} missing from /metrics"
    # Prefect API calls: by route template; the run's claim and its pid are there, and no id or name is a label.
    calls = {(s.labels["method"], s.labels["route"]): s.value for s in found["pushpool_prefect_api_calls_total"]}
    claims = calls.get(("POST", "/flow_runs/{id}/set_state"), 0) + calls.get(("POST", "/flow_runs/bulk_set_state"), 0)
    assert claims >= 1, calls  # the claim (one run's own, or a page's bulk claim on Prefect 3.6.16+)
    assert value(found, "pushpool_prefect_api_calls_total", route="/work_pools/{id}/get_scheduled_flow_runs"), calls
    assert value(found, "pushpool_prefect_api_calls_total", method="PATCH", route="/flow_runs/{id}", status="204")
    routes = {s.labels["route"] for s in found["pushpool_prefect_api_calls_total"]}
    assert not any(UUID.search(r) or pool in r for r in routes), routes
    assert run_id not in text
    # The process backend: the job submitted and its status asked each tick.
    assert value(found, "pushpool_backend_calls_total", provider="process", operation="submit") == 1
    assert value(found, "pushpool_backend_calls_total", provider="process", operation="status") >= 1
    # The monitor: its ticks measured, and the pool's in-flight runs (none left).
    ticks = value(found, "pushpool_monitor_tick_duration_seconds_count")
    assert ticks is not None and ticks >= 2
    assert value(found, "pushpool_monitor_tick_duration_seconds_bucket", le="+Inf") == ticks
    assert value(found, "pushpool_runs_in_flight", pool=pool) == 0
    assert value(found, "pushpool_runs_total", pool=pool, provider="process", action="crashed", reason="max-run-time")
    # The run's own events, emitted by the use-cases: its submit (with its dispatch latency), its job's start and end.
    for action in ("submitted", "job-started", "job-ended"):
        assert value(found, "pushpool_runs_total", pool=pool, provider="process", action=action) == 1, action
    assert value(found, "pushpool_dispatch_latency_seconds_count", pool=pool, provider="process") == 1
    assert value(found, "process_cpu_seconds_total") is not None  # the process' own series, as Prometheus expects

    assert http.head("/metrics").status_code == 200
    refused = http.post("/metrics", content=b"")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
