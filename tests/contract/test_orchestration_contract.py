"""One orchestration suite, run against a real Prefect 3.8.8 server (through PrefectClient) and against FakePrefect.

Every check here is a server behaviour pushpool relies on; the fake passes only by modelling it. Seeding goes through
an ``Env``: REST calls (PrefectHelper) for the real server, the fake's own helpers for the fake.
"""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from typing import Any

import httpx
import pytest
from pushpool.clock import FixedClock
from pushpool.errors import ObjectNotFoundError, OrchestratorError
from pushpool.prefect_api.client import BULK_LIMIT, PAGE_SIZE, PrefectClient
from pushpool.prefect_api.dialect import ServerDialect, UnsupportedServerError
from pushpool.prefect_api.models import OrchestrationResult, SetStateStatus, StateType
from pushpool.usecases.provision import automation_body

from tests.fake_prefect import FakePrefect
from tests.helpers import PrefectHelper

S = dt.timedelta(seconds=1)
IN_FLIGHT = ["PENDING", "RUNNING", "CANCELLING"]
PENDING_ABORT = "This run is in a {} state and cannot transition to a PENDING state."
CANCELLING_ONLY = "Cannot transition flows that are cancelling to a state other than Cancelled."
NO_INFRA = "Scheduled flow run has no infrastructure to terminate."
DUPLICATE = "This run has already made this state transition."


