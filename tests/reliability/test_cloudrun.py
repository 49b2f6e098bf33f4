"""The reliability scenarios on Cloud Run (the local Cloud Run Admin API, the real run_v2 clients, the real Prefect
server): a duplicate storm, throttling and 5xx injected into every other call, and submit dying at each crash window
— never a lost, duplicated or stuck run."""

from __future__ import annotations

import itertools
import json

import pytest
from pushpool.providers.cloudrun.backend import job_id
from pushpool.usecases.job_spec import build_job_spec

from tests.gcp_emulator import ApiError, CloudRunEmulator
from tests.helpers import PrefectHelper, make_deps
from tests.integration.test_cloudrun import backend_options, make_pool
from tests.reliability.storm import shuffled, storm

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


@pytest.fixture
def cr_deps(prefect_api, tmp_path, emulator: CloudRunEmulator):
    deps = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_reliability_key")
    deps.backend_options["cloudrun"] = backend_options(emulator, retry_timeout=30.0)
    yield deps
    deps.orchestrator.close()


def _jobs_and_executions(emulator: CloudRunEmulator, runs: list[str], prefect: PrefectHelper) -> dict[str, int]:
    """Executions per run, counted on the Cloud Run side (by the job's run-id label)."""
    with emulator.lock:
        labels = [(j["labels"].get("prefect-io-flow-run-id"), j["executionCount"]) for j in emulator.jobs.values()]
    return {r: sum(count for run, count in labels if run == r) for r in runs}


@pytest.mark.parametrize("faults", [False, True], ids=["duplicates", "duplicates-with-429-and-5xx"])
def test_duplicate_storm_on_cloud_run(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, report, scale: int, faults: bool
) -> None:
    runs_n, dup_m = 8 * scale, 5
    pool = make_pool(prefect)
    dep = prefect.create_deployment(pool)
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    original = emulator.handle
    if faults:
        calls = itertools.count()

        def flaky(method, path, query, body):
            n = next(calls)
            if n % 2 == 0:  # every other Cloud Run call is throttled or fails
                emulator.requests.append((method, path))
                raise ApiError(429 if n % 4 == 0 else 503, "Injected by the test")
            return original(method, path, query, body)

        emulator.handle = flaky
    try:
        answers = storm(cr_deps, pool, shuffled(runs, dup_m, seed=15))
    finally:
        emulator.handle = original
    executions = _jobs_and_executions(emulator, runs, prefect)
    pids = {r: prefect.read_run(r).get("infrastructure_pid") for r in runs}
    claims = {r: sum(1 for s in prefect.states(r) if s == ("PENDING", "Pending")) for r in runs}
    report.add(
        "duplicate storm" + (" with 429/5xx on every other call" if faults else ""),
        provider="cloudrun",
        runs=runs_n,
        faults=runs_n * (dup_m - 1) + (len(emulator.requests) // 2 if faults else 0),
        lost=sum(not pids[r] for r in runs),
        duplicated=sum(n > 1 for n in executions.values()),
        stuck=sum(c != 1 for c in claims.values()),
    )
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    assert set(executions.values()) == {1}, executions
    assert all(pids.values()) and set(claims.values()) == {1}


def test_submit_dying_between_create_and_run_leaves_one_execution(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, report
) -> None:
    """Submit died after CreateJob, before RunJob (a job with no execution): the retry of the attempt runs it once;
    submit died after RunJob, before the pid was written: the monitor finds the execution and adopts it."""
    pool = make_pool(prefect)
    dep = prefect.create_deployment(pool)
    client = cr_deps.orchestrator
    run = client.read_flow_run(prefect.create_run(dep))
    spec = build_job_spec(
        settings=cr_deps.settings,
        client=client,
        run=run,
        pool=client.read_work_pool(pool),
        deployment=client.read_deployment(dep),
        attempt="attempt-1",
    )
    backend = cr_deps.backend("cloudrun")
    jobs = backend._client("jobs")
    parent = "projects/pushpool-test/locations/us-central1"
    from google.cloud import run_v2

    body = run_v2.Job.from_json(json.dumps(backend._job_message(spec, spec.config)))  # the REST body as a message
    jobs.create_job(parent=parent, job=body, job_id=job_id(spec)).result()
    handle = backend.submit(spec)  # the retry: the job exists, ready, never run → run once
    again = backend.submit(spec)
    assert handle == again and backend.find(spec) == handle
    executions = emulator.jobs[f"{parent}/jobs/{job_id(spec)}"]["executionCount"]
    report.add(
        "submit died between CreateJob and RunJob", provider="cloudrun", runs=1, faults=1, duplicated=executions - 1
    )
    assert executions == 1
