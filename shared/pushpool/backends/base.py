"""The one small Protocol every compute backend implements, and the values that cross it.

A backend turns a :class:`JobSpec` (one flow run, fully rendered) into a job and answers questions about jobs by
their :class:`JobHandle`. Every method is safe to call from a fresh, stateless invocation: the backend's own API
(or, for ``process``, the job directory) is the only state.

Rules every backend keeps (checked by tests/contract):

* ``submit`` is idempotent per attempt (``spec.run_id`` + ``spec.attempt``): a second call finds the first job and
  returns the same handle. The attempt is the id of the Pending state that claimed the run, so a run that is
  scheduled again (a retry, a reschedule) gets a new job, while a retried submit of the same claim never does.
  A spec with ``new_attempt`` comes straight from the claim that created the attempt (no job can exist for it yet):
  a backend may skip looking for an earlier job, relying on its API's own idempotency token where it has one.
* ``find(run_id, attempt, config)`` returns the handle of that attempt's job, or ``None``; ``config`` is the
  pool's default job configuration (where to look: cluster, region …).
* ``status`` answers for many handles at once and reports a job that no longer exists as ``JobState.MISSING``.
* ``cancel`` stops the job (gracefully, then forcibly after ``grace_seconds``); a job already gone counts as stopped.
* ``logs`` returns the last lines of the job's output (possibly none), never raising for a finished job.
* Failures surface only as :mod:`pushpool.errors` (``BackendError`` and its subclasses).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class JobState(str, enum.Enum):
    """What a backend knows about a job."""

    PENDING = "PENDING"  # accepted, not started yet (image pull, provisioning)
    RUNNING = "RUNNING"  # the job's process is alive
    SUCCEEDED = "SUCCEEDED"  # ended with exit code 0
    FAILED = "FAILED"  # ended with a non-zero exit code, or failed to start
    STOPPED = "STOPPED"  # ended because it was stopped (cancel)
    MISSING = "MISSING"  # the backend has no such job (never existed, or vanished)
    UNKNOWN = "UNKNOWN"  # the backend cannot tell (another host's job, an unmapped provider status)

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, JobState.MISSING)


@dataclass(frozen=True)
class JobSpec:
    """One flow run's job, rendered from the pool's template and the run's job variables."""

    run_id: str
    attempt: str  # the id of the Pending state that claimed the run: the idempotency key of this job
    pool_name: str
    name: str
    command: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    config: Mapping[str, Any]  # the rendered job configuration (backend-specific fields)
    max_run_time_seconds: int
    # The Prefect credential and other values that must travel by secret reference where the backend has one.
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Set by submit right after its own claim: no earlier job of this attempt can exist (see the module docstring).
    new_attempt: bool = False


@dataclass(frozen=True)
class JobHandle:
    """An opaque reference to a job; ``id`` is what pushpool stores as the run's ``infrastructure_pid``."""

    backend: str
    id: str


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None
    reason: str = ""
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str

    def submit(self, spec: JobSpec) -> JobHandle: ...

    def find(self, run_id: str, attempt: str, config: Mapping[str, Any] | None = None) -> JobHandle | None: ...

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]: ...

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None: ...

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]: ...


# Exit codes with a well-known meaning (see Prefect's infrastructure_exit_codes).
EXIT_CODE_HINTS: Mapping[int, str] = {
    -9: "killed by SIGKILL",
    -15: "terminated by SIGTERM",
    137: "killed (SIGKILL), often out of memory",
    143: "terminated (SIGTERM)",
    1: "the process reported an error",
    2: "bad command line",
    126: "command not executable",
    127: "command not found",
}


def describe_exit(code: int) -> str:
    hint = EXIT_CODE_HINTS.get(code)
    text = f"exit code {code}" if code >= 0 else f"signal {-code}"
    return f"{text} ({hint})" if hint else text
