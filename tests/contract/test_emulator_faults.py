"""The clouds' bad days (tests/faults.py) as the real SDK clients meet them, and as pushpool's backends translate them.

Each emulator answers a fault the way its provider's API spells it; these tests hold the *SDK's* reaction to that
answer to what the provider documents (its exception type, its own retries, Retry-After honoured), so a wrong
spelling fails here, not in production. Then each backend's boundary must turn the fault into pushpool's retryable
errors (shared/pushpool/errors.py): throttling and 5xx BackendUnavailableError, a quota QuotaExceededError — never a
plain BackendError, which crashes a run for a passing bad day.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pushpool.errors import BackendUnavailableError, QuotaExceededError

from tests.conftest import AZ_RG, AZ_SUB
from tests.faults import Faults

# -- AWS: a WSGI layer in front of moto server (tests/emulators.py's AwsFaults) ----------------------------------------


@pytest.fixture
def aws_faults(aws: dict):
    from tests.emulators import MotoServer

    assert MotoServer.instance is not None
    faults = MotoServer.instance.bad_days
    yield faults
    faults.clear()


def _ecs(retries: int):
    """An ECS client in botocore's standard retry mode (``max_attempts``: the retries after the first call)."""
    return boto3.client("ecs", config=Config(retries={"mode": "standard", "max_attempts": retries}))


def test_aws_throttling_is_a_throttling_exception_after_botocores_standard_retries(aws_faults: Faults) -> None:
    aws_faults.fail_next("ListClusters", "throttle", times=100)
    with pytest.raises(ClientError) as caught:
        _ecs(2).list_clusters()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2  # botocore retried it as throttling
    assert aws_faults.count() == 3


@pytest.mark.parametrize(("kind", "code", "status"), [("unavailable", "ServiceUnavailableException", 503),
                                                      ("internal", "ServerException", 500)])  # fmt: skip
def test_aws_5xx_is_retried_by_botocore_then_surfaces_with_its_code(
    aws_faults: Faults, kind: str, code: str, status: int
) -> None:
    aws_faults.fail_next("ListClusters", kind, times=1)
    assert "clusterArns" in _ecs(2).list_clusters()  # once: botocore's retry absorbs it
    aws_faults.fail_next("ListClusters", kind, times=100)
    with pytest.raises(ClientError) as caught:
        _ecs(1).list_clusters()
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize("kind", ["throttle", "unavailable", "internal"])
def test_ecs_backend_translates_aws_bad_days_to_retryable_errors(aws_faults: Faults, aws: dict, kind: str) -> None:
    from pushpool.providers.ecs.backend import EcsBackend

    from tests.contract.test_ecs_backend import EcsDriver

    aws_faults.fail_next("RunTask", kind, times=100)
    with pytest.raises(BackendUnavailableError) as caught:
        EcsBackend(max_attempts=2, sleep=lambda _: None).submit(EcsDriver(aws, aws["cluster"]).spec())
    assert caught.value.retryable and caught.value.backend == "ecs"


def test_ecs_tasks_show_in_list_tasks_late(aws_faults: Faults, aws: dict) -> None:
    from pushpool.providers.ecs.backend import EcsBackend

    from tests.contract.test_ecs_backend import EcsDriver

    spec = EcsDriver(aws, aws["cluster"]).spec()
    handle = EcsBackend().submit(spec)
    aws_faults.list_after(3600)
    assert EcsBackend().find(spec) is None  # started, not listed yet (ListTasks is eventually consistent)
    aws_faults.list_after(0)
    assert EcsBackend().find(spec) == handle


# -- Google: Cloud Run Admin API v2 (tests/gcp_emulator.py) ------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_run():
    from tests.gcp_emulator import CloudRunEmulator

    found = CloudRunEmulator().start()
    yield found
    found.stop()


@pytest.fixture
def run_faults(cloud_run):
    yield cloud_run.bad_days
    cloud_run.bad_days.clear()


