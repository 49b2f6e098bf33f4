"""The reliability scenarios on every provider: the same table — throttling, 5xx, a job that vanishes, a job that never
starts, submit dying at each crash window (after the claim, after the job, after the pid) and before the pid while the
provider's lists lag, a duplicate storm, a pool limit under a storm, cancel and the maximum run time within one tick,
and the Prefect API gone in the middle of a tick — run against each backend through its emulator's bad days
(tests/faults.py): moto server for ECS, the local ARM endpoint for ACI, the Cloud Run Admin API, the Modal control
plane, the Coiled API, and the process backend (where a scenario cannot apply to it, its row says why: it has no remote
API to throttle). The real SDK clients, pushpool's submit and monitor.

Prefect's side is the orchestration fake (tests/fake_prefect.py: it passes the orchestration contract the real server
passes, tests/contract/test_orchestration_contract.py), as the scenarios need nothing beyond it: claims, the pid, state
transitions and pool limits. No flow is executed (the clouds' emulators hold every job as it is; the process backend's
jobs run ``sleep``). The one scenario about Prefect itself, its API gone in the middle of a tick, runs against the real
server behind a proxy the test takes down.

Each scenario records a row per provider (``report.add(..., provider=...)``): lost (a run left with no job), duplicated
(more than one job for a run) and stuck (not in the state the scenario ends in) — all zero.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pushpool.clock import SystemClock
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_RG, AZ_SUB, FLOWS_DIR
from tests.fake_prefect import FakePrefect
from tests.faults import Faults
from tests.helpers import SECRET_ARN, FakeHelper, PrefectHelper, fake_deps, make_deps, pool_tick, skip_ahead
from tests.reliability.storm import shuffled, storm, unsettled

pytestmark = pytest.mark.integration
KEY = "pnu_every_provider_key"
PROVIDERS = ["ecs", "aci", "cloudrun", "modal", "coiled", "process"]
Helper = PrefectHelper | FakeHelper


@dataclass
class Cloud:
    """One provider as the scenarios drive it."""

    name: str
    deps: object
    pool: str
    faults: Faults | None  # None: no remote API (the process backend)
    create: str  # the fault pattern of the call that creates a job
    status: str  # the fault pattern of the monitor's status reads
    jobs_of: Callable[[str], int]  # a run's jobs, counted on the provider's side
    vanish: Callable[[str], None]  # a job (by its handle id) disappears without a trace
    job_variables: dict
    hold: Callable[[str], None] | None = None  # keep a job from starting (None: the provider shows no pending state)


def _ecs(request, prefect: Helper, deps) -> Cloud:
    from moto.backends import get_backend

    from tests.emulators import MotoServer

    pool = request.getfixturevalue("ecs_pool")
    tasks = get_backend("ecs")["123456789012"]["us-east-1"].tasks

    def jobs_of(run_id: str) -> int:
        return sum(1 for c in list(tasks.values()) for t in list(c.values()) if (t.started_by or "").startswith(run_id))

    def vanish(job_id: str) -> None:
        cluster, arn = job_id.split("::")
        del tasks[cluster][arn]

    def hold(job_id: str) -> None:
        cluster, arn = job_id.split("::")
        tasks[cluster][arn].last_status = "PROVISIONING"

    assert MotoServer.instance is not None
    return Cloud("ecs", deps, pool, MotoServer.instance.bad_days, "RunTask", "DescribeTasks", jobs_of, vanish,
                 {"prefect_api_key_secret_arn": SECRET_ARN}, hold)  # fmt: skip


def _aci(request, prefect: Helper, deps) -> Cloud:
    arm = request.getfixturevalue("arm")
    deps.backend_options["aci"] = request.getfixturevalue("aci_options")
    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    template["variables"]["properties"]["subscription_id"]["default"] = AZ_SUB
    template["variables"]["properties"]["resource_group_name"]["default"] = AZ_RG
    pool = prefect.unique("aci-every")
    prefect.create_pool(pool, "azure-container-instance:push", base_job_template=template)

    def jobs_of(run_id: str) -> int:
        return sum(1 for g in list(arm.groups.values()) if g.body.get("tags", {}).get("pushpool-flow-run-id") == run_id)

    return Cloud(
        "aci",
        deps,
        pool,
        arm.bad_days,
        "PUT */containerGroups/*",
        "GET */containerGroups*",
        jobs_of,
        arm.vanish,
        {},
        lambda _: None,
    )  # fmt: skip  (a group stays Creating until the test starts it)


def _cloudrun(request, prefect: Helper, deps) -> Cloud:
    from tests.integration.test_cloudrun import backend_options, make_pool

    emulator = request.getfixturevalue("cloud_run")
    deps.backend_options["cloudrun"] = backend_options(emulator, retry_timeout=30.0)

    def jobs_of(run_id: str) -> int:
        with emulator.lock:
            jobs = list(emulator.jobs.values())
        return sum(j["executionCount"] for j in jobs if j["labels"].get("prefect-io-flow-run-id") == run_id)

    def hold(execution: str) -> None:
        with emulator.lock:
            data = emulator.executions[execution]["json"]
            data.pop("startTime", None)
            data["runningCount"] = 0

    return Cloud("cloudrun", deps, make_pool(prefect), emulator.bad_days, "POST */jobs", "GET */executions*",
                 jobs_of, emulator.vanish, {}, hold)  # fmt: skip


def _modal(request, prefect: Helper, deps) -> Cloud:
    pytest.importorskip("modal")
    server = request.getfixturevalue("modal_server")
    pool = prefect.unique("modal-every")
    prefect.create_pool(pool, "modal:push")

    def jobs_of(run_id: str) -> int:
        return sum(1 for s in list(server.sandboxes.values()) if s.tags.get("pushpool-run") == run_id)

    def hold(sandbox_id: str) -> None:  # no worker took it: Modal is still scheduling it (no task)
        server.sandboxes[sandbox_id].scheduled_at = None

    return Cloud("modal", deps, pool, server.bad_days, "SandboxCreate*", "Sandbox[!C]*", jobs_of, server.vanish, {},
                 hold)  # fmt: skip


def _coiled(request, prefect: Helper, deps) -> Cloud:
    server = request.getfixturevalue("coiled_server")
    pool = prefect.unique("coiled-every")
    prefect.create_pool(pool, "coiled:push")

    def jobs_of(run_id: str) -> int:
        clusters = [c for c in list(server.clusters.values()) if c.body.get("tags", {}).get("pushpool-run") == run_id]
        return sum(1 for j in list(server.jobs.values()) if j.cluster_id in {c.id for c in clusters})

    return Cloud(
        "coiled",
        deps,
        pool,
        server.bad_days,
        "POST /api/v2/jobs/compressed",
        "GET /api/v2/jobs/*",  # the workspace's listing and a job's own read
        jobs_of,
        lambda job_id: server.vanish(int(job_id.split("/")[1])),
        {},
        lambda _: None,
    )  # fmt: skip  (a job stays pending while the emulator runs no commands)


def _process(request, prefect: Helper, deps) -> Cloud:
    from pushpool.providers.base import JobHandle

    from tests.contract.test_process_backend import ProcessDriver

    pool = prefect.unique("pp-every")
    prefect.create_pool(pool)
    backend = deps.backend("process")
    driver = ProcessDriver(backend, request.getfixturevalue("tmp_path") / "ctl")

    def jobs_of(run_id: str) -> int:
        return sum(1 for p in backend.root.iterdir() if p.name.startswith(run_id) and (p / "job.json").exists())

    def vanish(job_id: str) -> None:
        driver.vanish(JobHandle("process", job_id))

    return Cloud("process", deps, pool, None, "", "", jobs_of, vanish, {})


@pytest.fixture(scope="module")
def cloud_run():
    from tests.gcp_emulator import CloudRunEmulator

    found = CloudRunEmulator().start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def prefect_outage(prefect_api: str):
    """The session's Prefect server behind a proxy a test takes down (tests/outage.py)."""
    from tests.outage import OutageProxy

    proxy = OutageProxy(prefect_api).up()
    yield proxy
    proxy.down()


