"""The Cloud Run backend keeps the backend contract against the local Cloud Run Admin API v2 (tests/gcp_emulator.py):
the real ``google.cloud.run_v2`` clients over REST on 127.0.0.1, anonymous credentials (no metadata server, no ADC).

The driver plays Cloud Run's control plane through the emulator: an execution's task ends with an exit code and its
Cloud Logging lines, or the job disappears.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.errors import BackendError
from pushpool.providers.base import JobHandle, JobSpec, JobState
from pushpool.providers.cloudrun.backend import CloudRunBackend, job_id
from pushpool.providers.cloudrun.config import CloudRunJobConfig

from tests.contract.contract import SECRET, BackendContract
from tests.gcp_emulator import CloudRunEmulator

PROJECT = "pushpool-test"
REGIONS = {"default": "us-central1", "other": "europe-west1", "nowhere": "mars-north1"}


@pytest.fixture(scope="module")
def emulator():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


def make_backend(emulator: CloudRunEmulator, **options) -> CloudRunBackend:
    defaults = {
        "credentials": AnonymousCredentials(),
        "project": PROJECT,
        "endpoint": emulator.endpoint,
        "logging_endpoint": emulator.endpoint,
        "retry_initial": 0.01,
        "retry_timeout": 5.0,
        "ready_timeout": 10.0,
        "check_image_platform": False,  # no registry is reached from these tests (test_image_platform.py has its own)
    }
    return CloudRunBackend(**{**defaults, **options})


def make_spec(*, region: str = "us-central1", image: str = "us-docker.pkg.dev/p/r/flows:1", **config) -> JobSpec:
    body = {
        "client": "prefect",
        "launchStage": "BETA",
        "template": {"template": {"containers": [{"image": image, "resources": {"limits": {"cpu": "1000m"}}}]}},
    }
    return JobSpec(
        run_id=str(uuid.uuid4()),
        attempt=str(uuid.uuid4()),
        pool_name="contract",
        name="contract",
        command=("prefect", "flow-run", "execute"),
        env={"PREFECT__FLOW_RUN_ID": "x"},
        labels={"prefect.io/flow-run-id": "x"},
        config=CloudRunJobConfig(
            region=region, job_body=body, prefect_api_key_secret={"secret": "prefect-api-key"}, **config
        ),
        secret_env={"PREFECT_API_KEY": SECRET},
    )


class CloudRunDriver:
    supports_locations = True

    def __init__(self, emulator: CloudRunEmulator) -> None:
        self.emulator = emulator

    def spec(self, *, location: str = "default") -> JobSpec:
        return make_spec(region=REGIONS[location])

    def jobs_of(self, spec: JobSpec) -> int:
        wanted = job_id(spec)
        with self.emulator.lock:
            return sum(
                1 + max(0, j["executionCount"] - 1) for n, j in self.emulator.jobs.items() if n.endswith("/" + wanted)
            )

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        self.emulator.exit(handle.id, code, lines)

    def vanish(self, handle: JobHandle) -> None:
        self.emulator.vanish(handle.id)

    def unknown_handle(self) -> JobHandle:
        job = f"projects/{PROJECT}/locations/us-central1/jobs/pushpool-gone-{uuid.uuid4().hex[:12]}"
        return JobHandle("cloudrun", f"{job}/executions/{job.rsplit('/', 1)[-1]}-abcde")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("cloudrun", "not-a-cloud-run-execution")

    def refused_spec(self) -> JobSpec:
        self.emulator.missing_images.add("us-docker.pkg.dev/p/r/missing:1")
        return make_spec(image="us-docker.pkg.dev/p/r/missing:1")

    def sent(self, handle: JobHandle) -> str:
        with self.emulator.lock:
            bodies = [b for _, _, b in self.emulator.bodies]
        return json.dumps(bodies) + json.dumps(self.emulator.received(handle.id.split("/executions/")[0]))


class TestCloudRunBackend(BackendContract):
    @pytest.fixture
    def backend(self, emulator: CloudRunEmulator) -> CloudRunBackend:
        return make_backend(emulator)

    @pytest.fixture
    def driver(self, emulator: CloudRunEmulator) -> CloudRunDriver:
        return CloudRunDriver(emulator)


def test_the_contract_registers_the_backend_as_built_by_the_registry() -> None:
    from pushpool.providers import provider_for_pool_type

    for pool_type in ("cloud-run-v2:push", "cloud-run:push"):
        provider = provider_for_pool_type(pool_type)
        assert provider.name == "cloudrun" and provider.config_model() is CloudRunJobConfig


def test_a_refused_job_leaves_no_job_behind(emulator: CloudRunEmulator) -> None:
    driver = CloudRunDriver(emulator)
    spec = driver.refused_spec()
    backend = make_backend(emulator)
    with pytest.raises(Exception) as caught:
        backend.submit(spec)
    assert "Image 'us-docker.pkg.dev/p/r/missing:1' not found" in str(caught.value)
    assert driver.jobs_of(spec) == 0
    assert backend.find(spec) is None


@pytest.mark.parametrize(
    ("condition", "counts", "expected"),
    [
        ({"state": "CONDITION_PENDING"}, {}, JobState.PENDING),  # accepted, not started (auto_start off)
        ({"state": "CONDITION_PENDING", "executionReason": "DELAYED_START_PENDING"}, {}, JobState.PENDING),
        ({"state": "CONDITION_RECONCILING"}, {"runningCount": 1}, JobState.RUNNING),
        ({"state": "CONDITION_RECONCILING", "executionReason": "CANCELLING"}, {}, JobState.RUNNING),  # still stopping
        ({"state": "CONDITION_FAILED", "executionReason": "CANCELLED"}, {"cancelledCount": 1}, JobState.STOPPED),
        ({"state": "CONDITION_FAILED", "executionReason": "DELETED"}, {}, JobState.MISSING),
        ({"state": "CONDITION_FAILED", "reason": "CONTAINER_PERMISSION_DENIED"}, {"failedCount": 1}, JobState.FAILED),
        ({"state": "CONDITION_SUCCEEDED"}, {"succeededCount": 1}, JobState.SUCCEEDED),
    ],
)
def test_each_execution_condition_means_what_it_says(
    emulator: CloudRunEmulator, condition: dict, counts: dict, expected: JobState
) -> None:
    backend = make_backend(emulator)
    emulator.auto_start = False
    try:
        handle = backend.submit(make_spec())
    finally:
        emulator.auto_start = True
    with emulator.lock:
        emulator.executions[handle.id]["json"].update(conditions=[{"type": "Completed", **condition}], **counts)
    status = backend.status([handle])[handle.id]
    assert status.state is expected, status
    if "reason" in condition:
        assert "no permission to pull the container image" in status.reason


def test_a_block_naming_its_project_needs_no_google_identity_of_pushpools_own(
    emulator: CloudRunEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Prefect's worker: the job goes to the credentials block's project, signed by the block — pushpool's own
    Application Default Credentials are never looked for (here there are none)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    from tests.gcp_emulator import service_account_info

    def no_adc(*args, **kwargs):
        raise DefaultCredentialsError("no Application Default Credentials here")

    monkeypatch.setattr(google.auth, "default", no_adc)
    backend = make_backend(emulator, credentials=None, project=None)
    block = {"service_account_info": service_account_info(PROJECT, f"{emulator.endpoint}/token")}
    spec = make_spec(credentials=block)
    handle = backend.submit(spec)
    assert handle.id.startswith(f"projects/{PROJECT}/locations/us-central1/jobs/")


def test_a_create_operation_not_done_in_time_leaves_the_job_another_submit_of_the_attempt_ran(
    emulator: CloudRunEmulator,
) -> None:
    """Submit A's CreateJob operation is not done within its ready timeout; meanwhile submit B of the same attempt (a
    claim of the run's kept key) found the job ready and ran it. A gives up with a retryable error and leaves the job:
    deleting it would delete B's execution under a run that B gave it to."""
    spec = make_spec()
    name = f"projects/{PROJECT}/locations/us-central1/jobs/{job_id(spec)}"
    b_ran = threading.Event()
    a = make_backend(emulator, ready_timeout=0.2, sleep=lambda _: b_ran.wait(30))  # A polls again only once B ran
    b = make_backend(emulator)
    emulator.bad_days.operations_take(1000)  # every operation stays in progress when polled (RunJob's is not polled)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(a.submit, spec)
            deadline = time.monotonic() + 30
            while name not in emulator.jobs and time.monotonic() < deadline:
                time.sleep(0.01)
            emulator.age_job(name, 600)  # old enough for B to take A for dead (A still polls: stalled, short timeout)
            handle = b.submit(spec)
            b_ran.set()
            with pytest.raises(BackendError) as raised:
                first.result(timeout=30)
    finally:
        b_ran.set()
        emulator.bad_days.clear()
    assert raised.value.retryable, raised.value
    assert b.status([handle])[handle.id].state is JobState.RUNNING
    assert a.submit(spec) == handle  # A's retry finds the execution B made
    assert emulator.jobs[name]["executionCount"] == 1