def _jobs_client(cloud_run):
    from tests.contract.test_cloudrun_backend import make_backend

    return make_backend(cloud_run)._client("jobs")


PARENT = "projects/pushpool-test/locations/us-central1"


def test_google_throttling_is_resource_exhausted_with_the_rate_limit_reason(cloud_run, run_faults: Faults) -> None:
    from google.api_core import exceptions

    run_faults.fail_next("GET */jobs/*", "throttle")
    with pytest.raises(exceptions.TooManyRequests) as caught:
        _jobs_client(cloud_run).get_job(name=f"{PARENT}/jobs/anything", retry=None)
    assert caught.value.code == 429 and caught.value.reason == "RATE_LIMIT_EXCEEDED"
    assert caught.value.response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    run_faults.fail_next("GET */jobs/*", "unavailable")
    with pytest.raises(exceptions.ServiceUnavailable) as unavailable:
        _jobs_client(cloud_run).get_job(name=f"{PARENT}/jobs/anything", retry=None)
    assert unavailable.value.response.json()["error"]["status"] == "UNAVAILABLE"


def test_cloud_run_operations_stay_in_progress_and_jobs_show_in_lists_late(cloud_run, run_faults: Faults) -> None:
    from tests.contract.test_cloudrun_backend import make_backend, make_spec

    run_faults.operations_take(2)  # google-api-core polls at 1 s, then 1.5 s …: two polls in progress cost 2.5 s
    run_faults.list_after(3600)
    polls = cloud_run.count("GET", "/operations/")
    handle = make_backend(cloud_run).submit(make_spec())
    assert cloud_run.count("GET", "/operations/") - polls == 3  # CreateJob's operation: done: false twice, then done
    job = handle.id.split("/executions/")[0]
    listed = [j.name for j in _jobs_client(cloud_run).list_jobs(parent=PARENT)]
    assert job not in listed  # created, not listed yet
    run_faults.list_after(0)
    assert job in [j.name for j in _jobs_client(cloud_run).list_jobs(parent=PARENT)]


def test_cloud_run_backend_translates_throttling_5xx_and_the_jobs_quota(cloud_run, run_faults: Faults) -> None:
    from google.api_core import exceptions

    from tests.contract.test_cloudrun_backend import make_backend, make_spec

    backend = make_backend(cloud_run, retry_timeout=0.3)
    for kind in ("throttle", "unavailable", "internal"):
        run_faults.fail_next("POST */jobs", kind, times=1000)
        with pytest.raises(BackendUnavailableError):
            backend.submit(make_spec())
        run_faults.clear()
    with cloud_run.lock:
        existing = sum(1 for n in cloud_run.jobs if n.startswith(PARENT + "/jobs/"))
    run_faults.limit(existing)  # Cloud Run's jobs-per-region quota, reached
    spec = make_spec()
    from google.cloud.run_v2 import Job

    with pytest.raises(exceptions.TooManyRequests) as caught:
        _jobs_client(cloud_run).create_job(
            parent=PARENT,
            job_id=f"quota-{uuid.uuid4().hex[:8]}",
            job=Job.from_json(json.dumps(backend._job_message(spec, spec.config))),  # the REST body as a message
            retry=None,
        )
    assert caught.value.reason == "RESOURCE_QUOTA_EXCEEDED"
    with pytest.raises(QuotaExceededError) as quota:
        backend.submit(make_spec())
    assert "quota" in quota.value.one_line().lower()


# -- Azure Resource Manager: ACI (tests/arm_emulator.py) ---------------------------------------------------------------


@pytest.fixture
def arm_faults(arm):
    yield arm.bad_days
    arm.bad_days.clear()


def _aci_client(aci_options: dict, **retry):
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    return ContainerInstanceManagementClient(
        aci_options["credential"],
        AZ_SUB,
        base_url=aci_options["base_url"],
        connection_verify=aci_options["connection_verify"],
        retry_backoff_factor=0.01,
        **retry,
    )