@pytest.fixture
def prefect(request):
    """The orchestration the scenario's runs live on: the fake, or the session's real server for the scenario that
    takes Prefect away (this module's tests, and the pools their fixtures make, all use this one)."""
    if "prefect_outage" in request.fixturenames:
        helper = PrefectHelper(request.getfixturevalue("prefect_api"), FLOWS_DIR)
    else:
        helper = FakeHelper(FakePrefect(clock=SystemClock()))
    yield helper
    helper.close()


@pytest.fixture(params=PROVIDERS)
def cloud(request, prefect: Helper, tmp_path: Path):
    if isinstance(prefect, FakeHelper):
        deps = fake_deps(prefect.fake, tmp_path, prefect_api_key=KEY)
    else:  # pushpool reaches Prefect through the outage proxy the test takes down (the test itself never does)
        deps = make_deps(request.getfixturevalue("prefect_outage").url, tmp_path, prefect_api_key=KEY)
    made = {"ecs": _ecs, "aci": _aci, "cloudrun": _cloudrun, "modal": _modal, "coiled": _coiled,
            "process": _process}[request.param](request, prefect, deps)  # fmt: skip
    for server in ("modal_server", "coiled_server"):
        if made.name == server.split("_")[0]:
            request.getfixturevalue(server).run_commands = False  # the job stays as it is until the test drives it
    yield made
    if made.faults is not None:
        made.faults.clear()
    for server in ("modal_server", "coiled_server"):
        if made.name == server.split("_")[0]:
            request.getfixturevalue(server).run_commands = True
    deps.orchestrator.close()


