"""One contract for every ``punctual.DelayedTrigger``: serve's TimerTrigger (real threads), AWS's SqsTrigger (moto
over HTTP, read the way Lambda's event source mapping reads the queue), Google's CloudTasksTrigger (the real
tasks_v2 client against tests/cloudtasks_emulator.py, which POSTs each task to a local HTTP target at its time),
Azure's StorageQueueTrigger (the real azure-storage-queue client over TLS against tests/storage_queue_emulator.py,
read the way the Functions host's queue listener reads it) and the recording double the use-case tests
use. A trigger delivers each armed run once, soon after its time (or at most ``early_seconds`` before it, which submit
waits out), in time order."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Protocol

import boto3
import pytest
from pushpool.entrypoints.aws_delay import SqsTrigger
from pushpool.entrypoints.azure_delay import StorageQueueTrigger
from pushpool.entrypoints.gcp_delay import CloudTasksTrigger
from pushpool.entrypoints.timers import TimerTrigger
from pushpool.usecases.triggers import DelayedTrigger

from tests.fakes import RecordingTrigger

# How late a delivery may be here: SQS delays are whole seconds (rounded up), plus a long poll's round trip.
LATE = 2.5


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key(body: dict) -> str:
    """What a delivery names: the run, or ``pool:<name>`` for a pool trigger's sweep."""
    return body.get("flow_run_id") or f"pool:{body['work_pool']}"


class Driver(Protocol):
    trigger: DelayedTrigger

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        """Wait until ``count`` deliveries were seen (or ``timeout``): (run id, when it was delivered)."""

    def close(self) -> None: ...


class TimerDriver:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dt.datetime]] = []
        self.trigger = TimerTrigger(lambda run_id: self.seen.append((run_id, now()))).start()

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.seen)

    def close(self) -> None:
        self.trigger.stop()


class SqsDriver:
    def __init__(self) -> None:
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName=f"pushpool-delay-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        self.trigger = SqsTrigger(self.url, client=self.sqs)
        self.seen: list[tuple[str, dt.datetime]] = []

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            answer = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                self.seen.append((_key(json.loads(message["Body"])), now()))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return list(self.seen)

    def close(self) -> None:
        self.sqs.delete_queue(QueueUrl=self.url)