def test_arm_throttling_is_a_429_with_its_code_after_azure_cores_retries(
    arm, arm_faults: Faults, aci_options: dict
) -> None:
    from azure.core.exceptions import HttpResponseError

    arm_faults.fail_next("GET */containerGroups/*", "throttle", times=100)
    with pytest.raises(HttpResponseError) as caught:
        _aci_client(aci_options, retry_total=2).container_groups.get(AZ_RG, "throttled")
    assert caught.value.status_code == 429 and caught.value.error.code == "TooManyRequests"
    assert arm_faults.count() == 3  # azure-core's RetryPolicy retried the 429 twice
    arm_faults.clear()
    arm_faults.fail_next("GET */containerGroups/*", "unavailable", times=100)
    with pytest.raises(HttpResponseError) as unavailable:
        _aci_client(aci_options, retry_total=0).container_groups.get(AZ_RG, "down")
    assert unavailable.value.status_code == 503 and unavailable.value.error.code == "ServiceUnavailable"


def test_arm_retry_after_is_honoured_by_azure_core(arm, arm_faults: Faults, aci_options: dict) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    arm_faults.fail_next("GET */containerGroups/*", "throttle", times=1, retry_after=1)
    started = time.monotonic()
    with pytest.raises(ResourceNotFoundError):  # the retry reached ARM: no such group
        _aci_client(aci_options, retry_total=2).container_groups.get(AZ_RG, f"nothing-{uuid.uuid4().hex[:8]}")
    assert time.monotonic() - started >= 0.9  # Retry-After: 1, where the backoff alone waits ~0.01 s


def test_arm_operations_stay_in_progress_and_groups_show_in_lists_late(
    arm, arm_faults: Faults, aci_options: dict
) -> None:
    from azure.mgmt.containerinstance import models

    arm_faults.operations_take(3)
    arm_faults.list_after(3600)
    client = _aci_client(aci_options)
    name = f"lro-{uuid.uuid4().hex[:8]}"
    container = models.Container(
        name="c",
        image="flows:1",
        resources=models.ResourceRequirements(requests=models.ResourceRequests(memory_in_gb=1, cpu=1)),
    )
    group = models.ContainerGroup(location="westeurope", os_type="Linux", containers=[container], tags={"test": "lro"})
    polls = arm.count("operation")
    client.container_groups.begin_create_or_update(AZ_RG, name, group, polling_interval=0).result()
    assert arm.count("operation") - polls == 4  # InProgress three times, then Succeeded
    assert name not in [g.name for g in client.container_groups.list_by_resource_group(AZ_RG)]
    arm_faults.list_after(0)
    assert name in [g.name for g in client.container_groups.list_by_resource_group(AZ_RG)]
    client.container_groups.begin_delete(AZ_RG, name).result()  # the emulator is the session's: leave it as found


def test_aci_backend_translates_throttling_5xx_and_the_group_quota(arm, arm_faults: Faults, aci_options: dict) -> None:
    from pushpool.providers.aci.backend import AciBackend

    from tests.contract.test_aci_backend import AciDriver

    backend = AciBackend(**{**aci_options, "retry_total": 1})
    for kind in ("throttle", "unavailable", "internal"):
        arm_faults.fail_next("PUT */containerGroups/*", kind, times=100)
        with pytest.raises(BackendUnavailableError):
            backend.submit(AciDriver(arm).spec())
        arm_faults.clear()
    arm_faults.limit(sum(1 for k in arm.groups if k[0] == AZ_SUB))
    with pytest.raises(QuotaExceededError) as caught:
        backend.submit(AciDriver(arm).spec())
    assert "ContainerGroupQuotaReached" in caught.value.one_line()


# -- Modal: gRPC (tests/modal_emulator.py) -----------------------------------------------------------------------------


