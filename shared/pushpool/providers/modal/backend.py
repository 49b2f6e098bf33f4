"""The ``modal`` backend: each job is one Modal Sandbox running the flow run's command (``prefect flow-run execute``).

* The sandbox belongs to the run's app (``app_name``, else ``pushpool-<pool>``, created when missing), runs the pool's
  ``image`` (plus ``pip_packages``) with the requested ``cpu``/``memory``/``gpu``/``region``, and Modal's own
  ``timeout`` is ``max_run_time_seconds``: a sandbox outliving its run is ended by Modal even if no monitor runs.
* Idempotent per attempt: the sandbox's ``name`` is derived from the run and the attempt (Modal refuses a second
  running sandbox of that name: concurrent submits make one), and its tags carry the run, the attempt and the pool,
  so a later, separate invocation finds it running **or finished** (``find``; a name only finds running ones).
* The Prefect credential goes as an ephemeral Modal Secret (``Secret.from_dict``), never in the command or tags;
  the pool's ``secrets`` are Modal secrets by name.
* Throttled (RESOURCE_EXHAUSTED, which the SDK does not retry, unlike UNAVAILABLE): the create is tried again after
  ``throttle_waits`` (jittered), as the other providers' SDKs retry their 429s; then QuotaExceededError.
* The handle id is the sandbox id; status lists each app's running sandboxes once per token (paged), which tells a
  sandbox Modal is still scheduling (no task yet: PENDING, so the start timeout applies) from one running, with when
  Modal accepted it (``created_at``), and reads on its own only a sandbox no listing shows: its result (exit code,
  terminated, timed out, failed to start) or that it is gone; cancel terminates it; logs are its output's last lines
  (Modal keeps them with the app).
* Credentials: the pool's ``modal_credentials`` block (``token_id``/``token_secret``), else the SDK's own
  configuration (``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` or ``~/.modal.toml``), on every call: submit and find with
  the spec's, status, cancel and logs with the handle's (the job's pool's, which the monitor puts in the handle), so a
  sandbox is never asked about with another pool's token — Modal answers NOT_FOUND for another workspace's sandbox.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from pushpool.errors import BackendError, JobNotFoundError
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit
from pushpool.providers.modal.config import DISPATCH_LEAD_SECONDS, ModalJobConfig
from pushpool.providers.modal.sdk import (
    NAME,
    find_sandbox,
    modal_errors,
    running_sandboxes,
    sandbox_scheduled,
    sandbox_wait,
    tags,
)

# Every GenericResult status a sandbox can end with (modal_proto), and what it means for the job.
STATE_MAP: Mapping[str, JobState] = MappingProxyType(
    {
        "GENERIC_STATUS_UNSPECIFIED": JobState.RUNNING,  # no result yet: scheduling (PENDING, see status) or running
        "GENERIC_STATUS_SUCCESS": JobState.SUCCEEDED,  # refined by the exit code
        "GENERIC_STATUS_FAILURE": JobState.FAILED,
        "GENERIC_STATUS_TERMINATED": JobState.STOPPED,
        "GENERIC_STATUS_TIMEOUT": JobState.FAILED,
        "GENERIC_STATUS_INIT_FAILURE": JobState.FAILED,
        "GENERIC_STATUS_INTERNAL_FAILURE": JobState.FAILED,
        "GENERIC_STATUS_IDLE_TIMEOUT": JobState.FAILED,
        "GENERIC_STATUS_MEMORY_MANAGER_EVICTION": JobState.FAILED,
        "GENERIC_STATUS_MEMORY_THRASHING_EVICTION": JobState.FAILED,
        "GENERIC_STATUS_KERNEL_OOM_KILL": JobState.FAILED,
    }
)
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "GENERIC_STATUS_TERMINATED": "the sandbox was terminated",
        "GENERIC_STATUS_TIMEOUT": "the sandbox reached its timeout (max_run_time_seconds)",
        "GENERIC_STATUS_INIT_FAILURE": "the sandbox failed to start",
        "GENERIC_STATUS_INTERNAL_FAILURE": "Modal failed internally",
        "GENERIC_STATUS_IDLE_TIMEOUT": "the sandbox was idle too long",
        "GENERIC_STATUS_MEMORY_MANAGER_EVICTION": "evicted for memory",
        "GENERIC_STATUS_MEMORY_THRASHING_EVICTION": "evicted: memory thrashing",
        "GENERIC_STATUS_KERNEL_OOM_KILL": "killed: out of memory",
    }
)


SCHEDULING = "Modal is still scheduling the sandbox (no worker has taken it yet: waiting for capacity or a GPU)"


def sandbox_name(run_id: str, attempt: str) -> str:
    """The attempt's sandbox name: unique per attempt, valid for Modal (at most 64 of ``[A-Za-z0-9._-]``)."""
    return "pushpool-" + hashlib.sha256(f"{run_id}/{attempt}".encode()).hexdigest()[:40]


class ModalBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 300.0  # image builds (pip_packages) and GPU capacity can take minutes
    dispatch_lead_seconds = DISPATCH_LEAD_SECONDS
    throttle_waits: tuple[float, ...] = (0.5, 1.0)  # seconds before each retry of a throttled create

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}  # by a digest of the token (never the token); "" = the SDK's own
        self._apps: dict[str, list[str]] = {}  # by that digest: the apps its sandboxes were found in last time
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, **options: Any) -> ModalBackend:
        return cls(**options)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        import modal

        config = _config(spec)
        client = self._client(config)
        wanted = tags(spec.run_id, spec.attempt, spec.pool_name)
        with modal_errors():
            app = modal.App.lookup(config.app_for(spec.pool_name), create_if_missing=True, client=client)
            if not spec.new_attempt:
                found = find_sandbox(client, app.app_id, wanted)
                if found is not None:
                    return spec.handle(NAME, found)
            image = modal.Image.from_registry(config.image)
            if config.pip_packages:
                image = image.pip_install(*config.pip_packages)
            secrets = [modal.Secret.from_name(name) for name in config.secrets]
            if spec.secret_env:
                secrets.append(modal.Secret.from_dict(dict(spec.secret_env)))
            try:
                sandbox = self._throttled(
                    modal.Sandbox.create,
                    *spec.command,
                    app=app,
                    name=sandbox_name(spec.run_id, spec.attempt),
                    tags=wanted,
                    image=image,
                    env=dict(spec.env),
                    secrets=secrets,
                    timeout=config.max_run_time_seconds,
                    cpu=config.cpu,
                    memory=config.memory,
                    gpu=config.gpu,
                    region=config.region,
                    client=client,
                )
            except modal.exception.AlreadyExistsError:  # a concurrent submit of this attempt created it
                found = find_sandbox(client, app.app_id, wanted)
                if found is None:
                    raise
                return spec.handle(NAME, found)
        return spec.handle(NAME, sandbox.object_id)

    def _throttled(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call``, tried again after each of ``throttle_waits`` while Modal answers RESOURCE_EXHAUSTED."""
        import modal

        for wait in self.throttle_waits:
            try:
                return call(*args, **kwargs)
            except modal.exception.ResourceExhaustedError:
                time.sleep(wait * random.uniform(0.5, 1.0))  # jittered
        return call(*args, **kwargs)

    def find(self, spec: JobSpec) -> JobHandle | None:
        import modal

        config = _config(spec)
        client = self._client(config)
        try:
            with modal_errors():
                app = modal.App.lookup(config.app_for(spec.pool_name), client=client)
                found = find_sandbox(client, app.app_id, tags(spec.run_id, spec.attempt, spec.pool_name))
        except JobNotFoundError:
            return None  # no such app: no sandbox of this attempt can be in it
        return spec.handle(NAME, found) if found else None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """Each sandbox's state: PENDING while Modal schedules it (no task yet: waiting for capacity, a GPU), RUNNING
        once it has a task, else its result.

        The cost grows with apps, not runs: per token (never two tokens in one call), one listing of each app's running
        sandboxes (paged) answers for every sandbox it shows, with its times (``created_at``: Modal accepted it; its
        task's ``started_at``); one sandbox is read on its own only when no listing shows it — it finished, it is
        gone (MISSING only when the read says so: a sandbox not listed yet right after its creation is read, never
        declared gone), or its app was not listed yet (its read names the app, which is then listed for the others).
        A warm process lists first the apps its last status call found the token's sandboxes in, unless one sandbox is
        asked about alone (read first: its app is listed only while it runs, for its times)."""
        out: dict[str, JobStatus] = {}
        by_token: dict[str, tuple[Any, list[str]]] = {}  # token digest -> its client, its sandboxes
        for handle in handles:
            if not handle.id.startswith("sb"):
                out[handle.id] = JobStatus(JobState.MISSING, reason=f"not a Modal sandbox id: {handle.id!r}")
                continue
            try:
                key, client = self._keyed_client(_of(handle))
            except BackendError as exc:  # concerns this handle only
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                continue
            ids = by_token.setdefault(key, (client, []))[1]
            if handle.id not in ids:
                ids.append(handle.id)
        for key, (client, ids) in by_token.items():
            out.update(self._status_of_token(key, client, ids))
        return out

    def _status_of_token(self, key: str, client: Any, ids: list[str]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        listed: dict[str, tuple[Any, str]] = {}  # sandbox id -> its SandboxInfo and app, from the apps' listings
        apps_listed: set[str] = set()
        apps_found: list[str] = []  # the apps this token's sandboxes are in (listed first by the next call)

        def list_app(app_id: str) -> None:
            apps_listed.add(app_id)
            try:
                with modal_errors():
                    found = running_sandboxes(client, app_id, ids)
            except BackendError:  # each sandbox is then read on its own
                return
            listed.update((sandbox_id, (info, app_id)) for sandbox_id, info in found.items())

        with self._lock:  # a sandbox asked about alone (the monitor's re-check of a run) is read first
            known = list(self._apps.get(key, ())) if len(ids) > 1 else []
        for app_id in known:
            list_app(app_id)
        for number, sandbox_id in enumerate(ids):
            info, app_id = listed.get(sandbox_id, (None, ""))
            if info is not None and _live(info):
                out[sandbox_id] = _listed_status(info)
                if app_id not in apps_found:
                    apps_found.append(app_id)
                continue
            try:
                with modal_errors():
                    result, app_id = sandbox_wait(client, sandbox_id)
                    status = _to_status(result)
                    if app_id and app_id not in apps_found:
                        apps_found.append(app_id)
                    if app_id and app_id not in apps_listed and (status.state.is_alive or number + 1 < len(ids)):
                        list_app(app_id)  # the others of its app are answered by the listing
                    if status.state is JobState.RUNNING:
                        info = listed.get(sandbox_id, (None, ""))[0]
                        if info is not None and _live(info):
                            status = _listed_status(info)
                        elif not sandbox_scheduled(client, sandbox_id):  # not listed (yet): its task tells
                            status = JobStatus(JobState.PENDING, reason=SCHEDULING)
            except JobNotFoundError as exc:
                out[sandbox_id] = JobStatus(JobState.MISSING, reason=exc.one_line())
            except BackendError as exc:  # concerns this sandbox only
                out[sandbox_id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
            else:
                out[sandbox_id] = status
        if len(ids) > 1:  # a re-check of one sandbox leaves what the last tick learnt
            with self._lock:
                self._apps[key] = apps_found
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        import modal

        if not handle.id.startswith("sb"):
            return  # never a sandbox: nothing to stop
        try:
            with modal_errors():
                modal.Sandbox.from_id(handle.id, client=self._client(_of(handle))).terminate()
        except JobNotFoundError:
            return  # already gone

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        import modal

        if lines <= 0 or not handle.id.startswith("sb"):
            return []
        try:
            with modal_errors():
                sandbox = modal.Sandbox.from_id(handle.id, client=self._client(_of(handle)))
                text = "".join(entry.message for entry in sandbox.logs.tail(min(lines, 1000)))
        except JobNotFoundError:
            return []
        return text.splitlines()[-lines:]

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _client(self, config: ModalJobConfig) -> Any:
        """The Modal client for ``config``'s credentials block, else the SDK's own configuration (never another's)."""
        return self._keyed_client(config)[1]

    def _keyed_client(self, config: ModalJobConfig) -> tuple[str, Any]:
        """``_client`` and the digest of its token ("" for the SDK's own configuration), which keys what is cached."""
        import modal

        try:
            token = config.token()
        except ValueError as exc:
            raise BackendError(f"the pool's modal_credentials block: {exc}", backend=NAME) from None
        key = hashlib.sha256("\n".join(token).encode()).hexdigest() if token else ""
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                with modal_errors():
                    client = modal.Client.from_credentials(*token) if token else modal.Client.from_env()
                self._clients[key] = client
        return key, client


def _config(spec: JobSpec) -> ModalJobConfig:
    if not isinstance(spec.config, ModalJobConfig):
        raise BackendError(f"not a Modal job configuration: {type(spec.config).__name__}", backend=NAME)
    return spec.config


def _of(handle: JobHandle) -> ModalJobConfig:
    """The credentials a handle carries (its pool's), as a configuration; none: the SDK's own configuration."""
    try:
        return ModalJobConfig.model_validate(dict(handle.credentials or {}))
    except ValidationError:
        raise BackendError("the handle's modal_credentials are not a modal-credentials block", backend=NAME) from None


def _live(info: Any) -> bool:
    """Whether a listed sandbox is still running by its listing (no result yet)."""
    from modal_proto import api_pb2

    return bool(info.task_info.result.status == api_pb2.GenericResult.GENERIC_STATUS_UNSPECIFIED)


def _listed_status(info: Any) -> JobStatus:
    """A running sandbox as its listing shows it: PENDING until Modal gave it a task (scheduled it onto a worker)."""
    accepted = _time(info.created_at)
    if not (info.task_info.id or info.task_info.started_at):
        return JobStatus(JobState.PENDING, reason=SCHEDULING, accepted_at=accepted)
    return JobStatus(JobState.RUNNING, accepted_at=accepted, started_at=_time(info.task_info.started_at))


def _to_status(result: Any) -> JobStatus:
    from modal_proto import api_pb2

    status = api_pb2.GenericResult.GenericStatus.Name(result.status)
    state = STATE_MAP.get(status, JobState.UNKNOWN)
    if state is JobState.RUNNING:
        return JobStatus(JobState.RUNNING)
    code = int(result.exitcode) if status in ("GENERIC_STATUS_SUCCESS", "GENERIC_STATUS_FAILURE") else None
    if state is JobState.SUCCEEDED and code:
        state = JobState.FAILED
    if state is JobState.FAILED and status == "GENERIC_STATUS_FAILURE" and code == 0:
        code = None
    parts = [describe_exit(code) if code is not None else "", REASONS.get(status, ""), result.exception.strip()]
    reason = "; ".join(p for p in parts if p) or status
    return JobStatus(state, exit_code=code, reason=reason if state is not JobState.SUCCEEDED else "exit code 0")


def _time(seconds: float) -> dt.datetime | None:
    """A Modal timestamp (seconds since the epoch; 0 when unset)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc) if seconds else None