class LosingTransport(httpx.BaseTransport):
    """Forwards every request to the server, but loses the answer of the first ``set_state`` or ``bulk_set_state`` (a
    read timeout)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.lose and request.url.path.endswith("set_state"):  # /flow_runs/{id}/set_state or bulk_set_state
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class RealEnv:
    """The real server: seeded over REST, read through PrefectClient."""

    def __init__(self, api_url: str, helper: PrefectHelper) -> None:
        self.api_url = api_url
        self.helper = helper
        self.client = PrefectClient(api_url)
        self._clients = [self.client]

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def later(self) -> None:
        """Let time pass between two state changes (real timestamps always differ)."""

    def pool(self, *, concurrency_limit: int | None = None, is_paused: bool = False) -> str:
        name = self.helper.unique("oc")
        extra: dict[str, Any] = {"is_paused": is_paused}
        if concurrency_limit is not None:
            extra["concurrency_limit"] = concurrency_limit
        self.helper.create_pool(name, **extra)
        return name

    def update_pool(self, pool: str, **fields: Any) -> None:
        self.helper.json("PATCH", f"/work_pools/{pool}", json=fields)

    def queue(self, pool: str, name: str, *, priority: int | None = None) -> None:
        body: dict[str, Any] = {"name": name}
        if priority is not None:
            body["priority"] = priority
        self.helper.json("POST", f"/work_pools/{pool}/queues", json=body)

    def update_queue(self, pool: str, name: str, **fields: Any) -> None:
        self.helper.json("PATCH", f"/work_pools/{pool}/queues/{name}", json=fields)

    def deployment(self, pool: str, *, work_queue_name: str | None = None, job_variables: dict | None = None) -> str:
        extra = {"work_queue_name": work_queue_name} if work_queue_name else {}
        return self.helper.create_deployment(pool, job_variables=job_variables, **extra)

    def delete_deployment(self, deployment_id: str) -> None:
        self.helper.request("DELETE", f"/deployments/{deployment_id}").raise_for_status()

    def scheduled_deployment(self, pool: str, *, interval: float, paused: bool = False) -> str:
        schedules = [{"schedule": {"interval": interval}, "active": True}]
        return self.helper.create_deployment(pool, schedules=schedules, paused=paused)

    def run(
        self,
        deployment_id: str,
        *,
        at: dt.datetime | None = None,
        queue: str | None = None,
        retry_in_process: bool = False,
    ) -> str:
        body: dict[str, Any] = {}
        if at is not None:
            body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": at.isoformat()}}
        if queue:
            body["work_queue_name"] = queue
        if retry_in_process:
            body["empirical_policy"] = {"retries": 1, "retry_type": "in_process"}
        return self.helper.create_run(deployment_id, **body)

    def force(self, run_id: str, state_type: StateType, name: str | None = None) -> None:
        extra = {"name": name} if name else {}
        self.helper.set_state(run_id, state_type.value, force=True, **extra)

    def raw(
        self, run_id: str, state_type: StateType, *, transition_id: str | None = None, force: bool = False
    ) -> OrchestrationResult:
        state: dict[str, Any] = {"type": state_type.value}
        if transition_id:
            state["state_details"] = {"transition_id": transition_id}
        data = self.helper.json("POST", f"/flow_runs/{run_id}/set_state", json={"state": state, "force": force})
        return OrchestrationResult.model_validate(data)

    def client_losing_next_answer(self) -> PrefectClient:
        client = PrefectClient(self.api_url, transport=LosingTransport(), clock=FixedClock())
        self._clients.append(client)
        return client

    def history(self, run_id: str) -> list[tuple[str, str]]:
        return self.helper.states(run_id)

    def speak_as(self, version: str) -> None:
        """The client treats the server as ``version`` (what pushpool does on an older server)."""
        self.client._dialect = ServerDialect.of(version)

    def variable(self, name: str, value: Any) -> None:
        self.helper.json("POST", "/variables/", json={"name": name, "value": value})


class FakeEnv:
    """FakePrefect on a FixedClock: seeded with its own helpers."""

    def __init__(self) -> None:
        self.clock = FixedClock()
        self.fake = FakePrefect(clock=self.clock)
        self.client = self.fake

    def close(self) -> None:
        self.fake.close()

    def now(self) -> dt.datetime:
        return self.clock.now()

    def later(self) -> None:
        self.clock.advance(1)

    def pool(self, *, concurrency_limit: int | None = None, is_paused: bool = False) -> str:
        name = f"oc-{uuid.uuid4().hex[:8]}"
        self.fake.add_pool(name, concurrency_limit=concurrency_limit, is_paused=is_paused)
        return name

    def update_pool(self, pool: str, **fields: Any) -> None:
        self.fake.set_pool(pool, **fields)

    def queue(self, pool: str, name: str, *, priority: int | None = None) -> None:
        self.fake.add_queue(pool, name, priority=priority)

    def update_queue(self, pool: str, name: str, **fields: Any) -> None:
        self.fake.set_queue(pool, name, **fields)

    def deployment(self, pool: str, *, work_queue_name: str | None = None, job_variables: dict | None = None) -> str:
        return self.fake.add_deployment(pool, work_queue_name=work_queue_name, job_variables=job_variables)

    def delete_deployment(self, deployment_id: str) -> None:
        self.fake.delete_deployment(deployment_id)

    def scheduled_deployment(self, pool: str, *, interval: float, paused: bool = False) -> str:
        return self.fake.add_deployment(pool, schedules=[{"schedule": {"interval": interval}}], paused=paused)

    def run(
        self,
        deployment_id: str,
        *,
        at: dt.datetime | None = None,
        queue: str | None = None,
        retry_in_process: bool = False,
    ) -> str:
        return self.fake.add_run(
            deployment_id, scheduled_at=at, work_queue_name=queue, retry_in_process=retry_in_process
        )

    def force(self, run_id: str, state_type: StateType, name: str | None = None) -> None:
        self.fake.force_state(run_id, state_type, name=name)

    def raw(
        self, run_id: str, state_type: StateType, *, transition_id: str | None = None, force: bool = False
    ) -> OrchestrationResult:
        return self.fake.set_state_raw(run_id, state_type, transition_id=transition_id, force=force)

    def client_losing_next_answer(self) -> FakePrefect:
        self.fake.lose_answers(1)
        return self.fake

    def history(self, run_id: str) -> list[tuple[str, str]]:
        return self.fake.history(run_id)

    def speak_as(self, version: str) -> None:
        self.fake.server_version = version

    def variable(self, name: str, value: Any) -> None:
        self.fake.set_variable(name, value)


Env = RealEnv | FakeEnv


def _in_pool(pool: str, *types: str) -> dict[str, Any]:
    return {"flow_runs": {"state": {"type": {"any_": list(types)}}}, "work_pools": {"name": {"any_": [pool]}}}


def test_the_fake_has_every_client_method_with_the_same_signature() -> None:
    """FakePrefect stands in for PrefectClient: every public method, same parameters, defaults and return type."""
    public = [
        name for name in vars(PrefectClient) if not name.startswith("_") and callable(getattr(PrefectClient, name))
    ]
    assert "propose_state" in public
    for name in public:
        real, fake = inspect.signature(getattr(PrefectClient, name)), inspect.signature(getattr(FakePrefect, name))
        assert fake == real, f"{name}: fake {fake} != client {real}"


class OrchestrationContract:
    """The checks; a subclass provides ``env``."""

    @pytest.fixture
    def env(self) -> Env:
        raise NotImplementedError

    @staticmethod
    def scheduled(env: Env) -> tuple[str, str, str]:
        """(pool, deployment, run): a fresh pool with one run Scheduled now."""
        pool = env.pool()
        deployment = env.deployment(pool)
        return pool, deployment, env.run(deployment)

    @staticmethod
    def claimed(env: Env, *, pid: str | None = None) -> str:
        _, _, run = OrchestrationContract.scheduled(env)
        assert env.client.propose_state(run, StateType.PENDING).accepted
        if pid:
            env.client.set_infrastructure_pid(run, pid)
        return run

    @staticmethod
    def in_state(env: Env, state_type: StateType) -> str:
        """A run brought to ``state_type`` by forced states along the usual path."""
        _, _, run = OrchestrationContract.scheduled(env)
        for step in (StateType.PENDING, StateType.RUNNING, state_type):
            env.force(run, step)
        return run

    # -- claims -----------------------------------------------------------------------------------------------------

    def test_a_claim_is_accepted_and_a_second_claimer_aborted(self, env: Env) -> None:
        """Scheduled → Pending is the claim; a second claimer is ABORTed and shown the first claim's state."""
        _, _, run = self.scheduled(env)
        scheduled_id = env.client.read_flow_run(run).state.id
        first = env.client.propose_state(run, StateType.PENDING)
        assert first.status is SetStateStatus.ACCEPT
        assert (first.state.type, first.state.name) == (StateType.PENDING, "Pending")
        assert first.state.id and first.state.id != scheduled_id
        uuid.UUID(first.state.id)
        second = env.client.propose_state(run, StateType.PENDING)
        assert second.status is SetStateStatus.ABORT
        assert second.reason == PENDING_ABORT.format("PENDING")
        assert second.state.id == first.state.id
        assert env.history(run) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]

    def test_a_repeated_transition_id_is_rejected_with_the_current_state(self, env: Env) -> None:
        """The server REJECTs a proposal whose transition id equals the current state's, writing nothing."""
        _, _, run = self.scheduled(env)
        transition = str(uuid.uuid4())
        first = env.raw(run, StateType.PENDING, transition_id=transition)
        again = env.raw(run, StateType.PENDING, transition_id=transition)
        assert first.status is SetStateStatus.ACCEPT
        assert again.status is SetStateStatus.REJECT
        assert again.reason == DUPLICATE
        assert again.state.id == first.state.id
        assert again.state.state_details["transition_id"] == transition
        assert env.history(run) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]

    def test_the_client_reports_an_applied_retry_as_accepted(self, env: Env) -> None:
        """A proposal applied but whose answer was lost is sent again, REJECTed as a duplicate, reported ACCEPT."""
        _, _, run = self.scheduled(env)
        client = env.client_losing_next_answer()
        before = client.calls
        result = client.propose_state(run, StateType.PENDING)
        assert client.calls - before == 2  # the lost attempt and its retry
        assert result.status is SetStateStatus.ACCEPT
        assert result.state.type is StateType.PENDING
        assert env.history(run) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]

    def test_a_different_transition_id_does_not_pass_for_a_retry(self, env: Env) -> None:
        """Only the same transition id is a duplicate: another claim is still ABORTed."""
        _, _, run = self.scheduled(env)
        assert env.raw(run, StateType.PENDING, transition_id=str(uuid.uuid4())).status is SetStateStatus.ACCEPT
        other = env.raw(run, StateType.PENDING, transition_id=str(uuid.uuid4()))
        assert other.status is SetStateStatus.ABORT

    def test_pending_to_infrastructure_pending_is_accepted_once(self, env: Env) -> None:
        """Pending → Pending under another, non-"Pending" name is accepted; the same name again, or "Pending", not."""
        run = self.claimed(env)
        progress = env.client.propose_state(run, StateType.PENDING, name="InfrastructurePending")
        assert progress.status is SetStateStatus.ACCEPT
        assert (progress.state.type, progress.state.name) == (StateType.PENDING, "InfrastructurePending")
        assert env.client.propose_state(run, StateType.PENDING, name="InfrastructurePending").status is (
            SetStateStatus.ABORT
        )
        assert env.client.propose_state(run, StateType.PENDING).status is SetStateStatus.ABORT
        assert env.history(run)[-1] == ("PENDING", "InfrastructurePending")
        assert len(env.history(run)) == 3

    def test_infrastructure_pending_on_a_running_run_is_aborted(self, env: Env) -> None:
        """The renamed-Pending exception holds only from Pending."""
        run = self.in_state(env, StateType.RUNNING)
        result = env.client.propose_state(run, StateType.PENDING, name="InfrastructurePending")
        assert result.status is SetStateStatus.ABORT
        assert result.reason == PENDING_ABORT.format("RUNNING")
        assert result.state.type is StateType.RUNNING

    @pytest.mark.parametrize("name", [None, "InfrastructurePending"])
    def test_a_claim_on_a_cancelling_run_is_refused_with_the_cancelling_state(self, env: Env, name: str | None) -> None:
        """Any Pending proposal on a Cancelling run is REJECTed (the Cancelling rule comes first) with Cancelling."""
        run = self.claimed(env, pid="job-1")
        cancelling = env.client.propose_state(run, StateType.CANCELLING)
        assert cancelling.status is SetStateStatus.ACCEPT
        result = env.client.propose_state(run, StateType.PENDING, name=name)
        assert result.status is SetStateStatus.REJECT
        assert result.reason == CANCELLING_ONLY
        assert result.state.type is StateType.CANCELLING
        assert result.state.id == cancelling.state.id

    def test_a_cancelled_run_refuses_a_claim(self, env: Env) -> None:
        """→ Pending is ABORTed for a Cancelled run."""
        run = self.in_state(env, StateType.CANCELLED)
        result = env.client.propose_state(run, StateType.PENDING)
        assert result.status is SetStateStatus.ABORT
        assert result.reason == PENDING_ABORT.format("CANCELLED")

    @pytest.mark.parametrize("final", [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED])
    def test_other_finished_runs_can_be_claimed_again(self, env: Env, final: StateType) -> None:
        """The server does not stop a claim of a Completed, Failed or Crashed run: submit must check the state."""
        run = self.in_state(env, final)
        assert env.client.propose_state(run, StateType.PENDING).status is SetStateStatus.ACCEPT

    # -- cancellation and terminal states ---------------------------------------------------------------------------

    def test_cancelling_goes_to_cancelled(self, env: Env) -> None:
        """Cancelling → Cancelled is accepted, and the run gets its end time."""
        run = self.claimed(env, pid="job-1")
        assert env.client.propose_state(run, StateType.CANCELLING).accepted
        env.later()
        result = env.client.propose_state(run, StateType.CANCELLED, message="stopped")
        assert result.status is SetStateStatus.ACCEPT
        read = env.client.read_flow_run(run)
        assert (read.state_type, read.state.message) == (StateType.CANCELLED, "stopped")
        assert read.end_time == result.state.timestamp

    @pytest.mark.parametrize(
        "proposed", [StateType.CRASHED, StateType.RUNNING, StateType.COMPLETED, StateType.SCHEDULED, StateType.FAILED]
    )
    def test_cancelling_refuses_anything_but_cancelled(self, env: Env, proposed: StateType) -> None:
        """A Cancelling run only goes to Cancelled: Crashed and the rest are REJECTed, the run stays Cancelling."""
        run = self.claimed(env, pid="job-1")
        assert env.client.propose_state(run, StateType.CANCELLING).accepted
        result = env.client.propose_state(run, proposed)
        assert result.status is SetStateStatus.REJECT
        assert result.reason == CANCELLING_ONLY
        assert env.client.read_flow_run(run).state_type is StateType.CANCELLING

    @pytest.mark.parametrize("final", [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED])
    @pytest.mark.parametrize("proposed", [StateType.CRASHED, StateType.CANCELLING, StateType.PAUSED])
    def test_terminal_runs_refuse_crashed_cancelling_and_paused(
        self, env: Env, final: StateType, proposed: StateType
    ) -> None:
        """A late crash report (or cancel, or pause) for a finished run is ABORTed; the run keeps its state."""
        run = self.in_state(env, final)
        result = env.client.propose_state(run, proposed, message="late report")
        assert result.status is SetStateStatus.ABORT
        assert result.reason == f"Run is already in terminal state {final.value}."
        assert result.state.type is final
        assert env.client.read_flow_run(run).state_type is final

    @pytest.mark.parametrize("force", [False, True])
    def test_scheduled_to_cancelling_without_a_pid_ends_cancelled(self, env: Env, force: bool) -> None:
        """Without a pid, Scheduled → Cancelling writes Cancelled instead and answers REJECT (even forced)."""
        _, _, run = self.scheduled(env)
        result = env.client.propose_state(run, StateType.CANCELLING, message="user", force=force)
        assert result.status is SetStateStatus.REJECT
        assert result.reason == NO_INFRA
        assert (result.state.type, result.state.name, result.state.message) == (StateType.CANCELLED, "Cancelled", None)
        read = env.client.read_flow_run(run)
        assert read.state.id == result.state.id
        assert read.end_time == read.start_time == result.state.timestamp
        assert env.history(run) == [("SCHEDULED", "Scheduled"), ("CANCELLED", "Cancelled")]

    def test_scheduled_to_cancelling_with_a_pid_is_accepted(self, env: Env) -> None:
        """With an infrastructure_pid, the run does go Cancelling (its job must be stopped)."""
        _, _, run = self.scheduled(env)
        env.client.set_infrastructure_pid(run, "job-1")
        result = env.client.propose_state(run, StateType.CANCELLING)
        assert result.status is SetStateStatus.ACCEPT
        assert result.state.type is StateType.CANCELLING

    def test_pending_without_a_pid_goes_cancelling(self, env: Env) -> None:
        """The no-infrastructure bypass is for Scheduled runs only: a claimed run without a pid goes Cancelling."""
        run = self.claimed(env)
        assert env.client.propose_state(run, StateType.CANCELLING).status is SetStateStatus.ACCEPT

    @pytest.mark.parametrize(
        ("start", "proposed"),
        [
            (StateType.RUNNING, StateType.PENDING),
            (StateType.COMPLETED, StateType.CRASHED),
            (StateType.CANCELLING, StateType.RUNNING),
        ],
    )
    def test_force_bypasses_the_rules(self, env: Env, start: StateType, proposed: StateType) -> None:
        """force=True writes what the rules would refuse."""
        run = self.in_state(env, start)
        result = env.client.propose_state(run, proposed, force=True)
        assert result.status is SetStateStatus.ACCEPT
        assert env.client.read_flow_run(run).state_type is proposed

    def test_force_ignores_a_repeated_transition_id(self, env: Env) -> None:
        """Forced proposals are not deduplicated: the same transition id twice writes two states."""
        _, _, run = self.scheduled(env)
        transition = str(uuid.uuid4())
        assert env.raw(run, StateType.PENDING, transition_id=transition, force=True).accepted
        assert env.raw(run, StateType.PENDING, transition_id=transition, force=True).accepted
        assert [t for t, _ in env.history(run)] == ["SCHEDULED", "PENDING", "PENDING"]

    def test_paused_only_from_running(self, env: Env) -> None:
        """Pausing a run that is not Running is REJECTed."""
        run = self.claimed(env)
        result = env.client.propose_state(run, StateType.PAUSED)
        assert result.status is SetStateStatus.REJECT
        assert result.state.type is StateType.PENDING

    # -- run fields -------------------------------------------------------------------------------------------------

    def test_start_and_end_times_and_run_count(self, env: Env) -> None:
        """start_time is set by the first Running and kept; end_time by a terminal state, cleared when rescheduled."""
        run = self.claimed(env)
        read = env.client.read_flow_run(run)
        assert (read.start_time, read.end_time, read.run_count) == (None, None, 0)
        assert read.next_scheduled_start_time is None
        env.later()
        running = env.client.propose_state(run, StateType.RUNNING).state
        read = env.client.read_flow_run(run)
        assert (read.start_time, read.end_time, read.run_count) == (running.timestamp, None, 1)
        env.later()
        done = env.client.propose_state(run, StateType.COMPLETED).state
        assert env.client.read_flow_run(run).end_time == done.timestamp
        env.later()
        again = env.client.propose_state(run, StateType.SCHEDULED).state
        read = env.client.read_flow_run(run)
        assert read.end_time is None
        assert read.next_scheduled_start_time is not None
        assert abs((read.next_scheduled_start_time - again.timestamp).total_seconds()) < 1
        for step in (StateType.PENDING, StateType.RUNNING):
            env.later()
            assert env.client.propose_state(run, step).accepted
        env.later()
        crashed = env.client.propose_state(run, StateType.CRASHED).state
        read = env.client.read_flow_run(run)
        assert (read.start_time, read.end_time, read.run_count) == (running.timestamp, crashed.timestamp, 2)

    def test_a_run_that_never_ran_gets_its_start_time_when_it_ends(self, env: Env) -> None:
        """Pending → Crashed sets start_time and end_time to the Crashed state's timestamp."""
        run = self.claimed(env)
        env.later()
        crashed = env.client.propose_state(run, StateType.CRASHED, message="boom").state
        read = env.client.read_flow_run(run)
        assert read.start_time == read.end_time == crashed.timestamp
        assert read.state.message == "boom"

    def test_labels_are_merged(self, env: Env) -> None:
        """PATCH labels adds to the run's labels (Prefect's own stay)."""
        _, deployment, run = self.scheduled(env)
        env.client.update_flow_run_labels(run, {"a": "1"})
        env.client.update_flow_run_labels(run, {"b": "2", "a": "3"})
        labels = env.client.read_flow_run(run).labels
        assert (labels["a"], labels["b"]) == ("3", "2")
        assert labels["prefect.deployment.id"] == deployment

    def test_tags_are_replaced_and_nothing_else_changes(self, env: Env) -> None:
        """set_flow_run_tags: the run's tags become those given; its pid and state stay (PATCH sets only tags)."""
        run = self.claimed(env)
        env.client.set_infrastructure_pid(run, "job-7")
        env.client.set_flow_run_tags(run, ["a", "pushpool:managed"])
        read = env.client.read_flow_run(run)
        assert read.tags == ["a", "pushpool:managed"]
        assert read.infrastructure_pid == "job-7" and read.state.type is StateType.PENDING

    # -- bulk claims (POST /flow_runs/bulk_set_state, 3.6.16+) ---------------------------------------------------------

    CLAIM_FROM = (StateType.SCHEDULED, StateType.PENDING)

    def test_a_bulk_claim_orchestrates_each_run_and_skips_runs_in_other_states(self, env: Env) -> None:
        """Each named run in a listed state gets set_state's orchestration: a Scheduled run is claimed, another
        claimer's Pending run ABORTed (untouched); a Completed run is not proposed to at all (set_state would accept
        Pending after Completed), nor is a run not named."""
        pool = env.pool()
        deployment = env.deployment(pool)
        free, taken, ended, other = (env.run(deployment) for _ in range(4))
        first = env.client.propose_state(taken, StateType.PENDING)
        for step in (StateType.PENDING, StateType.RUNNING, StateType.COMPLETED):
            env.force(ended, step)
        env.later()
        answers = env.client.propose_states([free, taken, ended], StateType.PENDING, from_states=self.CLAIM_FROM)
        assert set(answers) == {free, taken}
        assert answers[free].status is SetStateStatus.ACCEPT
        assert (answers[free].state.type, answers[free].state.name) == (StateType.PENDING, "Pending")
        assert answers[taken].status is SetStateStatus.ABORT
        assert answers[taken].reason == PENDING_ABORT.format("PENDING")
        assert answers[taken].state.id == first.state.id
        assert env.history(taken) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]
        assert env.history(ended)[-1] == ("COMPLETED", "Completed") and len(env.history(ended)) == 4
        assert env.history(other) == [("SCHEDULED", "Scheduled")]
        assert env.client.propose_state(free, StateType.PENDING).status is SetStateStatus.ABORT  # claimed once

    def test_a_bulk_progress_answer_carries_a_cancellation(self, env: Env) -> None:
        """InfrastructurePending proposed in bulk: a claimed run takes it; a run cancelled meanwhile is REJECTed and
        the answer shows its Cancelling state (the re-read after the pid)."""
        going = self.claimed(env, pid="job-1")
        stopping = self.claimed(env, pid="job-2")
        assert env.client.propose_state(stopping, StateType.CANCELLING).accepted
        from_states = (StateType.PENDING, StateType.CANCELLING, StateType.CANCELLED)
        answers = env.client.propose_states(
            [going, stopping], StateType.PENDING, name="InfrastructurePending", from_states=from_states
        )
        assert answers[going].status is SetStateStatus.ACCEPT
        assert (answers[going].state.type, answers[going].state.name) == (StateType.PENDING, "InfrastructurePending")
        assert answers[stopping].status is SetStateStatus.REJECT
        assert answers[stopping].reason == CANCELLING_ONLY
        assert answers[stopping].state.type is StateType.CANCELLING

    def test_a_retried_bulk_claim_is_reported_accepted(self, env: Env) -> None:
        """A bulk claim applied but whose answer was lost is sent again with the same transition id: the server
        REJECTs it as a duplicate (the runs are Pending now, and listed), reported ACCEPT; one Pending state each."""
        pool = env.pool()
        deployment = env.deployment(pool)
        runs = [env.run(deployment) for _ in range(3)]
        client = env.client_losing_next_answer()
        client.server_dialect()  # read once, before the counted calls
        before = client.calls
        answers = client.propose_states(runs, StateType.PENDING, from_states=self.CLAIM_FROM)
        assert client.calls - before == 2
        assert {run: answer.status for run, answer in answers.items()} == dict.fromkeys(runs, SetStateStatus.ACCEPT)
        for run in runs:
            assert env.history(run) == [("SCHEDULED", "Scheduled"), ("PENDING", "Pending")]

    def test_a_bulk_claim_of_more_runs_than_one_request_takes_is_sent_in_parts(self, env: Env) -> None:
        """The server takes at most 50 runs per request (limit ≤ 50): more are claimed in parts, every one."""
        pool = env.pool()
        deployment = env.deployment(pool)
        runs = [env.run(deployment) for _ in range(BULK_LIMIT + 3)]
        env.client.server_dialect()  # read once, before the counted calls
        before = env.client.calls
        answers = env.client.propose_states(runs, StateType.PENDING, from_states=self.CLAIM_FROM)
        assert env.client.calls - before == 2
        assert len(answers) == len(runs) and all(a.accepted for a in answers.values())

    def test_bulk_claims_need_a_3_6_16_server(self, env: Env) -> None:
        """Before 3.6.16 there is no bulk_set_state: refused with the version and what to upgrade to, nothing sent."""
        _, _, run = self.scheduled(env)
        env.speak_as("3.6.15")
        with pytest.raises(UnsupportedServerError, match=r"3\.6\.15.*3\.6\.16"):
            env.client.propose_states([run], StateType.PENDING, from_states=self.CLAIM_FROM)
        assert env.history(run) == [("SCHEDULED", "Scheduled")]

    def test_infrastructure_pid_is_written(self, env: Env) -> None:
        """set_infrastructure_pid is what a read shows afterwards."""
        run = self.claimed(env)
        assert env.client.read_flow_run(run).infrastructure_pid is None
        env.client.set_infrastructure_pid(run, "job-42")
        assert env.client.read_flow_run(run).infrastructure_pid == "job-42"

    def test_unknown_runs_are_not_found(self, env: Env) -> None:
        """Reads and writes of a run that does not exist raise ObjectNotFoundError; its state history is empty."""
        missing = str(uuid.uuid4())
        with pytest.raises(ObjectNotFoundError):
            env.client.read_flow_run(missing)
        with pytest.raises(ObjectNotFoundError):
            env.client.propose_state(missing, StateType.PENDING)
        with pytest.raises(ObjectNotFoundError):
            env.client.set_infrastructure_pid(missing, "x")
        with pytest.raises(ObjectNotFoundError):
            env.client.update_flow_run_labels(missing, {"a": "b"})
        assert env.client.read_flow_run_states(missing) == []

    def test_state_history(self, env: Env) -> None:
        """read_flow_run_states lists every state written, with ids, names and timestamps."""
        run = self.claimed(env)
        claim = env.client.read_flow_run(run).state
        states = env.client.read_flow_run_states(run)
        assert sorted((s["type"], s["name"]) for s in states) == [("PENDING", "Pending"), ("SCHEDULED", "Scheduled")]
        assert {s["id"] for s in states if s["type"] == "PENDING"} == {claim.id}
        assert all(s["timestamp"] for s in states)

    # -- get_scheduled_flow_runs ------------------------------------------------------------------------------------

    def test_due_runs_are_listed_in_order_before_the_cutoff_and_up_to_the_limit(self, env: Env) -> None:
        """Only Scheduled runs, by next scheduled start time; scheduled_before and limit apply; runs come abridged."""
        pool = env.pool()
        deployment = env.deployment(pool)
        now = env.now()
        late = env.run(deployment, at=now - 100 * S)
        soon = env.run(deployment, at=now - 10 * S)
        later = env.run(deployment, at=now + 3600 * S)
        claimed = env.run(deployment, at=now - 200 * S)
        assert env.client.propose_state(claimed, StateType.PENDING).accepted

        def listed(**kwargs: Any) -> list[str]:
            return [r.id for r in env.client.get_scheduled_flow_runs(pool, **kwargs)]

        assert listed() == [late, soon, later]
        assert listed(scheduled_before=now.isoformat()) == [late, soon]
        assert listed(scheduled_before=(now - 50 * S).isoformat()) == [late]
        assert listed(limit=1) == [late]
        first = env.client.get_scheduled_flow_runs(pool)[0]
        assert (first.work_pool_name, first.work_queue_name) == (None, None)
        read = env.client.read_flow_run(late)
        assert first.state is not None and read.state is not None  # of the state, only its type, name and id
        assert (first.state.type, first.state.name, first.state.id) == (StateType.SCHEDULED, "Scheduled", read.state.id)
        assert (first.state.timestamp, first.state.message) == (None, None)
        assert first.work_queue_id == read.work_queue_id and first.next_scheduled_start_time is not None

    def test_due_runs_come_a_page_at_a_time(self, env: Env) -> None:
        """A page is at most PAGE_SIZE (200) runs: a larger limit is refused with 422, so a backlog larger than a page
        is drained by asking again once the first page's runs are claimed (tests/unit/usecases/test_monitor.py)."""
        pool = env.pool()
        env.run(env.deployment(pool))
        assert len(env.client.get_scheduled_flow_runs(pool, limit=PAGE_SIZE)) == 1
        with pytest.raises(OrchestratorError) as refused:
            env.client.get_scheduled_flow_runs(pool, limit=PAGE_SIZE + 1)
        assert refused.value.status_code == 422
        assert f"must be less than or equal to {PAGE_SIZE}" in str(refused.value)

    def test_pause_flags_hide_due_runs(self, env: Env) -> None:
        """A paused pool lists nothing; a paused queue hides its own runs only."""
        pool = env.pool()
        env.queue(pool, "q2")
        deployment = env.deployment(pool)
        in_default = env.run(deployment)
        in_q2 = env.run(deployment, queue="q2")
        env.update_pool(pool, is_paused=True)
        assert env.client.get_scheduled_flow_runs(pool) == []
        env.update_pool(pool, is_paused=False)
        env.update_queue(pool, "default", is_paused=True)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [in_q2]
        env.update_queue(pool, "default", is_paused=False)
        assert {r.id for r in env.client.get_scheduled_flow_runs(pool)} == {in_default, in_q2}

    def test_the_pool_limit_counts_pending_and_running_runs(self, env: Env) -> None:
        """Room = pool limit - its Pending and Running runs (Cancelling ones do not count); a limit of 0 lists none."""
        pool = env.pool(concurrency_limit=2)
        deployment = env.deployment(pool)
        now = env.now()
        runs = [env.run(deployment, at=now - (30 - i) * S) for i in range(3)]
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == runs[:2]
        assert env.client.propose_state(runs[0], StateType.PENDING).accepted
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [runs[1]]
        assert env.client.propose_state(runs[0], StateType.CANCELLING).accepted
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == runs[1:]
        env.force(runs[0], StateType.RUNNING)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [runs[1]]
        env.update_pool(pool, concurrency_limit=0)
        assert env.client.get_scheduled_flow_runs(pool) == []
        env.update_pool(pool, concurrency_limit=None)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == runs[1:]

    def test_queue_priority_and_queue_limits(self, env: Env) -> None:
        """Runs come by queue priority, then start time; a queue's limit counts its own Pending and Running runs."""
        pool = env.pool()
        env.queue(pool, "hi", priority=1)  # takes priority 1: the default queue moves to 2
        env.queue(pool, "lo")
        deployment = env.deployment(pool)
        now = env.now()
        lo_10 = env.run(deployment, at=now - 10 * S, queue="lo")
        hi_5 = env.run(deployment, at=now - 5 * S, queue="hi")
        default_20 = env.run(deployment, at=now - 20 * S)
        lo_30 = env.run(deployment, at=now - 30 * S, queue="lo")
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [hi_5, default_20, lo_30, lo_10]
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool, work_queue_names=["lo"])] == [lo_30, lo_10]
        env.update_queue(pool, "lo", concurrency_limit=1)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [hi_5, default_20, lo_30]
        busy = env.run(deployment, at=now - 1 * S, queue="lo")
        env.force(busy, StateType.RUNNING)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [hi_5, default_20]

    def test_in_process_retries_are_not_listed(self, env: Env) -> None:
        """A run whose engine retries it in its own process is not handed out."""
        pool = env.pool()
        deployment = env.deployment(pool)
        plain = env.run(deployment)
        env.run(deployment, retry_in_process=True)
        assert [r.id for r in env.client.get_scheduled_flow_runs(pool)] == [plain]

    def test_unknown_pool(self, env: Env) -> None:
        """Reads of a pool that does not exist raise ObjectNotFoundError."""
        with pytest.raises(ObjectNotFoundError):
            env.client.get_scheduled_flow_runs(f"nope-{uuid.uuid4().hex[:8]}")
        with pytest.raises(ObjectNotFoundError):
            env.client.read_work_pool(f"nope-{uuid.uuid4().hex[:8]}")

    # -- filter and count -------------------------------------------------------------------------------------------

    def test_count_and_filter_by_state_and_pool(self, env: Env) -> None:
        """count and filter agree, and match on state type and pool name."""
        pool, other = env.pool(), env.pool()
        deployment, elsewhere = env.deployment(pool), env.deployment(other)
        scheduled = env.run(deployment)
        pending = env.run(deployment)
        running = env.run(deployment)
        done = env.run(deployment)
        env.force(pending, StateType.PENDING)
        env.force(running, StateType.RUNNING)
        env.force(done, StateType.COMPLETED)
        env.force(env.run(elsewhere), StateType.PENDING)
        body = _in_pool(pool, *IN_FLIGHT)
        assert env.client.count_flow_runs(body) == 2
        assert {r.id for r in env.client.filter_flow_runs(body)} == {pending, running}
        both = {**body, "work_pools": {"name": {"any_": [pool, other]}}}
        assert env.client.count_flow_runs(both) == 3
        assert {r.id for r in env.client.filter_flow_runs(_in_pool(pool, "SCHEDULED"))} == {scheduled}
        assert env.client.count_flow_runs({"work_pools": {"name": {"any_": [pool]}}}) == 4
        assert len(list(env.client.filter_flow_runs({"work_pools": {"name": {"any_": [pool]}}}, limit=3))) == 3
        assert env.client.count_flow_runs(_in_pool(pool)) == 0  # an empty any_ matches nothing

    def test_end_time_after_is_inclusive_and_skips_unfinished_runs(self, env: Env) -> None:
        """end_time.after_ keeps runs that ended at or after the instant; runs without an end time never match."""
        pool = env.pool()
        deployment = env.deployment(pool)
        done = env.run(deployment)
        env.run(deployment)  # still Scheduled: no end time
        env.force(done, StateType.COMPLETED)
        ended = env.client.read_flow_run(done).end_time

        def after(moment: dt.datetime) -> set[str]:
            body = {"flow_runs": {"end_time": {"after_": moment.isoformat()}}, "work_pools": {"name": {"any_": [pool]}}}
            return {r.id for r in env.client.filter_flow_runs(body)}

        assert after(ended) == {done}
        assert after(ended + dt.timedelta(microseconds=1)) == set()
        assert after(ended - 3600 * S) == {done}

    def test_work_queue_name_filter_misses_runs_whose_queue_was_defaulted(self, env: Env) -> None:
        """A run whose queue nobody named reads as "default" but flow_runs.work_queue_name does not match it;
        work_pool_queues.name does."""
        pool = env.pool()
        plain = env.deployment(pool)
        named = env.deployment(pool, work_queue_name="default")
        runs = [env.run(plain), env.run(plain, queue="default"), env.run(named)]
        assert [env.client.read_flow_run(r).work_queue_name for r in runs] == ["default"] * 3
        by_column = {"flow_runs": {"work_queue_name": {"any_": ["default"]}}, "work_pools": {"name": {"any_": [pool]}}}
        assert {r.id for r in env.client.filter_flow_runs(by_column)} == set(runs[1:])
        by_queue = {"work_pool_queues": {"name": {"any_": ["default"]}}, "work_pools": {"name": {"any_": [pool]}}}
        assert env.client.count_flow_runs(by_queue) == 3

    def test_start_time_sort_falls_back_to_the_expected_start_time(self, env: Env) -> None:
        """START_TIME_DESC sorts by start time, or expected start time for runs that never started."""
        pool = env.pool()
        deployment = env.deployment(pool)
        now = env.now()
        overdue = env.run(deployment, at=now - 3600 * S)
        future = env.run(deployment, at=now + 3600 * S)
        started = env.run(deployment)
        env.force(started, StateType.RUNNING)
        body = {"work_pools": {"name": {"any_": [pool]}}, "sort": "START_TIME_DESC"}
        assert [r.id for r in env.client.filter_flow_runs(body)] == [future, started, overdue]

    @pytest.mark.parametrize(
        "body",
        [
            {"flow_runs": {"stat": {"type": {"any_": ["PENDING"]}}}},
            {"flow_runs": {"state": {"typ": {"any_": ["PENDING"]}}}},
            {"flow_runs": {"state": {"type": {"any_": ["NOPE"]}}}},
            {"flow_runs": {"end_time": {"aftr_": "2026-01-01T00:00:00+00:00"}}},
            {"work_pools": {"nme": {"any_": ["x"]}}},
        ],
    )
    def test_an_unknown_filter_key_is_refused(self, env: Env, body: dict[str, Any]) -> None:
        """A misspelt filter is an HTTP 422, never silently ignored."""
        with pytest.raises(OrchestratorError) as refused:
            list(env.client.filter_flow_runs(body))
        assert refused.value.status_code == 422
        with pytest.raises(OrchestratorError):
            env.client.count_flow_runs(body)

    # -- deployments, pools, variables ------------------------------------------------------------------------------

    def test_deployment_reads_and_deletion(self, env: Env) -> None:
        """A deployment reads with its job variables and queue; deleting it deletes its Scheduled runs except those
        AwaitingConcurrencySlot; other runs keep the dangling deployment id."""
        pool = env.pool()
        deployment = env.deployment(pool, job_variables={"env": {"A": "1"}})
        read = env.client.read_deployment(deployment)
        assert (read.job_variables, read.work_pool_name, read.work_queue_name) == ({"env": {"A": "1"}}, pool, "default")
        scheduled, waiting, pending = env.run(deployment), env.run(deployment), env.run(deployment)
        env.force(waiting, StateType.SCHEDULED, name="AwaitingConcurrencySlot")
        env.force(pending, StateType.PENDING)
        env.delete_deployment(deployment)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_deployment(deployment)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_flow_run(scheduled)
        assert env.client.read_flow_run(waiting).deployment_id == deployment
        assert env.client.read_flow_run(pending).deployment_id == deployment

    def test_deployments_filter_by_id_and_paused_with_their_schedules(self, env: Env) -> None:
        """``/deployments/filter`` finds deployments by id and paused flag and gives each schedule with its ``active``
        flag and its ``interval`` (seconds); runs filter by deployment and by expected start time."""
        pool = env.pool()
        active = env.scheduled_deployment(pool, interval=3600)
        paused = env.scheduled_deployment(pool, interval=3600, paused=True)
        plain = env.deployment(pool)
        ids = {"id": {"any_": [active, paused, plain]}}
        found = {d.id: d for d in env.client.filter_deployments({"deployments": ids})}
        assert set(found) == {active, paused, plain}
        assert (found[active].paused, found[paused].paused) == (False, True)
        (schedule,) = found[active].schedules or []
        assert schedule["active"] is True and float(schedule["schedule"]["interval"]) == 3600
        assert found[plain].schedules == []
        running = env.client.filter_deployments({"deployments": {**ids, "paused": {"eq_": False}}})
        assert {d.id for d in running} == {active, plain}
        other_pool = env.pool()
        elsewhere = env.scheduled_deployment(other_pool, interval=3600)
        in_pool = env.client.filter_deployments({"work_pools": {"name": {"any_": [other_pool]}}})
        assert [d.id for d in in_pool] == [elsewhere]

        now = env.now()
        soon, later = env.run(plain, at=now + 60 * S), env.run(plain, at=now + 600 * S)
        env.run(env.deployment(pool), at=now + 600 * S)  # another deployment's
        after = {"deployment_id": {"any_": [plain]}, "expected_start_time": {"after_": (now + 120 * S).isoformat()}}
        assert [r.id for r in env.client.filter_flow_runs({"flow_runs": after})] == [later]
        before = {"deployment_id": {"any_": [plain]}, "expected_start_time": {"before_": (now + 120 * S).isoformat()}}
        assert [r.id for r in env.client.filter_flow_runs({"flow_runs": before})] == [soon]

    def test_a_deployment_made_through_the_client_runs_and_is_deleted(self, env: Env) -> None:
        """A flow is upserted by name, a deployment by flow and name; a run of it is Scheduled now in the pool;
        deleting the deployment deletes its Scheduled run; deleting it again is not found."""
        pool = env.pool()
        flow = env.client.create_flow("contract-canary")
        assert env.client.create_flow("contract-canary").id == flow.id
        body = {"name": f"canary-{pool}", "flow_id": flow.id, "work_pool_name": pool, "entrypoint": "x.py:f"}
        deployment = env.client.create_deployment(body)
        assert env.client.create_deployment(body).id == deployment.id
        assert (deployment.work_pool_name, deployment.name) == (pool, f"canary-{pool}")
        run = env.client.create_flow_run(deployment.id, {})
        assert (run.state_type, run.deployment_id, run.work_pool_name) == (StateType.SCHEDULED, deployment.id, pool)
        env.client.delete_deployment(deployment.id)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_flow_run(run.id)
        with pytest.raises(ObjectNotFoundError):
            env.client.delete_deployment(deployment.id)

    def test_work_pool_create_read_update(self, env: Env) -> None:
        """A created pool has a default queue; a second create is a 409; an unknown update key a 422."""
        name = f"oc-{uuid.uuid4().hex[:8]}"
        created = env.client.create_work_pool({"name": name, "type": "process:push", "concurrency_limit": 3})
        assert (created.name, created.concurrency_limit, created.base_job_template) == (name, 3, {})
        default = env.client.read_work_queue(name, "default")
        assert created.default_queue_id == default.id
        with pytest.raises(OrchestratorError) as duplicate:
            env.client.create_work_pool({"name": name, "type": "process:push"})
        assert duplicate.value.status_code == 409
        env.client.update_work_pool(name, {"concurrency_limit": None, "is_paused": True})
        read = env.client.read_work_pool(name)
        assert (read.concurrency_limit, read.is_paused) == (None, True)
        assert name in {p.name for p in env.client.filter_work_pools()}
        with pytest.raises(OrchestratorError) as refused:
            env.client.update_work_pool(name, {"type": "ecs:push"})
        assert refused.value.status_code == 422
        with pytest.raises(ObjectNotFoundError):
            env.client.read_work_queue(name, "nope")

    def test_worker_heartbeats_make_a_pool_ready(self, env: Env) -> None:
        """A new pool is NOT_READY; a heartbeat makes it READY (a paused one stays PAUSED); a worker can be deleted
        once (then 404); a heartbeat into a missing pool is a 404."""
        name = env.pool()
        assert env.client.read_work_pool(name).status == "NOT_READY"
        env.client.heartbeat_worker(name, "pushpool", 5)
        assert env.client.read_work_pool(name).status == "READY"
        paused = env.pool(is_paused=True)
        env.client.heartbeat_worker(paused, "pushpool", 5)
        assert env.client.read_work_pool(paused).status == "PAUSED"
        env.client.delete_worker(name, "pushpool")
        with pytest.raises(ObjectNotFoundError):
            env.client.delete_worker(name, "pushpool")
        with pytest.raises(ObjectNotFoundError):
            env.client.heartbeat_worker(f"oc-missing-{uuid.uuid4().hex[:8]}", "pushpool", 5)

    def test_variables(self, env: Env) -> None:
        """read_variable returns the value; an unknown variable is ObjectNotFoundError; write_variable creates or
        updates one."""
        name = f"oc_{uuid.uuid4().hex[:8]}"
        env.variable(name, {"a": [1, 2]})
        assert env.client.read_variable(name) == {"a": [1, 2]}
        with pytest.raises(ObjectNotFoundError):
            env.client.read_variable(f"{name}_missing")
        env.client.write_variable(f"{name}_written", {"hours": 1.5})  # created
        env.client.write_variable(f"{name}_written", {"hours": 2})  # updated
        assert env.client.read_variable(f"{name}_written") == {"hours": 2}

    # -- blocks and automations -------------------------------------------------------------------------------------

    def test_block_documents(self, env: Env) -> None:
        """Create (secrets masked in the answer), read by id and name with secrets, 409 on a duplicate name,
        update replaces the data, delete."""
        type_id = env.client.read_block_type_id("webhook")
        schema_id = env.client.read_latest_block_schema_id(type_id)
        name = f"oc-{uuid.uuid4().hex[:8]}"
        data = {"method": "POST", "url": "http://x/submit", "headers": {"Authorization": "Bearer t"}, "verify": True}
        body = {"name": name, "data": data, "block_type_id": type_id, "block_schema_id": schema_id}
        created = env.client.create_block_document(body)
        assert created.data["url"] == "********"
        assert created.data["headers"] == {"Authorization": "********"}
        assert env.client.read_block_document(created.id).data == data
        assert env.client.read_block_document_by_name("webhook", name).id == created.id
        with pytest.raises(OrchestratorError) as duplicate:
            env.client.create_block_document(body)
        assert duplicate.value.status_code == 409
        env.client.update_block_document(created.id, {"url": "http://y/submit", "method": "GET"})
        assert env.client.read_block_document(created.id).data == {"url": "http://y/submit", "method": "GET"}
        env.client.delete_block_document(created.id)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_block_document(created.id)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_block_document_by_name("webhook", name)
        with pytest.raises(ObjectNotFoundError):
            env.client.read_block_type_id("no-such-block-type")

    def test_automations(self, env: Env) -> None:
        """Create, find by name (the server adds ids and defaults, and may reorder expect), replace, delete."""
        pool = env.pool()
        body = automation_body(pool, str(uuid.uuid4()))
        automation_id = env.client.create_automation(body)
        (found,) = env.client.find_automations(body["name"])
        assert found["id"] == automation_id
        assert sorted(found["trigger"]["expect"]) == sorted(body["trigger"]["expect"])
        assert found["trigger"]["match_related"] == body["trigger"]["match_related"]
        assert found["actions"] == body["actions"]
        env.client.replace_automation(automation_id, {**body, "description": "changed"})
        assert env.client.find_automations(body["name"])[0]["description"] == "changed"
        env.client.delete_automation(automation_id)
        assert env.client.find_automations(body["name"]) == []
        with pytest.raises(ObjectNotFoundError):
            env.client.delete_automation(automation_id)


@pytest.mark.integration
class TestRealPrefect(OrchestrationContract):
    @pytest.fixture
    def env(self, prefect_api: str, prefect: PrefectHelper) -> RealEnv:
        real = RealEnv(prefect_api, prefect)
        yield real
        real.close()


class TestFakePrefect(OrchestrationContract):
    @pytest.fixture
    def env(self) -> FakeEnv:
        fake = FakeEnv()
        yield fake
        fake.close()
