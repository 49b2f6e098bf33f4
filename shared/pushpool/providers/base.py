"""The Protocol every compute backend implements, and the values that cross it.

A backend turns a :class:`JobSpec` (one flow run's attempt, rendered into the provider's typed :class:`JobConfig`)
into a job and answers questions about jobs by their :class:`JobHandle`. Every method is safe to call from a fresh,
stateless invocation: the provider's own API (or, for ``process``, the job directory) is the only state.

Rules every backend keeps (checked by tests/contract, which every backend and every fake passes):

* ``submit`` is idempotent per attempt (``spec.run_id`` + ``spec.attempt``): a second call — also a concurrent one —
  finds the first job and returns the same handle. The attempt is the id of the Pending state that claimed the run,
  so a run scheduled again (a retry) gets a new job, while a retried submit of the same claim never does; a run given
  back after a transient backend error keeps its first claim's attempt (usecases/run_states.py ``Episode``). A spec
  with ``new_attempt`` comes straight from the claim that created the attempt (no job can exist for it yet): a backend
  may skip looking for an earlier job and rely on its API's own idempotency token.
* ``find(spec)`` returns the handle of that attempt's job, looking where the run's own configuration put it (its
  cluster, region, project, resource group, workspace …), or ``None`` — also when that place does not exist.
* ``status`` answers for many handles at once, per handle: a job that no longer exists is ``MISSING``; a handle the
  backend cannot judge (another host's, a failed look-up) is ``UNKNOWN`` with the reason. One bad handle never hides
  the others, and ``status`` does not raise for a provider error that concerns only some handles.
* A job's clock (what the monitor's time limits count from, design rule 9): ``accepted_at`` is when the provider
  accepted the job (ECS ``createdAt``, a Cloud Run execution's ``createTime``, a Modal sandbox's ``created_at``, the
  process backend's job record; ACI has none, so the time pushpool asked for the group, tagged on it at creation),
  for an alive job at least; ``None`` where the provider keeps no such time (Coiled): the monitor then counts from
  the run's claim (its Pending state), which precedes every acceptance. ``PENDING`` means, in the provider's own terms,
  that the container or sandbox has not started (an image pull, provisioning, Modal still scheduling the sandbox onto
  a worker); ``started_at`` is when it started and ``finished_at`` when it ended, where the provider says.
* ``cancel`` stops the job (gracefully, then forcibly after ``grace_seconds`` where the provider has a grace period);
  a job already gone counts as stopped.
* ``logs`` returns the last lines of the job's output (possibly none), never raising for a finished job.
* ``cleanup`` deletes what a finished job leaves behind where the provider keeps it (``keeps_finished_jobs``: Cloud Run
  jobs, ACI container groups, the process backend's job directory); afterwards ``status`` answers ``MISSING``. A job
  still alive is left alone. Idempotent. Providers whose finished jobs expire by themselves (ECS) do nothing.
* ``start_timeout_seconds``: how long a job of this provider may take to start (image pulls, provisioning) before
  the monitor gives up on it.
* ``dispatch_lead_seconds``: how long before a run's scheduled time its job is started by default (about the time
  from a job accepted to the flow running), so that a scheduled flow starts on time; a pool may set its own.
* Secret delivery is the provider's: ``spec.secret_env`` (the Prefect credential, pushpool's or one the job's ``env``
  gave: :data:`PREFECT_CREDENTIALS`) goes by secret reference where the provider has one (ECS ``secrets``, Cloud Run
  ``secretKeyRef``, ACI ``secureValue``) and never into plaintext overrides, files or logs; a provider refuses the job
  rather than send it in plaintext. Where the provider has a per-value secret mark (ACI), ``env`` values whose names
  look secret (:func:`is_secret_name`) carry it too.
* Failures surface only as :mod:`pushpool.errors` (``BackendError`` and its subclasses), translated at the boundary.
* Credentials per pool, on every call (design.md rule 8): a job's provider credentials are its pool's (the fields its
  config model names in ``credential_fields``). ``submit`` and ``find`` sign with the spec's and return a handle
  carrying them (``JobHandle.credentials``); ``status``, ``cancel``, ``logs`` and ``cleanup`` sign each handle's calls
  with the handle's, and a handle without any with pushpool's own configuration — never with whatever credentials
  the process used last. The monitor, which may never have seen the submit, puts the pool's into the handle.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushpool.templates.common import DEFAULT_MAX_RUN_TIME_SECONDS

DEFAULT_COMMAND = ("prefect", "flow-run", "execute")
# The environment variables that are Prefect's API credential: wherever they come from (pushpool's settings or the
# job's own ``env``), they travel in ``JobSpec.secret_env``, never as a plain value.
PREFECT_CREDENTIALS = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|AUTH_STRING|ACCESS_KEY)", re.I)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (``DB_PASSWORD``, ``GITHUB_TOKEN`` …).

    Example:
        >>> is_secret_name("DB_PASSWORD"), is_secret_name("TEAM")
        (True, False)
    """
    return bool(_SECRET_NAME.search(name))