def _skip(report, scenario: str, cloud: Cloud, reason: str) -> None:
    """The scenario cannot apply to this provider: the report's table says why, and so does pytest."""
    report.skip(scenario, provider=cloud.name, reason=reason)
    pytest.skip(f"{cloud.name}: {reason}")


def _submit(cloud: Cloud, prefect: Helper):
    run_id = prefect.create_run(prefect.create_deployment(cloud.pool, job_variables=_sleeping(cloud)))
    client = cloud.deps.orchestrator
    return run_id, submit_run(cloud.deps, client.read_flow_run(run_id), client.read_work_pool(cloud.pool), trigger="t")


def _stop(cloud: Cloud, prefect: Helper, runs: list[str]) -> None:
    from pushpool.providers.base import JobHandle

    backend = cloud.deps.backend(cloud.name)
    for run_id in runs:
        pid = prefect.read_run(run_id)["infrastructure_pid"]
        if pid:
            try:
                backend.cancel(JobHandle(backend.name, pid), grace_seconds=1)
            except Exception:  # noqa: BLE001 - gone already (a vanished job)
                pass


@pytest.mark.parametrize("kind", ["throttle", "unavailable"], ids=["throttling", "5xx"])
def test_throttling_and_5xx_on_create_and_status_reads_are_absorbed(
    cloud: Cloud, prefect: Helper, report, kind: str, scale: int
) -> None:
    scenario = f"{'throttling' if kind == 'throttle' else '5xx'} ×2 on each create and on status reads"
    if cloud.faults is None:
        _skip(report, scenario, cloud, "no remote API to throttle or fail")
    runs, outcomes, started = [], [], time.monotonic()
    for _ in range(2 * scale):
        cloud.faults.fail_next(cloud.create, kind, times=2)  # twice per job: the SDK's (or pushpool's) retries
        run_id, outcome = _submit(cloud, prefect)
        runs.append(run_id)
        outcomes.append(outcome.outcome)
    cloud.faults.fail_next(cloud.status, kind, times=2)
    tick = pool_tick(cloud.deps, cloud.pool)
    repaired = time.monotonic() - started
    pids = {r: prefect.read_run(r)["infrastructure_pid"] for r in runs}
    jobs = {r: cloud.jobs_of(r) for r in runs}
    states = {r: prefect.state(r)[0] for r in runs}
    injected = cloud.faults.count(kind)
    report.add(
        scenario,
        provider=cloud.name,
        runs=len(runs),
        faults=injected,
        lost=sum(not pids[r] or jobs[r] == 0 for r in runs),
        duplicated=sum(n > 1 for n in jobs.values()),
        stuck=sum(s != "PENDING" for s in states.values()) + len(tick.errors),
        longest_repair=repaired,
    )
    _stop(cloud, prefect, runs)
    assert outcomes == ["submitted"] * len(runs), outcomes
    assert set(jobs.values()) == {1} and all(pids.values()) and set(states.values()) == {"PENDING"}, (jobs, states)
    assert tick.errors == [] and injected >= 2 * len(runs) + 2