@pytest.fixture
def modal_faults(modal_server):
    modal_server.run_commands = False
    yield modal_server.bad_days
    modal_server.bad_days.clear()
    modal_server.run_commands = True


def test_modal_sdk_raises_its_own_exceptions_for_grpc_bad_days(modal_server, modal_faults: Faults) -> None:
    import modal
    import modal.exception as me

    modal_faults.fail_next("AppGetOrCreate", "throttle")
    with pytest.raises(me.ResourceExhaustedError):
        modal.App.lookup(f"faults-{uuid.uuid4().hex[:8]}", create_if_missing=True)
    modal_faults.fail_next("AppGetOrCreate", "unavailable", times=1)
    assert modal.App.lookup(f"faults-{uuid.uuid4().hex[:8]}", create_if_missing=True).app_id  # retried by the SDK
    modal_faults.fail_next("AppGetOrCreate", "unavailable", times=100)
    with pytest.raises(me.ServiceError):
        modal.App.lookup(f"faults-{uuid.uuid4().hex[:8]}", create_if_missing=True)
    assert modal_faults.count("unavailable") >= 3  # the SDK's transient retries, then its exception


def test_modal_backend_translates_bad_days_and_the_concurrency_quota(modal_server, modal_faults: Faults) -> None:
    from pushpool.providers.modal.backend import ModalBackend

    from tests.contract.test_modal_backend import ModalDriver

    driver, backend = ModalDriver(modal_server), ModalBackend()
    backend.throttle_waits = (0.01, 0.01)
    app = f"pushpool-faults-{uuid.uuid4().hex[:8]}"
    spec = driver.spec()
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"app_name": app}))
    modal_faults.fail_next("SandboxCreate*", "throttle", times=2)  # the SDK does not retry it: the backend does
    throttled = dataclasses.replace(spec, attempt=str(uuid.uuid4()))
    assert backend.submit(throttled).id and driver.jobs_of(throttled) == 1
    backend.cancel(backend.find(throttled), grace_seconds=1)
    modal_faults.fail_next("SandboxCreate*", "throttle", times=100)
    with pytest.raises(QuotaExceededError):
        backend.submit(spec)
    assert modal_faults.count("throttle") == 2 + 3, modal_faults.injected  # bounded: three tries
    modal_faults.clear()
    modal_faults.fail_next("SandboxCreate*", "unavailable", times=100)
    with pytest.raises(BackendUnavailableError):
        backend.submit(spec)
    modal_faults.clear()
    modal_faults.limit(1)  # one running sandbox per app
    first = backend.submit(spec)
    with pytest.raises(QuotaExceededError) as caught:
        backend.submit(dataclasses.replace(spec, attempt=str(uuid.uuid4())))
    assert "Concurrency limit" in caught.value.one_line()
    modal_faults.list_after(3600)
    assert backend.find(spec) is None  # created, not listed yet
    modal_faults.list_after(0)
    assert backend.find(spec) == first


# -- Coiled: REST (tests/coiled_emulator.py), called with httpx by pushpool's CoiledApi --------------------------------


@pytest.fixture
def coiled_faults(coiled_server):
    coiled_server.run_commands = False
    yield coiled_server.bad_days
    coiled_server.bad_days.clear()
    coiled_server.run_commands = True


def test_coiled_throttling_carries_retry_after(coiled_server, coiled_faults: Faults) -> None:
    import httpx

    from tests.conftest import COILED_TOKEN

    coiled_faults.fail_next("GET /api/v2/user/me", "throttle", retry_after=2)
    answer = httpx.get(f"{coiled_server.url}/api/v2/user/me", headers={"Authorization": f"ApiToken {COILED_TOKEN}"})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    assert "throttled" in answer.json()["detail"]


