"""The month's finished managed runs, kept for a short, bounded time within a process (``usecases/usage.py``).

Computing a workspace's compute hours reads every managed run that ended this month: 7 paged API calls and about a
quarter of a second for 1,000 runs (``bench/managed_usage.py``), and submit does it for every managed run. Finished
runs do not change, so their spans (each job's start → end, ``usecases/usage.py``) are kept here for
:data:`TTL_SECONDS`; meanwhile a computation reads only the runs that ended since the spans were read (less an overlap
of :data:`OVERLAP_SECONDS`) and the runs still going or Pending — small reads. Runs are matched by id, the fresh
reading wins: the monitor records a job's end on its run within a tick of it, well inside the overlap.

What this can let through, at most for :data:`TTL_SECONDS` (then the month is read again in full):

* a run whose end Prefect records with a time already more than :data:`OVERLAP_SECONDS` in the past when it is
  written (a flow's clock that far behind, or its final state written that late after retries): its time is not
  counted, so the compute-hours check may start runs it would have refused until the next full read;
* the other way, a run deleted (or its tag removed) after it was read stays counted for that long.

A cache lives in one ``Deps`` (one Lambda container, one ``pushpool serve``); nothing is shared between processes.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field

Span = tuple[dt.datetime | None, dt.datetime | None]
Spans = tuple[Span, ...]  # a run's: one per job it had (or the flow's own start → end)

TTL_SECONDS = 300.0  # how long finished runs are kept before the month is read again in full
OVERLAP_SECONDS = 300.0  # the fresh read goes back this far before the kept read (clock skew, commit lag)


@dataclass(frozen=True)
class Finished:
    """The finished runs of the month starting ``month`` as read at ``read_at``: run id → its spans."""

    month: dt.datetime
    read_at: dt.datetime
    spans: dict[str, Spans]

    def fresh_since(self) -> dt.datetime:
        """From when runs must be read again: those that ended since this reading (with the overlap)."""
        return max(self.month, self.read_at - dt.timedelta(seconds=OVERLAP_SECONDS))


@dataclass
class FinishedRuns:
    """One process's kept reading of the month's finished managed runs (thread-safe)."""

    ttl_seconds: float = TTL_SECONDS
    _kept: Finished | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, month: dt.datetime, now: dt.datetime) -> Finished | None:
        """The kept reading of ``month``, unless it is older than the TTL (or of another month, or from the future)."""
        with self._lock:
            kept = self._kept
        if kept is None or kept.month != month:
            return None
        age = (now - kept.read_at).total_seconds()
        return kept if 0 <= age <= self.ttl_seconds else None

    def put(self, month: dt.datetime, read_at: dt.datetime, spans: dict[str, Spans]) -> None:
        finished = {run: own for run, own in spans.items() if own and all(end is not None for _, end in own)}
        with self._lock:
            self._kept = Finished(month, read_at, finished)

    def forget(self) -> None:
        with self._lock:
            self._kept = None