def test_a_vanished_job_crashes_its_run(cloud: Cloud, prefect: Helper, report) -> None:
    run_id, outcome = _submit(cloud, prefect)
    assert outcome.outcome == "submitted", outcome
    cloud.vanish(outcome.job_id)
    started = time.monotonic()
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(cloud.deps, cloud.pool))
    right = run["state"]["type"] == "CRASHED" and "disappeared" in (run["state"]["message"] or "")
    report.add(
        "a job vanishes",
        provider=cloud.name,
        runs=1,
        faults=1,
        stuck=int(not right),
        longest_repair=time.monotonic() - started,
    )
    assert right, run["state"]


def test_a_job_that_never_starts_is_crashed_and_stopped(cloud: Cloud, prefect: Helper, report) -> None:
    from pushpool.providers.base import JobHandle

    if cloud.hold is None:
        _skip(report, "a job never starts", cloud, "a job shows no pending state (running once created)")
    run_id, outcome = _submit(cloud, prefect)
    assert outcome.outcome == "submitted", outcome
    cloud.hold(outcome.job_id)
    started = time.monotonic()
    skip_ahead(cloud.deps, 3600)  # past every provider's start timeout
    pool_tick(cloud.deps, cloud.pool)
    state = prefect.read_run(run_id)["state"]
    backend = cloud.deps.backend(cloud.name)
    job = backend.status([JobHandle(backend.name, outcome.job_id)])[outcome.job_id].state
    right = state["type"] == "CRASHED" and "did not start" in (state["message"] or "") and not job.is_alive
    report.add(
        "a job never starts",
        provider=cloud.name,
        runs=1,
        faults=1,
        stuck=int(not right),
        longest_repair=time.monotonic() - started,
    )
    assert right, (state, job)


def test_submit_dies_before_the_pid_while_lists_lag(cloud: Cloud, prefect: Helper, report) -> None:
    """The job exists, its pid was never written, and the provider's lists show it only a second later: the monitor
    does nothing rash within the pending timeout, then adopts the job — one job, never a second."""
    from pushpool.prefect_api.models import StateType
    from pushpool.usecases.job_spec import build_job_spec

    if cloud.faults is None:
        _skip(report, "submit dies before the pid, lists lag 1 s", cloud, "a local job directory has no lag")
    client = cloud.deps.orchestrator
    # Room for a slow create on a loaded machine: the first tick must come within the pending timeout of the claim.
    cloud.deps.settings = cloud.deps.settings.replace(pending_timeout_seconds=30)
    run_id = prefect.create_run(prefect.create_deployment(cloud.pool, job_variables=cloud.job_variables))
    claim = client.propose_state(run_id, StateType.PENDING)
    claimed = time.monotonic()
    run = client.read_flow_run(run_id)
    spec = build_job_spec(settings=cloud.deps.settings, client=client, run=run, pool=client.read_work_pool(cloud.pool),
                          deployment=client.read_deployment(run.deployment_id), attempt=claim.state.id)  # fmt: skip
    cloud.faults.list_after(1.0)
    handle = cloud.deps.backend(cloud.name).submit(spec)
    started = time.monotonic()
    # Within the pending timeout: the job is not listed yet, nothing is done. The tick sees the moment of the claim (on
    # a loaded machine the submit alone can outlast the 3 s timeout, and the run was rescheduled as stuck).
    skip_ahead(cloud.deps, -(time.monotonic() - claimed))
    pool_tick(cloud.deps, cloud.pool)
    early = prefect.read_run(run_id)
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    skip_ahead(cloud.deps, cloud.deps.settings.pending_timeout_seconds + 0.2)
    pool_tick(cloud.deps, cloud.pool)
    after = prefect.read_run(run_id)
    report.add(
        "submit dies before the pid, lists lag 1 s",
        provider=cloud.name,
        runs=1,
        faults=1,
        lost=int(after["infrastructure_pid"] != handle.id),
        duplicated=int(cloud.jobs_of(run_id) > 1),
        stuck=int(early["state_type"] != "PENDING" or after["state_type"] != "PENDING"),
        longest_repair=time.monotonic() - started,
    )
    _stop(cloud, prefect, [run_id])
    assert early["state_type"] == "PENDING" and not early["infrastructure_pid"], early["state"]
    assert after["infrastructure_pid"] == handle.id and after["state_type"] == "PENDING", after["state"]
    assert cloud.jobs_of(run_id) == 1