@pytest.mark.parametrize("kind", ["throttle", "unavailable", "internal"])
def test_coiled_backend_retries_then_translates_bad_days(coiled_server, coiled_faults: Faults, kind: str) -> None:
    from pushpool.providers.coiled.backend import CoiledBackend

    from tests.contract.test_coiled_backend import CoiledDriver

    driver = CoiledDriver(coiled_server)
    coiled_faults.fail_next("POST /api/v2/jobs/compressed", kind, times=1)
    spec = dataclasses.replace(driver.spec(), new_attempt=True)
    handle = CoiledBackend().submit(spec)  # once: retried
    assert driver.jobs_of(spec) == 1 and handle.id
    coiled_faults.fail_next("POST /api/v2/jobs/compressed", kind, times=100)
    with pytest.raises(BackendUnavailableError):
        CoiledBackend().submit(dataclasses.replace(driver.spec(), new_attempt=True))


def test_coiled_clusters_found_by_name_late(coiled_server, coiled_faults: Faults) -> None:
    from pushpool.providers.coiled.backend import CoiledBackend

    from tests.contract.test_coiled_backend import CoiledDriver

    spec = dataclasses.replace(CoiledDriver(coiled_server).spec(), new_attempt=True)
    handle = CoiledBackend().submit(spec)
    coiled_faults.list_after(3600)
    assert CoiledBackend().find(spec) is None  # another process, before Coiled shows the cluster by name
    coiled_faults.list_after(0)
    assert CoiledBackend().find(spec) == handle


# -- the delay queues: Cloud Tasks and Azure Storage queues ------------------------------------------------------------


def test_cloud_tasks_bad_days_reach_the_trigger_as_retryable_errors() -> None:
    import datetime as dt

    from google.api_core import exceptions

    from tests.contract.test_delayed_triggers import CloudTasksDriver

    driver = CloudTasksDriver()
    try:
        at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        driver.emulator.bad_days.fail_next("POST */tasks", "throttle")
        with pytest.raises(exceptions.TooManyRequests):
            driver.trigger.client.create_task(parent=driver.trigger.queue, task=driver.trigger.task("r", at))
        for kind in ("throttle", "unavailable"):
            driver.emulator.bad_days.fail_next("POST */tasks", kind)
            with pytest.raises(BackendUnavailableError):
                driver.trigger.arm(str(uuid.uuid4()), at)
    finally:
        driver.close()


def test_storage_queue_server_busy_reaches_the_trigger_as_a_retryable_error(tmp_path) -> None:
    import datetime as dt

    from azure.core.exceptions import HttpResponseError
    from pushpool.entrypoints.azure_delay import StorageQueueTrigger

    from tests.arm_emulator import FakeCredential
    from tests.contract.test_delayed_triggers import StorageQueueDriver

    driver = StorageQueueDriver(tmp_path)
    try:
        url = f"{driver.emulator.account_url}/pushpool-delay"
        options = {"connection_verify": str(driver.emulator.cert), "retry_total": 0}
        trigger = StorageQueueTrigger(url, credential=FakeCredential(), client_options=options)
        driver.emulator.bad_days.fail_next("POST *", "throttle")
        with pytest.raises(HttpResponseError) as caught:
            trigger.client.send_message("x")
        assert caught.value.status_code == 503 and caught.value.error_code == "ServerBusy"
        retried = {"connection_verify": str(driver.emulator.cert), "retry_total": 1, "initial_backoff": 0,
                   "increment_base": 0, "random_jitter_range": 0}  # fmt: skip
        driver.emulator.bad_days.fail_next("POST *", "throttle")
        StorageQueueTrigger(url, credential=FakeCredential(), client_options=retried).client.send_message("y")
        assert driver.emulator.bad_days.count() == 2  # ServerBusy, retried by the storage SDK's ExponentialRetry
        driver.emulator.bad_days.fail_next("POST *", "throttle")
        with pytest.raises(BackendUnavailableError) as translated:
            trigger.arm(str(uuid.uuid4()), dt.datetime.now(dt.timezone.utc))
        assert "ServerBusy" in translated.value.one_line()
    finally:
        driver.close()
