"""serve's TimerTrigger hands every run whose time has come to ``fire_many`` at once (issue 14: a burst becomes one
monitor sweep)."""

from __future__ import annotations

import datetime as dt
import threading

from pushpool.entrypoints.timers import TimerTrigger


def test_runs_whose_time_came_together_are_handed_over_together_and_later_ones_wait() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    batches: list[list[str]] = []
    got = threading.Event()

    def fire_many(run_ids: list[str]) -> None:
        batches.append(sorted(run_ids))
        got.set()

    trigger = TimerTrigger(lambda run_id: None, fire_many=fire_many)
    for run_id in ("a", "b", "c"):
        trigger.arm(run_id, now - dt.timedelta(seconds=1))
    trigger.arm("later", now + dt.timedelta(hours=1))
    trigger.arm("b", now - dt.timedelta(seconds=1))  # armed again for the same time: delivered once
    trigger.start()
    try:
        assert got.wait(5)
        assert batches == [["a", "b", "c"]]
        assert trigger.pending() == {"later": now + dt.timedelta(hours=1)}
    finally:
        trigger.stop()