def test_a_job_made_while_the_monitor_recovers_its_run_is_the_next_claims(
    cloud: Cloud, prefect: Helper, report
) -> None:
    """A submit stalled past the pending timeout, forced into the order that left a second job (a loaded CI run's
    Coiled duplicate storm): the monitor looks for the attempt's job and finds none; the submit then makes it and finds
    its claim still its own; the monitor recovers the run; another submitter claims it before the first writes its
    pid. The recovery keeps the attempt's key, so the second claim finds the late job instead of making another: one
    job, the run's pid. (Cloud Run's recovery withdraws an unstarted job first, and finds this one run: not
    recovered.)"""
    import threading

    if cloud.faults is not None:
        cloud.faults.clear()
    extra = {"command": "sleep 60"} if cloud.name == "process" else {}
    run_id = prefect.create_run(prefect.create_deployment(cloud.pool, job_variables={**cloud.job_variables, **extra}))
    deps, backend, client = cloud.deps, cloud.deps.backend(cloud.name), cloud.deps.orchestrator
    holding, looked, checked, recovered = (threading.Event() for _ in range(4))
    real_submit, real_find, real_pid = backend.submit, backend.find, client.set_infrastructure_pid
    held: list[str] = []

    def stalled_submit(spec):  # the first submit makes its job only once the monitor has looked for it
        if not held:
            held.append("submit")
            holding.set()
            assert looked.wait(60)
        return real_submit(spec)

    def monitor_find(spec):  # the monitor's lookup sees no job yet, and goes on once the submit is past its fence
        found = real_find(spec)
        if "find" not in held:
            held.append("find")
            looked.set()
            assert checked.wait(60)
        return found

    def late_pid(run, pid):  # the submit writes its pid only after the monitor's recovery and another claim
        if "pid" not in held:
            held.append("pid")
            checked.set()
            assert recovered.wait(60)
        return real_pid(run, pid)

    backend.submit, backend.find, client.set_infrastructure_pid = stalled_submit, monitor_find, late_pid
    first: list = []
    try:
        pool = client.read_work_pool(cloud.pool)
        thread = threading.Thread(target=lambda: first.append(submit_run(deps, client.read_flow_run(run_id), pool)))
        thread.start()
        assert holding.wait(60)  # claimed, its job not made yet
        skip_ahead(deps, deps.settings.pending_timeout_seconds + 0.5)
        pool_tick(deps, cloud.pool)  # finds nothing, waits for the submit's fence, then recovers the run
        second = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(cloud.pool), trigger="again")
        recovered.set()
        thread.join(60)
    finally:
        backend.submit, backend.find, client.set_infrastructure_pid = real_submit, real_find, real_pid
        for event in (holding, looked, checked, recovered):
            event.set()
    run = prefect.read_run(run_id)
    jobs = cloud.jobs_of(run_id)
    report.add(
        "a job made while the monitor recovers its run",
        provider=cloud.name,
        runs=1,
        faults=1,
        lost=int(not run["infrastructure_pid"] or jobs == 0),
        duplicated=int(jobs > 1),
        stuck=int(run["state_type"] != "PENDING"),
    )
    _stop(cloud, prefect, [run_id])
    assert jobs == 1, (jobs, first, second)
    assert run["state_type"] == "PENDING" and run["infrastructure_pid"] in {first[0].job_id, second.job_id}, run


