"""``TimerTrigger``: delayed delivery inside ``pushpool serve`` (the ``punctual.DelayedTrigger`` of one process).

One thread sleeps until the earliest armed time — a timed wait on a condition, woken early only when an earlier
time is armed — then hands the run to ``fire`` (which calls submit), or every run whose time has come at once to
``fire_many`` when given (serve turns a burst into one monitor sweep). No polling. Armed times live in memory only: a
serve that restarts has lost them, and its monitor's first ticks re-arm the runs due soon (its sweep dispatches any
that became due meanwhile).
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("pushpool.serve")


class TimerTrigger:
    max_delay_seconds: float | None = None  # a timer can wait for any time
    early_seconds = 0.0

    def __init__(
        self,
        fire: Callable[[str], None],
        *,
        now: Callable[[], dt.datetime] | None = None,
        fire_many: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._fire = fire
        self._fire_many = fire_many
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._heap: list[tuple[dt.datetime, str]] = []
        self._armed: dict[str, dt.datetime] = {}  # run id -> the time it is armed for (an older entry is stale)
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self, run_id: str, at: dt.datetime) -> None:
        """Deliver ``run_id`` at ``at``; arming a run again replaces its time (the earlier entry is dropped)."""
        with self._cond:
            if self._armed.get(run_id) == at:
                return
            self._armed[run_id] = at
            heapq.heappush(self._heap, (at, run_id))
            self._cond.notify()

    def pending(self) -> dict[str, dt.datetime]:
        """The runs armed and not yet delivered, with their times."""
        with self._cond:
            return dict(self._armed)

    def start(self) -> TimerTrigger:
        self._thread = threading.Thread(target=self._loop, name="pushpool-timers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cond:
                run_ids = self._next_due()
                if not run_ids:
                    return
            if self._fire_many is not None:
                try:
                    self._fire_many(run_ids)
                except Exception:  # the monitor covers them
                    log.exception("timers for %d runs failed", len(run_ids))
                continue
            for run_id in run_ids:
                try:
                    self._fire(run_id)
                except Exception:  # one failed delivery must not stop the others (the monitor covers it)
                    log.exception("timer for run %s failed", run_id)

    def _next_due(self) -> list[str]:
        """Wait (holding the condition) until an armed time has come; the run ids whose time has come (all of them),
        or [] once stopped."""
        while not self._stopped:
            if not self._heap:
                self._cond.wait()
                continue
            at, run_id = self._heap[0]
            if self._armed.get(run_id) != at:  # re-armed for another time, or delivered: stale
                heapq.heappop(self._heap)
                continue
            wait = (at - self._now()).total_seconds()
            if wait > 0:
                self._cond.wait(timeout=wait)
                continue
            due, now = [], self._now()
            while self._heap and self._heap[0][0] <= now:
                at, run_id = heapq.heappop(self._heap)
                if self._armed.get(run_id) == at:
                    del self._armed[run_id]
                    due.append(run_id)
            return due
        return []