class CloudTasksDriver:
    """Cloud Tasks delivers over HTTP: the target is a local sink that records each POST."""

    def __init__(self) -> None:
        from google.auth.credentials import AnonymousCredentials

        from tests.cloudtasks_emulator import CloudTasksEmulator, Sink

        self.emulator, self.sink = CloudTasksEmulator().start(), Sink()
        queue = self.emulator.add_queue("pushpool-test", "us-central1", "pushpool-delay")
        self.trigger = CloudTasksTrigger(
            queue,
            self.sink.url,
            "pushpool-tasks@pushpool-test.iam.gserviceaccount.com",
            endpoint=self.emulator.endpoint,
            credentials=AnonymousCredentials(),
        )

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        deadline = time.monotonic() + timeout
        while len(self.sink.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return [(_key(body), when) for body, _, when in list(self.sink.received)]

    def close(self) -> None:
        self.emulator.stop()
        self.sink.stop()


class StorageQueueDriver:
    """Read the way the Functions host's queue listener reads the queue (base64 messages, deleted once handled)."""

    def __init__(self, workdir) -> None:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        from tests.arm_emulator import FakeCredential
        from tests.storage_queue_emulator import StorageQueueEmulator

        self.emulator = StorageQueueEmulator(workdir).start()
        url = self.emulator.add_queue("pushpool-delay")
        options = {"connection_verify": str(self.emulator.cert)}
        self.trigger = StorageQueueTrigger(url, credential=FakeCredential(), client_options=options)
        self.host = QueueClient.from_queue_url(
            url, credential=FakeCredential(), message_decode_policy=TextBase64DecodePolicy(), **options
        )
        self.seen: list[tuple[str, dt.datetime]] = []

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            for message in self.host.receive_messages(messages_per_page=32, visibility_timeout=30):
                self.seen.append((_key(json.loads(message.content)), now()))
                self.host.delete_message(message)
            time.sleep(0.05)
        return list(self.seen)

    def close(self) -> None:
        self.emulator.stop()


class RecordingDriver:
    """The double delivers what is due when asked (the use-case tests ask with their FixedClock's time)."""

    def __init__(self) -> None:
        self.trigger = RecordingTrigger()
        self.seen: list[tuple[str, dt.datetime]] = []

    def deliveries(self, count: int, timeout: float) -> list[tuple[str, dt.datetime]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            self.seen += [(run_id, now()) for run_id in self.trigger.deliver_due(now())]
            time.sleep(0.02)
        return list(self.seen)

    def close(self) -> None:
        pass


@pytest.fixture(params=["timer", "sqs", "cloudtasks", "storagequeue", "recording"])
def driver(request: pytest.FixtureRequest) -> Driver:
    made: Driver
    if request.param == "sqs":
        request.getfixturevalue("moto_endpoint")
        made = SqsDriver()
    elif request.param == "cloudtasks":
        made = CloudTasksDriver()
    elif request.param == "storagequeue":
        made = StorageQueueDriver(request.getfixturevalue("tmp_path"))
    else:
        made = TimerDriver() if request.param == "timer" else RecordingDriver()
    yield made
    made.close()


def test_is_a_delayed_trigger(driver: Driver) -> None:
    assert isinstance(driver.trigger, DelayedTrigger)
    limit = driver.trigger.max_delay_seconds
    assert limit is None or limit >= 60  # at least a monitor tick ahead, or the look-ahead could not use it
    assert 0 <= driver.trigger.early_seconds <= 1.5  # what submit waits out (http.EARLY_DELIVERY_SECONDS)


def test_a_run_is_delivered_once_not_before_its_time_and_soon_after(driver: Driver) -> None:
    run_id, at = str(uuid.uuid4()), now() + dt.timedelta(seconds=1.5)
    driver.trigger.arm(run_id, at)
    (delivered,) = driver.deliveries(1, timeout=10)
    assert delivered[0] == run_id
    early = dt.timedelta(seconds=driver.trigger.early_seconds + 0.05)
    assert at - early <= delivered[1] <= at + dt.timedelta(seconds=LATE)
    assert len(driver.deliveries(2, timeout=2)) == 1  # once


def test_runs_are_delivered_in_the_order_of_their_times(driver: Driver) -> None:
    later, sooner = str(uuid.uuid4()), str(uuid.uuid4())
    start = now()
    driver.trigger.arm(later, start + dt.timedelta(seconds=3))
    driver.trigger.arm(sooner, start + dt.timedelta(seconds=1))
    seen = driver.deliveries(2, timeout=12)
    assert [run for run, _ in seen] == [sooner, later]


def test_a_run_in_the_past_is_delivered_at_once(driver: Driver) -> None:
    run_id = str(uuid.uuid4())
    driver.trigger.arm(run_id, now() - dt.timedelta(seconds=30))
    (delivered,) = driver.deliveries(1, timeout=5)
    assert delivered[0] == run_id


def test_a_run_armed_again_later_is_delivered_at_the_later_time(driver: Driver) -> None:
    """A stale delivery at the first time is allowed (submit finds the run not due and does nothing); a delivery at
    or after the new time must come."""
    run_id, first = str(uuid.uuid4()), now() + dt.timedelta(seconds=1)
    driver.trigger.arm(run_id, first)
    second = first + dt.timedelta(seconds=2)
    driver.trigger.arm(run_id, second)
    seen = driver.deliveries(1, timeout=10)
    if seen and seen[0][1] < second - dt.timedelta(seconds=driver.trigger.early_seconds + 0.05):  # the stale one
        seen = driver.deliveries(2, timeout=10)
    assert any(when >= second - dt.timedelta(seconds=driver.trigger.early_seconds + 0.05) for _, when in seen), seen


def test_concurrent_arming_loses_nothing(driver: Driver) -> None:
    runs = [str(uuid.uuid4()) for _ in range(20)]
    at = now() + dt.timedelta(seconds=1)
    threads = [threading.Thread(target=driver.trigger.arm, args=(run_id, at)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = driver.deliveries(len(runs), timeout=15)
    assert sorted(run for run, _ in seen) == sorted(runs)


def test_a_pool_trigger_delivers_one_sweep_at_its_time(driver: Driver) -> None:
    """The triggers that offer ``arm_pool`` (``punctual.PoolTrigger``: the clouds' queues) deliver "sweep this pool"
    like a run; serve's timers coalesce at fire time instead, and the recording double arms runs one by one."""
    from pushpool.usecases.punctual import PoolTrigger

    if not isinstance(driver.trigger, PoolTrigger):
        assert isinstance(driver.trigger, (TimerTrigger, RecordingTrigger))
        return
    at = now() + dt.timedelta(seconds=1.5)
    driver.trigger.arm_pool("nightly.pool", at)
    (delivered,) = driver.deliveries(1, timeout=10)
    assert delivered[0] == "pool:nightly.pool"
    assert at - dt.timedelta(seconds=driver.trigger.early_seconds + 0.05) <= delivered[1]
    assert delivered[1] <= at + dt.timedelta(seconds=LATE)
    driver.trigger.arm_pool("nightly.pool", at)  # the same burst armed again (a second tick): at most once more
    assert len(driver.deliveries(3, timeout=3)) <= 2