def _create_only(backend: CloudRunBackend, spec: JobSpec) -> str:
    """The attempt's job made ready and never run: what a submit that died between CreateJob and RunJob leaves."""
    from google.cloud import run_v2

    body = run_v2.Job.from_json(json.dumps(backend._job_message(spec, spec.config)))
    parent = f"projects/{PROJECT}/locations/{spec.config.region}"
    backend._client("jobs").create_job(parent=parent, job=body, job_id=job_id(spec)).result()
    return f"{parent}/jobs/{job_id(spec)}"


def test_a_second_submit_of_the_attempt_leaves_the_job_to_its_live_creator(emulator: CloudRunEmulator) -> None:
    """Creator A's RunJob is stalled after its job became ready; submit B of the same attempt meets the job ready with
    no execution. RunJob's etag is not documented to refuse a second run (the emulator takes that reading), so B must
    not run it: it gives up retryable (its run is given back under the same key); A's RunJob makes the attempt's one
    execution, which B's retry finds."""
    assert not emulator.run_checks_etag
    spec = make_spec()
    name = f"projects/{PROJECT}/locations/us-central1/jobs/{job_id(spec)}"
    a_running, b_done = threading.Event(), threading.Event()
    original = emulator.handle

    def stalled(method, path, query, body):
        if method == "POST" and path.endswith(":run") and not a_running.is_set():  # A's RunJob: the first one
            a_running.set()
            b_done.wait(30)
        return original(method, path, query, body)

    emulator.handle = stalled
    a, b = make_backend(emulator), make_backend(emulator, ready_timeout=1.0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(a.submit, spec)
            assert a_running.wait(30)
            with pytest.raises(BackendError) as raised:
                b.submit(spec)
            b_done.set()
            handle = first.result(timeout=30)
    finally:
        b_done.set()
        emulator.handle = original
    assert raised.value.retryable and "may still start it" in str(raised.value), raised.value
    assert b.submit(spec) == handle  # B's retry finds A's execution
    assert emulator.jobs[name]["executionCount"] == 1


def test_the_job_of_a_creator_that_died_is_run_once_by_the_attempts_retry(emulator: CloudRunEmulator) -> None:
    """Ready with no execution, older than its creator's polls and RunJob retries could take: it died between
    CreateJob and RunJob, and the retry of the attempt runs the job at once (once: a second retry finds it)."""
    backend = make_backend(emulator, ready_timeout=30.0)
    spec = make_spec()
    name = _create_only(backend, spec)
    emulator.age_job(name, 600)
    started = time.monotonic()
    handle = backend.submit(spec)
    assert time.monotonic() - started < 10  # not waited out
    assert backend.submit(spec) == handle
    assert emulator.jobs[name]["executionCount"] == 1


def test_withdraw_deletes_the_attempts_unstarted_job_and_a_late_run_of_it_fails(emulator: CloudRunEmulator) -> None:
    """What the monitor asks before giving back a Pending run whose attempt shows no execution: no job → nothing to
    withdraw; a job its stalled submit has not run yet → deleted, and that submit's late RunJob fails (no execution)."""
    backend = make_backend(emulator)
    assert backend.withdraw_unstarted(make_spec()) is True  # no job of the attempt
    spec = make_spec()
    name = _create_only(backend, spec)
    runs = emulator.count("POST", ":run")
    assert backend.withdraw_unstarted(spec) is True
    assert name not in emulator.jobs and backend.find(spec) is None
    from google.api_core import exceptions

    with pytest.raises(exceptions.NotFound):  # submit's boundary makes it a BackendError
        backend._run(backend._client("jobs"), name, "", False)  # the stalled submit's RunJob, resumed
    assert emulator.count("POST", ":run") == runs + 1 and not any(e.startswith(name) for e in emulator.executions)


def test_withdraw_leaves_a_job_that_was_run_meanwhile(emulator: CloudRunEmulator) -> None:
    """The stalled submit's RunJob lands between the monitor's read of the job and its delete: the delete carries the
    etag read (RunJob changes it), so Cloud Run refuses it and the job keeps its execution; the answer says the run
    has a job (the monitor must not give it back). A job already run is left without a delete."""
    backend = make_backend(emulator)
    spec = make_spec()
    name = _create_only(backend, spec)
    original = emulator.handle

    def run_first(method, path, query, body):
        if method == "DELETE" and path.endswith(name.rsplit("/", 1)[-1]):
            original("POST", f"/v2/{name}:run", {}, {})  # the submit's RunJob, just before the delete
        return original(method, path, query, body)

    emulator.handle = run_first
    try:
        assert backend.withdraw_unstarted(spec) is False
    finally:
        emulator.handle = original
    assert emulator.jobs[name]["executionCount"] == 1 and backend.find(spec) is not None
    deletes = emulator.count("DELETE", name.rsplit("/", 1)[-1])
    assert backend.withdraw_unstarted(spec) is False  # run already: no delete is tried
    assert emulator.count("DELETE", name.rsplit("/", 1)[-1]) == deletes
    assert emulator.jobs[name]["executionCount"] == 1
