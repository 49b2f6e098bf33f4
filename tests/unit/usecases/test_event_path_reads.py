"""The event path (webhook, event stream, delayed trigger) shares pool, queue and deployment reads between runs for a
bounded time (issue 14 item 2; issue 25: deployments too): a run then costs 4 orchestration calls; limit counts are
always fresh, and a change is used by every run whose reads are sent ``read_cache_seconds`` after it or later."""

from __future__ import annotations

from typing import Any

import pytest
from pushpool.clock import FixedClock
from pushpool.entrypoints.http import handle_run_event
from pushpool.prefect_api.models import Deployment, StateType, WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.submit import SubmitOutcome

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL


def _calls(fake: FakePrefect) -> dict[str, int]:
    return {k: v for k, v in fake.calls_by_method.items() if v}


def _command(backend: LatencyBackend, answer: dict[str, Any]) -> list[str]:
    assert answer["outcome"] == SubmitOutcome.SUBMITTED, answer
    spec = backend.jobs[answer["job_id"]].spec
    assert spec is not None
    return list(spec.command)


def test_a_second_run_of_the_pool_and_deployment_costs_four_calls(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    deployment = fake.add_deployment(POOL)
    first, second, third = (fake.add_run(deployment) for _ in range(3))
    fake.calls_by_method.clear()
    assert handle_run_event(deps, first, trigger="webhook")["outcome"] == SubmitOutcome.SUBMITTED
    assert _calls(fake) == {
        "read_flow_run": 1,
        "read_work_pool": 1,
        "read_work_queue": 1,
        "read_deployment": 1,
        "propose_state": 2,
        "set_infrastructure_pid": 1,
    }
    fake.calls_by_method.clear()
    assert handle_run_event(deps, second, trigger="webhook")["outcome"] == SubmitOutcome.SUBMITTED
    assert _calls(fake) == {"read_flow_run": 1, "propose_state": 2, "set_infrastructure_pid": 1}

    fake.set_pool(POOL, is_paused=True)
    clock.advance(deps.settings.read_cache_seconds)  # the shared reads are less than this old
    fake.calls_by_method.clear()
    assert handle_run_event(deps, third, trigger="webhook")["outcome"] == SubmitOutcome.PAUSED
    assert fake.calls_by_method["read_work_pool"] == 1


def test_a_deployment_change_is_used_from_read_cache_seconds_after_it(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, backend: LatencyBackend
) -> None:
    """The documented bound: job variables changed at T are used by every run submitted at T + read_cache_seconds or
    later (a run submitted sooner may still get the previous ones)."""
    deployment = fake.add_deployment(POOL, job_variables={"command": "echo old"})
    runs = [fake.add_run(deployment) for _ in range(3)]
    assert _command(backend, handle_run_event(deps, runs[0], trigger="webhook")) == ["echo", "old"]
    fake.deployments[deployment].job_variables = {"command": "echo new"}  # changed at T
    clock.advance(deps.settings.read_cache_seconds / 2)
    assert _command(backend, handle_run_event(deps, runs[1], trigger="webhook")) == ["echo", "old"]  # within
    clock.advance(deps.settings.read_cache_seconds / 2)  # T + read_cache_seconds
    assert _command(backend, handle_run_event(deps, runs[2], trigger="webhook")) == ["echo", "new"]


def test_the_bound_counts_from_when_the_read_was_sent_not_answered(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, backend: LatencyBackend, monkeypatch
) -> None:
    """A slow deployment read (Prefect's SQLite stalls a call for seconds) answers what the deployment was when it was
    sent: counting from the answer would keep values older than the bound."""
    deployment = fake.add_deployment(POOL, job_variables={"command": "echo old"})
    runs = [fake.add_run(deployment) for _ in range(2)]
    read = fake.read_deployment
    delay = deps.settings.read_cache_seconds * 0.75

    def slow_read(deployment_id: str) -> Deployment:
        answer = read(deployment_id)
        fake.deployments[deployment].job_variables = {"command": "echo new"}  # changed while the answer travels
        clock.advance(delay)
        return answer

    monkeypatch.setattr(fake, "read_deployment", slow_read)
    assert _command(backend, handle_run_event(deps, runs[0], trigger="webhook")) == ["echo", "old"]
    monkeypatch.setattr(fake, "read_deployment", read)
    clock.advance(deps.settings.read_cache_seconds - delay)  # read_cache_seconds after the read was sent
    assert _command(backend, handle_run_event(deps, runs[1], trigger="webhook")) == ["echo", "new"]


def test_a_read_in_flight_when_a_change_is_reported_is_not_kept(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, backend: LatencyBackend, monkeypatch
) -> None:
    """serve forgets the shared reads when Prefect's event stream reports a deployment updated; a read sent before that
    report and answered after it carries the old job variables and must not be kept for the next run."""
    deployment = fake.add_deployment(POOL, job_variables={"command": "echo old"})
    runs = [fake.add_run(deployment) for _ in range(2)]
    read = fake.read_deployment

    def read_meanwhile_updated(deployment_id: str) -> Deployment:
        answer = read(deployment_id)
        fake.deployments[deployment].job_variables = {"command": "echo new"}
        clock.advance(0.1)
        deps.pool_reads.forget()  # the event stream's prefect.deployment.updated reached serve
        return answer

    monkeypatch.setattr(fake, "read_deployment", read_meanwhile_updated)
    assert _command(backend, handle_run_event(deps, runs[0], trigger="webhook")) == ["echo", "old"]
    monkeypatch.setattr(fake, "read_deployment", read)
    assert _command(backend, handle_run_event(deps, runs[1], trigger="webhook")) == ["echo", "new"]


def test_a_deployment_not_found_is_not_kept(deps: Deps, fake: FakePrefect, pool: WorkPool) -> None:
    deployment = fake.add_deployment(POOL)
    with pytest.raises(Exception, match="not found"):
        deps.pool_reads.deployment("00000000-0000-4000-8000-000000000000")
    fake.calls_by_method.clear()
    with pytest.raises(Exception, match="not found"):
        deps.pool_reads.deployment("00000000-0000-4000-8000-000000000000")
    assert fake.calls_by_method["read_deployment"] == 1
    assert deps.pool_reads.deployment(deployment).id == deployment


def test_with_the_cache_off_every_run_reads_its_pool_queue_and_deployment(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    deps = Deps(settings=deps.settings.replace(read_cache_seconds=0), orchestrator=fake, clock=deps.clock)
    deps._backends["process"] = LatencyBackend()
    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment) for _ in range(2)]
    fake.calls_by_method.clear()
    for run_id in runs:
        handle_run_event(deps, run_id, trigger="webhook")
    assert fake.calls_by_method["read_work_pool"] == 2 and fake.calls_by_method["read_work_queue"] == 2
    assert fake.calls_by_method["read_deployment"] == 2


