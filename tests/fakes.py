"""A latency-injecting, in-memory backend for scale benchmarks (``bench/``): 10,000 jobs cannot run here.

It keeps the backend contract (tests/contract: the same suite as the real backends) by simulating a job from its
command: ``sleep N`` runs until stopped, ``true`` exits 0, a command containing ``exit N`` exits N after printing its
``echo`` text. Every backend API call sleeps ``latency`` seconds; ``status`` is answered in batches of ``batch``
(ECS DescribeTasks takes 100), each batch one call. ``calls`` counts calls per operation.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushpool.backends.base import JobHandle, JobSpec, JobState, JobStatus
from pushpool.errors import BackendError


@dataclass
class _Job:
    command: str
    started: float
    stopped: bool = False
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)


class LatencyBackend:
    name = "fake"

    def __init__(self, latency: float = 0.0, batch: int = 100, finish_after: float = 0.1) -> None:
        self.latency, self.batch, self.finish_after = latency, batch, finish_after
        self.calls: Counter = Counter()
        self._jobs: dict[str, _Job] = {}
        self._by_attempt: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _call(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1
        if self.latency:
            time.sleep(self.latency)

    def submit(self, spec: JobSpec) -> JobHandle:
        self._call("submit")
        try:
            program = shlex.split(spec.command)[0]
        except (ValueError, IndexError):
            raise BackendError(f"cannot parse the command {spec.command!r}", backend=self.name) from None
        if program.startswith("/") and program not in ("/bin/sh", "/bin/true"):
            raise BackendError(f"no such program: {program}", backend=self.name)
        with self._lock:
            key = (spec.run_id, spec.attempt)
            if key not in self._by_attempt:
                job_id = f"fake-{uuid.uuid4()}"
                self._jobs[job_id] = _Job(
                    spec.command, time.monotonic(), output=re.findall(r"echo ([^;']+)", spec.command)
                )
                self._by_attempt[key] = job_id
            return JobHandle(self.name, self._by_attempt[key])

    def seed(self, run_id: str, attempt: str, job_id: str | None = None) -> JobHandle:
        """A long-running job created without a call (the scale bench's 10,000 in-flight runs)."""
        with self._lock:
            job_id = job_id or f"fake-{uuid.uuid4()}"
            self._jobs[job_id] = _Job("sleep 86400", time.monotonic())
            self._by_attempt[(run_id, attempt)] = job_id
            return JobHandle(self.name, job_id)

    def find(self, run_id: str, attempt: str, config: Mapping[str, Any] | None = None) -> JobHandle | None:
        self._call("find")
        job_id = self._by_attempt.get((run_id, attempt))
        return JobHandle(self.name, job_id) if job_id else None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for start in range(0, len(handles), self.batch):
            self._call("status")
            for handle in handles[start : start + self.batch]:
                out[handle.id] = self._status(self._jobs.get(handle.id))
        return out

    def _status(self, job: _Job | None) -> JobStatus:
        if job is None:
            return JobStatus(JobState.MISSING, reason="no such job")
        if job.stopped:
            return JobStatus(JobState.STOPPED, exit_code=143, reason="stopped")
        if job.command.startswith("sleep") or time.monotonic() - job.started < self.finish_after:
            return JobStatus(JobState.RUNNING)
        code = int(m.group(1)) if (m := re.search(r"exit (\d+)", job.command)) else 0
        return JobStatus(JobState.SUCCEEDED if code == 0 else JobState.FAILED, exit_code=code)

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        self._call("cancel")
        job = self._jobs.get(handle.id)
        if job is not None and self._status(job).state is JobState.RUNNING:
            job.stopped = True

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        self._call("logs")
        job = self._jobs.get(handle.id)
        return (job.output[-lines:] if lines > 0 else []) if job else []
