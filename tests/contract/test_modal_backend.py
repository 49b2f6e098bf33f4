"""The Modal backend keeps the backend contract against the local Modal control plane (tests/modal_emulator.py):
the real ``modal`` SDK, over gRPC, with the messages of the pinned wheel's service definitions.

The driver plays Modal's side through the emulator's state: a sandbox ends with an exit code and output, or
disappears. Locations are Modal apps: the run's ``app_name`` (another app, or one that does not exist).
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from pushpool.providers.base import JobHandle, JobSpec, JobState

from tests.contract.contract import SECRET, BackendContract

pytest.importorskip("modal")

from pushpool.providers.modal.backend import ModalBackend
from pushpool.providers.modal.config import ModalJobConfig


class ModalDriver:
    supports_locations = True

    def __init__(self, server) -> None:
        self.server = server
        self.apps = {"default": None, "other": "pushpool-contract-other", "nowhere": "pushpool-no-such-app"}

    def spec(self, *, location: str = "default") -> JobSpec:
        return JobSpec(
            run_id=str(uuid.uuid4()),
            attempt=str(uuid.uuid4()),
            pool_name="contract",
            name="contract",
            command=("prefect", "flow-run", "execute"),
            env={"PREFECT__FLOW_RUN_ID": "x"},
            labels={"prefect.io/flow-run-id": "x"},
            config=ModalJobConfig(app_name=self.apps[location]),
            secret_env={"PREFECT_API_KEY": SECRET},
        )

    def jobs_of(self, spec: JobSpec) -> int:
        return len(self.server.of_attempt(spec.run_id, spec.attempt))

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        self.server.finish(handle.id, code, lines)

    def vanish(self, handle: JobHandle) -> None:
        self.server.vanish(handle.id)

    def unknown_handle(self) -> JobHandle:
        return JobHandle("modal", f"sb-v2-{uuid.uuid4().hex}")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("modal", "not a sandbox")

    def refused_spec(self) -> JobSpec:
        spec = self.spec()
        return dataclasses.replace(spec, config=spec.config.model_copy(update={"image": "example/no-such-image:1"}))

    def sent(self, handle: JobHandle) -> str:
        return self.server.sent(handle.id)


@pytest.fixture
def driven(modal_server):
    """The emulator with commands not run: the driver decides how each sandbox ends."""
    modal_server.run_commands = False
    yield modal_server
    modal_server.run_commands = True


class TestModalBackend(BackendContract):
    @pytest.fixture
    def backend(self, driven) -> ModalBackend:
        return ModalBackend()

    @pytest.fixture
    def driver(self, driven) -> ModalDriver:
        return ModalDriver(driven)

    def test_a_finished_sandbox_is_found_by_a_later_separate_invocation(self, backend, driver) -> None:
        spec = driver.spec()
        handle = backend.submit(spec)
        driver.exit(handle, 0, ["done"])
        later = ModalBackend()  # another process: nothing remembered
        assert later.find(spec) == handle  # a name look-up would find only running sandboxes
        assert later.submit(spec) == handle and driver.jobs_of(spec) == 1

    def test_status_tells_a_terminated_sandbox_from_a_timed_out_or_unstartable_one(self, backend, driver) -> None:
        from modal_proto import api_pb2

        gr = api_pb2.GenericResult
        timed_out, broken = backend.submit(driver.spec()), backend.submit(driver.spec())
        driver.server.fail(timed_out.id, gr.GENERIC_STATUS_TIMEOUT, "")
        driver.server.fail(broken.id, gr.GENERIC_STATUS_INIT_FAILURE, "image pull failed: unauthorized")
        statuses = backend.status([timed_out, broken])
        assert statuses[timed_out.id].state is JobState.FAILED and "timeout" in statuses[timed_out.id].reason
        assert statuses[broken.id].state is JobState.FAILED
        assert "image pull failed: unauthorized" in statuses[broken.id].reason


def test_every_sandbox_result_status_is_mapped() -> None:
    from modal_proto import api_pb2
    from pushpool.providers.modal.backend import STATE_MAP

    assert set(STATE_MAP) == set(api_pb2.GenericResult.GenericStatus.keys())


@pytest.fixture
def scheduling(driven):
    """The emulator holding new sandboxes in Modal's scheduling phase (no worker has capacity) until ``schedule``."""
    driven.hold_scheduling = True
    yield driven
    driven.hold_scheduling = False