def test_a_run_of_a_deployment_deleted_read_cache_seconds_ago_is_cancelled(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock, backend: LatencyBackend
) -> None:
    """A deployment shared between runs and then deleted: its leftover runs (Prefect keeps AwaitingConcurrencySlot
    ones) are cancelled, no job, once the bound has passed — the shared read is not a deployment that lives on."""
    deployment = fake.add_deployment(POOL)
    first, second = fake.add_run(deployment), fake.add_run(deployment)
    assert handle_run_event(deps, first, trigger="webhook")["outcome"] == SubmitOutcome.SUBMITTED
    fake.force_state(second, StateType.SCHEDULED, name="AwaitingConcurrencySlot")
    fake.delete_deployment(deployment)
    clock.advance(deps.settings.read_cache_seconds)
    answer = handle_run_event(deps, second, trigger="webhook")
    assert answer["outcome"] == SubmitOutcome.CANCELLED, answer
    assert fake.run(second).state_type is StateType.CANCELLED
    assert [job.spec.run_id for job in backend.jobs.values() if job.spec] == [first]


# -- one read per key at a time ---------------------------------------------------------------------------------------


class _SlowClient:
    """A client whose pool reads block until released, counting them; ``fail`` makes the next answer an error."""

    def __init__(self) -> None:
        import threading

        self.reads = 0
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail: Exception | None = None

    def read_work_pool(self, name: str) -> WorkPool:
        self.reads += 1
        self.started.set()
        assert self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return WorkPool(id="pool-id", name=name, type="process:push")


def _reading(reads, name: str = POOL):
    """Start ``reads.pool(name)`` in a thread: (thread, box holding its answer or error)."""
    import threading

    box: list[object] = []

    def run() -> None:
        try:
            box.append(reads.pool(name))
        except Exception as exc:  # noqa: BLE001 - the answer under test
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_runs_arriving_while_a_read_is_in_flight_wait_for_it_instead_of_sending_their_own() -> None:
    """A burst arriving while Prefect answers slowly: one read of the pool, not one per arrival."""
    import time

    from pushpool.usecases.pool_reads import PoolReads

    client, now = _SlowClient(), [100.0]
    reads = PoolReads(client, 2.0, lambda: now[0])  # type: ignore[arg-type]
    first, box = _reading(reads)
    assert client.started.wait(5)
    others = [_reading(reads) for _ in range(5)]
    time.sleep(0.2)  # the five are waiting, not reading
    client.release.set()
    for thread, _ in [(first, box), *others]:
        thread.join(5)
    assert client.reads == 1
    assert all(isinstance(b[0], WorkPool) for b in [box, *(b for _, b in others)])


def test_a_read_in_flight_longer_than_the_bound_or_from_before_a_forget_is_not_joined() -> None:
    """Joining a read sent ``read_cache_seconds`` ago or more — or before a change was reported — could answer values
    older than the bound: such an arrival reads for itself."""
    from pushpool.usecases.pool_reads import PoolReads

    for late in ("past the bound", "after a forget"):
        client, now = _SlowClient(), [100.0]
        reads = PoolReads(client, 2.0, lambda now=now: now[0])  # type: ignore[arg-type]
        first, _ = _reading(reads)
        assert client.started.wait(5)
        if late == "past the bound":
            now[0] += 2.0
        else:
            now[0] += 0.5
            reads.forget()
        second, _ = _reading(reads)
        client.release.set()
        first.join(5)
        second.join(5)
        assert client.reads == 2, late


def test_the_error_of_a_read_in_flight_is_every_waiters_and_is_not_kept() -> None:
    import time

    from pushpool.errors import OrchestratorUnavailableError
    from pushpool.usecases.pool_reads import PoolReads

    client, now = _SlowClient(), [100.0]
    reads = PoolReads(client, 2.0, lambda: now[0])  # type: ignore[arg-type]
    client.fail = OrchestratorUnavailableError("Prefect API unavailable")
    first, box = _reading(reads)
    assert client.started.wait(5)
    second, other = _reading(reads)
    time.sleep(0.2)
    client.release.set()
    first.join(5)
    second.join(5)
    assert isinstance(box[0], OrchestratorUnavailableError) and isinstance(other[0], OrchestratorUnavailableError)
    assert client.reads == 1
    client.fail = None
    assert isinstance(reads.pool(POOL), WorkPool) and client.reads == 2  # nothing kept: read again