def test_cancel_and_max_run_time_act_within_one_tick(cloud: Cloud, prefect: Helper, report) -> None:
    from pushpool.providers.base import JobHandle

    def submitted(**variables) -> tuple[str, str]:
        job_variables = {**cloud.job_variables, **variables}
        run_id = prefect.create_run(prefect.create_deployment(cloud.pool, job_variables=job_variables))
        client = cloud.deps.orchestrator
        outcome = submit_run(cloud.deps, client.read_flow_run(run_id), client.read_work_pool(cloud.pool), trigger="t")
        assert outcome.outcome == "submitted", outcome
        return run_id, outcome.job_id

    extra = {"command": "sleep 60"} if cloud.name == "process" else {}
    (pending, pending_job), (running, running_job) = submitted(**extra), submitted(**extra)
    overdue, overdue_job = submitted(max_run_time_seconds=1, **extra)
    prefect.set_state(running, "RUNNING")
    prefect.set_state(overdue, "RUNNING")
    skip_ahead(cloud.deps, 1.5)  # the overdue run is past its maximum run time
    prefect.set_state(pending, "CANCELLING")
    prefect.set_state(running, "CANCELLING")
    started = time.monotonic()
    pool_tick(cloud.deps, cloud.pool)  # one tick
    took = time.monotonic() - started
    expected = {pending: "CANCELLED", running: "CANCELLED", overdue: "CRASHED"}
    jobs = {pending: pending_job, running: running_job, overdue: overdue_job}
    backend = cloud.deps.backend(cloud.name)
    wrong = {r: prefect.state(r) for r, t in expected.items() if prefect.state(r)[0] != t}
    alive = [r for r, j in jobs.items() if backend.status([JobHandle(backend.name, j)])[j].state.is_alive]
    report.add(
        "cancel Pending/Running, max run time: one tick",
        provider=cloud.name,
        runs=3,
        faults=3,
        lost=len(alive),
        stuck=len(wrong),
        longest_repair=took,
    )
    assert wrong == {} and alive == [], (wrong, alive)
    assert "maximum run time of 1 s" in prefect.read_run(overdue)["state"]["message"]


def test_duplicate_storm_with_throttled_creates(cloud: Cloud, prefect: Helper, report, scale: int) -> None:
    """N runs × M concurrent webhook deliveries racing the monitor's dispatch, the provider throttling the first
    creates: exactly one job and one claim per run."""
    runs_n, dup_m = 4 * scale, 4
    extra = {"command": "sleep 60"} if cloud.name == "process" else {}
    dep = prefect.create_deployment(cloud.pool, job_variables={**cloud.job_variables, **extra})
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    if cloud.faults is not None:
        cloud.faults.fail_next(cloud.create, "throttle", times=3)
    answers = storm(cloud.deps, cloud.pool, shuffled(runs, dup_m, seed=23), senders=6)
    wrong = unsettled(cloud.deps, cloud.pool, prefect, runs)  # first: its ticks may start jobs
    jobs = {r: cloud.jobs_of(r) for r in runs}
    report.add(
        "duplicate storm, first creates throttled" if cloud.faults is not None else "duplicate storm (short)",
        provider=cloud.name,
        runs=runs_n,
        faults=len(answers) - runs_n + (cloud.faults.count() if cloud.faults is not None else 0),
        lost=sum(n == 0 for n in jobs.values()),
        duplicated=sum(n > 1 for n in jobs.values()),
        stuck=len(wrong),
    )
    _stop(cloud, prefect, runs)
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    assert set(jobs.values()) == {1} and wrong == {}, (jobs, wrong)


def _sleeping(cloud: Cloud) -> dict:
    """Job variables of a job that runs until stopped (the clouds' emulators hold every job as it is)."""
    return {**cloud.job_variables, **({"command": "sleep 600"} if cloud.name == "process" else {})}


