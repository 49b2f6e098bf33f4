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

from tests.contract.contract import BackendContract, contract_spec

pytest.importorskip("modal")

from pushpool.providers.modal.backend import ModalBackend
from pushpool.providers.modal.config import ModalJobConfig


class ModalDriver:
    supports_locations = True

    def __init__(self, server) -> None:
        self.server = server
        self.apps = {"default": None, "other": "pushpool-contract-other", "nowhere": "pushpool-no-such-app"}

    def spec(self, *, location: str = "default") -> JobSpec:
        return contract_spec(ModalJobConfig(app_name=self.apps[location]))

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
    """Steady state: a submit straight after the claim is three RPCs (the app, the image, the sandbox); a status call
    lists each app's running sandboxes once and reads on its own only a sandbox the listing does not show. The first
    submit of a process adds EnvironmentGetOrCreate and AuthTokenGet (cached by the SDK)."""
    backend, driver, modal_server = ModalBackend(), ModalDriver(driven), driven
    backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    before = len(modal_server.calls)
    handle = backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    assert modal_server.calls[before:] == ["AppGetOrCreate", "ImageGetOrCreate", "SandboxCreateV2"]
    second = backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    before = len(modal_server.calls)
    backend.status([handle, second])  # a fresh process: one read names the app, whose listing answers for both
    assert modal_server.calls[before:] == ["SandboxWaitV2", "SandboxListV2"]
    before = len(modal_server.calls)
    backend.status([handle, second])  # warm: the app it found them in last time
    assert modal_server.calls[before:] == ["SandboxListV2"]
    driver.exit(second, 0, [])
    before = len(modal_server.calls)
    statuses = backend.status([handle, second])
    # The listing pages on to its end (an empty page) for the one it misses, which is then read for its result.
    assert modal_server.calls[before:] == ["SandboxListV2", "SandboxListV2", "SandboxWaitV2"]
    assert statuses[second.id].state is JobState.SUCCEEDED and statuses[handle.id].state is JobState.RUNNING
    backend.cancel(handle)


@pytest.mark.parametrize("n", [5, 50])
def test_a_tick_s_status_lists_per_app_and_reads_only_the_sandboxes_that_changed(driven, n: int) -> None:
    """Over ``n`` in-flight sandboxes of one app, a fresh process's status makes one read (it names the app) and one
    listing of the app, whatever ``n``; after some finish or vanish, only those are read on their own. The times and
    the scheduling state come from the listing."""
    backend, driver, modal_server = ModalBackend(), ModalDriver(driven), driven
    handles = [backend.submit(dataclasses.replace(driver.spec(), new_attempt=True)) for _ in range(n)]
    modal_server.sandboxes[handles[-1].id].scheduled_at = None  # Modal is still scheduling this one
    fresh = ModalBackend()  # a monitor process that never saw the submits
    before = len(modal_server.calls)
    statuses = fresh.status(handles)
    assert modal_server.calls[before:] == ["SandboxWaitV2", "SandboxListV2"]
    assert all(statuses[h.id].state is JobState.RUNNING for h in handles[:-1])
    assert all(statuses[h.id].accepted_at is not None and statuses[h.id].started_at for h in handles[:-1])
    assert statuses[handles[-1].id].state is JobState.PENDING and statuses[handles[-1].id].accepted_at
    driver.exit(handles[0], 3, ["boom"])
    driver.vanish(handles[1])
    before = len(modal_server.callers)  # every call, also those answered NOT_FOUND
    statuses = fresh.status(handles)
    calls = [(method, subject) for method, _, subject in modal_server.callers[before:]]
    app = modal_server.sandboxes[handles[2].id].app_id
    listing = ("SandboxListV2", app)  # + the empty page that ends the listing: two are not in it
    assert calls == [listing, listing, ("SandboxWaitV2", handles[0].id), ("SandboxWaitV2", handles[1].id)], calls
    assert statuses[handles[0].id].exit_code == 3 and statuses[handles[1].id].state is JobState.MISSING
    assert all(statuses[h.id].state is JobState.RUNNING for h in handles[2:-1])
    for handle in handles[2:]:
        backend.cancel(handle)


def test_a_sandbox_not_listed_yet_is_read_never_declared_gone(driven) -> None:
    """Modal's listing may lag behind a create: a sandbox it does not show is read on its own (running, with its
    scheduling state from its task), never taken for gone."""
    backend, driver, modal_server = ModalBackend(), ModalDriver(driven), driven
    handles = [backend.submit(dataclasses.replace(driver.spec(), new_attempt=True)) for _ in range(3)]
    modal_server.bad_days.list_delay = 3600.0  # nothing shows in listings yet
    try:
        before = len(modal_server.calls)
        statuses = ModalBackend().status(handles)
    finally:
        modal_server.bad_days.list_delay = 0.0
    assert all(statuses[h.id].state is JobState.RUNNING for h in handles), statuses
    assert modal_server.calls[before:].count("SandboxWaitV2") == 3
    for handle in handles:
        backend.cancel(handle)


def test_two_tokens_are_never_mixed_in_one_call(driven) -> None:
    """Handles of two workspaces in one status call: each token lists and reads its own workspace's only."""
    other = ("ak-other-workspace", "as-other-workspace")
    driven.add_workspace(other, "other")
    backend, driver = ModalBackend(), ModalDriver(driven)
    mine = [backend.submit(dataclasses.replace(driver.spec(), new_attempt=True)) for _ in range(2)]
    spec = driver.spec()
    credentials = {"token_id": other[0], "token_secret": other[1]}
    theirs = backend.submit(
        dataclasses.replace(spec, config=spec.config.model_copy(update={"modal_credentials": credentials}))
    )
    before = len(driven.callers)
    statuses = ModalBackend().status([*mine, theirs])
    assert all(statuses[h.id].state is JobState.RUNNING for h in [*mine, theirs]), statuses
    asked = driven.callers[before:]
    assert {token for _, token, _ in asked} == {driven.token[0], other[0]}
    for method, token, subject in asked:
        owner = "other" if token == other[0] else "default"
        if subject in driven.sandboxes:
            assert driven.sandboxes[subject].workspace == owner, (method, subject)
        elif subject.startswith("ap-"):
            assert driven.app_owner[subject] == owner, (method, subject)
    for handle in [*mine, theirs]:
        backend.cancel(handle)