def test_a_sandbox_modal_is_still_scheduling_is_pending_until_a_worker_takes_it(scheduling) -> None:
    """Modal's SDK sees a sandbox waiting for a GPU as running (no result yet); pushpool reports it PENDING, so the
    start timeout applies to it, with when Modal accepted it."""
    backend, driver = ModalBackend(), ModalDriver(scheduling)
    handle = backend.submit(driver.spec())
    waiting = backend.status([handle])[handle.id]
    assert waiting.state is JobState.PENDING and "scheduling" in waiting.reason
    accepted = scheduling.sandboxes[handle.id].created_at
    assert waiting.accepted_at is not None and abs(waiting.accepted_at.timestamp() - accepted) < 0.01
    assert waiting.started_at is None
    scheduling.schedule(handle.id)
    running = backend.status([handle])[handle.id]
    assert running.state is JobState.RUNNING and running.accepted_at == waiting.accepted_at
    assert running.started_at is not None and running.started_at >= running.accepted_at
    backend.cancel(handle)


def test_the_monitor_gives_up_on_a_sandbox_still_scheduling_past_the_start_timeout(scheduling) -> None:
    """Through the real SDK and the emulator: a run whose sandbox never got a worker is crashed and the sandbox
    terminated once the start timeout has passed since Modal accepted it (not before)."""
    import datetime as dt

    from pushpool.prefect_api.models import FlowRun, State, StateType
    from pushpool.usecases.reconcile import Action, Policy, decide

    backend, driver = ModalBackend(), ModalDriver(scheduling)
    handle = backend.submit(driver.spec())
    status = backend.status([handle])[handle.id]
    assert status.accepted_at is not None
    policy = Policy(pending_timeout_seconds=60, exit_grace_seconds=30, max_recoveries=3)
    policy = dataclasses.replace(policy, start_timeout_seconds=backend.start_timeout_seconds)
    claimed = status.accepted_at - dt.timedelta(seconds=1)
    run = FlowRun(
        id="r", state=State(type=StateType.PENDING, name="Pending", timestamp=claimed), infrastructure_pid=handle.id
    )
    soon = status.accepted_at + dt.timedelta(seconds=backend.start_timeout_seconds - 1)
    assert decide(run, status, now=soon, policy=policy, max_run_time_seconds=86_400).action is Action.NONE
    late = status.accepted_at + dt.timedelta(seconds=backend.start_timeout_seconds + 1)
    decision = decide(run, status, now=late, policy=policy, max_run_time_seconds=86_400)
    assert decision.action is Action.CRASH_AND_STOP and "scheduling" in decision.reason
    backend.cancel(handle)  # what the monitor does with CRASH_AND_STOP: the sandbox is terminated, never scheduled
    stopped = backend.status([handle])[handle.id]
    assert stopped.state is JobState.STOPPED
    assert scheduling.sandboxes[handle.id].scheduled_at is None


def test_calls_per_run(driven) -> None:
    """Steady state: a submit straight after the claim is three RPCs (the app, the image, the sandbox); each tick two
    per live run (its result; whether it has a task yet) and one per app (the running sandboxes' times). The first
    submit of a process adds EnvironmentGetOrCreate and AuthTokenGet (cached by the SDK)."""
    backend, driver, modal_server = ModalBackend(), ModalDriver(driven), driven
    backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    before = len(modal_server.calls)
    handle = backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    assert modal_server.calls[before:] == ["AppGetOrCreate", "ImageGetOrCreate", "SandboxCreateV2"]
    before = len(modal_server.calls)
    second = backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    before = len(modal_server.calls)
    backend.status([handle, second])
    per_run = ["SandboxWaitV2", "SandboxGetTaskIdV2"]
    assert modal_server.calls[before:] == per_run + per_run + ["SandboxListV2"]
    driver.exit(second, 0, [])
    before = len(modal_server.calls)
    backend.status([second])
    assert modal_server.calls[before:] == ["SandboxWaitV2"]  # a finished sandbox: its result only
    backend.cancel(handle)
