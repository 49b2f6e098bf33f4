"""Punctual dispatch on a real Prefect server (issue 14), with serve's TimerTrigger and no monitor ticking: a run
scheduled ahead is started by its trigger at its time minus the lead; a stale trigger changes nothing; a lost one
costs one tick; pause flags and limits hold for triggered runs, also in a burst."""

from __future__ import annotations

import datetime as dt
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from pushpool.entrypoints.http import handle_run_event
from pushpool.entrypoints.timers import TimerTrigger
from pushpool.providers.base import JobHandle

from tests.helpers import PrefectHelper, pool_tick

pytestmark = pytest.mark.integration

LEAD = 3.0  # the process pool template's dispatch_lead_seconds


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Fired:
    """Serve's wiring in miniature: each delivery submits the run on a thread pool (as serve's work pool does)."""

    def __init__(self, deps) -> None:
        self.deps = deps
        self.executor = ThreadPoolExecutor(max_workers=8)
        self.futures: list[Future] = []
        self.trigger = TimerTrigger(self._fire).start()
        deps.trigger = self.trigger

    def _fire(self, run_id: str) -> None:
        self.futures.append(self.executor.submit(handle_run_event, self.deps, run_id, trigger="timer"))

    def outcomes(self, count: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.futures) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return [f.result(timeout=30) for f in self.futures]

    def close(self) -> None:
        self.trigger.stop()
        self.executor.shutdown(wait=True)


@pytest.fixture
def fired(deps):
    made = Fired(deps)
    yield made
    made.close()


def _scheduled(prefect: PrefectHelper, dep: str, at: dt.datetime) -> str:
    return prefect.create_run(dep, state={"type": "SCHEDULED", "state_details": {"scheduled_time": at.isoformat()}})


def _stop_jobs(deps, prefect: PrefectHelper, run_ids: list[str]) -> None:
    for run_id in run_ids:
        pid = prefect.read_run(run_id)["infrastructure_pid"]
        if pid:
            deps.backend("process").cancel(JobHandle("process", pid), grace_seconds=1)


def test_a_run_scheduled_ahead_is_started_by_its_trigger_at_its_time_minus_the_lead(
    deps, fired: Fired, prefect: PrefectHelper, pool: str
) -> None:
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    due = _now() + dt.timedelta(seconds=LEAD + 2)
    run_id = _scheduled(prefect, dep, due)
    told = handle_run_event(deps, run_id, trigger="webhook")  # its Scheduled event
    assert told["outcome"] == "deferred" and "(trigger armed)" in told["detail"]
    (answer,) = fired.outcomes(1)
    assert answer["outcome"] == "submitted", answer
    accepted = next(
        s
        for s in prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
        if s["name"] == "InfrastructurePending"
    )
    lateness = (_time(accepted["timestamp"]) - (due - dt.timedelta(seconds=LEAD))).total_seconds()
    print(f"triggered run accepted {lateness:+.3f} s after its dispatch time (scheduled time - {LEAD:.0f} s)")
    assert lateness >= -0.1  # never before its time
    _stop_jobs(deps, prefect, [run_id])


def test_a_stale_trigger_of_a_rescheduled_or_cancelled_run_does_nothing(
    deps, fired: Fired, prefect: PrefectHelper, pool: str
) -> None:
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    due = _now() + dt.timedelta(seconds=LEAD + 3)  # time to move and cancel them before their triggers fire
    moved, cancelled = _scheduled(prefect, dep, due), _scheduled(prefect, dep, due)
    for run_id in (moved, cancelled):
        assert handle_run_event(deps, run_id, trigger="webhook")["outcome"] == "deferred"
    later = _now() + dt.timedelta(hours=1)
    prefect.set_state(moved, "SCHEDULED", force=True, state_details={"scheduled_time": later.isoformat()})
    prefect.set_state(cancelled, "CANCELLED", force=True)
    answers = fired.outcomes(2)
    assert sorted(a["outcome"] for a in answers if a["flow_run_id"] == moved) == ["deferred"]
    assert prefect.state(moved) == ("SCHEDULED", "Scheduled") and prefect.state(cancelled)[0] == "CANCELLED"
    assert fired.trigger.pending() == {moved: later - dt.timedelta(seconds=LEAD)}  # re-armed for its new time
    jobs = os.listdir(deps.settings.process_dir) if deps.settings.process_dir.exists() else []
    assert not [j for j in jobs if j.startswith((moved, cancelled))]


def test_a_lost_trigger_costs_one_tick(deps, prefect: PrefectHelper, pool: str) -> None:
    class Lost:
        max_delay_seconds = None
        early_seconds = 0.0

        def arm(self, run_id: str, at: dt.datetime) -> None:  # the message never arrives
            pass

    deps.trigger = Lost()
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    due = _now() + dt.timedelta(seconds=LEAD + 2)
    run_id = _scheduled(prefect, dep, due)
    assert handle_run_event(deps, run_id, trigger="webhook")["outcome"] == "deferred"
    time.sleep(max(0.0, (due - dt.timedelta(seconds=LEAD) - _now()).total_seconds()) + 0.1)  # its time has come
    assert pool_tick(deps, pool).dispatched.get("submitted") == 1
    assert prefect.state(run_id)[0] == "PENDING"
    _stop_jobs(deps, prefect, [run_id])