def test_pool_limit_holds_under_a_storm(cloud: Cloud, prefect: Helper, report, scale: int) -> None:
    """A pool limit of 2 while webhook deliveries (3 per run) race the monitor, round after round as the flows of the
    runs in flight finish: never more than 2 runs in flight with a job, one job per run, every run gets its turn."""
    limit, runs_n = 2, 4 * scale
    prefect.set_pool_limit(cloud.pool, limit)
    dep = prefect.create_deployment(cloud.pool, job_variables=_sleeping(cloud))
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    peak, ran, started = 0, set(), time.monotonic()
    for _ in range(runs_n):  # a round lets at least one run in, or nothing will
        waiting = [r for r in runs if r not in ran]
        answers = storm(cloud.deps, cloud.pool, waiting * 3, senders=6)
        assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
        in_flight = {r for r in waiting if cloud.jobs_of(r) > 0}  # the clouds' jobs run until stopped: the peak
        peak = max(peak, len(in_flight))
        ran |= in_flight
        if not in_flight or ran == set(runs):
            break
        for run_id in in_flight:  # their flows finish: their slots are free (the monitor stops the jobs left over)
            prefect.set_state(run_id, "COMPLETED", force=True)
    jobs = {r: cloud.jobs_of(r) for r in runs}
    report.add(
        f"pool limit {limit} under a storm (3 deliveries per run + monitor)",
        provider=cloud.name,
        runs=runs_n,
        faults=2 * runs_n,
        duplicated=max(0, peak - limit) + sum(n > 1 for n in jobs.values()),
        stuck=runs_n - len(ran),
        longest_repair=time.monotonic() - started,
    )
    _stop(cloud, prefect, runs)
    assert 1 <= peak <= limit, peak
    assert ran == set(runs) and set(jobs.values()) == {1}, jobs


CRASH_WINDOWS = ["after the claim", "after the job, before the pid", "after the pid, before the progress state"]


def test_submit_dies_at_each_crash_window(cloud: Cloud, prefect: Helper, report, scale: int) -> None:
    """Submit dies after each of its steps (claim, job, pid): within two monitor ticks past the pending timeout every
    run is Pending with exactly one live job — the claim alone given back and dispatched again, the job found and
    adopted, the job with its pid left alone."""
    from pushpool.prefect_api.models import StateType
    from pushpool.providers.base import JobHandle
    from pushpool.usecases.job_spec import build_job_spec

    client, backend = cloud.deps.orchestrator, cloud.deps.backend(cloud.name)
    dep = prefect.create_deployment(cloud.pool, job_variables=_sleeping(cloud))
    runs: dict[str, list[str]] = {}
    for window in CRASH_WINDOWS:
        for _ in range(scale):
            run_id = prefect.create_run(dep)
            claim = client.propose_state(run_id, StateType.PENDING)
            assert claim.accepted
            if window != CRASH_WINDOWS[0]:
                run = client.read_flow_run(run_id)
                spec = build_job_spec(settings=cloud.deps.settings, client=client, run=run,
                                      pool=client.read_work_pool(cloud.pool), deployment=client.read_deployment(dep),
                                      attempt=claim.state.id)  # fmt: skip
                handle = backend.submit(spec)
                if window == CRASH_WINDOWS[2]:
                    client.set_infrastructure_pid(run_id, handle.id)
            runs.setdefault(window, []).append(run_id)
    fault_at = time.monotonic()
    skip_ahead(cloud.deps, cloud.deps.settings.pending_timeout_seconds + 0.2)
    for _ in range(2):  # within two ticks
        pool_tick(cloud.deps, cloud.pool)
    repaired = time.monotonic() - fault_at
    wrong = {}
    for window, run_ids in runs.items():
        lost = stuck = duplicated = 0
        for run_id in run_ids:
            run = prefect.read_run(run_id)
            pid, state = run["infrastructure_pid"], run["state"]["type"]
            alive = bool(pid) and backend.status([JobHandle(backend.name, pid)])[pid].state.is_alive
            lost += state in ("PENDING", "RUNNING", "CANCELLING") and not alive
            stuck += not (state == "PENDING" and alive)
            duplicated += cloud.jobs_of(run_id) > 1
            if not (state == "PENDING" and alive) or cloud.jobs_of(run_id) != 1:
                wrong[run_id] = (window, run["state"], pid, cloud.jobs_of(run_id))
        report.add(f"submit dies {window}", provider=cloud.name, runs=len(run_ids), faults=len(run_ids), lost=lost,
                   duplicated=duplicated, stuck=stuck, longest_repair=repaired)  # fmt: skip
    _stop(cloud, prefect, [r for run_ids in runs.values() for r in run_ids])
    assert wrong == {}, wrong


