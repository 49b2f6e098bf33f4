"""The Cloud Run backend with the real Prefect server and the local Cloud Run Admin API v2 (tests/gcp_emulator.py),
reached by the real ``google.cloud.run_v2`` clients over REST on 127.0.0.1 with anonymous credentials.

The emulator checks every body against Google's run.v2 discovery document; the job body is read back from what it
received. The end-to-end test runs the container command and environment the emulator received, here: the real flow
completes.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle, JobState

from tests.gcp_emulator import CloudRunEmulator, service_account_info
from tests.helpers import PrefectHelper, fake_deps, make_deps, pool_tick, run_as_its_container, submit

pytestmark = pytest.mark.integration

PROJECT = "pushpool-test"
KEY = "pnu_test_key_do_not_log"
SECRETS = {"prefect-api-key": KEY}  # what Secret Manager would hand the container


@pytest.fixture(scope="module")
def emulator():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


def backend_options(emulator: CloudRunEmulator, **extra) -> dict:
    return {  # the last of a repeated key wins
        "credentials": AnonymousCredentials(),
        "project": PROJECT,
        "endpoint": emulator.endpoint,
        "logging_endpoint": emulator.endpoint,
        "retry_initial": 0.01,
        "retry_timeout": 5.0,
        "ready_timeout": 10.0,
        "check_image_platform": False,  # no registry is reached from these tests (test_image_platform.py has its own)
        **extra,
    }


@pytest.fixture
def cr_deps(prefect_api: str, tmp_path: Path, emulator: CloudRunEmulator):
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps.backend_options["cloudrun"] = backend_options(emulator)
    yield deps
    deps.orchestrator.close()


def pool_template(pool_type: str = "cloud-run-v2:push", **defaults) -> dict:
    template = copy.deepcopy(base_job_template(pool_type))
    props = template["variables"]["properties"]
    props["project"]["default"] = PROJECT
    props["prefect_api_key_secret"]["default"] = {"secret": "prefect-api-key", "version": "latest"}
    for key, value in defaults.items():
        props[key]["default"] = value
    return template


def make_pool(prefect: PrefectHelper, pool_type: str = "cloud-run-v2:push", **defaults) -> str:
    name = prefect.unique("cloudrun")
    prefect.create_pool(name, pool_type, base_job_template=pool_template(pool_type, **defaults))
    return name


@pytest.fixture
def cr_pool(prefect: PrefectHelper) -> str:
    return make_pool(prefect)


def _received(emulator: CloudRunEmulator, job_id: str) -> dict:
    return emulator.received(job_id.split("/executions/")[0].removesuffix("#keep"))


def _jwt_issuer(authorization: str) -> str:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueSource")) for e in container.get("env", [])}


# -- the job body ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool_type", ["cloud-run-v2:push", "cloud-run:push"])
def test_defaults_make_a_job_that_runs_the_flow_for_a_day(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, pool_type: str
) -> None:
    pool = make_pool(prefect, pool_type)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    outcome = submit(cr_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    assert prefect.read_run(run_id)["infrastructure_pid"] == outcome.job_id
    body = _received(emulator, outcome.job_id)
    task = body["template"]["template"]
    assert task["timeout"] == "86400s"  # follows max_run_time_seconds, not Prefect's 600 s
    assert task.get("maxRetries", 0) == 0 and "vpcAccess" not in task
    container = task["containers"][0]
    assert container["image"] == (
        "prefecthq/prefect:3-latest" if pool_type == "cloud-run-v2:push" else "docker.io/prefecthq/prefect:3-latest"
    )
    assert container["command"] == ["prefect", "flow-run", "execute"]
    env = _env(container)
    assert env["PREFECT__FLOW_RUN_ID"] == run_id and env["PREFECT_API_URL"] == prefect.api_url
    assert env["PREFECT_API_KEY"] == {"secretKeyRef": {"secret": "prefect-api-key", "version": "latest"}}
    assert body["labels"]["prefect-io-flow-run-id"] == run_id
    assert body["template"]["labels"] == body["labels"]


def test_job_variables_reach_the_job(cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator) -> None:
    pool = make_pool(prefect)
    variables = {
        "image": "us-docker.pkg.dev/p/flows/app:2",
        "cpu": "2000m",
        "memory": "2Gi",
        "args": ["--verbose"],
        "service_account_name": "runner@pushpool-test.iam.gserviceaccount.com",
        "vpc_connector_name": "projects/pushpool-test/locations/us-central1/connectors/c1",
        "max_retries": 2,
        "timeout": 3600,
        "launch_stage": "GA",
        "env": {"TEAM": "data"},
        "env_from_secrets": {"DB_PASSWORD": {"secret": "db", "version": "3"}},
        "cloudsql_instances": ["pushpool-test:us-central1:db"],
        "labels": {"Team": "Data Eng"},
        "region": "europe-west1",
    }
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    outcome = submit(cr_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    assert "/locations/europe-west1/" in outcome.job_id
    body = _received(emulator, outcome.job_id)
    task = body["template"]["template"]
    container = task["containers"][0]
    assert container["image"] == "us-docker.pkg.dev/p/flows/app:2"
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "2Gi"}
    assert container["args"] == ["--verbose"]
    assert task["serviceAccount"] == "runner@pushpool-test.iam.gserviceaccount.com"
    assert task["vpcAccess"] == {"connector": "projects/pushpool-test/locations/us-central1/connectors/c1"}
    assert (task["maxRetries"], task["timeout"]) == (2, "3600s")
    assert body["launchStage"] in ("GA", 4)  # the client sends enums as numbers
    env = _env(container)
    assert env["TEAM"] == "data"
    assert env["DB_PASSWORD"] == {"secretKeyRef": {"secret": "db", "version": "3"}}
    assert task["volumes"] == [
        {"name": "cloudsql", "cloudSqlInstance": {"instances": ["pushpool-test:us-central1:db"]}}
    ]
    assert container["volumeMounts"] == [{"name": "cloudsql", "mountPath": "/cloudsql"}]
    assert body["labels"]["team"] == "data-eng"
    assert KEY not in str(emulator.bodies)


# -- bad input: the run is Crashed with the reason, never left Pending -------------------------------------------


def test_plaintext_credential_is_refused_before_any_call(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator
) -> None:
    pool = make_pool(prefect, prefect_api_key_secret=None)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    before = len(emulator.requests)
    assert submit(cr_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "prefect_api_key_secret" in state["message"]
    assert len(emulator.requests) == before


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"region": "mars-north1"}, "Location 'mars-north1' not found"),
        ({"project": "Not_A_Project"}, "Invalid project id 'Not_A_Project'"),
        ({"image": "us-docker.pkg.dev/p/r/missing:1"}, "Image 'us-docker.pkg.dev/p/r/missing:1' not found"),
        ({"service_account_name": "nobody@pushpool-test.iam.gserviceaccount.com"}, "nobody@pushpool-test.iam"),
        (
            {"prefect_api_key_secret": {"secret": "no-such-secret", "version": "latest"}},
            "secrets/no-such-secret/versions/latest was not found",
        ),
    ],
)
def test_google_refusals_crash_the_run_with_googles_message(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, variables: dict, fragment: str
) -> None:
    emulator.missing_images.add("us-docker.pkg.dev/p/r/missing:1")
    pool = make_pool(prefect)
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    assert submit(cr_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and fragment in state["message"], state["message"]
    assert "Traceback" not in state["message"] and KEY not in state["message"]


def test_a_credentials_block_of_another_project_is_refused_before_any_call(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator
) -> None:
    """pushpool watches, cancels and cleans up every job with its own identity in the job's project: a block of
    another project would make a job it could never watch, so it is refused, naming both projects."""
    block = {"service_account_info": service_account_info("other-project", f"{emulator.endpoint}/token")}
    pool = make_pool(prefect, credentials={**block, "project": "other-project"})
    run_id = prefect.create_run(prefect.create_deployment(pool))
    before = len(emulator.requests)
    assert submit(cr_deps, run_id).outcome == "crashed"
    message = prefect.read_run(run_id)["state"]["message"]
    assert "block is of project other-project" in message and f"go to project {PROJECT}" in message
    assert len(emulator.requests) == before


def test_a_credentials_block_of_the_pools_project_signs_submit_and_pushpool_watches_the_job(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator
) -> None:
    block = {"service_account_info": service_account_info(PROJECT, f"{emulator.endpoint}/token"), "project": PROJECT}
    pool = make_pool(prefect, credentials=block)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    before = len(emulator.authorizations)
    outcome = submit(cr_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    signed = [a for a in emulator.authorizations[before:] if a]
    assert len(signed) == len(emulator.authorizations[before:]) == 3  # CreateJob, its operation, RunJob
    issuers = {_jwt_issuer(a) for a in signed}  # a self-signed JWT of the block's key
    assert issuers == {block["service_account_info"]["client_email"]}
    before = len(emulator.authorizations)
    handle = JobHandle("cloudrun", outcome.job_id)
    assert cr_deps.backend("cloudrun").status([handle])[handle.id].state is JobState.RUNNING
    assert emulator.authorizations[before:] == [None]  # one List, with pushpool's own (here anonymous) identity


# -- status, crash, cancel, cleanup, timeout, throttling -----------------------------------------------------------


def test_non_zero_exit_crashes_the_run_with_exit_code_log_tail_and_link(
    cr_deps, prefect: PrefectHelper, cr_pool: str, emulator: CloudRunEmulator
) -> None:
    run_id = prefect.create_run(prefect.create_deployment(cr_pool))
    outcome = submit(cr_deps, run_id)
    emulator.exit(outcome.job_id, 1, ["downloading flow code", "ModuleNotFoundError: No module named 'pandas'"])
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(cr_deps, cr_pool))
    message = run["state"]["message"]
    assert "exit code 1" in message and "No module named 'pandas'" in message
    assert "logs: https://console.cloud.google.com/logs/" in message


def test_a_timed_out_task_crashes_the_run(cr_deps, prefect: PrefectHelper, cr_pool: str, emulator) -> None:
    run_id = prefect.create_run(prefect.create_deployment(cr_pool))
    outcome = submit(cr_deps, run_id)
    emulator.exit(outcome.job_id, 0, [], timed_out=True)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(cr_deps, cr_pool))
    assert "exceeded its timeout" in run["state"]["message"]


def test_cancel_cancels_the_execution(cr_deps, prefect: PrefectHelper, cr_pool: str, emulator) -> None:
    run_id = prefect.create_run(prefect.create_deployment(cr_pool))
    outcome = submit(cr_deps, run_id)
    prefect.set_state(run_id, "CANCELLING")
    report = pool_tick(cr_deps, cr_pool)
    assert report.reconciled["stop-and-cancel"] >= 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    assert emulator.count("POST", outcome.job_id + ":cancel") == 1
    status = cr_deps.backend("cloudrun").status([JobHandle("cloudrun", outcome.job_id)])[outcome.job_id]
    assert status.state is JobState.STOPPED


@pytest.mark.parametrize("keep_job", [False, True])
def test_a_finished_runs_job_is_deleted_unless_kept(
    cr_deps, prefect: PrefectHelper, emulator: CloudRunEmulator, keep_job: bool
) -> None:
    pool = make_pool(prefect, keep_job=keep_job)
    run_id = prefect.create_run(prefect.create_deployment(pool))
    outcome = submit(cr_deps, run_id)
    job = outcome.job_id.split("/executions/")[0]
    emulator.exit(outcome.job_id.removesuffix("#keep"), 0, ["done"])
    prefect.set_state(run_id, "RUNNING", force=True)
    prefect.set_state(run_id, "COMPLETED", force=True)
    pool_tick(cr_deps, pool)
    assert (job in emulator.jobs) is keep_job
    assert emulator.count("DELETE", job) == (0 if keep_job else 1)


def test_throttling_is_retried_then_the_run_is_given_back_with_googles_reason(
    cr_deps, prefect: PrefectHelper, cr_pool: str, emulator: CloudRunEmulator
) -> None:
    cr_deps.backend_options["cloudrun"]["retry_timeout"] = 0.5
    dep = prefect.create_deployment(cr_pool)
    emulator.fail_next(2, 429)
    before = len(emulator.requests)
    run_id = prefect.create_run(dep)
    assert submit(cr_deps, run_id).outcome == "submitted"
    assert len(emulator.requests) - before == 2 + 3  # two throttled CreateJobs, then CreateJob, operation, RunJob

    emulator.fail_next(10_000, 503)
    try:
        handle = JobHandle("cloudrun", prefect.read_run(run_id)["infrastructure_pid"])
        status = cr_deps.backend("cloudrun").status([handle])[handle.id]
        other = prefect.create_run(dep)
        outcome = submit(cr_deps, other)
    finally:
        with emulator.lock:
            emulator._faults.clear()
    assert status.state is JobState.UNKNOWN and "503" in status.reason  # never MISSING: the run is not crashed for it
    assert outcome.outcome == "released"  # not crashed on the first blink: back to Scheduled, saying why
    state = prefect.read_run(other)["state"]
    assert state["name"] == "AwaitingInfrastructure"
    assert "still failing after retries" in state["message"] and "503: Injected by the test" in state["message"]


def test_a_job_that_never_ran_is_deleted_once_its_run_is_final_with_one_list_per_location(
    cr_deps, prefect: PrefectHelper, cr_pool: str, emulator: CloudRunEmulator
) -> None:
    """RunJob fails after CreateJob worked: the run is Crashed and its attempt never retried, and the job (no
    execution) would count against Cloud Run's 1,000 jobs per region for ever. The monitor deletes it, from one
    ListJobs per location — while the run is in flight the job is left to its submit."""
    from pushpool.usecases.tick_report import TickReport
    from pushpool.usecases.unstarted import sweep_unstarted

    cr_deps.backend_options["cloudrun"].update(retry_timeout=0.3, unstarted_grace_seconds=0.0)
    # A 503 is transient: submit would give the run back for a retry; with no retries left it is Crashed at once.
    cr_deps.settings = cr_deps.settings.model_copy(update={"transient_retries": 0})
    run_id = prefect.create_run(prefect.create_deployment(cr_pool))
    emulator.refuse_runs = 10_000
    try:
        assert submit(cr_deps, run_id).outcome == "crashed"
    finally:
        emulator.refuse_runs = 0
    [job] = [n for n, j in emulator.jobs.items() if j["labels"].get("prefect-io-flow-run-id") == run_id]
    assert emulator.jobs[job]["executionCount"] == 0

    pools = [cr_deps.orchestrator.read_work_pool(cr_pool)]
    prefect.set_state(run_id, "RUNNING", force=True)  # in flight: its submit may yet run the job
    sweep_unstarted(cr_deps, pools, report := TickReport())
    assert job in emulator.jobs and report.errors == []

    kept_pool = make_pool(prefect, keep_job=True)  # a job that ran, kept after its run ended: not unstarted
    kept_run = prefect.create_run(prefect.create_deployment(kept_pool))
    kept = submit(cr_deps, kept_run).job_id.removesuffix("#keep")
    emulator.exit(kept, 0, [])

    prefect.set_state(run_id, "CRASHED", force=True)
    prefect.set_state(kept_run, "CRASHED", force=True)
    before = len(emulator.requests)
    report = pool_tick(cr_deps, cr_pool)
    assert job not in emulator.jobs and report.reconciled["delete-unstarted"] >= 1, report
    assert kept.split("/executions/")[0] in emulator.jobs
    lists = [p for m, p in emulator.requests[before:] if m == "GET" and p.endswith("/jobs")]
    assert lists == [f"/v2/projects/{PROJECT}/locations/us-central1/jobs"]  # one per location, not per run


def test_status_of_many_runs_is_one_call_per_location(
    cr_deps, prefect: PrefectHelper, cr_pool: str, emulator: CloudRunEmulator
) -> None:
    """The numbers in the issue: Cloud Run calls per run at submit, and per monitor tick."""
    dep = prefect.create_deployment(cr_pool)
    before = len(emulator.requests)
    runs = [prefect.create_run(dep) for _ in range(5)]
    handles = [JobHandle("cloudrun", submit(cr_deps, r).job_id) for r in runs]
    assert len(emulator.requests) - before == 3 * 5  # CreateJob, its operation once, RunJob
    before = len(emulator.requests)
    statuses = cr_deps.backend("cloudrun").status(handles)
    assert {s.state for s in statuses.values()} == {JobState.RUNNING}
    assert emulator.requests[before:] == [("GET", f"/v2/projects/{PROJECT}/locations/us-central1/jobs/-/executions")]


def _tick_calls(emulator: CloudRunEmulator, since: int) -> dict[str, int]:
    """The Cloud Run (and Cloud Logging) calls made since ``since``, by kind."""
    kinds: dict[str, int] = {}
    for method, path in emulator.requests[since:]:
        if method == "GET" and path.endswith("/jobs/-/executions"):
            kind = "list executions"
        elif method == "GET" and path.endswith("/jobs"):
            kind = "list jobs"
        elif method == "GET" and path.endswith("/tasks"):
            kind = "list tasks"
        elif method == "GET" and "/executions/" in path:
            kind = "get execution"
        elif method == "DELETE":
            kind = "delete job"
        elif path == "/v2/entries:list":
            kind = "read logs"
        else:
            kind = f"{method} {path}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@pytest.mark.parametrize("pool_type", ["cloud-run-v2:push", "cloud-run:push"])
def test_a_ticks_calls_grow_with_the_locations_and_the_runs_that_changed_not_with_the_runs(
    tmp_path: Path, emulator: CloudRunEmulator, pool_type: str
) -> None:
    """Issue 23 item 3: a tick over 50 in-flight runs of one region is one list of the region's executions (and the
    sweep's one list of its jobs), plus what the runs that changed need: a failed execution's tasks once (not on every
    tick), its logs once, a finished job's delete — never a list of the region per finished job, never a read of a
    job this process deleted.

    The runs live in the orchestration fake (tests/fake_prefect.py, held to the real server by
    tests/contract/test_orchestration_contract.py), as in test_tick_scale_modal_coiled.py: what is counted is Cloud
    Run's calls, and 50 runs made, claimed and moved on the real server cost it far more than the tick."""
    from pushpool.clock import SystemClock
    from pushpool.prefect_api.models import StateType

    from tests.fake_prefect import FakePrefect

    region = "asia-east1"  # a region of this test's own: other tests' executions do not share its list
    fake = FakePrefect(clock=SystemClock())
    cr_deps = fake_deps(fake, tmp_path, prefect_api_key=KEY)
    cr_deps.backend_options["cloudrun"] = backend_options(emulator)
    pool = f"cloudrun-tick-{pool_type.split(':')[0]}"
    fake.add_pool(pool, pool_type, base_job_template=pool_template(pool_type, region=region))
    dep = fake.add_deployment(pool)
    runs = [fake.add_run(dep) for _ in range(50)]
    jobs = [submit(cr_deps, r).job_id for r in runs]
    assert all(f"/locations/{region}/" in j for j in jobs)
    for job in jobs[:3]:  # three fail: their runs are crashed (tasks and logs read), then their jobs deleted
        emulator.exit(job, 1, ["ModuleNotFoundError: No module named 'pandas'"])
    for run_id, job in zip(runs[3:6], jobs[3:6], strict=True):  # three completed: their jobs deleted at once
        emulator.exit(job, 0, ["done"])
        fake.force_state(run_id, StateType.COMPLETED)

    before = len(emulator.requests)
    report = pool_tick(cr_deps, pool)
    assert report.reconciled["crash"] == 3 and report.reconciled["cleanup"] == 3, report
    assert _tick_calls(emulator, before) == {
        "list executions": 1,  # the region's executions, once for the 50 runs (and once, not per job, for cleanup)
        "list jobs": 1,  # the sweep of jobs that never started: one per location
        "list tasks": 3,  # the failed executions' exit codes
        "read logs": 3,  # the crashed runs' last lines
        "delete job": 3,  # the completed runs' jobs
    }
    assert all(fake.read_flow_run(r).state_type is StateType.CRASHED for r in runs[:3])

    before = len(emulator.requests)
    report = pool_tick(cr_deps, pool)  # the crashed runs are final now: their jobs go; the deleted ones are not read
    assert report.reconciled["cleanup"] == 3, report
    assert _tick_calls(emulator, before) == {"list executions": 1, "list jobs": 1, "delete job": 3}

    before = len(emulator.requests)
    pool_tick(cr_deps, pool)  # nothing changed: the lists alone
    assert _tick_calls(emulator, before) == {"list executions": 1, "list jobs": 1}
    assert [j for j in jobs if j.split("/executions/")[0] in emulator.jobs] == jobs[6:]


# -- end to end ------------------------------------------------------------------------------------------------------


def test_the_job_sent_to_cloud_run_runs_the_flow(
    cr_deps, prefect: PrefectHelper, cr_pool: str, emulator: CloudRunEmulator, tmp_path: Path
) -> None:
    """Take the container command and environment the local Cloud Run received, run them here (secrets resolved as
    Cloud Run would from Secret Manager): the real flow completes."""
    run_id = prefect.create_run(prefect.create_deployment(cr_pool, "flows.py:hello"), parameters={"who": "cloud run"})
    outcome = submit(cr_deps, run_id)
    container = _received(emulator, outcome.job_id)["template"]["template"]["containers"][0]
    env = {}
    for entry in container["env"]:
        ref = (entry.get("valueSource") or {}).get("secretKeyRef")
        env[entry["name"]] = SECRETS[ref["secret"]] if ref else entry["value"]
    run_as_its_container(container["command"] + container.get("args", []), env, tmp_path)
    assert prefect.state(run_id)[0] == "COMPLETED"
    emulator.exit(outcome.job_id, 0, [])
    pool_tick(cr_deps, cr_pool)  # the finished run's job is cleaned up
    assert outcome.job_id.split("/executions/")[0] not in emulator.jobs
