"""Punctual dispatch on Google Cloud and Azure (issue 14), against local emulators reached by the real SDK clients
over HTTP on 127.0.0.1, with no monitor ticking:

* Google: submit (functions-framework) hears a run's Scheduled event and creates a Cloud Tasks task with the real
  tasks_v2 client (ADC from a service-account key whose token endpoint is the emulator's); at the task's time the
  emulator POSTs it, with an OIDC token, to the ``delayed`` function (functions-framework), which starts the run.
* Azure: the submit function puts a message on the Storage queue (the real azure-storage-queue client over TLS),
  invisible until the run's time; a stand-in for the Functions host's queue listener hands it to the ``delayed``
  queue-triggered function when it shows.

On each target a run cancelled, and one rescheduled, before their time are left alone by their stale triggers (the
rescheduled one is armed again for its new time). Lateness = the run's InfrastructurePending time − (scheduled time −
lead), printed, never asserted.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.entrypoints import azure_functions
from pushpool.entrypoints.azure_delay import StorageQueueTrigger
from pushpool.entrypoints.gcp_delay import CloudTasksTrigger, task_id
from pushpool.entrypoints.gcp_functions import tasks_trigger
from pushpool.errors import BackendError, BackendUnavailableError, ConfigurationError
from pushpool.localserver import free_port
from pushpool.providers.base import JobHandle
from pushpool.settings import Settings

from tests.arm_emulator import TOKEN as AZURE_TOKEN
from tests.arm_emulator import FakeCredential
from tests.cloudtasks_emulator import CloudTasksEmulator, Sink
from tests.e2e.test_cloudrun_functions import Function, _key_file, _signed_by
from tests.helpers import PrefectHelper, make_deps
from tests.storage_queue_emulator import StorageQueueEmulator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "pushpool-test"
TASKS_SA = f"pushpool-tasks@{PROJECT}.iam.gserviceaccount.com"
TOKEN = "delay-webhook-token"
LEAD = 3.0  # the process pool template's dispatch_lead_seconds
# How long before its dispatch time a test's run is made: making three runs and delivering their webhooks must fit in
# it (3 s did not, once, in a full run with the load average at 9: a run already due is submitted, not deferred).
AHEAD = 8.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _scheduled(prefect: PrefectHelper, dep: str, at: dt.datetime) -> str:
    return prefect.create_run(dep, state={"type": "SCHEDULED", "state_details": {"scheduled_time": at.isoformat()}})


def _lateness(prefect: PrefectHelper, run_id: str, due: dt.datetime) -> float:
    accepted = next(
        s
        for s in prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
        if s["name"] == "InfrastructurePending"
    )
    return (_time(accepted["timestamp"]) - (due - dt.timedelta(seconds=LEAD))).total_seconds()


def _stop_jobs(jobs_dir: Path, prefect: PrefectHelper, run_ids: list[str]) -> None:
    deps = make_deps(prefect.api_url, jobs_dir.parent)
    try:
        for run_id in run_ids:
            pid = prefect.read_run(run_id)["infrastructure_pid"]
            if pid:
                deps.backend("process").cancel(JobHandle("process", pid), grace_seconds=1)
    finally:
        deps.orchestrator.close()


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- Google Cloud Tasks ---------------------------------------------------------------------------------------------


@pytest.fixture
def tasks():
    emulator = CloudTasksEmulator(act_as={TASKS_SA}).start()
    yield emulator
    emulator.stop()


def _trigger(emulator: CloudTasksEmulator, url: str, queue: str | None = None) -> CloudTasksTrigger:
    queue = queue or emulator.add_queue(PROJECT, "us-central1", "pushpool-delay")
    return CloudTasksTrigger(queue, url, TASKS_SA, endpoint=emulator.endpoint, credentials=AnonymousCredentials())


def test_a_task_is_named_from_run_and_time_so_a_duplicate_arm_makes_no_second_task(tasks: CloudTasksEmulator) -> None:
    sink = Sink()
    try:
        trigger = _trigger(tasks, sink.url)
        run_id, at = "3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now() + dt.timedelta(seconds=1)
        trigger.arm(run_id, at)
        trigger.arm(run_id, at)  # the monitor's look-ahead after the Scheduled event: ALREADY_EXISTS, not an error
        later = at + dt.timedelta(seconds=1)
        trigger.arm(run_id, later)  # rescheduled: a task of its own
        assert tasks.count("POST", "/tasks") == 3  # one call per arm
        assert sorted(n.rsplit("/", 1)[-1] for n in tasks.tasks) == sorted(
            [task_id(run_id, at), task_id(run_id, later)]
        )
        sent = tasks.bodies[0]["task"]
        assert sent["httpRequest"]["oidcToken"] == {"serviceAccountEmail": TASKS_SA, "audience": sink.url}
        assert _time(sent["scheduleTime"]) == at
        assert json.loads(base64.b64decode(sent["httpRequest"]["body"])) == {
            "flow_run_id": run_id,
            "at": at.isoformat(),
        }
        _wait(lambda: len(sink.received) == 2, 10, "two deliveries")
        time.sleep(0.3)
        assert len(sink.received) == 2  # the duplicate arm delivered nothing more
        body, headers, when = sink.received[0]
        assert body["flow_run_id"] == run_id and when >= at
        claims = headers["Authorization"].removeprefix("Bearer ").split(".")[1]
        assert json.loads(base64.urlsafe_b64decode(claims + "==")) | {"exp": 0} == {
            "iss": "https://accounts.google.com",
            "aud": sink.url,
            "email": TASKS_SA,
            "exp": 0,
        }
    finally:
        sink.stop()


def test_cloud_tasks_refusals_become_pushpool_errors_and_leave_no_task(tasks: CloudTasksEmulator) -> None:
    missing = f"projects/{PROJECT}/locations/us-central1/queues/nope"
    with pytest.raises(BackendError, match="404"):
        _trigger(tasks, "https://x.example/delayed", queue=missing).arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now())
    stranger = CloudTasksTrigger(
        tasks.add_queue(PROJECT, "us-central1", "q2"),
        "https://x.example/delayed",
        f"someone-else@{PROJECT}.iam.gserviceaccount.com",  # the caller may not act as it
        endpoint=tasks.endpoint,
        credentials=AnonymousCredentials(),
    )
    with pytest.raises(BackendError, match="403") as refused:
        stranger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now())
    assert not isinstance(refused.value, BackendUnavailableError)
    assert not tasks.tasks


@pytest.mark.parametrize(
    ("queue", "url", "account", "fragment"),
    [
        ("pushpool-delay", "https://x.example/d", "a@b", "PUSHPOOL_TASKS_QUEUE"),
        (f"projects/{PROJECT}/locations/us-central1/queues/q", "ftp://x", "a@b", "PUSHPOOL_TASKS_URL"),
        (f"projects/{PROJECT}/locations/us-central1/queues/q", "https://x.example/d", "", "SERVICE_ACCOUNT"),
    ],
)
def test_a_malformed_delay_queue_is_a_configuration_error(queue: str, url: str, account: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        CloudTasksTrigger(queue, url, account)


def test_the_gcp_functions_need_all_of_the_delay_queue_settings_or_none() -> None:
    base = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    assert tasks_trigger(Settings.from_env(base)) is None
    with pytest.raises(ConfigurationError, match="PUSHPOOL_TASKS_URL, PUSHPOOL_TASKS_SERVICE_ACCOUNT"):
        tasks_trigger(Settings.from_env({**base, "PUSHPOOL_TASKS_QUEUE": f"projects/{PROJECT}/locations/l/queues/q"}))


def test_gcp_a_run_scheduled_ahead_is_started_at_its_time_by_its_cloud_task_and_stale_tasks_do_nothing(
    prefect_api: str, prefect: PrefectHelper, pool: str, tasks: CloudTasksEmulator, tmp_path: Path
) -> None:
    queue = tasks.add_queue(PROJECT, "us-central1", "pushpool-delay")
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(tmp_path / "prefect")),
        "PUSHPOOL_WEBHOOK_TOKEN": TOKEN,
        "PUSHPOOL_POOL_TYPES": "process:push",
        "PUSHPOOL_PROCESS_DIR": str(tmp_path / "jobs"),
        "PUSHPOOL_TASKS_QUEUE": queue,
        "PUSHPOOL_TASKS_SERVICE_ACCOUNT": TASKS_SA,
        "PUSHPOOL_CLOUD_TASKS_ENDPOINT": tasks.endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": str(_key_file(tmp_path / "key.json", f"{tasks.endpoint}/token")),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "NO_GCE_CHECK": "True",
    }
    # Tasks go to the delayed function, which arms too (a run rescheduled later): every function gets its URL.
    port = free_port()
    env["PUSHPOOL_TASKS_URL"] = f"http://127.0.0.1:{port}/"
    delayed = Function("delayed", env, tmp_path / "delayed.log", port=port)
    submit = Function("submit", env, tmp_path / "submit.log")
    runs: list[str] = []
    try:
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
        due = _now() + dt.timedelta(seconds=LEAD + AHEAD)
        runs = [_scheduled(prefect, dep, due) for _ in range(3)]
        started, cancelled, moved = runs
        for run_id in runs:  # Prefect's automation tells submit of each Scheduled run
            answer = httpx.post(
                submit.url,
                json={"flow_run_id": run_id, "event": "prefect.flow-run.Scheduled"},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            assert answer.status_code == 200 and answer.json()["outcome"] == "deferred", answer.text
            assert "(trigger armed)" in answer.json()["detail"], answer.text
        assert len(tasks.tasks) == 3
        prefect.set_state(cancelled, "CANCELLED", force=True)
        later = _now() + dt.timedelta(hours=1)
        prefect.set_state(moved, "SCHEDULED", force=True, state_details={"scheduled_time": later.isoformat()})

        _wait(
            lambda: prefect.state(started)[0] == "PENDING", 30, f"the run to start: {delayed.log.read_text()[-2000:]}"
        )
        _wait(lambda: len([d for d in tasks.dispatches if d["status"] == 200]) >= 3, 10, "three dispatches")
        lateness = _lateness(prefect, started, due)
        print(f"\nGCP: Cloud Tasks-triggered run accepted {lateness:+.3f} s after its dispatch time")
        assert lateness >= -0.1  # never before its time
        assert prefect.state(cancelled)[0] == "CANCELLED" and prefect.state(moved) == ("SCHEDULED", "Scheduled")
        assert prefect.read_run(cancelled)["infrastructure_pid"] is None
        assert prefect.read_run(moved)["infrastructure_pid"] is None
        # The stale task of the rescheduled run armed a task for its new time (and only that one more).
        new_task = task_id(moved, later - dt.timedelta(seconds=LEAD))
        assert len(tasks.tasks) == 4 and any(name.endswith(new_task) for name in tasks.tasks), list(tasks.tasks)
        assert all(d["status"] == 200 and d["attempt"] == 0 for d in tasks.dispatches)
        assert _signed_by(tasks.authorizations) == {f"pushpool-submit@{PROJECT}.iam.gserviceaccount.com"}  # ADC
    finally:
        submit.stop()
        delayed.stop()
        _stop_jobs(tmp_path / "jobs", prefect, runs)


# -- Azure Storage queue --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure_app() -> dict:
    spec = importlib.util.spec_from_file_location("azure_function_app_delay", ROOT / "functions/azure/function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f for f in module.app.get_functions()}


@pytest.fixture
def storage(tmp_path: Path):
    emulator = StorageQueueEmulator(tmp_path).start()
    yield emulator
    emulator.stop()


class QueueListener:
    """What the Functions host's queue listener does for the ``delayed`` function: read the queue (here every
    0.1 s; host.json bounds the host's back-off at 2 s), hand each message to the function, delete it if it returned."""

    def __init__(self, url: str, cert: Path, function) -> None:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        self.client = QueueClient.from_queue_url(
            url,
            credential=FakeCredential(),
            message_decode_policy=TextBase64DecodePolicy(),
            connection_verify=str(cert),
        )
        self.function = function
        self.handled: list[tuple[str, dt.datetime]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for message in self.client.receive_messages(messages_per_page=16, visibility_timeout=30):
                when = _now()
                self.function(func.QueueMessage(id=message.id, body=message.content.encode()))
                self.client.delete_message(message)
                self.handled.append((json.loads(message.content)["flow_run_id"], when))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_a_storage_queue_message_is_sent_once_per_arm_invisible_until_its_time(storage: StorageQueueEmulator) -> None:
    url = storage.add_queue("pushpool-delay")
    now = _now()
    trigger = StorageQueueTrigger(
        url, credential=FakeCredential(), client_options={"connection_verify": str(storage.cert)}, now=lambda: now
    )
    trigger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", now + dt.timedelta(seconds=90.7))
    trigger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", now + dt.timedelta(days=9))  # beyond reach: at most 7 days
    assert storage.count("POST", "/messages") == 2  # one call per arm
    first, second = storage.sent("pushpool-delay")
    assert (first["visibility"], first["ttl"]) == (90, 90 + 24 * 3600)  # rounded down: up to a second early
    assert second["visibility"] == 7 * 24 * 3600
    decoded = json.loads(base64.b64decode(first["text"]))  # base64, as the Functions queue trigger decodes it
    assert decoded["flow_run_id"] == "3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c"
    assert set(storage.authorizations) == {f"Bearer {AZURE_TOKEN}"}  # the credential's token, over TLS


def test_storage_queue_refusals_become_pushpool_errors(storage: StorageQueueEmulator) -> None:
    missing = f"{storage.account_url}/nope"
    trigger = StorageQueueTrigger(
        missing, credential=FakeCredential(), client_options={"connection_verify": str(storage.cert)}
    )
    with pytest.raises(BackendError, match="QueueNotFound"):
        trigger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now())
    with pytest.raises(ConfigurationError, match="PUSHPOOL_DELAY_QUEUE_URL"):
        StorageQueueTrigger("pushpool-delay")