class JobState(str, enum.Enum):
    """What a backend knows about a job."""

    PENDING = "PENDING"  # accepted, not started yet (image pull, provisioning)
    RUNNING = "RUNNING"  # the job's process is alive
    SUCCEEDED = "SUCCEEDED"  # ended with exit code 0
    FAILED = "FAILED"  # ended with a non-zero exit code, or failed to start
    STOPPED = "STOPPED"  # ended because it was stopped (cancel)
    MISSING = "MISSING"  # the backend has no such job (never existed, vanished, or cleaned up)
    UNKNOWN = "UNKNOWN"  # the backend cannot tell (another host's job, a failed look-up, an unmapped status)

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, JobState.MISSING)

    @property
    def is_alive(self) -> bool:
        return self in (JobState.PENDING, JobState.RUNNING)


class JobConfig(BaseModel):
    """The fields every provider's rendered job configuration has; each provider subclasses it with its own.

    A base job template's ``job_configuration``, rendered for one run, validates into the provider's subclass; a value
    of the wrong type is a :class:`~pushpool.errors.TemplateError` naming the field (the run is crashed with it).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    # The fields that hold the provider credentials the job's calls are signed with (a credentials block): they come
    # from the work pool only (usecases/job_spec.py refuses a job whose job variables change them).
    credential_fields: ClassVar[tuple[str, ...]] = ()

    command: tuple[str, ...] | None = Field(
        default=None, description="argv of the flow-run process; a string is split like a shell (shlex)"
    )
    env: dict[str, str | None] = Field(default_factory=dict, description="environment variables of the job")
    labels: dict[str, str] = Field(default_factory=dict, description="labels or tags recorded with the job")
    name: str | None = Field(default=None, description="the job's name (the flow run's name by default)")
    max_run_time_seconds: int = Field(
        default=DEFAULT_MAX_RUN_TIME_SECONDS, ge=1, description="the monitor stops the job after this long"
    )

    # Fields only the pool's operator sets: literal values of the base job template's ``job_configuration`` (never a
    # ``{{ placeholder }}``, so no job variable can fill or widen them; job_spec refuses a template that tries), kept
    # when provision brings the template up to date.
    operator_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value)) or None
            except ValueError as exc:
                raise ValueError(f"cannot split the command into arguments: {exc}") from None
        return value

    @field_validator("env", "labels", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):  # numbers and booleans become text, as a process environment holds them
            return {
                str(k): (v if v is None or isinstance(v, str | Mapping | list) else str(v)) for k, v in value.items()
            }
        return value

    @field_validator("max_run_time_seconds", mode="before")
    @classmethod
    def _default_when_unset(cls, value: Any) -> Any:
        return DEFAULT_MAX_RUN_TIME_SECONDS if value in (None, "") else value


@dataclass(frozen=True)
class JobSpec:
    """One attempt of one flow run, rendered: everything a backend needs to start, find or judge its job."""

    run_id: str
    attempt: str  # the id of the Pending state that claimed the attempt: the idempotency key of this job
    pool_name: str
    name: str
    command: tuple[str, ...]  # argv
    env: Mapping[str, str]
    labels: Mapping[str, str]
    config: JobConfig  # the provider's typed configuration (where the job goes: cluster, region, …)
    # The Prefect credential and other values that must travel by secret reference where the backend has one.
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Set by submit right after its own claim: no earlier job of this attempt can exist (see the module docstring).
    new_attempt: bool = False

    @property
    def max_run_time_seconds(self) -> int:
        return self.config.max_run_time_seconds

    @property
    def credentials(self) -> Mapping[str, Any] | None:
        """The configuration's credential fields (the pool's), or None when its provider has none."""
        fields = type(self.config).credential_fields
        return {name: getattr(self.config, name) for name in fields} if fields else None

    def handle(self, backend: str, job_id: str) -> JobHandle:
        """The handle of this spec's job, carrying its credentials."""
        return JobHandle(backend, job_id, self.credentials)


