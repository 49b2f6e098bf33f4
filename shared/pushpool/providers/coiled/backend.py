"""The ``coiled`` backend: each job is one Coiled batch job running the flow run's command in a container, on a
one-VM cluster of its own — what ``coiled batch run`` does, through Coiled's REST API with httpx.

Why not the coiled SDK: it is 234 MB with dask, distributed and their dependencies (92 distributions here) and takes
0.5–0.7 s to import on this machine, against httpx, which pushpool already has (~0.09 s); and ``coiled.batch.run``
also scans the local Python environment for package sync. pushpool needs seven calls, each a plain REST request.

* Submit: ``GET /api/v2/user/me`` (the token, and the default workspace: the token's account), then
  ``POST /api/v2/jobs/compressed`` (the command, ``env_vars``, the Prefect credential as ``secret_env_vars`` — never
  plain —, the job timeout = ``max_run_time_seconds``), then ``POST /api/v2/clusters/account/<ws>/`` naming the job
  (``batch_job_ids``), the image (``extra_user_container``) or software environment, ``vm_types``, region, tags.
* Idempotent per attempt: the cluster's name is derived from the run and the attempt (Coiled answers ``existing``
  for a second create of one name) and its tags carry run, attempt and pool; a retried submit finds the cluster by
  name. Within one process, concurrent submits of an attempt are serialised.
* The handle id is ``<workspace>/<cluster id>/<job id>``; status lists the workspace's batch jobs once per token
  (paged, as ``coiled batch list`` asks) and reads on its own only a job the listing does not show alive: its task
  (state and exit code) and its cluster's state; cancel stops the cluster (which prefect-coiled's worker cannot do);
  logs are the job's lines.
* Credentials: the pool's ``credentials`` block (``api_token``), else ``DASK_COILED__TOKEN``, on every call: submit
  and find with the spec's, status, cancel and logs with the handle's (the job's pool's, which the monitor puts in the
  handle) — never the token this process used last, which may be another pool's.
* The job and its cluster are what ``coiled.batch.run`` sends for the same options (batch.py: VM types chosen from
  ``cpu``/``memory``/``gpu``/``arm``, the image's software environment, ``additional_coiled_options``); where they
  differ on purpose, docs/coiled-compat.md says why.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from pushpool.errors import BackendError, JobNotFoundError
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit
from pushpool.providers.coiled import batch
from pushpool.providers.coiled.api import NAME, CoiledApi
from pushpool.providers.coiled.config import DEFAULT_IMAGE, DISPATCH_LEAD_SECONDS, CoiledJobConfig

TAG_RUN, TAG_ATTEMPT, TAG_POOL = "pushpool-run", "pushpool-attempt", "pushpool-pool"
# Every task state Coiled's CLI knows (coiled batch status/wait), and what it means for the job.
STATE_MAP: Mapping[str, JobState] = MappingProxyType(
    {
        "pending": JobState.PENDING,
        "assigned": JobState.PENDING,  # a VM is assigned, the container is starting
        "running": JobState.RUNNING,
        "done": JobState.SUCCEEDED,  # refined by the exit code
        "error": JobState.FAILED,
    }
)
CLUSTER_STOPPED = frozenset({"stopping", "stopped"})


def cluster_name(run_id: str, attempt: str) -> str:
    return "pushpool-" + hashlib.sha256(f"{run_id}/{attempt}".encode()).hexdigest()[:32]


class CoiledBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 1200.0  # a VM boots and pulls the image: minutes
    dispatch_lead_seconds = DISPATCH_LEAD_SECONDS

    def __init__(self) -> None:
        self._apis: dict[str, CoiledApi] = {}  # by a digest of the token (never the token)
        self._lock = threading.Lock()
        self._attempt_locks: dict[str, threading.Lock] = {}
        self._submitted: set[str] = set()  # cluster names this process created

    @classmethod
    def from_options(cls, **options: Any) -> CoiledBackend:
        return cls(**options)

    def submit(self, spec: JobSpec) -> JobHandle:
        config, options = _checked(spec)
        api = self._api(config)
        workspace = config.workspace or os.environ.get("DASK_COILED__WORKSPACE") or api.account()
        name = cluster_name(spec.run_id, spec.attempt)
        with self._lock:
            lock = self._attempt_locks.setdefault(name, threading.Lock())
        with lock:
            # Straight after submit's own claim no earlier job can exist, unless this process made it a moment ago.
            if not spec.new_attempt or name in self._submitted:
                found = self._find(api, workspace, name)
                if found is not None:
                    return spec.handle(NAME, found.id)
            api.account()  # the token first, as the SDK does
            provider = api.provider(workspace) if config.gpu or not config.vm_types else None
            vms = self._vm_types(api, provider, config)
            body = self._cluster(spec, config, name, vms, options, provider)
            if body.get("extra_user_container") and not config.software:  # the SDK's environment for the image
                api.create_software_environment(workspace, _software_environment(config, body))
            job_id = api.create_job(self._job_spec(spec, config, workspace, options))
            cluster_id, existing = api.create_cluster(workspace, {**body, "batch_job_ids": [job_id]})
            self._submitted.add(name)
            if existing:  # another process created this attempt's cluster meanwhile: that one runs
                found = self._find(api, workspace, name)
                if found is not None:
                    return spec.handle(NAME, found.id)
        return spec.handle(NAME, f"{workspace}/{cluster_id}/{job_id}")

    def check_job(self, spec: JobSpec) -> None:
        """What submit refuses before any call to Coiled: ``additional_coiled_options`` outside those pushpool gives
        their SDK meaning (or of the wrong form: sizes, durations, ``KEY=val`` lists), ``vm_types`` with
        ``cpu``/``memory``. The VM types Coiled would choose from ``cpu``/``memory`` are not asked for (a call)."""
        config, options = _checked(spec)
        self._job_spec(spec, config, "check", options)
        self._cluster(spec, config, cluster_name(spec.run_id, spec.attempt), list(config.vm_types or []), options)

    def find(self, spec: JobSpec) -> JobHandle | None:
        config = _config(spec)
        api = self._api(config)
        workspace = config.workspace or os.environ.get("DASK_COILED__WORKSPACE") or api.account()
        try:
            found = self._find(api, workspace, cluster_name(spec.run_id, spec.attempt))
        except JobNotFoundError:
            return None  # no such workspace
        return spec.handle(NAME, found.id) if found else None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """Each job's state. The cost grows with workspaces, not runs: per token and workspace (never two tokens in one
        call), one listing of the workspace's batch jobs (paged, newest first, down to the oldest asked about) answers
        for every job it shows pending or running; a job is read on its own (its cluster's jobs: the task's exit code,
        the cluster's state) only when the listing shows it ended or in a state it does not know, or does not show it
        — MISSING only when that read says so (a job not listed yet right after its creation is never declared gone).
        A job asked about alone is read on its own.
        """
        out: dict[str, JobStatus] = {}
        groups: dict[tuple[str, str], tuple[CoiledApi, list[tuple[str, int, int]]]] = {}
        for handle in handles:
            try:
                workspace, cluster_id, job_id = _parse(handle.id)
            except ValueError as exc:
                out[handle.id] = JobStatus(JobState.MISSING, reason=str(exc))
                continue
            try:
                key, api = self._keyed_api(_of(handle))
            except BackendError as exc:  # concerns this handle only
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                continue
            groups.setdefault((key, workspace), (api, []))[1].append((handle.id, cluster_id, job_id))
        for (_, workspace), (api, jobs) in groups.items():
            listed: dict[int, dict[str, Any]] = {}
            try:
                if len(jobs) > 1:  # one job alone (the monitor's re-check of a run): its own read is one call
                    listed = api.workspace_jobs(workspace, {job_id for _, _, job_id in jobs})
            except BackendError:  # each job is then read on its own
                listed = {}
            for handle_id, cluster_id, job_id in jobs:
                item = listed.get(job_id)
                alive = _listed_alive(item, cluster_id) if item is not None else None
                out[handle_id] = alive or self._read(api, cluster_id, job_id)
        return out

    @staticmethod
    def _read(api: CoiledApi, cluster_id: int, job_id: int) -> JobStatus:
        """One job's state from its cluster's jobs (the task's state and exit code, the cluster's state)."""
        try:
            jobs = api.jobs_of_cluster(cluster_id)
        except JobNotFoundError as exc:
            return JobStatus(JobState.MISSING, reason=exc.one_line())
        except BackendError as exc:
            return JobStatus(JobState.UNKNOWN, reason=exc.one_line())
        job = next((j for j in jobs if int(j.get("id", -1)) == job_id), None)
        return _to_status(job) if job else JobStatus(JobState.MISSING, reason="job not found")

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        try:
            workspace, cluster_id, _ = _parse(handle.id)
        except ValueError:
            return
        try:
            api = self._api(_of(handle))
            api.stop_cluster(workspace, cluster_id, "Stopped by pushpool: the flow run was cancelled")
        except JobNotFoundError:
            return

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        if lines <= 0:
            return []
        try:
            workspace, cluster_id, job_id = _parse(handle.id)
            return self._api(_of(handle)).logs(workspace, cluster_id, job_id)[-lines:]
        except (ValueError, JobNotFoundError):
            return []

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _find(self, api: CoiledApi, workspace: str, name: str) -> JobHandle | None:
        cluster_id = api.cluster_by_name(workspace, name)
        if cluster_id is None:
            return None
        jobs = api.jobs_of_cluster(cluster_id)
        return JobHandle(NAME, f"{workspace}/{cluster_id}/{jobs[0]['id']}") if jobs else None

    @staticmethod
    def _job_spec(spec: JobSpec, config: CoiledJobConfig, workspace: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The job as ``_batch_run`` sends it; the whole environment is secret, as prefect-coiled's worker sends it."""
        timeout = options.get("job_timeout")
        return {
            "user_command": batch.user_command(spec.command),
            "user_files": [],
            "task_array_ntasks": 1,
            "scheduler_task_array": [0],  # one task, on the cluster's one VM
            "env_vars": batch.pairs(options.get("env"), "env"),
            "secret_env_vars": {**spec.env, **spec.secret_env},
            "wait_for_ready_cluster": False,
            "workdir": None,  # prefect-coiled's jobs (a flow-run-id tag) keep the image's working directory
            "pipe_to_files": False,
            "host_setup": None,
            "job_timeout_seconds": batch.parse_seconds(timeout) if timeout is not None else config.max_run_time_seconds,
            "run_in_container": True,
            "max_retries": int(options.get("max_retries") or 0),
            "workspace": workspace,
        }

    @staticmethod
    def _vm_types(api: CoiledApi, provider: str | None, config: CoiledJobConfig) -> list[str]:
        """The VM types the SDK would choose (``Cluster._get_cluster_vm_types_to_use`` for the one VM)."""
        if config.vm_types or provider is None:
            return list(config.vm_types)
        gpus = 1 if config.gpu else 0
        arm = bool(config.arm)
        if not (config.cpu or config.memory or gpus):
            found = batch.DEFAULT_VM_TYPES.get((provider, False, arm))
            if found is None:
                raise BackendError(f"no default VM type for {provider!r} (arm={arm}): give vm_types", backend=NAME)
            return list(found)
        names = api.vm_types(batch.vm_type_query(config.cpu, config.memory, gpus, provider, arm))
        unbalanced = bool(config.cpu and config.memory)
        chosen = batch.preferred(names, provider=provider, gpus=gpus, arm=arm, unbalanced=unbalanced)
        if not chosen and not unbalanced:
            chosen = batch.preferred(names, provider=provider, gpus=gpus, arm=arm, unbalanced=True)
            if chosen:
                raise BackendError(
                    f"no balanced VM type has cpu={config.cpu} memory={config.memory}; unbalanced ones do "
                    f"({', '.join(chosen[:5])}): give both cpu and memory, or vm_types",
                    backend=NAME,
                )
        if not chosen:
            raise BackendError(
                f"no recommended VM type matches cpu={config.cpu} memory={config.memory} gpu={config.gpu} "
                f"arm={arm} in this workspace's cloud ({provider}): give vm_types",
                backend=NAME,
            )
        return chosen

    @staticmethod
    def _cluster(
        spec: JobSpec,
        config: CoiledJobConfig,
        name: str,
        vms: list[str],
        options: Mapping[str, Any],
        provider: str | None = None,
    ) -> dict[str, Any]:
        """The cluster as ``coiled.Cluster`` creates it for a one-task batch job (the task on the scheduler VM)."""
        tags = {key.replace("prefect.io/", ""): value for key, value in spec.labels.items()}
        tags |= {TAG_RUN: spec.run_id, TAG_ATTEMPT: spec.attempt, TAG_POOL: spec.pool_name,
                 "coiled-cluster-type": "batch"}  # fmt: skip
        image = None if config.software else (config.image or DEFAULT_IMAGE)
        ignore_entrypoint = bool(options.get("ignore_container_entrypoint"))
        disk = batch.disk_gib(options.get("disk_size"))
        scheduler_vms = list(options.get("scheduler_vm_type") or vms)
        backend: dict[str, Any] = {}
        if config.region:
            backend["region_name"] = config.region
        if config.gpu and provider == "gcp":
            backend |= batch.GCP_SCHEDULER_GPU
        backend["multizone"] = True  # the SDK's use_best_zone (no zone is given)
        if options.get("allow_cross_zone", True):
            backend["multizone_allow_cross_zone"] = True
        if options.get("spot_policy"):
            backend |= batch.SPOT_POLICIES[options["spot_policy"]]
        if config.gpu:  # the SDK's worker GPU count becomes a T4 accelerator on any cloud (CloudV2._create_cluster)
            backend |= {"worker_accelerator_count": 1, "worker_accelerator_type": "nvidia-tesla-t4"}
        body: dict[str, Any] = {
            "name": name,
            "workers": 0,
            "worker_instance_types": vms,
            "scheduler_instance_types": scheduler_vms,
            "worker_disk_size": disk,
            "scheduler_disk_size": disk,
            "scheduler_options": {"idle_timeout": "520 weeks", "worker_ttl": "520 weeks"},
            "environ": {},
            "tags": tags,
            "env_name": config.software
            or (batch.container_senv_name(batch.DASK_CONTAINER, bool(config.arm)) if image else None),
            "use_aws_creds_endpoint": False,
            "extra_user_container": image,
            "extra_user_container_ignore_entrypoint": ignore_entrypoint and bool(image),
            "worker_options": {},
            "private_to_creator": False,
            "scheduler_sidecars": [],
            "cluster_timeout_seconds": config.max_run_time_seconds,
        }
        if backend:
            body["options"] = backend
        return {k: v for k, v in body.items() if v is not None}

    def _api(self, config: CoiledJobConfig) -> CoiledApi:
        """The API client of ``config``'s credentials block, else of ``DASK_COILED__TOKEN`` (never another's)."""
        return self._keyed_api(config)[1]

    def _keyed_api(self, config: CoiledJobConfig) -> tuple[str, CoiledApi]:
        """``_api`` and the digest of its token (what status groups the handles by)."""
        try:
            token = config.api_token()
        except ValueError as exc:
            raise BackendError(f"the pool's credentials block: {exc}", backend=NAME) from None
        token = token or os.environ.get("DASK_COILED__TOKEN")
        if not token:
            raise BackendError(
                "no Coiled API token: set the pool's credentials block, or DASK_COILED__TOKEN (`coiled login`)",
                backend=NAME,
            )
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            api = self._apis.get(key)
            if api is None:
                api = self._apis[key] = CoiledApi(token)
        return key, api


def _software_environment(config: CoiledJobConfig, cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The software environment the SDK creates for a batch job's image: the dask container its scheduler runs."""
    return {
        "name": cluster["env_name"],
        "container": batch.DASK_CONTAINER,
        "force_rebuild": False,
        "md5": hashlib.md5(b"null").hexdigest(),  # the SDK's digest of no package list
        "use_entrypoint": True,
        "gpu_enabled": False,
        "architecture": "aarch64" if config.arm else "x86_64",
        "region_name": config.region,
        "enable_experimental_installer": True,
        "lockfile_content": None,
        "lockfile_name": None,
    }


def _checked(spec: JobSpec) -> tuple[CoiledJobConfig, dict[str, Any]]:
    """The job's configuration and its ``additional_coiled_options``, refused as the SDK refuses them.

    Raises:
        BackendError: an option pushpool does not support, or ``vm_types`` with ``cpu``/``memory``.
    """
    config = _config(spec)
    options = batch.options_of(config.additional_coiled_options)
    if (config.cpu or config.memory) and config.vm_types:
        raise BackendError("give either vm_types or cpu/memory, not both (as the coiled SDK)", backend=NAME)
    return config, options


def _config(spec: JobSpec) -> CoiledJobConfig:
    if not isinstance(spec.config, CoiledJobConfig):
        raise BackendError(f"not a Coiled job configuration: {type(spec.config).__name__}", backend=NAME)
    return spec.config


def _of(handle: JobHandle) -> CoiledJobConfig:
    """The credentials a handle carries (its pool's), as a configuration; none: ``DASK_COILED__TOKEN``."""
    try:
        return CoiledJobConfig.model_validate(dict(handle.credentials or {}))
    except ValidationError:
        raise BackendError("the handle's credentials are not a coiled-credentials block", backend=NAME) from None


def _parse(handle_id: str) -> tuple[str, int, int]:
    parts = handle_id.split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"not a Coiled job handle: {handle_id!r}")
    return parts[0], int(parts[1]), int(parts[2])


def _listed_alive(item: Mapping[str, Any], cluster_id: int) -> JobStatus | None:
    """A job as the workspace's listing shows it, when that says it is pending or running (one task, none ended);
    None when only a read of the job can tell (ended, a state not known here, another cluster)."""
    if str(item.get("cluster_id")) != str(cluster_id):
        return None
    if int(item.get("n_tasks_succeeded") or 0) or int(item.get("n_tasks_failed") or 0):
        return None
    state = STATE_MAP.get(str(item.get("state") or ""))
    return JobStatus(state) if state is not None and state.is_alive else None


def _to_status(job: Mapping[str, Any]) -> JobStatus:
    tasks = job.get("tasks") or []
    task = tasks[0] if tasks else {}
    state_name = str(task.get("state") or "pending")
    code = task.get("exit_code")
    cluster_state = str(job.get("cluster_state") or "")
    state = STATE_MAP.get(state_name, JobState.UNKNOWN)
    if state is JobState.SUCCEEDED and code:
        state = JobState.FAILED
    if cluster_state in CLUSTER_STOPPED and (state.is_alive or (state is JobState.FAILED and code is None)):
        return JobStatus(JobState.STOPPED, reason=f"the job's cluster is {cluster_state}")
    if state.is_alive and cluster_state == "error":
        return JobStatus(JobState.FAILED, reason=f"the job's cluster failed: {job.get('cluster_reason') or ''}".strip())
    if state is JobState.FAILED:
        text = describe_exit(int(code)) if code is not None else "the job failed"
        return JobStatus(state, exit_code=int(code) if code is not None else None, reason=text)
    if state is JobState.SUCCEEDED:
        return JobStatus(state, exit_code=0, reason="exit code 0")
    if state is JobState.UNKNOWN:
        return JobStatus(state, reason=f"unknown Coiled task state {state_name!r}")
    return JobStatus(state)