def test_prefect_api_gone_mid_tick(cloud: Cloud, prefect: Helper, prefect_outage, report) -> None:
    """The Prefect API goes away twice in one monitor tick (connections cut, then refused) and comes back: first while
    the tick's dispatch writes a new job's pid (the job exists, Prefect does not know it), then from when the tick has
    read the runs in flight to the end of the tick (it acts on none of them). No wrong transition, no second job, and
    the next two ticks finish what the first could not: the new job adopted, a cancellation finished, a claim whose
    submitter died given back."""
    from pushpool.errors import PushpoolError
    from pushpool.prefect_api.models import StateType
    from pushpool.providers.base import JobHandle
    from pushpool.usecases.monitor import tick

    deps, backend = cloud.deps, cloud.deps.backend(cloud.name)
    client = deps.orchestrator
    client.max_retries = 2  # a few quick retries against the outage, then the tick goes on
    dep = prefect.create_deployment(cloud.pool, job_variables=_sleeping(cloud))
    alive, cancelling, stale = (prefect.create_run(dep) for _ in range(3))
    for run_id in (alive, cancelling):
        assert submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(cloud.pool)).outcome == "submitted"
    prefect.set_state(cancelling, "CANCELLING")
    assert client.propose_state(stale, StateType.PENDING).accepted  # a submitter that died after the claim
    skip_ahead(deps, deps.settings.pending_timeout_seconds + 0.2)
    due = prefect.create_run(dep)  # Scheduled, due: this tick dispatches it
    pool = client.read_work_pool(cloud.pool)

    seen, original, downs = {"reads": 0, "failed": 0, "pid": 0}, client._request, prefect_outage.downs

    def going_away(method: str, path: str, **kwargs):
        pid_write = (method, path) == ("PATCH", f"/flow_runs/{due}") and "infrastructure_pid" in (
            kwargs.get("json") or {}
        )
        if (pid_write and seen["pid"] == 0) or seen["reads"] == 2:  # the pid write; the in-flight and ended runs read
            prefect_outage.down()
        try:
            return original(method, path, **kwargs)
        except PushpoolError:
            seen["failed"] += 1
            raise
        finally:
            seen["pid"] += pid_write
            if pid_write and seen["reads"] < 2:
                prefect_outage.up()  # back for the rest of the dispatch and the reconciliation's reads
            if (method, path) == ("POST", "/flow_runs/filter"):
                seen["reads"] += 1

    client._request = going_away  # type: ignore[method-assign]
    try:
        during = tick(deps, pools=[pool])
    except PushpoolError as exc:
        during = exc
    finally:
        client._request = original  # type: ignore[method-assign]
        downs = prefect_outage.downs - downs
        if not prefect_outage.is_up:
            prefect_outage.up()
    back = time.monotonic()
    for _ in range(2):
        tick(deps, pools=[pool])
    repaired = time.monotonic() - back
    runs = {r: prefect.read_run(r) for r in (alive, cancelling, stale, due)}

    def job_alive(run_id: str) -> bool:
        pid = runs[run_id]["infrastructure_pid"]
        return bool(pid) and backend.status([JobHandle(backend.name, pid)])[pid].state.is_alive

    def pending_and_alive(run_id: str) -> bool:
        return runs[run_id]["state"]["type"] == "PENDING" and job_alive(run_id)

    right = {
        "alive untouched": pending_and_alive(alive),
        "cancelling finished, its job stopped": runs[cancelling]["state"]["type"] == "CANCELLED"
        and not job_alive(cancelling),
        "stale given back or dispatched again": runs[stale]["state"]["type"] == "SCHEDULED" or pending_and_alive(stale),
        "due's job adopted": pending_and_alive(due),
    }
    jobs = {r: cloud.jobs_of(r) for r in runs}
    report.add(
        "Prefect API gone mid-tick (twice), back",
        provider=cloud.name,
        runs=len(runs),
        faults=seen["failed"],
        lost=sum(not pending_and_alive(r) for r in (alive, due)),
        duplicated=sum(n > 1 for n in jobs.values()),
        stuck=sum(not ok for ok in right.values()),
        longest_repair=repaired,
    )
    _stop(cloud, prefect, list(runs))
    assert downs == 2 and seen["pid"] == 1 and seen["failed"] >= 2, (seen, during)  # both outages hit the tick
    assert all(right.values()), (right, during, {r: runs[r]["state"] for r in runs})
    assert jobs[alive] == jobs[due] == 1 and max(jobs.values()) == 1, jobs  # (a stopped process job's dir is removed)