def test_pause_flags_and_limits_hold_for_triggered_runs(deps, fired: Fired, prefect: PrefectHelper) -> None:
    paused_pool, limited_pool = prefect.unique("tpause"), prefect.unique("tlimit")
    prefect.create_pool(paused_pool)
    prefect.create_pool(limited_pool, concurrency_limit=1)
    running = prefect.create_run(prefect.create_deployment(limited_pool, job_variables={"command": "sleep 30"}))
    assert handle_run_event(deps, running, trigger="webhook")["outcome"] == "submitted"
    # Fired over read_cache_seconds (2 s) after the pause: with no event stream to say the pool changed, that is how
    # old a pause flag may be (serve forgets shared reads on Prefect's pool events: test_serve_webhook). The margin
    # covers making the runs and handling their events first (over 1 s on a loaded machine), then the pause.
    due = _now() + dt.timedelta(seconds=LEAD + deps.settings.read_cache_seconds + 6)
    in_paused = _scheduled(prefect, prefect.create_deployment(paused_pool, job_variables={"command": "sleep 30"}), due)
    in_limited = _scheduled(
        prefect, prefect.create_deployment(limited_pool, job_variables={"command": "sleep 30"}), due
    )
    for run_id in (in_paused, in_limited):
        assert handle_run_event(deps, run_id, trigger="webhook")["outcome"] == "deferred"
    prefect.json("PATCH", f"/work_pools/{paused_pool}", json={"is_paused": True})
    fires_in = (due - dt.timedelta(seconds=LEAD) - _now()).total_seconds()
    assert fires_in > deps.settings.read_cache_seconds, f"the machine was too slow for this test ({fires_in:.1f} s)"
    answers = {a["flow_run_id"]: a["outcome"] for a in fired.outcomes(2)}
    assert answers == {in_paused: "paused", in_limited: "waiting"}
    assert prefect.state(in_paused)[0] == prefect.state(in_limited)[0] == "SCHEDULED"
    _stop_jobs(deps, prefect, [running])


def test_a_burst_of_triggered_runs_never_exceeds_the_limit(deps, fired: Fired, prefect: PrefectHelper) -> None:
    pool = prefect.unique("tburst")
    prefect.create_pool(pool, concurrency_limit=3)
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    # Far enough ahead that all 12 are still before their lead when their events are handled: on a loaded machine
    # (the full suite on 2 cores) making them and handling their events took over 2 s.
    due = _now() + dt.timedelta(seconds=LEAD + 8)
    runs = [_scheduled(prefect, dep, due) for _ in range(12)]
    for run_id in runs:
        assert handle_run_event(deps, run_id, trigger="webhook")["outcome"] == "deferred"
    answers = fired.outcomes(len(runs))
    assert len(answers) == len(runs)
    states = [prefect.state(r)[0] for r in runs]
    assert states.count("PENDING") <= 3, states
    assert states.count("PENDING") + states.count("SCHEDULED") == len(runs)
    assert states.count("PENDING") >= 1  # the limit was used, not left idle
    _stop_jobs(deps, prefect, runs)


def test_a_burst_of_timers_in_serve_is_dispatched_by_one_monitor_sweep(deps, prefect: PrefectHelper, pool: str) -> None:
    """Issue 14, goal "200 runs the same second within 10 s": timers that fire together (8 or more) wake serve's
    monitor for one sweep (3 calls per run, one listing) instead of submitting each run on its own (5 calls)."""
    from pushpool.entrypoints.serve import BURST_SWEEP_RUNS, Server
    from pushpool.localserver import free_port
    from pushpool.usecases.submit import SubmitOutcome

    # No tick of its own; its sweeps look at this pool only (the shared server has hundreds of other tests' pools).
    server = Server(deps, port=free_port(), monitor_interval=3600, event_stream=False, pool_names=[pool])
    server.start()
    run_ids: list[str] = []
    try:
        dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
        due = _now() + dt.timedelta(seconds=LEAD + 8)  # all armed before their lead, as above
        run_ids = [_scheduled(prefect, dep, due) for _ in range(BURST_SWEEP_RUNS + 2)]
        for run_id in run_ids:  # their Scheduled events: each arms a timer for due - LEAD
            assert "(trigger armed)" in handle_run_event(deps, run_id, trigger="webhook")["detail"]
        assert len(server.timers.pending()) == len(run_ids)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            server.last_tick is not None and all(prefect.read_run(r)["infrastructure_pid"] for r in run_ids)
        ):
            time.sleep(0.2)
        assert all(prefect.read_run(r)["infrastructure_pid"] for r in run_ids)
        assert server.last_tick is not None, "no monitor sweep ran: each timer submitted its run on its own"
        assert server.last_tick.dispatched[SubmitOutcome.SUBMITTED] == len(run_ids)
    finally:
        server.stop()
        _stop_jobs(deps, prefect, run_ids)
