"""In-memory stand-ins that pass the same contracts as the real parts they replace.

``LatencyBackend`` is a compute backend held in memory, for use-case unit tests and the scale benchmarks
(``bench/``: 10,000 jobs cannot run here). It passes the backend contract (tests/contract), the same suite as the real
backends: its jobs are driven from outside (``exit``, ``vanish``), as an emulated cloud's are. Every backend API call
sleeps ``latency`` seconds; ``status`` is answered in batches of ``batch`` (ECS DescribeTasks takes 100), each batch
one call; ``calls`` counts calls per operation. It keeps finished jobs until ``cleanup``, like Cloud Run and ACI.
``RecordingTrigger`` stands in for a delayed trigger (``punctual.DelayedTrigger``) and passes its contract.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import BackendError
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit


@dataclass
class FakeJob:
    spec: JobSpec | None
    started: float
    sent: str = ""  # what the fake "provider" keeps about the job (as a cloud keeps a job definition)
    state: JobState = JobState.RUNNING
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)
    accepted_at: dt.datetime | None = None  # when the fake "provider" accepted the job (its clock)
    finished_at: dt.datetime | None = None


class LatencyBackend(BackendBase):
    name = "fake"
    start_timeout_seconds = 30.0
    keeps_finished_jobs = True

    def __init__(self, latency: float = 0.0, batch: int = 100, clock: Any = None) -> None:
        self.latency, self.batch = latency, batch
        self.clock = clock  # anything with now() (the use-case tests' FixedClock); the wall clock by default
        self.acceptance_time = True  # False: status gives no times, as Coiled's (the monitor counts from the claim)
        self.calls: Counter = Counter()
        self.jobs: dict[str, FakeJob] = {}
        self._by_attempt: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, **options: object) -> LatencyBackend:
        return cls(**options)  # type: ignore[arg-type]

    def _call(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1
        if self.latency:
            time.sleep(self.latency)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        self._call("submit")
        if not spec.command or spec.command[0].startswith("/no/"):
            raise BackendError(f"no such program: {spec.command[:1]}", backend=self.name)
        with self._lock:
            key = (spec.run_id, spec.attempt)
            if key not in self._by_attempt:
                job_id = f"fake-{uuid.uuid4()}"
                kept = {
                    "name": spec.name,
                    "command": list(spec.command),
                    "env": dict(spec.env),
                    "labels": dict(spec.labels),
                }
                self.jobs[job_id] = FakeJob(spec, time.monotonic(), sent=json.dumps(kept), accepted_at=self._now())
                self._by_attempt[key] = job_id
            return JobHandle(self.name, self._by_attempt[key])

    def find(self, spec: JobSpec) -> JobHandle | None:
        self._call("find")
        job_id = self._by_attempt.get((spec.run_id, spec.attempt))
        return JobHandle(self.name, job_id) if job_id else None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for start in range(0, len(handles), self.batch):
            self._call("status")
            for handle in handles[start : start + self.batch]:
                out[handle.id] = self._status(handle.id)
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        self._call("cancel")
        job = self.jobs.get(handle.id)
        if job is not None and job.state.is_alive:
            job.state, job.exit_code, job.finished_at = JobState.STOPPED, 143, self._now()

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        self._call("logs")
        job = self.jobs.get(handle.id)
        return (job.output[-lines:] if lines > 0 else []) if job else []

    def cleanup(self, handle: JobHandle) -> None:
        self._call("cleanup")
        job = self.jobs.get(handle.id)
        if job is not None and not job.state.is_alive:
            del self.jobs[handle.id]

    # -- driving jobs from outside (what an emulated cloud's control plane does) --------------------------------

    def seed(self, run_id: str, attempt: str, job_id: str | None = None) -> JobHandle:
        """A long-running job created without a call (the scale bench's 10,000 in-flight runs)."""
        with self._lock:
            job_id = job_id or f"fake-{uuid.uuid4()}"
            self.jobs[job_id] = FakeJob(None, time.monotonic(), accepted_at=self._now())
            self._by_attempt[(run_id, attempt)] = job_id
            return JobHandle(self.name, job_id)

    def exit(self, handle: JobHandle, code: int, lines: Sequence[str] = ()) -> None:
        job = self.jobs[handle.id]
        job.output.extend(lines)
        job.state, job.exit_code = (JobState.SUCCEEDED if code == 0 else JobState.FAILED), code
        job.finished_at = self._now()

    def vanish(self, handle: JobHandle) -> None:
        self.jobs.pop(handle.id, None)

    def jobs_of(self, spec: JobSpec) -> int:
        return sum(
            1
            for job in self.jobs.values()
            if job.spec
            and (job.spec.run_id, job.spec.attempt)
            == (
                spec.run_id,
                spec.attempt,
            )
        )

    def _now(self) -> dt.datetime:
        return self.clock.now() if self.clock is not None else dt.datetime.now(dt.timezone.utc)

    def _status(self, job_id: str) -> JobStatus:
        job = self.jobs.get(job_id)
        if job is None:
            return JobStatus(JobState.MISSING, reason="no such job")
        # A fake job starts the moment it is accepted.
        times = {"accepted_at": job.accepted_at, "started_at": job.accepted_at, "finished_at": job.finished_at}
        if not self.acceptance_time:
            times = {}
        if job.state is JobState.STOPPED:
            return JobStatus(JobState.STOPPED, exit_code=job.exit_code, reason="stopped", **times)
        if job.state is JobState.FAILED:
            reason = f"ended with {describe_exit(job.exit_code or 0)}"
            return JobStatus(JobState.FAILED, exit_code=job.exit_code, reason=reason, **times)
        return JobStatus(job.state, exit_code=job.exit_code, **times)


class RecordingTrigger:
    """A ``punctual.DelayedTrigger`` that records what is armed and delivers it when asked (``deliver_due``): the
    use-case tests move a FixedClock instead of waiting. Passes tests/contract/test_delayed_triggers.py."""

    max_delay_seconds: float | None = None
    early_seconds = 0.0

    def __init__(self) -> None:
        self.armed: dict[str, dt.datetime] = {}
        self.calls: list[tuple[str, dt.datetime]] = []
        self._lock = threading.Lock()

    def arm(self, run_id: str, at: dt.datetime) -> None:
        with self._lock:
            self.armed[run_id] = at
            self.calls.append((run_id, at))

    def deliver_due(self, now: dt.datetime) -> list[str]:
        """The runs whose time has come, in time order (each delivered once)."""
        with self._lock:
            due = sorted((at, run_id) for run_id, at in self.armed.items() if at <= now)
            for _, run_id in due:
                del self.armed[run_id]
        return [run_id for _, run_id in due]


class PoolRecordingTrigger(RecordingTrigger):
    """A RecordingTrigger that also arms pool sweeps (``punctual.PoolTrigger``), as SqsTrigger does."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_calls: list[tuple[str, dt.datetime]] = []

    def arm_pool(self, pool_name: str, at: dt.datetime) -> None:
        with self._lock:
            self.pool_calls.append((pool_name, at))
