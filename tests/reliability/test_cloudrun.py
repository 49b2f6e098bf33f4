"""The reliability scenarios on Cloud Run (the local Cloud Run Admin API, the real run_v2 clients, the real Prefect
server): a duplicate storm, throttling and 5xx injected into every other call, and submit dying at each crash window
— never a lost, duplicated or stuck run."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.providers.cloudrun.backend import job_id
from pushpool.usecases.job_spec import build_job_spec

from tests.gcp_emulator import ApiError, CloudRunEmulator
from tests.helpers import PrefectHelper, make_deps, pool_tick, skip_ahead
from tests.integration.test_cloudrun import backend_options, make_pool

pytestmark = pytest.mark.integration
HEADERS = {"Authorization": "Bearer test-token"}


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


def _storm(deps, prefect: PrefectHelper, pool: str, runs: list[str], dup_m: int) -> list:
    auth = WebhookAuth(deps.settings.webhook_tokens)
    deliveries = [r for r in runs for _ in range(dup_m)]
    random.Random(15).shuffle(deliveries)
    stop = threading.Event()

    def monitor_loop() -> None:
        while not stop.is_set():
            pool_tick(deps, pool)

    monitor = threading.Thread(target=monitor_loop)
    monitor.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool_ex:
            return list(
                pool_ex.map(
                    lambda r: handle_submit(deps, auth, HEADERS, json.dumps({"flow_run_id": r}).encode(), trigger="s"),
                    deliveries,
                )
            )
    finally:
        stop.set()
        monitor.join()


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
        answers = _storm(cr_deps, prefect, pool, runs, dup_m)
    finally:
        emulator.handle = original
    # A run given back during the storm (a call failing for longer than its retries: released to Scheduled; or left
    # Pending with no job past the pending timeout: recovered) is dispatched again by the next ticks, as in production
    # (tests/reliability/test_duplicates.py does the same): settle with ticks, then count. Each time a run became due
    # again it is claimed once more — one job all the same.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(prefect.state(r)[0] == "SCHEDULED" for r in runs):
        pool_tick(cr_deps, pool)
    executions = _jobs_and_executions(emulator, runs, prefect)
    pids = {r: prefect.read_run(r).get("infrastructure_pid") for r in runs}
    claims = {r: sum(1 for s in prefect.states(r) if s == ("PENDING", "Pending")) for r in runs}
    given_back = {r: sum(1 for s in prefect.states(r) if s[0] == "SCHEDULED") - 1 for r in runs}
    report.add(
        "duplicate storm" + (" with 429/5xx on every other call" if faults else ""),
        provider="cloudrun",
        runs=runs_n,
        faults=runs_n * (dup_m - 1) + (len(emulator.requests) // 2 if faults else 0),
        lost=sum(not pids[r] for r in runs),
        duplicated=sum(n > 1 for n in executions.values()),
        stuck=sum(c != 1 + given_back[r] for r, c in claims.items()),
    )
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    assert set(executions.values()) == {1}, executions
    assert all(pids.values()), pids
    assert all(c == 1 + given_back[r] for r, c in claims.items()), (claims, given_back)  # one claim per time it was due


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
    # The retry comes after the monitor's pending timeout: the dead submitter's job is older than a live creator's
    # polls and RunJob retries could take (younger, it is left to its creator, which may still run it).
    emulator.age_job(f"{parent}/jobs/{job_id(spec)}", 600)
    handle = backend.submit(spec)  # the retry: the job exists, ready, never run → run once
    again = backend.submit(spec)
    assert handle == again and backend.find(spec) == handle
    executions = emulator.jobs[f"{parent}/jobs/{job_id(spec)}"]["executionCount"]
    report.add(
        "submit died between CreateJob and RunJob", provider="cloudrun", runs=1, faults=1, duplicated=executions - 1
    )
    assert executions == 1


def test_a_stale_submit_that_fails_gives_back_nothing(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, prefect_api, tmp_path, report
) -> None:
    """The interleaving of a duplicate seen in a loaded duplicate storm, forced in order: submit S1 claims the run and
    its CreateJob is throttled for longer than the monitor's pending timeout; the monitor recovers the run (Pending,
    no job) and claim C2 runs the run's job; then S1's retries give up. S1 must leave the run to C2: giving it back
    (Scheduled, for the next claim) would start a second job for a run whose first job is running."""
    from pushpool.usecases.submit import SubmitOutcome, submit_run

    pool = make_pool(prefect)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    cr_deps.backend_options["cloudrun"]["retry_timeout"] = 0.5  # S1 gives up soon once it is let go
    monitor = make_deps(prefect_api, tmp_path / "monitor", prefect_api_key="pnu_reliability_key")
    monitor.backend_options["cloudrun"] = backend_options(emulator, retry_timeout=5.0)
    skip_ahead(monitor, 60)  # the monitor sees S1's claim older than its pending timeout at once
    original = emulator.handle
    held, let_go = threading.Event(), threading.Event()
    stale: list[str] = []  # the job id of S1's attempt

    def throttled(method, path, query, body):
        job = query.get("jobId", [""])[0]
        if method == "POST" and path.endswith("/jobs") and (not stale or stale == [job]):
            if not stale:
                stale.append(job)
                held.set()
                let_go.wait(30)
            raise ApiError(429, "Injected by the test: S1's CreateJob is throttled")
        return original(method, path, query, body)

    emulator.handle = throttled
    client = cr_deps.orchestrator
    s1 = ThreadPoolExecutor(max_workers=1)
    try:
        first = s1.submit(submit_run, cr_deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="s1")
        assert held.wait(30), "S1 never called CreateJob"
        slow_at = time.monotonic() + 1.2  # S1 is slow (past half the shorter of pending_timeout and exit_grace)
        pool_tick(monitor, pool)  # recovers the run: Pending, no pid, no job of S1's attempt
        assert prefect.state(run_id)[0] == "SCHEDULED", prefect.states(run_id)
        pool_tick(monitor, pool)  # claim C2: its job runs
        owner = prefect.read_run(run_id)
        assert owner["infrastructure_pid"] and owner["state"]["type"] == "PENDING", prefect.states(run_id)
        time.sleep(max(0.0, slow_at - time.monotonic()))
        let_go.set()
        outcome = first.result(timeout=60)
    finally:
        let_go.set()
        s1.shutdown()
        emulator.handle = original
    after = prefect.read_run(run_id)
    try:
        for _ in range(3):  # were the run given back, these ticks would claim it again and start a second job
            pool_tick(monitor, pool)
    finally:
        monitor.orchestrator.close()
    executions = _jobs_and_executions(emulator, [run_id], prefect)[run_id]
    report.add(
        "a stale submit fails after the monitor recovered its run",
        provider="cloudrun",
        runs=1,
        faults=1,
        duplicated=executions - 1,
    )
    assert executions == 1, prefect.states(run_id)
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED, outcome
    assert after["state"]["type"] == "PENDING" and after["infrastructure_pid"] == owner["infrastructure_pid"], (
        prefect.states(run_id)
    )
    assert not any(name.endswith("/" + stale[0]) for name in emulator.jobs)


def test_a_submit_stalled_between_create_and_run_past_the_pending_timeout_makes_no_execution(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, prefect_api, tmp_path, report
) -> None:
    """The second way to two executions, forced in order: submit S1 creates its attempt's job and stalls before RunJob
    for longer than the monitor's pending timeout (find sees no execution: no job); the monitor recovers the run and
    claim C2 runs its own job; then S1's RunJob lands. Before giving the run back the monitor withdraws S1's unstarted
    job (deleted with the etag it read), so late RunJob of S1 fails on a job that is gone: one execution, one job."""
    from pushpool.usecases.submit import SubmitOutcome, submit_run

    pool = make_pool(prefect)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    monitor = make_deps(prefect_api, tmp_path / "monitor", prefect_api_key="pnu_reliability_key")
    monitor.backend_options["cloudrun"] = backend_options(emulator, retry_timeout=5.0)
    skip_ahead(monitor, 60)  # the monitor sees S1's claim older than its pending timeout at once
    original = emulator.handle
    held, let_go = threading.Event(), threading.Event()
    stalled: list[str] = []  # the job S1 created
    runs: list[str] = []  # every RunJob that made an execution

    def stalls_s1(method, path, query, body):
        if method == "POST" and path.endswith(":run") and not stalled:
            stalled.append(path.removesuffix(":run").removeprefix("/v2/"))
            held.set()
            let_go.wait(30)
        answer = original(method, path, query, body)
        if method == "POST" and path.endswith(":run"):
            runs.append(path)
        return answer

    emulator.handle = stalls_s1
    client = cr_deps.orchestrator
    s1 = ThreadPoolExecutor(max_workers=1)
    try:
        first = s1.submit(submit_run, cr_deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="s1")
        assert held.wait(30), "S1 never called RunJob"
        assert emulator.jobs[stalled[0]]["executionCount"] == 0
        slow_at = time.monotonic() + 1.2  # S1 is slow (past half the shorter of pending_timeout and exit_grace)
        pool_tick(monitor, pool)  # Pending, no execution of S1's attempt: S1's job withdrawn, the run recovered
        assert prefect.state(run_id)[0] == "SCHEDULED", prefect.states(run_id)
        pool_tick(monitor, pool)  # claim C2: its own job runs
        owner = prefect.read_run(run_id)
        assert owner["infrastructure_pid"] and owner["state"]["type"] == "PENDING", prefect.states(run_id)
        time.sleep(max(0.0, slow_at - time.monotonic()))
        let_go.set()
        outcome = first.result(timeout=60)
    finally:
        let_go.set()
        s1.shutdown()
        emulator.handle = original
    try:
        for _ in range(2):
            pool_tick(monitor, pool)
    finally:
        monitor.orchestrator.close()
    report.add(
        "a submit stalls between CreateJob and RunJob past the pending timeout",
        provider="cloudrun",
        runs=1,
        faults=1,
        duplicated=len(runs) - 1,
    )
    assert len(runs) == 1, (runs, prefect.states(run_id))  # executions ever created for the run: C2's only
    assert outcome.outcome == SubmitOutcome.NOT_CLAIMED, outcome
    jobs = [n for n, j in emulator.jobs.items() if j["labels"].get("prefect-io-flow-run-id") == run_id]
    assert jobs == [owner["infrastructure_pid"].split("/executions/")[0]], jobs
    assert prefect.read_run(run_id)["infrastructure_pid"] == owner["infrastructure_pid"]
