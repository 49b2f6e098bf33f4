"""The monitor heartbeats into the pools it serves, so Prefect shows them Ready (issue 13, item 7)."""

from __future__ import annotations

from collections import Counter

from pushpool.clock import FixedClock
from pushpool.prefect_api.models import WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.heartbeat import stop_serving
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import SubmitOutcome

from tests.fake_prefect import FakePrefect
from tests.unit.usecases.support import POOL


def test_a_tick_makes_the_served_pools_ready_and_only_those(deps: Deps, fake: FakePrefect, pool: WorkPool) -> None:
    other = fake.add_pool("hybrid", "process")  # Prefect's own process worker type: not pushpool's
    assert fake.read_work_pool(POOL).status == "NOT_READY"
    assert tick(deps).errors == []
    assert fake.read_work_pool(POOL).status == "READY"
    assert fake.workers == {(POOL, "pushpool"): 60}  # its name and interval from the settings
    assert fake.read_work_pool(other.name).status == "NOT_READY"


def test_the_heartbeat_interval_and_worker_name_come_from_the_settings(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    deps.settings = deps.settings.replace(worker_name="pushpool-serve@host", heartbeat_interval_seconds=5)
    tick(deps)
    assert fake.workers == {(POOL, "pushpool-serve@host"): 5}


def test_a_failed_heartbeat_is_reported_and_the_tick_goes_on(deps: Deps, fake: FakePrefect, pool: WorkPool) -> None:
    run = fake.add_run(fake.add_deployment(POOL))
    fake.unavailable("heartbeat_worker")
    report = tick(deps)
    assert [e for e in report.errors if e.startswith(f"heartbeat into pool {POOL}:")], report.errors
    assert report.dispatched == Counter({SubmitOutcome.SUBMITTED: 1})
    assert fake.run(run).state_name == "InfrastructurePending"


def test_stop_serving_removes_the_worker_and_tolerates_a_missing_one(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    tick(deps)
    stop_serving(deps, [pool.name])
    assert fake.workers == {}
    stop_serving(deps, [pool.name])  # already gone: nothing to do, no error


def test_ticks_heartbeat_once_per_interval_and_again_after_a_failure(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock: FixedClock
) -> None:
    """A heartbeat is a write (and Prefect follows it with more): a serve ticking every 5 s heartbeats every 30 s."""
    deps.settings = deps.settings.replace(heartbeat_interval_seconds=30)
    beats = lambda: fake.calls_by_method["heartbeat_worker"]  # noqa: E731
    tick(deps)
    assert beats() == 1
    for _ in range(5):  # 25 s of 5 s ticks: no heartbeat is due
        clock.advance(5)
        tick(deps)
    assert beats() == 1
    clock.advance(5)  # 30 s after the first
    tick(deps)
    assert beats() == 2
    fake.unavailable("heartbeat_worker")
    clock.advance(30)
    assert tick(deps).errors
    clock.advance(5)  # the failed one is not remembered as done: the next tick tries again
    tick(deps)
    assert fake.read_work_pool(POOL).status == "READY" and beats() == 4


def test_stop_serving_forgets_the_heartbeat_so_a_new_tick_beats_at_once(
    deps: Deps, fake: FakePrefect, pool: WorkPool
) -> None:
    tick(deps)
    stop_serving(deps, [pool.name])
    tick(deps)
    assert fake.workers == {(POOL, "pushpool"): 60}
