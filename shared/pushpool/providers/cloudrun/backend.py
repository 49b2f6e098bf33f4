"""The ``cloudrun`` backend: each job is one Cloud Run job per attempt, run once (one execution), over the Admin API v2
(``google.cloud.run_v2``, REST transport).

* The job id is derived from the attempt (``pushpool-<pool>-<digest of run id and attempt>``, ≤ 63 characters, a valid
  job id), so a retried or concurrent submit of one attempt meets ``AlreadyExists`` and finds the job, while a run
  scheduled again gets a new one. Of concurrent submitters only the one whose ``CreateJob`` succeeded runs the job;
  the others wait for its execution, and run the job themselves only once its creator cannot any more (the job older
  than a creator's polls and RunJob retries take: it died between the two calls), with the job's ``etag``.
  That RunJob refuses a stale etag is not documented by Cloud Run, so the wait is the guard and the etag a second one;
  a submitter that sees the job ready but not old enough gives the run back (retryable) instead of running it.
* The job carries the run's command and environment itself (one job per attempt: no overrides); the Prefect credential
  goes as ``valueSource.secretKeyRef`` (``prefect_api_key_secret`` / ``prefect_api_auth_string_secret``), never in
  plaintext: pushpool refuses the job instead. The task timeout follows ``max_run_time_seconds`` unless ``timeout`` is
  set (Prefect's 600 s default would kill long flows); ``maxRetries`` is 0 unless set (retries are the flow's).
* ``status`` lists every execution of a location in one call (``jobs/-``), page by page, and looks up individually only
  what the list did not hold; a failed execution's exit code comes from its task (one more call, once: the answer is
  kept, as an ended execution never changes). A tick's cost therefore grows with the locations and identities, not
  with the runs: one list per location (per page of 500), plus a call for each execution that failed since the last
  tick and each one missing from the list.
* Cleanup deletes the job (and with it its executions) once its execution ended, unless ``keep_job``: Cloud Run allows
  1,000 jobs per region. Whether it ended is what this process's ``status`` already saw (an ended execution stays
  ended), else one GET of the execution — never a list of the region per job. A job deleted here is remembered as gone,
  so the ended runs the monitor still watches cost no call either.
* What is kept (``pushpool.providers.memo``: bounded, per identity, only what cannot change) is an optimisation of a
  warm process; a cold one asks the API again.
* A job whose CreateJob operation failed (not made ready: it cannot have run) is deleted at once; one whose operation
  did not end in time, or whose poll failed, is not (another submit of the attempt may have run it meanwhile).
* A job that never started (its submit failed between CreateJob and RunJob) is found by ``unstarted_jobs`` (one
  ListJobs per location of the pools, each tick) and deleted by the monitor once its run is final or gone
  (``usecases/unstarted.py``), with the listed etag so a job run meanwhile is left alone. The monitor also withdraws
  it (``withdraw_unstarted``, the same etag guard) before it gives back a Pending run whose attempt has no execution:
  a submit stalled between CreateJob and RunJob then finds its job gone instead of running it beside the next claim's.
* 429/5xx are retried with google-api-core's retry (exponential backoff with jitter), then surface as
  BackendUnavailableError with Google's reason.
* The handle id is the execution's resource name (``projects/<p>/locations/<r>/jobs/<job>/executions/<e>``), with
  ``#keep`` when the job is to be kept.
* Credentials: the function's own identity (Application Default Credentials), unless the backend is given credentials;
  a ``gcp-credentials`` block in the pool's ``credentials`` (its service account info or file) signs every call about
  the pool's jobs: submit and find with the spec's, status, cancel, cleanup and logs with the handle's (the job's
  pool's, which the monitor puts in the handle), the sweep of unstarted jobs with each pool's. Status lists once per
  identity, project and region. A block of another project than the job's is refused before anything is sent, naming
  both (as ECS refuses a block of another AWS account): a pool's jobs go to its block's own project.
* The image pre-flight reads a private Artifact Registry / Container Registry image with the credentials that sign
  the job: their access token as ``oauth2accesstoken`` to the registry's token realm; only Google's registry hosts get
  it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pushpool.errors import BackendError, BackendUnavailableError
from pushpool.providers.base import (
    DEFAULT_COMMAND,
    BackendBase,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
    UnstartedJob,
    describe_exit,
)
from pushpool.providers.cloudrun import discovery
from pushpool.providers.cloudrun.config import CloudRunJobConfig, SecretKeySelector
from pushpool.providers.cloudrun.gcp import NAME, google_errors, retry_policy, status_code
from pushpool.providers.memo import Memo

DEFAULT_IMAGE = "docker.io/prefecthq/prefect:3-latest"
LIST_PAGE_SIZE = 500
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
KEEP = "#keep"
PLATFORM = "linux/amd64"  # the only platform Cloud Run runs

# Every state of a condition (google.cloud.run.v2.Condition.State). Only the ``Completed`` condition's state is read:
# None means "not final yet": the execution's counters decide between PENDING and RUNNING.
CONDITION_STATES: Mapping[str, JobState | None] = MappingProxyType(
    {
        "STATE_UNSPECIFIED": None,
        "CONDITION_PENDING": None,
        "CONDITION_RECONCILING": None,
        "CONDITION_FAILED": JobState.FAILED,  # refined by the execution reason and the task's exit code
        "CONDITION_SUCCEEDED": JobState.SUCCEEDED,
    }
)
# Every execution reason Cloud Run documents (Condition.ExecutionReason): what a failed or pending execution means.
EXECUTION_REASONS: Mapping[str, JobState | None] = MappingProxyType(
    {
        "EXECUTION_REASON_UNDEFINED": None,
        "JOB_STATUS_SERVICE_POLLING_ERROR": None,  # Cloud Run's own error reading the status; it retries
        "NON_ZERO_EXIT_CODE": JobState.FAILED,
        "CANCELLED": JobState.STOPPED,
        "CANCELLING": JobState.RUNNING,  # still stopping: final once CANCELLED
        "DELETED": JobState.MISSING,
        "DELAYED_START_PENDING": JobState.PENDING,
        "DELAYED_EXECUTION_EXCEEDING_DURATION_LIMIT": JobState.FAILED,
    }
)
# Every common reason (Condition.CommonReason), as said in a crashed run's message (image pull, permissions …).
COMMON_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "COMMON_REASON_UNDEFINED": "",
        "UNKNOWN": "an unknown error",
        "REVISION_FAILED": "the revision failed",
        "PROGRESS_DEADLINE_EXCEEDED": "the progress deadline was exceeded",
        "CONTAINER_MISSING": "the container image is missing",
        "CONTAINER_PERMISSION_DENIED": "no permission to pull the container image",
        "CONTAINER_IMAGE_UNAUTHORIZED": "the container image is not authorized",
        "CONTAINER_IMAGE_AUTHORIZATION_CHECK_FAILED": "the container image's authorization check failed",
        "ENCRYPTION_KEY_PERMISSION_DENIED": "no permission to use the encryption key",
        "ENCRYPTION_KEY_CHECK_FAILED": "the encryption key check failed",
        "SECRETS_ACCESS_CHECK_FAILED": "the service account cannot access a secret",
        "WAITING_FOR_OPERATION": "waiting for an operation",
        "IMMEDIATE_RETRY": "retrying at once",
        "POSTPONED_RETRY": "retrying later",
        "INTERNAL": "an internal error",
        "VPC_NETWORK_NOT_FOUND": "the VPC network was not found",
    }
)
DEADLINE_EXCEEDED = 4  # google.rpc.Code of a task attempt that hit the task timeout
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)  # an execution in one of these never changes again
ORPHAN_MARGIN_SECONDS = 15.0  # past a creator's RunJob retries: when another submit of the attempt may run its job

_EXECUTION = re.compile(r"^projects/([^/]+)/locations/([^/]+)/jobs/([^/]+)/executions/([^/#]+)\Z")
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]")
_LEADING = re.compile(r"^[^a-z]+")
MAX_LABELS = 64  # Cloud Run's limit
# Google's registries (Artifact Registry, Container Registry): the only hosts that receive a Google access token.
_GOOGLE_REGISTRY = re.compile(r"^(?:[a-z0-9-]+-docker\.pkg\.dev|(?:[a-z]+\.)?gcr\.io)\Z")


class CloudRunBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 600.0  # image pulls can take minutes
    keeps_finished_jobs = True  # finished jobs stay until deleted (1,000 per region)
    dispatch_lead_seconds = 15.0  # a job execution takes ~10-20 s from RunJob to a running container

    def __init__(
        self,
        *,
        credentials: Any = None,
        project: str | None = None,
        endpoint: str | None = None,
        logging_endpoint: str | None = None,
        retry_initial: float = 0.5,
        retry_timeout: float = 60.0,
        ready_timeout: float = 300.0,
        check_image_platform: bool = True,
        unstarted_grace_seconds: float = 900.0,
        registry_client: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from pushpool.providers.image_platform import ImagePlatforms

        self._credentials = credentials
        self._project = project
        self.endpoint = endpoint
        self.logging_endpoint = logging_endpoint or "https://logging.googleapis.com"
        self.retry_initial = retry_initial
        self.retry_timeout = retry_timeout
        self.ready_timeout = ready_timeout
        self.unstarted_grace_seconds = unstarted_grace_seconds  # a submitter may still be between CreateJob and RunJob
        self.sleep = sleep
        # A private Artifact Registry / Container Registry image is read with a Google access token of the job's
        # identity (_registry_credentials). registry_client: how the registries are reached (an httpx.Client factory;
        # tests route registry hosts to 127.0.0.1).
        self.image_platforms = ImagePlatforms(client=registry_client) if check_image_platform else None
        self._clients: dict[tuple[str, str], Any] = {}
        self._block_credentials: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        # Keyed by (identity, execution name); see the module docstring.
        self._ended = Memo()  # the status of an execution seen ended (cleanup needs no read of its own)
        self._failures = Memo()  # a failed execution's exit code and reason (its task list, read once)
        self._deleted = Memo()  # executions whose job this process deleted: MISSING without a call

    @classmethod
    def from_options(cls, **options: Any) -> CloudRunBackend:
        return cls(**options)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        from google.api_core import exceptions

        config = _config(spec)
        job = self._job_message(spec, config)  # refused here (plaintext secret, bad body) before any call
        identity = self._identity(config.credentials)
        project = self._project_of(config)  # a block of another project: refused before any call
        self._check_platform(job["template"]["template"]["containers"][0].get("image", ""), identity)
        jobs = self._client("jobs", identity)
        name = f"projects/{project}/locations/{config.region}/jobs/{job_id(spec)}"
        keep = config.keep_job
        retry = self._retry()
        with google_errors(f"Cloud Run job {name}"):
            try:
                operation = self._rest(
                    "POST", name.rsplit("/jobs/", 1)[0] + "/jobs", identity, params={"jobId": job_id(spec)}, body=job
                )
            except exceptions.Conflict:  # 409 ALREADY_EXISTS: another submit of this attempt created it
                return spec.handle(NAME, self._existing(jobs, name, keep).id)
            # Polling the operation is retried too (a 503 there must not look like a failed job). Not done in time, or
            # its poll failing: the job may yet be ready, and run by another submit of this attempt — it is left to
            # that attempt's retry (409: found) or to the sweep of unstarted jobs, never deleted under a live execution.
            done = self._operation_done(operation, identity)
            error = done.get("error")
            if error:
                # The operation failed: the job was not made ready (an image missing, a service account unknown), so it
                # cannot have run (RunJob needs a ready job); it must not stay behind.
                try:
                    jobs.delete_job(name=name, retry=retry)
                except exceptions.GoogleAPICallError:
                    pass
                raise exceptions.from_grpc_status(int(error.get("code", 2)), str(error.get("message", "")))
            created = dict(done.get("response") or {})
            return spec.handle(NAME, self._run(jobs, name, str(created.get("etag", "")), keep).id)

    def check_job(self, spec: JobSpec) -> None:
        """What submit refuses before any call: the body (a credential in plaintext, a field run.v2 does not know)
        and a ``credentials`` block of another project than the pool's ``project``."""
        config = _config(spec)
        self._job_message(spec, config)
        _same_project(config.credentials_project if self._identity(config.credentials) else None, config.project, True)

    def find(self, spec: JobSpec) -> JobHandle | None:
        from google.api_core import exceptions

        config = _config(spec)
        jobs = self._client("jobs", self._identity(config.credentials))
        name = f"projects/{self._project_of(config)}/locations/{config.region}/jobs/{job_id(spec)}"
        with google_errors(f"Cloud Run job {name}"):
            try:
                job = jobs.get_job(name=name, retry=self._retry())
            except (exceptions.NotFound, exceptions.PermissionDenied):
                return None  # no such job, or no such project or location: no job of this attempt
        execution = job.latest_created_execution.name
        return spec.handle(NAME, _handle(execution, config.keep_job).id) if execution else None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        by_location: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for handle in handles:
            execution = _execution_name(handle.id)
            if execution is None:
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=f"not a Cloud Run execution: {handle.id!r}")
                continue
            try:
                identity = self._handle_identity(handle)
            except BackendError as exc:  # its pool's credentials are unusable: this handle cannot be judged now
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                continue
            project, location = _EXECUTION.match(execution).groups()[:2]  # type: ignore[union-attr]
            by_location.setdefault((identity, project, location), []).append((handle.id, execution))
        for (identity, project, location), items in by_location.items():
            try:
                listed = self._executions_of(project, location, identity)
            except BackendError as exc:  # concerns this location only: the others are still answered
                gone = status_code(exc.__cause__) == 404
                failed = JobStatus(JobState.MISSING if gone else JobState.UNKNOWN, reason=exc.one_line())
                out.update({handle_id: failed for handle_id, _ in items})
                continue
            for handle_id, execution in items:
                found = listed.get(execution)
                try:
                    if found is None and (identity, execution) in self._deleted:
                        out[handle_id] = JobStatus(
                            JobState.MISSING, reason="execution deleted (its job was cleaned up)"
                        )
                        continue
                    if found is None:  # not in the list: ask for it alone before calling it gone
                        found = self._get_execution(execution, identity)
                    out[handle_id] = (
                        self._to_status(found, identity)
                        if found
                        else JobStatus(JobState.MISSING, reason="execution not found")
                    )
                except BackendError as exc:
                    out[handle_id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                    continue
                if out[handle_id].state in ENDED:
                    self._ended.put((identity, execution), out[handle_id])
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        from google.api_core import exceptions

        execution = _execution_name(handle.id)
        if execution is None:
            return  # never one of ours: nothing to stop
        identity = self._handle_identity(handle)
        try:
            with google_errors(f"cancelling {execution}"):
                self._client("executions", identity).cancel_execution(name=execution, retry=self._retry())
        except BackendError as exc:
            if isinstance(exc.__cause__, exceptions.NotFound):
                return
            found = self._get_execution(execution, identity)  # one read of it, not a list of its region
            if found is None or self._to_status(found, identity).state.is_final:  # ended (FAILED_PRECONDITION)
                return
            raise

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        """The execution's last ``lines`` lines from Cloud Logging (entries:list over REST, the handle's identity)."""
        execution = _execution_name(handle.id)
        if lines <= 0 or execution is None:
            return []
        project, _, job, short = _EXECUTION.match(execution).groups()  # type: ignore[union-attr]
        body = {
            "resourceNames": [f"projects/{project}"],
            "filter": (
                f'resource.type="cloud_run_job" AND resource.labels.job_name="{job}" '
                f'AND labels."run.googleapis.com/execution_name"="{short}"'
            ),
            "orderBy": "timestamp desc",
            "pageSize": lines,
        }
        with google_errors(f"reading the logs of {execution}"):
            session = self._session(self._handle_identity(handle))
            answer = session.post(f"{self.logging_endpoint}/v2/entries:list", json=body, timeout=30)
        if answer.status_code == 404:
            return []
        if answer.status_code >= 400:
            raise BackendError(f"Cloud Logging answered {answer.status_code}: {answer.text[:300]}", backend=NAME)
        found = [_log_text(entry) for entry in answer.json().get("entries", [])]
        return [line for line in reversed(found) if line is not None][-lines:]

    def cleanup(self, handle: JobHandle) -> None:
        from google.api_core import exceptions

        execution = _execution_name(handle.id)
        if execution is None or handle.id.endswith(KEEP):
            return
        identity = self._handle_identity(handle)
        if (identity, execution) not in self._ended:  # not seen ended by this process: read it (one call, not a list)
            try:
                found = self._get_execution(execution, identity)
                if found is None or self._to_status(found, identity).state not in ENDED:
                    return  # alive (left alone), already gone, or unknown
            except BackendError:
                return  # cannot tell now: the next tick tries again
        job = execution.rsplit("/executions/", 1)[0]
        with google_errors(f"deleting {job}"):
            try:
                self._client("jobs", identity).delete_job(name=job, retry=self._retry())
            except exceptions.NotFound:
                pass
        self._deleted.put((identity, execution), True)

    # -- jobs that never started (SweepsUnstartedJobs) ---------------------------------------------------------------

    def unstarted_jobs(
        self, templates: Sequence[Mapping[str, Any]], credentials: Sequence[Mapping[str, Any] | None] = ()
    ) -> list[UnstartedJob]:
        """pushpool's jobs with no execution, older than ``unstarted_grace_seconds``, in the locations the pools'
        defaults name (``project``, else the block's, else pushpool's own; ``region``): one ListJobs per location and
        identity (page by page), signed with the pool's credentials (``credentials``, one per template)."""
        locations: dict[tuple[str, str, str], Mapping[str, Any] | None] = {}
        for index, template in enumerate(templates):
            pool_credentials = credentials[index] if index < len(credentials) else None
            identity = self._identity((pool_credentials or {}).get("credentials"))
            props = (template.get("variables") or {}).get("properties") or {}
            where = {"project": (props.get("project") or {}).get("default"), **(pool_credentials or {})}
            try:
                project = self._project_of(CloudRunJobConfig.model_validate(where))  # where submit puts its jobs
            except BackendError:
                continue  # a pool whose jobs submit refuses (a block of another project) has none
            region = (props.get("region") or {}).get("default") or "us-central1"
            locations[(identity, project, str(region))] = pool_credentials
        found: list[UnstartedJob] = []
        now = time.time()
        for (identity, project, region), pool_credentials in sorted(locations.items(), key=lambda item: item[0]):
            parent = f"projects/{project}/locations/{region}"
            with google_errors(f"listing the jobs of {parent}"):
                pager = self._client("jobs", identity).list_jobs(
                    request={"parent": parent, "page_size": LIST_PAGE_SIZE}, retry=self._retry()
                )
                for job in pager:
                    run_id = job.labels.get("prefect-io-flow-run-id")
                    created = _time(job.create_time)
                    if (
                        not job.name.rsplit("/", 1)[-1].startswith("pushpool-")
                        or not run_id
                        or job.execution_count
                        or job.latest_created_execution.name
                        or created is None
                        or now - created.timestamp() < self.unstarted_grace_seconds
                    ):
                        continue
                    found.append(UnstartedJob(NAME, job.name, run_id, job.etag, pool_credentials))
        return found

    def delete_unstarted(self, job: UnstartedJob) -> bool:
        """Delete the job if it is as listed (its etag): a job run meanwhile (RunJob changes the etag) is left to the
        run's own cleanup (False)."""
        from google.api_core import exceptions

        identity = self._identity((job.credentials or {}).get("credentials"))
        with google_errors(f"deleting {job.ref}"):
            try:
                jobs = self._client("jobs", identity)
                jobs.delete_job(request={"name": job.ref, "etag": job.version}, retry=self._retry())
            except exceptions.NotFound:
                return True
            except (exceptions.Conflict, exceptions.Aborted, exceptions.FailedPrecondition):
                return False
        return True

    def withdraw_unstarted(self, spec: JobSpec) -> bool:
        """The attempt's job, if it exists with no execution (its submit stalled between CreateJob and RunJob past the
        monitor's pending timeout), is deleted with the etag read here: the submit's late RunJob then fails (no job)
        instead of making an execution beside the next claim's. A job run meanwhile is left (False: the run has one)."""
        from google.api_core import exceptions

        config = _config(spec)
        name = f"projects/{self._project_of(config)}/locations/{config.region}/jobs/{job_id(spec)}"
        with google_errors(f"Cloud Run job {name}"):
            try:
                job = self._client("jobs", self._identity(config.credentials)).get_job(name=name, retry=self._retry())
            except (exceptions.NotFound, exceptions.PermissionDenied):
                return True  # no job of this attempt (or no such project or location)
        if job.execution_count or job.latest_created_execution.name:
            return False
        return self.delete_unstarted(UnstartedJob(NAME, name, spec.run_id, job.etag, spec.credentials))

    # -- submit helpers ------------------------------------------------------------------------------------------

    def _existing(self, jobs: Any, name: str, keep: bool) -> JobHandle:
        """The handle of a job another submit of this attempt created: its execution, once there is one (waited for up
        to ``ready_timeout``). The job is run here only once its creator can no longer run it (``_orphaned``: it died
        between CreateJob and RunJob), with its etag. Cloud Run does not document that RunJob refuses a stale etag, so
        the etag is a second guard, never the only one: a live creator and this submit would make two executions.

        Raises:
            BackendUnavailableError: the job is ready with no execution, but its creator may still run it (retryable:
                the run is given back under the same key, and the retry finds the execution or runs the orphan).
        """
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.1
        while True:
            job = jobs.get_job(name=name, retry=self._retry())
            if job.latest_created_execution.name:
                return _handle(job.latest_created_execution.name, keep)
            ready = _state_name(job.terminal_condition.state) == "CONDITION_SUCCEEDED"
            if ready and job.execution_count == 0 and self._orphaned(job):
                return self._run(jobs, name, job.etag, keep)
            if time.monotonic() > deadline:
                if ready:
                    raise BackendUnavailableError(
                        f"Cloud Run job {name} of this attempt is ready but not started yet: the submit that created "
                        "it may still start it",
                        backend=NAME,
                    )
                return self._run(jobs, name, job.etag, keep)  # never ready: Cloud Run's refusal says why
            self.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _orphaned(self, job: Any) -> bool:
        """Whether ``job``'s creator can no longer run it: the job is older than a creator can take from CreateJob to
        its last RunJob try — polling the operation up to ``ready_timeout`` (its last poll retried up to
        ``retry_timeout``), then RunJob retried up to ``retry_timeout`` — plus ``ORPHAN_MARGIN_SECONDS`` (a poll's wait,
        the calls themselves, the clocks of Google and of this host)."""
        created = _time(job.create_time)
        if created is None:
            return True  # Cloud Run gives no time: only the etag guards
        budget = self.ready_timeout + 2 * self.retry_timeout + ORPHAN_MARGIN_SECONDS
        return time.time() - created.timestamp() > budget

    def _run(self, jobs: Any, name: str, etag: str, keep: bool) -> JobHandle:
        from google.api_core import exceptions
        from google.cloud import run_v2

        try:
            operation = jobs.run_job(request=run_v2.RunJobRequest(name=name, etag=etag), retry=self._retry())
        except (exceptions.Aborted, exceptions.FailedPrecondition, exceptions.Conflict):
            # Run meanwhile by another submit of this attempt (the etag changed): its execution is the job's.
            job = jobs.get_job(name=name, retry=self._retry())
            if job.latest_created_execution.name:
                return _handle(job.latest_created_execution.name, keep)
            raise
        execution = getattr(operation.metadata, "name", "") if operation.metadata is not None else ""
        if not execution:
            execution = jobs.get_job(name=name, retry=self._retry()).latest_created_execution.name
        return _handle(execution, keep)

    def _job_message(self, spec: JobSpec, config: CloudRunJobConfig) -> dict[str, Any]:
        """The Job to create (REST JSON): the rendered ``job_body`` with the run's command, environment, secrets,
        labels and timeout, as Prefect's ``cloud-run-v2`` worker builds it, judged against the run.v2 discovery
        document (discovery.py: the current API, not the protobuf release pushpool pins).

        Raises:
            BackendError: a credential would go in plaintext, or the body is not a Cloud Run v2 Job.
        """
        body = job_body(spec, config)
        found = discovery.problems(body)
        if found:
            raise BackendError(
                f"the job body is not a Cloud Run v2 Job (run.v2 API, revision {discovery.revision()}): "
                + "; ".join(found[:5]),
                backend=NAME,
            )
        return body

    def _rest(
        self, method: str, path: str, identity: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        """One call of the Admin API v2 over REST (JSON as the discovery document describes it), retried on 429/5xx.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: Google's answer (translated by ``google_errors``).
        """
        from google.api_core import exceptions

        url = f"{(self.endpoint or 'https://run.googleapis.com').rstrip('/')}/v2/{path}"
        key = ("run-rest", identity)
        if key not in self._clients:
            from google.auth.transport.requests import AuthorizedSession

            credentials = self._credentials_of(identity)
            if hasattr(credentials, "with_always_use_jwt_access"):  # signed as the Cloud client libraries sign
                credentials = credentials.with_always_use_jwt_access(True)
            self._clients[key] = AuthorizedSession(credentials)
        session = self._clients[key]

        def call() -> dict[str, Any]:
            response = session.request(method, url, params=params, json=body, timeout=60)
            if response.status_code >= 400:
                raise exceptions.from_http_response(response)
            return response.json()  # type: ignore[no-any-return]

        return self._retry()(call)()  # type: ignore[no-any-return]

    def _operation_done(self, operation: Mapping[str, Any], identity: str) -> dict[str, Any]:
        """A CreateJob operation once done (polled up to ``ready_timeout``): its ``response`` (the Job) or ``error``.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: it did not end in time (DeadlineExceeded), or a poll failed.
        """
        from google.api_core import exceptions

        deadline = time.monotonic() + self.ready_timeout
        delay = 0.1
        while not operation.get("done"):
            if time.monotonic() > deadline:
                raise exceptions.DeadlineExceeded(f"the job was not ready after {self.ready_timeout:.0f} s")
            self.sleep(delay)
            delay = min(delay * 2, 2.0)
            operation = self._rest("GET", str(operation["name"]), identity)
        return dict(operation)

    def _check_platform(self, image: str, identity: str = "") -> None:
        """Refuse an image with no ``linux/amd64`` variant (Cloud Run runs no other) before the job exists; an image
        whose registry cannot be read is not judged (logged by ImagePlatforms). A private Artifact Registry or
        Container Registry image is read with the job's Google credentials (and only those hosts ever receive them).
        """
        from pushpool.providers.image_platform import missing_platform

        if self.image_platforms is None:
            return
        offered = self.image_platforms.platforms(
            image, credentials=lambda host: self._registry_credentials(host, identity)
        )
        if missing_platform(offered, PLATFORM):
            raise BackendError(
                f"image {image} has no {PLATFORM} variant (it has {', '.join(sorted(offered or ()))}), and Cloud Run "
                f'runs {PLATFORM} only: build it with platform="{PLATFORM}" (docker build --platform {PLATFORM}, or '
                f'DockerImage(..., platform="{PLATFORM}") in flow.deploy)',
                backend=NAME,
            )

    # -- status helpers ------------------------------------------------------------------------------------------

    def _executions_of(self, project: str, location: str, identity: str = "") -> dict[str, Any]:
        """Every execution of the location by name: one call per page of ``jobs/-``."""
        with google_errors(f"listing the executions of projects/{project}/locations/{location}"):
            pager = self._client("executions", identity).list_executions(
                request={"parent": f"projects/{project}/locations/{location}/jobs/-", "page_size": LIST_PAGE_SIZE},
                retry=self._retry(),
            )
            return {execution.name: execution for execution in pager}

    def _get_execution(self, name: str, identity: str = "") -> Any:
        from google.api_core import exceptions

        with google_errors(f"reading {name}"):
            try:
                return self._client("executions", identity).get_execution(name=name, retry=self._retry())
            except exceptions.NotFound:
                return None

    def _to_status(self, execution: Any, identity: str = "") -> JobStatus:
        completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
        state_name = _state_name(completed.state) if completed else "STATE_UNSPECIFIED"
        reason_name = _state_name(completed.execution_reason) if completed else "EXECUTION_REASON_UNDEFINED"
        started = _time(execution.start_time)
        finished = _time(execution.completion_time)
        accepted = _time(execution.create_time)  # Cloud Run accepted the execution; start_time: its task started
        extra = {"execution": execution.name, "logUri": execution.log_uri, "condition": state_name}
        if reason_name not in EXECUTION_REASONS or state_name not in CONDITION_STATES:
            why = f"unmapped Cloud Run condition {state_name}/{reason_name}"
            return JobStatus(JobState.UNKNOWN, reason=why, extra=extra, accepted_at=accepted)
        final = CONDITION_STATES[state_name]
        by_reason = EXECUTION_REASONS[reason_name]
        if by_reason is JobState.STOPPED or (final is not None and execution.cancelled_count > 0):
            return JobStatus(
                JobState.STOPPED, None, "Cloud Run execution cancelled", started, finished, extra, accepted
            )
        if by_reason is JobState.MISSING:
            return JobStatus(JobState.MISSING, reason="Cloud Run execution deleted", extra=extra)
        if final is JobState.SUCCEEDED:
            return JobStatus(JobState.SUCCEEDED, 0, "Cloud Run execution succeeded", started, finished, extra, accepted)
        if final is JobState.FAILED or by_reason is JobState.FAILED:
            code, why = self._failure(execution, completed, identity)
            return JobStatus(JobState.FAILED, code, why, started, finished, extra, accepted)
        if by_reason is JobState.RUNNING or execution.running_count > 0 or started is not None:
            return JobStatus(JobState.RUNNING, started_at=started, extra=extra, accepted_at=accepted)
        return JobStatus(JobState.PENDING, extra=extra, accepted_at=accepted)

    def _failure(self, execution: Any, completed: Any, identity: str = "") -> tuple[int | None, str]:
        """A failed execution's exit code and reason: its failed task's last attempt, the condition, the log link."""
        known = self._failures.get((identity, execution.name))
        if known is not None:  # an ended execution's tasks never change: read once
            return known  # type: ignore[no-any-return]
        code: int | None = None
        why = ""
        read = True
        try:
            with google_errors(f"listing the tasks of {execution.name}"):
                tasks = list(self._client("tasks", identity).list_tasks(parent=execution.name, retry=self._retry()))
        except BackendError:
            tasks, read = [], False  # asked again on the next tick
        for task in tasks:
            result = task.last_attempt_result
            if result.status.code == DEADLINE_EXCEEDED:  # killed at the task timeout (term_signal says how)
                code = -int(result.term_signal) if result.term_signal else None
                why = "the task exceeded its timeout"
                break
            if result.exit_code:
                code = int(result.exit_code)
                why = f"container exited with {describe_exit(code)}"
                break
            if result.term_signal:
                code = -int(result.term_signal)
                why = f"container ended by {describe_exit(code)}"
                break
        common = COMMON_REASONS.get(_state_name(completed.reason), "") if completed else ""
        message = completed.message if completed else ""
        parts = [p for p in (why, common, message) if p]
        text = "Cloud Run execution failed: " + ("; ".join(parts) or "no reason given")
        if execution.log_uri:
            text += f" (logs: {execution.log_uri})"
        if read:
            self._failures.put((identity, execution.name), (code, text))
        return code, text

    # -- plumbing ----------------------------------------------------------------------------------------------------

    def _retry(self) -> Any:
        return retry_policy(initial=self.retry_initial, timeout=self.retry_timeout)

    def _own_credentials(self) -> Any:
        with self._lock:
            if self._credentials is None:
                import google.auth

                with google_errors("finding Google credentials"):
                    self._credentials, found = google.auth.default(scopes=SCOPES)
                self._project = self._project or found
            return self._credentials

    def _registry_credentials(self, host: str, identity: str = "") -> tuple[str, str] | None:
        """``("oauth2accesstoken", access token)`` for an Artifact Registry (``<location>-docker.pkg.dev``) or Container
        Registry (``gcr.io``, ``<region>.gcr.io``) host, as Docker's credential helper gives them: the credentials that
        sign the job (the pool's gcp-credentials block, else pushpool's own), refreshed when no longer valid; None for
        any other host: a Google token never goes to another registry (nor when the credentials have no token).

        Raises:
            Exception: the credentials cannot be found or refreshed; the caller logs it and reads anonymously.
        """
        if not _GOOGLE_REGISTRY.match(host):
            return None
        credentials = self._credentials_of(identity)
        with self._token_lock:  # one refresh at a time (not under _lock: a refresh is a network call)
            if not credentials.valid:
                from google.auth.transport.requests import Request

                credentials.refresh(Request())
            token = credentials.token
        return ("oauth2accesstoken", str(token)) if token else None

    def _credentials_of(self, identity: str) -> Any:
        """The credentials an identity key stands for (``_identity``): a block's, or pushpool's own for ""."""
        return self._block_credentials[identity] if identity else self._own_credentials()

    def _handle_identity(self, handle: JobHandle) -> str:
        """The identity that signs the calls about a handle's job: its pool's ``credentials`` (the handle's)."""
        return self._identity((handle.credentials or {}).get("credentials"))

    def _identity(self, credentials: Any) -> str:
        """The key of the credentials that sign a job's calls: "" for pushpool's own, else a digest of the pool's
        ``credentials`` block's service account.

        Raises:
            BackendError: the block's key is unusable.
        """
        block = credentials if isinstance(credentials, Mapping) else {}
        info, file = block.get("service_account_info"), block.get("service_account_file")
        if not info and not file:
            return ""
        key = hashlib.sha256(json.dumps([info, file], sort_keys=True, default=str).encode()).hexdigest()[:24]
        if key not in self._block_credentials:
            from google.oauth2 import service_account

            try:
                if info:
                    made = service_account.Credentials.from_service_account_info(dict(info), scopes=SCOPES)
                else:
                    made = service_account.Credentials.from_service_account_file(str(file), scopes=SCOPES)
            except (ValueError, OSError) as exc:
                raise BackendError(f"the pool's gcp-credentials block is unusable: {exc}", backend=NAME) from None
            self._block_credentials[key] = made
        return key

    def _own_project(self) -> str:
        if self._project is None:
            self._own_credentials()
        if not self._project:
            raise BackendError(
                "no Google Cloud project: set the pool's `project` variable (or GOOGLE_CLOUD_PROJECT where pushpool "
                "runs)",
                backend=NAME,
            )
        return self._project

    def _project_of(self, config: CloudRunJobConfig) -> str:
        """Where the job goes: the pool's ``project``, else the ``credentials`` block's (as the worker: its job goes to
        its block's project), else pushpool's own project. A block that names its project needs no Google identity
        of pushpool's own: the block signs every call about the job, the monitor's too.

        Raises:
            BackendError: the ``credentials`` block is of another project than the pool's ``project`` (the block
                signs every call about the job, in the job's project: a job it cannot reach could never be watched
                — the worker has no ``project`` variable; docs/cloudrun-compat.md); or no project at all.
        """
        block = config.credentials_project if self._identity(config.credentials) else None
        project = config.project or block
        if not project and self._project is None:  # pushpool's own project, when it has one
            self._own_credentials()
        project = project or self._project
        _same_project(block, project, bool(config.project))
        if not project:
            raise BackendError(
                "no Google Cloud project: set the pool's `project` variable (or the gcp-credentials block's project, "
                "or GOOGLE_CLOUD_PROJECT where pushpool runs)",
                backend=NAME,
            )
        return project

    def _client(self, kind: str, identity: str = "") -> Any:
        key = (kind, identity)
        if key not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud import run_v2

            credentials = self._credentials_of(identity)
            cls = {"jobs": run_v2.JobsClient, "executions": run_v2.ExecutionsClient, "tasks": run_v2.TasksClient}[kind]
            options = ClientOptions(api_endpoint=self.endpoint) if self.endpoint else None
            self._clients[key] = cls(credentials=credentials, transport="rest", client_options=options)
        return self._clients[key]

    def _session(self, identity: str = "") -> Any:
        if ("logging", identity) not in self._clients:
            from google.auth.transport.requests import AuthorizedSession

            self._clients[("logging", identity)] = AuthorizedSession(self._credentials_of(identity))
        return self._clients[("logging", identity)]


def job_id(spec: JobSpec) -> str:
    """The Cloud Run job id of ``spec``'s attempt: ``pushpool-<pool>-<digest>``, ≤ 63 characters, lowercase letters,
    digits and hyphens, starting with a letter."""
    digest = hashlib.sha256(f"{spec.run_id}/{spec.attempt}".encode()).hexdigest()[:20]
    slug = re.sub(r"[^a-z0-9]+", "-", spec.pool_name.lower()).strip("-")
    prefix = f"pushpool-{slug}"[: 63 - len(digest) - 1].rstrip("-")
    return f"{prefix}-{digest}"


def job_body(spec: JobSpec, config: CloudRunJobConfig) -> dict[str, Any]:
    """The Job resource (Cloud Run v2 JSON) for ``spec``.

    Raises:
        BackendError: a credential in ``spec.secret_env`` has no Secret Manager reference in the pool.
    """
    refs: dict[str, SecretKeySelector] = dict(config.env_from_secrets)
    for env_name, selector in (
        ("PREFECT_API_KEY", config.prefect_api_key_secret),
        ("PREFECT_API_AUTH_STRING", config.prefect_api_auth_string_secret),
    ):
        if selector is not None:
            refs[env_name] = selector
    for env_name in spec.secret_env:
        if env_name not in refs:
            variable = {"PREFECT_API_KEY": "prefect_api_key_secret"}.get(env_name, "prefect_api_auth_string_secret")
            raise BackendError(
                f"refusing to send {env_name} in plaintext: set the pool variable {variable} to the Secret Manager "
                'secret holding it ({"secret": "<name>", "version": "latest"}), readable by the job\'s service account',
                backend=NAME,
            )

    # As the worker builds it (prefect-gcp's CloudRunWorkerJobV2Configuration.prepare_for_flow_run): what a placeholder
    # left unset is not sent (the worker sends it as null: unset too), every other value as the template has it — an
    # empty string, an empty argument and an empty list included.
    body = _drop_none(copy.deepcopy(config.job_body))
    execution_template = body.setdefault("template", {})
    task = execution_template.setdefault("template", {})
    containers = task.setdefault("containers", [{}])
    container = containers[0]
    if "image" not in container:
        container["image"] = DEFAULT_IMAGE
    # The container's command is the job body's: unset → Prefect's; a string → split like a shell ("" → [], the
    # image's entrypoint); a list as it is. The job_configuration's `command` is not read, as by the worker.
    command = container.get("command")
    if command is None:
        container["command"] = list(DEFAULT_COMMAND)
    elif isinstance(command, str):
        container["command"] = _split(command, "command")
    if isinstance(container.get("args"), str):
        container["args"] = _split(container["args"], "args")
    vpc = task.get("vpcAccess")
    if "vpcAccess" in task and (not vpc or vpc == {"connector": None}):
        task.pop("vpcAccess")
    own = [e for e in container.get("env") or [] if isinstance(e, Mapping) and e.get("name") not in spec.env]
    env = [e for e in own if e.get("name") not in refs]
    env += [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items()) if k not in refs]
    env += [
        {"name": k, "valueSource": {"secretKeyRef": {"secret": s.secret, "version": s.version}}}
        for k, s in sorted(refs.items())
    ]
    container["env"] = env
    for key in ("cpu", "memory"):
        limits = (container.get("resources") or {}).get("limits") or {}
        if key in limits:
            limits[key] = str(limits[key])
    if config.cloudsql_instances:
        task["volumes"] = [
            *task.get("volumes", []),
            {"name": "cloudsql", "cloudSqlInstance": {"instances": list(config.cloudsql_instances)}},
        ]
        container["volumeMounts"] = [*container.get("volumeMounts", []), {"name": "cloudsql", "mountPath": "/cloudsql"}]
    task["timeout"] = f"{config.task_timeout_seconds}s"
    task["maxRetries"] = int(task.get("maxRetries") or 0)
    # The run's labels at both levels (job, execution template: billing reads the executions'), each level's own
    # labels of the template winning, as the worker's merge_labels_for_gcp.
    ours = {_label_key(k): _label_value(v) for k, v in spec.labels.items() if _label_key(k)}
    body["labels"] = _merge_labels(ours, body.get("labels") or {})
    execution_template["labels"] = _merge_labels(ours, execution_template.get("labels") or {})
    body.setdefault("client", "prefect")
    return body  # type: ignore[no-any-return]


def _same_project(block: str | None, project: str | None, pools: bool) -> None:
    """Refuse a ``credentials`` block of another project than the one the job goes to (``pools``: the pool's
    ``project``, else pushpool's own): the block signs every call about the job, in the job's project.

    Raises:
        BackendError: naming both projects.
    """
    if block and project and block != project:
        whose = "the pool's `project`" if pools else "pushpool's own project"
        raise BackendError(
            f"the pool's gcp-credentials block is of project {block}, but the pool's jobs go to project {project} "
            f"({whose}), "
            "and a pool's jobs go to its block's own project. Give the block a key for project "
            f"{project}, or set the pool's `project` to {block}",
            backend=NAME,
        )


def _label_key(key: str) -> str:
    """A Google label key as Prefect's Cloud Run worker makes one: lowercase, every character other than a letter,
    digit, ``_`` or ``-`` a hyphen, starting with a letter, ≤ 63 characters (``prefect.io/flow-run-id`` →
    ``prefect-io-flow-run-id``)."""
    return _LEADING.sub("", _LABEL_UNSAFE.sub("-", key.lower()))[:63]


def _label_value(value: Any) -> str:
    return _LABEL_UNSAFE.sub("-", str(value).lower())[:63]


def _handle(execution: str, keep: bool) -> JobHandle:
    return JobHandle(NAME, execution + (KEEP if keep else ""))


def _execution_name(handle_id: str) -> str | None:
    name = handle_id[: -len(KEEP)] if handle_id.endswith(KEEP) else handle_id
    return name if _EXECUTION.match(name) else None


def _state_name(value: Any) -> str:
    """An enum's name; a value this SDK does not know (a newer API) by its number."""
    return str(getattr(value, "name", value))


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return value if isinstance(value, dt.datetime) else None


def _log_text(entry: Mapping[str, Any]) -> str | None:
    if "textPayload" in entry:
        return str(entry["textPayload"]).rstrip("\n")
    payload = entry.get("jsonPayload")
    if isinstance(payload, Mapping) and "message" in payload:
        return str(payload["message"])
    return None


def _config(spec: JobSpec) -> CloudRunJobConfig:
    if not isinstance(spec.config, CloudRunJobConfig):
        raise BackendError(f"not a Cloud Run job configuration: {type(spec.config).__name__}", backend=NAME)
    return spec.config


def _drop_none(value: Any) -> Any:
    """``value`` without the keys whose value is None (a placeholder left unset: the worker sends them as null, which
    the API reads as unset); empty strings, lists and objects are values and stay."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _split(text: str, field: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise BackendError(f"the container's {field} cannot be split into arguments: {exc}", backend=NAME) from None


def _merge_labels(ours: Mapping[str, str], existing: Mapping[str, Any]) -> dict[str, Any]:
    """The template's ``existing`` labels over the run's (``ours``, sanitised); at most 64, the run's last ones
    dropped first (prefect-gcp's merge_labels_for_gcp)."""
    merged = {**ours, **existing}
    if len(merged) > MAX_LABELS:
        only_ours = [k for k in ours if k not in existing]
        for key in reversed(only_ours[-(len(merged) - MAX_LABELS) :]):
            del merged[key]
    return merged