@dataclass(frozen=True)
class JobHandle:
    """An opaque reference to a job; ``id`` is what pushpool stores as the run's ``infrastructure_pid``.

    ``credentials``: the job's pool's credential fields (``JobConfig.credential_fields`` → rendered block data), which
    sign every call about the job; None means pushpool's own configuration. Never persisted, never shown (no repr),
    not part of equality: two handles of one job are equal whoever holds them.
    """

    backend: str
    id: str
    credentials: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None
    reason: str = ""
    started_at: dt.datetime | None = None  # the container / sandbox / process started
    finished_at: dt.datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    accepted_at: dt.datetime | None = None  # the provider accepted the job (see the module docstring)


@runtime_checkable
class Backend(Protocol):
    name: str
    start_timeout_seconds: float
    keeps_finished_jobs: bool
    dispatch_lead_seconds: float

    def submit(self, spec: JobSpec) -> JobHandle: ...

    def find(self, spec: JobSpec) -> JobHandle | None: ...

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]: ...

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None: ...

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]: ...

    def cleanup(self, handle: JobHandle) -> None: ...


@dataclass(frozen=True)
class UnstartedJob:
    """A job a backend made for an attempt of a run that never started (no execution, e.g. its submitter failed
    between creating and running it): the monitor deletes it once the run is final or gone."""

    backend: str
    ref: str  # the backend's own reference (a Cloud Run job's resource name)
    run_id: str
    version: str = ""  # what the backend saw when it listed the job (an etag): deleted only if still so
    # the credentials of the pool it was listed for (never shown): deleting it is signed with them
    credentials: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class SweepsUnstartedJobs(Protocol):
    """What a backend whose jobs outlive a failed submit implements (Cloud Run: 1,000 jobs per region)."""

    def unstarted_jobs(
        self, templates: Sequence[Mapping[str, Any]], credentials: Sequence[Mapping[str, Any] | None] = ()
    ) -> list[UnstartedJob]:
        """pushpool's jobs that never started, where the pools (by their base job templates) put jobs: one list
        call per location and identity, never one per run. ``credentials``: each template's pool's (as in
        ``JobHandle.credentials``), which sign its listing and the deletes of what it finds."""

    def delete_unstarted(self, job: UnstartedJob) -> bool:
        """Delete one of them if it is still as listed (``version``). True: deleted, or already gone; False: left, as
        it changed meanwhile (run by its submit after all)."""

    def withdraw_unstarted(self, spec: JobSpec) -> bool:
        """Before the monitor gives back a Pending run whose attempt's job it did not find: delete ``spec``'s job if
        its submit made it but has not run it yet (stalled between the two calls), as read — so a late run of it fails
        instead of making a second execution beside the next claim's job. True: no job of the attempt can run any
        more (none exists, or it was deleted); False: it has been run (meanwhile), so the run has a job and must not be
        given back."""


class BackendBase:
    """Defaults a backend may inherit: ten minutes to start, nothing kept after a job ends (nothing to clean up)."""

    name: ClassVar[str]
    start_timeout_seconds: float = 600.0
    keeps_finished_jobs: bool = False
    dispatch_lead_seconds: float = 0.0

    def cleanup(self, handle: JobHandle) -> None:
        return None

    def check_job(self, spec: JobSpec) -> None:
        """Refuse ``spec`` for what ``submit`` refuses before any call to the provider, judged from the job alone: no
        call to the cloud, no use of pushpool's own identity (where the check runs — a CLI — is not where jobs are
        submitted). ``usecases/job_check.py`` asks it when a pool is created or updated and for ``pushpool doctor``;
        ``submit`` calls the same functions. Nothing by default.

        Raises:
            TemplateError | BackendError: the reason, naming the field (never a secret's value).
        """
        return None


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