def test_azure_a_run_scheduled_ahead_is_started_at_its_time_by_its_queue_message_and_stale_ones_do_nothing(
    monkeypatch: pytest.MonkeyPatch,
    prefect_api: str,
    prefect: PrefectHelper,
    pool: str,
    storage: StorageQueueEmulator,
    azure_app: dict,
    tmp_path: Path,
) -> None:
    url = storage.add_queue("pushpool-delay")
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("PUSHPOOL_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PUSHPOOL_POOL_TYPES", "process:push")
    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("PUSHPOOL_DELAY_QUEUE_URL", url)
    azure_functions.azure_deps.cache_clear()
    deps, _ = azure_functions.azure_deps()
    assert isinstance(deps.trigger, StorageQueueTrigger) and deps.trigger.queue_url == url
    # The managed identity, and Storage's certificate, are this machine's stand-ins (no IMDS here).
    deps.trigger = StorageQueueTrigger(
        url, credential=FakeCredential(), client_options={"connection_verify": str(storage.cert)}
    )
    assert json.loads(json.dumps(azure_app["delayed"].get_bindings_dict()["bindings"][0], default=str)) == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "message",
        "queueName": "%PUSHPOOL_DELAY_QUEUE_NAME%",
        "connection": "PushpoolDelayQueue",
    }
    listener = QueueListener(url, storage.cert, azure_app["delayed"].get_user_function())
    submit = azure_app["submit"].get_user_function()
    runs: list[str] = []
    try:
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
        due = _now() + dt.timedelta(seconds=LEAD + AHEAD)
        runs = [_scheduled(prefect, dep, due) for _ in range(3)]
        started, cancelled, moved = runs
        for run_id in runs:
            body = json.dumps({"flow_run_id": run_id, "event": "prefect.flow-run.Scheduled"}).encode()
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            answer = submit(func.HttpRequest("POST", "http://localhost/api/submit", headers=headers, body=body))
            assert answer.status_code == 200, answer.get_body()
            assert "(trigger armed)" in json.loads(answer.get_body())["detail"]
        assert storage.count("POST", "/messages") == 3
        prefect.set_state(cancelled, "CANCELLED", force=True)
        later = _now() + dt.timedelta(hours=1)
        prefect.set_state(moved, "SCHEDULED", force=True, state_details={"scheduled_time": later.isoformat()})

        _wait(lambda: prefect.state(started)[0] == "PENDING", 30, "the run to start")
        _wait(lambda: len(listener.handled) >= 3, 10, "three deliveries")
        lateness = _lateness(prefect, started, due)
        print(f"\nAzure: Storage queue-triggered run accepted {lateness:+.3f} s after its dispatch time")
        assert lateness >= -0.1  # shown up to a second early, waited out by submit: never before its time
        assert prefect.state(cancelled)[0] == "CANCELLED" and prefect.state(moved) == ("SCHEDULED", "Scheduled")
        assert prefect.read_run(cancelled)["infrastructure_pid"] is None
        assert prefect.read_run(moved)["infrastructure_pid"] is None
        # The stale message of the rescheduled run armed one for its new time, invisible for about an hour.
        assert storage.count("POST", "/messages") == 4
        assert storage.sent("pushpool-delay")[-1]["visibility"] > 3500
    finally:
        listener.stop()
        azure_functions.azure_deps.cache_clear()
        _stop_jobs(tmp_path / "jobs", prefect, runs)
