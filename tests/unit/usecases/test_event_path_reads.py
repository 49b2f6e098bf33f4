"""The event path (webhook, event stream, delayed trigger) shares pool and queue reads between runs for a bounded
time (issue 14, item 2): a run then costs 5 orchestration calls; deployments and limit counts are always fresh."""

from __future__ import annotations

from pushpool.clock import FixedClock
from pushpool.entrypoints.http import handle_run_event
from pushpool.prefect_api.models import WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.submit import SubmitOutcome

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL


def _calls(fake: FakePrefect) -> dict[str, int]:
    return {k: v for k, v in fake.calls_by_method.items() if v}


def test_a_second_run_of_the_pool_costs_five_calls(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    deployment = fake.add_deployment(POOL)
    first, second, third = (fake.add_run(deployment) for _ in range(3))
    assert handle_run_event(deps, first, trigger="webhook")["outcome"] == SubmitOutcome.SUBMITTED
    fake.calls_by_method.clear()
    assert handle_run_event(deps, second, trigger="webhook")["outcome"] == SubmitOutcome.SUBMITTED
    assert _calls(fake) == {"read_flow_run": 1, "read_deployment": 1, "propose_state": 2, "set_infrastructure_pid": 1}

    fake.set_pool(POOL, is_paused=True)
    clock.advance(deps.settings.read_cache_seconds + 0.1)  # the shared reads are at most this old
    fake.calls_by_method.clear()
    assert handle_run_event(deps, third, trigger="webhook")["outcome"] == SubmitOutcome.PAUSED
    assert fake.calls_by_method["read_work_pool"] == 1


def test_deployments_are_always_read_fresh(deps: Deps, fake: FakePrefect, pool: WorkPool) -> None:
    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment) for _ in range(3)]
    fake.calls_by_method.clear()
    for run_id in runs:
        handle_run_event(deps, run_id, trigger="webhook")
    assert fake.calls_by_method["read_deployment"] == 3
    assert fake.calls_by_method["read_work_pool"] == 1 and fake.calls_by_method["read_work_queue"] == 1


def test_with_the_cache_off_every_run_reads_its_pool_and_queue(deps: Deps, fake: FakePrefect, pool: WorkPool) -> None:
    deps = Deps(settings=deps.settings.replace(read_cache_seconds=0), orchestrator=fake, clock=deps.clock)
    deps._backends["process"] = LatencyBackend()
    deployment = fake.add_deployment(POOL)
    runs = [fake.add_run(deployment) for _ in range(2)]
    fake.calls_by_method.clear()
    for run_id in runs:
        handle_run_event(deps, run_id, trigger="webhook")
    assert fake.calls_by_method["read_work_pool"] == 2 and fake.calls_by_method["read_work_queue"] == 2
