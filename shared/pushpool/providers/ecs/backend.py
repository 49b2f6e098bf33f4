"""The ``ecs`` backend: each job is one ECS task (Fargate by default), started with ``RunTask``.

* Task definitions are reused without state: the family is derived from the pool and a hash of the definition's
  content (``pushpool-<pool>-<hash>``), so runs of the same deployment share one definition and it is registered
  only when its content changes — never once per run. With an explicit ``family`` the latest revision is compared
  instead. Per-run values (command, environment) travel in ``overrides``.
* ``RunTask`` carries ``clientToken`` = the attempt (the claim's Pending state id; AWS's own idempotency, 24 h)
  and ``startedBy`` = ``<flow-run id>/<attempt>``, so a retried submit finds the task instead of starting a second
  one (``find``), while a run scheduled again (a retry) gets a new task.
* The Prefect credential goes as a container ``secrets`` entry (``valueFrom`` = the secret's ARN); pushpool refuses
  to put it in plaintext overrides.
* Throttling and 5xx are retried by botocore's ``standard`` retry mode (exponential backoff with jitter);
  capacity ``failures[]`` are retried here with backoff; then the error surfaces as a BackendError with AWS's reason.
* The handle id is ``<cluster>::<task ARN>`` (as Prefect's ECS worker); the region comes from the ARN.
* AWS credentials: the default chain (the function's IAM role). ``aws_credentials`` job variables are read for
  ``region_name`` only; keys are not used.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from pushpool.errors import BackendError, JobNotFoundError, QuotaExceededError
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit
from pushpool.providers.ecs.aws import aws_error_code, aws_errors
from pushpool.providers.ecs.config import EcsJobConfig

NAME = "ecs"
DEFAULT_IMAGE = "prefecthq/prefect:3-latest"
DEFAULT_CONTAINER = "prefect"
DESCRIBE_BATCH = 100

# Every lastStatus ECS documents (task lifecycle), and what it means for the job.
STATE_MAP: Mapping[str, JobState] = MappingProxyType(
    {
        "PROVISIONING": JobState.PENDING,
        "PENDING": JobState.PENDING,
        "ACTIVATING": JobState.PENDING,
        "RUNNING": JobState.RUNNING,
        "DEACTIVATING": JobState.RUNNING,  # stopping: containers may still run; final once STOPPED
        "STOPPING": JobState.RUNNING,
        "DEPROVISIONING": JobState.RUNNING,
        "STOPPED": JobState.FAILED,  # refined by stopCode and the container's exit code (_to_status)
        "DELETED": JobState.MISSING,
    }
)
# Every stopCode ECS documents (botocore's model enumerates them; a test keeps this complete). TaskFailedToStart,
# EssentialContainerExited and UserInitiated are judged with the exit code in _to_status; these mean AWS ended the task.
INFRASTRUCTURE_STOPS: Mapping[str, str] = MappingProxyType(
    {
        "SpotInterruption": "Spot capacity was reclaimed",
        "TerminationNotice": "AWS retired the task (termination notice)",
        "InfrastructureHealth": "the task's infrastructure failed",
        "ServiceSchedulerInitiated": "an ECS service scheduler stopped the task",
    }
)
JUDGED_BY_EXIT_CODE = frozenset({"TaskFailedToStart", "EssentialContainerExited", "UserInitiated"})
_RETRYABLE_FAILURES = ("RESOURCE:", "AGENT", "Capacity", "capacity")
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
_TAG = re.compile(r"[^A-Za-z0-9_./=+:@ -]+")


class EcsBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 600.0  # image pulls and Fargate capacity can take minutes

    def __init__(
        self,
        *,
        session: Any = None,
        region: str | None = None,
        max_attempts: int = 5,
        failure_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self.region = region
        self.max_attempts = max_attempts
        self.failure_retries = failure_retries
        self.sleep = sleep
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._known_definitions: dict[str, str] = {}

    @classmethod
    def from_options(cls, **options: Any) -> EcsBackend:
        return cls(**options)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        config = _config(spec)
        cluster = config.target_cluster
        region = config.region or self.region
        ecs = self._client("ecs", region)
        with aws_errors():
            # A retry of this attempt finds its task. Straight after the claim there is none to find (one ListTasks
            # round trip less before the job); RunTask's clientToken still dedups a retried request on AWS for 24 h.
            if not spec.new_attempt:
                found = self._find(ecs, cluster, started_by(spec.run_id, spec.attempt), stopped_too=False)
                if found is not None:
                    return found
            request = self._run_task_request(spec, cluster, region)
            task = self._run_task(ecs, request)
        return JobHandle(NAME, f"{cluster}::{task['taskArn']}")

    def find(self, spec: JobSpec) -> JobHandle | None:
        config = _config(spec)
        ecs = self._client("ecs", config.region or self.region)
        try:
            with aws_errors():
                return self._find(ecs, config.target_cluster, started_by(spec.run_id, spec.attempt))
        except BackendError as exc:
            if isinstance(exc.__cause__, Exception) and aws_error_code(exc.__cause__) == "ClusterNotFoundException":
                return None  # no such cluster: no task of this attempt can be in it
            raise

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        by_target: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
        out: dict[str, JobStatus] = {}
        for handle in handles:
            try:
                cluster, arn = _parse(handle.id)
            except JobNotFoundError as exc:
                out[handle.id] = JobStatus(JobState.MISSING, reason=exc.one_line())
                continue
            by_target.setdefault((cluster, _arn_region(arn)), []).append((handle.id, arn))
        for (cluster, region), items in by_target.items():
            ecs = self._client("ecs", region)
            for start in range(0, len(items), DESCRIBE_BATCH):
                batch = items[start : start + DESCRIBE_BATCH]
                try:
                    with aws_errors():
                        answer = ecs.describe_tasks(cluster=cluster, tasks=[arn for _, arn in batch])
                except BackendError as exc:  # concerns this batch only: the others are still answered
                    gone = isinstance(exc.__cause__, Exception) and (
                        aws_error_code(exc.__cause__) == "ClusterNotFoundException"
                    )
                    failed = JobStatus(JobState.MISSING if gone else JobState.UNKNOWN, reason=exc.one_line())
                    out.update({handle_id: failed for handle_id, _ in batch})
                    continue
                tasks = {t["taskArn"]: t for t in answer.get("tasks", [])}
                for handle_id, arn in batch:
                    task = tasks.get(arn)
                    out[handle_id] = _to_status(task) if task else JobStatus(JobState.MISSING, reason="task not found")
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        cluster, arn = _parse(handle.id)
        ecs = self._client("ecs", _arn_region(arn))
        try:
            with aws_errors():
                ecs.stop_task(cluster=cluster, task=arn, reason="Stopped by pushpool")
        except BackendError:
            # "task not found" has no error code of its own: ask ECS whether the task is gone or stopped.
            state = self.status([handle])[handle.id].state
            if state.is_final:
                return
            raise

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        if lines <= 0:
            return []
        cluster, arn = _parse(handle.id)
        region = _arn_region(arn)
        ecs = self._client("ecs", region)
        with aws_errors():
            tasks = ecs.describe_tasks(cluster=cluster, tasks=[arn]).get("tasks", [])
            if not tasks:
                return []
            definition = ecs.describe_task_definition(taskDefinition=tasks[0]["taskDefinitionArn"])["taskDefinition"]
            container = _main_container(definition.get("containerDefinitions", []), None)
            options = ((container or {}).get("logConfiguration") or {}).get("options") or {}
            if not options.get("awslogs-group") or not options.get("awslogs-stream-prefix"):
                return []
            stream = f"{options['awslogs-stream-prefix']}/{container['name']}/{arn.rsplit('/', 1)[-1]}"
            logs = self._client("logs", options.get("awslogs-region") or region)
            try:
                events = logs.get_log_events(
                    logGroupName=options["awslogs-group"], logStreamName=stream, limit=lines, startFromHead=False
                )["events"]
            except Exception as exc:
                if aws_error_code(exc) == "ResourceNotFoundException":
                    return []
                raise
        return [e["message"] for e in events][-lines:]

    # -- submit helpers ------------------------------------------------------------------------------------------

    def _find(self, ecs: Any, cluster: str, tag: str, *, stopped_too: bool = True) -> JobHandle | None:
        for desired in ("RUNNING", "STOPPED") if stopped_too else ("RUNNING",):
            arns = ecs.list_tasks(cluster=cluster, startedBy=tag, desiredStatus=desired).get("taskArns", [])
            if arns:
                return JobHandle(NAME, f"{cluster}::{arns[0]}")
        return None

    def _run_task_request(self, spec: JobSpec, cluster: str, region: str | None) -> dict[str, Any]:
        config = _config(spec)
        self._check_secrets(spec, config)  # before anything is registered or looked up
        template = copy.deepcopy(config.task_run_request)
        container = config.container_name or DEFAULT_CONTAINER
        ecs = self._client("ecs", region)
        definition_arn = template.get("taskDefinition") or self._ensure_task_definition(ecs, spec, region)

        request: dict[str, Any] = {
            "cluster": cluster,
            "taskDefinition": definition_arn,
            "count": 1,
            "clientToken": spec.attempt[:64],
            "startedBy": started_by(spec.run_id, spec.attempt),
        }
        strategy = template.get("capacityProviderStrategy")
        launch_type = template.get("launchType") or "FARGATE"
        if strategy:
            request["capacityProviderStrategy"] = strategy
        elif launch_type == "FARGATE_SPOT":
            request["capacityProviderStrategy"] = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        else:
            request["launchType"] = launch_type
        if launch_type in ("FARGATE", "FARGATE_SPOT") or _fargate_strategy(strategy):
            request["networkConfiguration"] = self._network(config, region)

        overrides = template.get("overrides") or {}
        container_override: dict[str, Any] = {
            "name": container,
            "command": list(spec.command),
            "environment": [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())],
        }
        task_override = {k: str(overrides[k]) for k in ("cpu", "memory") if overrides.get(k)}
        if overrides.get("taskRoleArn"):
            task_override["taskRoleArn"] = overrides["taskRoleArn"]
        request["overrides"] = {"containerOverrides": [container_override], **task_override}
        tags = [{"key": _tag(k), "value": _tag(v)} for k, v in spec.labels.items() if _tag(k)]
        if tags:
            request["tags"] = tags[:50]
        return request

    def _check_secrets(self, spec: JobSpec, config: EcsJobConfig) -> None:
        refs = {
            "PREFECT_API_KEY": "prefect_api_key_secret_arn",
            "PREFECT_API_AUTH_STRING": "prefect_api_auth_string_secret_arn",
        }
        for name in spec.secret_env:
            if not getattr(config, refs.get(name, ""), None):
                raise BackendError(
                    f"refusing to send {name} in plaintext: set the pool variable {refs.get(name, name)} to the ARN "
                    "of a Secrets Manager secret holding it",
                    backend=NAME,
                )

    def _task_definition(self, spec: JobSpec, region: str | None) -> dict[str, Any]:
        config = _config(spec)
        definition = copy.deepcopy(config.task_definition)
        container_name = config.container_name or DEFAULT_CONTAINER
        containers = definition.setdefault("containerDefinitions", [])
        container = _main_container(containers, config.container_name)
        if container is None:
            container = {"name": container_name}
            containers.append(container)
        container.setdefault("name", container_name)
        container.setdefault("image", DEFAULT_IMAGE)
        container.setdefault("essential", True)
        run_request = config.task_run_request
        launch_type = run_request.get("launchType") or "FARGATE"
        if launch_type in ("FARGATE", "FARGATE_SPOT") or _fargate_strategy(run_request.get("capacityProviderStrategy")):
            definition.setdefault("requiresCompatibilities", ["FARGATE"])
            definition.setdefault("networkMode", "awsvpc")
            definition["cpu"] = str(definition.get("cpu") or 1024)
            definition["memory"] = str(definition.get("memory") or 2048)
        secrets = [
            {"name": name, "valueFrom": arn}
            for name, arn in (
                ("PREFECT_API_KEY", config.prefect_api_key_secret_arn),
                ("PREFECT_API_AUTH_STRING", config.prefect_api_auth_string_secret_arn),
            )
            if arn
        ]
        if secrets:
            container["secrets"] = secrets
        if config.execution_role_arn:
            definition["executionRoleArn"] = config.execution_role_arn
        if config.configure_cloudwatch_logs:
            if not definition.get("executionRoleArn"):
                raise BackendError("configure_cloudwatch_logs needs execution_role_arn", backend=NAME)
            options = {
                "awslogs-group": "prefect",
                "awslogs-region": region or "us-east-1",
                "awslogs-stream-prefix": config.cloudwatch_logs_prefix or f"pushpool-{_slug(spec.pool_name)}",
                "awslogs-create-group": "true",
                **config.cloudwatch_logs_options,
            }
            container["logConfiguration"] = {"logDriver": "awslogs", "options": options}
        return _drop_empty(definition)

    def _ensure_task_definition(self, ecs: Any, spec: JobSpec, region: str | None) -> str:
        definition = self._task_definition(spec, region)
        explicit_family = definition.pop("family", None)
        digest = hashlib.sha256(json.dumps(_normalise(definition), sort_keys=True).encode()).hexdigest()[:16]
        family = explicit_family or f"pushpool-{_slug(spec.pool_name)[:200]}-{digest}"
        key = f"{region}:{family}:{digest}"
        if key in self._known_definitions:
            return self._known_definitions[key]
        try:
            latest = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        except Exception as exc:
            if aws_error_code(exc) not in ("ClientException", "InvalidParameterException"):
                raise
            latest = None
        if (
            latest is not None
            and latest.get("status") == "ACTIVE"
            and (not explicit_family or _normalise(latest) == _normalise({**definition, "family": family}))
        ):
            arn = str(latest["taskDefinitionArn"])
        else:
            arn = str(ecs.register_task_definition(family=family, **definition)["taskDefinition"]["taskDefinitionArn"])
        # Every revision of a content-addressed family has the same content: name the family, not a revision, so
        # that every submit of one attempt sends the same RunTask request (concurrent registrations may add twins).
        self._known_definitions[key] = arn if explicit_family else family
        return self._known_definitions[key]

    def _network(self, config: EcsJobConfig, region: str | None) -> dict[str, Any]:
        network = config.network_configuration
        if network:
            return dict(network) if "awsvpcConfiguration" in network else {"awsvpcConfiguration": dict(network)}
        ec2 = self._client("ec2", region)
        vpc_id = config.vpc_id
        if not vpc_id:
            vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
            if not vpcs:
                raise BackendError(
                    "no network_configuration or vpc_id on the pool and the account has no default VPC", backend=NAME
                )
            vpc_id = vpcs[0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get("Subnets", [])
        if not subnets:
            raise BackendError(f"VPC {vpc_id} has no subnets", backend=NAME)
        return {"awsvpcConfiguration": {"subnets": [s["SubnetId"] for s in subnets], "assignPublicIp": "ENABLED"}}

    def _run_task(self, ecs: Any, request: dict[str, Any]) -> dict[str, Any]:
        """RunTask, retried with jittered backoff while ECS reports a capacity failure (the same clientToken: one task).

        Raises:
            BackendError: ECS refused the task for a reason waiting will not fix.
            QuotaExceededError: still no capacity after the retries.
        """

        def attempt() -> dict[str, Any]:
            answer = ecs.run_task(**request)
            tasks = answer.get("tasks") or []
            if tasks:
                return tasks[0]  # type: ignore[no-any-return]
            failures = answer.get("failures") or [{"reason": "RunTask returned no task"}]
            reason = "; ".join(f"{f.get('reason', '')} {f.get('detail', '')}".strip() for f in failures)
            if not any(marker in reason for marker in _RETRYABLE_FAILURES):
                raise BackendError(f"RunTask failed: {reason}", backend=NAME)
            raise QuotaExceededError(
                f"RunTask failed after {self.failure_retries + 1} attempts: {reason}", backend=NAME
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.failure_retries + 1),
            wait=wait_random_exponential(multiplier=0.5, max=8.0),
            retry=retry_if_exception_type(QuotaExceededError),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(attempt)  # type: ignore[no-any-return]

    # -- plumbing ----------------------------------------------------------------------------------------------------

    def _client(self, service: str, region: str | None) -> Any:
        """A client per service and region, made once (inside the boundary: no region, a bad profile … are
        BackendErrors, like every other AWS failure)."""
        key = (service, region)
        if key not in self._clients:
            import boto3
            from botocore.config import Config

            with aws_errors():
                session = self._session or boto3.session.Session()
                self._clients[key] = session.client(
                    service,
                    region_name=region,
                    config=Config(
                        retries={"mode": "standard", "max_attempts": self.max_attempts},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
        return self._clients[key]


def started_by(run_id: str, attempt: str) -> str:
    """The task's ``startedBy``: the run and the attempt (≤ 128 characters, letters, digits, ``-``, ``/``, ``_``)."""
    return f"{run_id}/{attempt}"[:128]


def run_id_of(started: str) -> str:
    """The flow-run id in a ``startedBy`` written by :func:`started_by`."""
    return started.split("/", 1)[0]


def _to_status(task: Mapping[str, Any]) -> JobStatus:
    last = str(task.get("lastStatus", ""))
    state = STATE_MAP.get(last, JobState.UNKNOWN)
    started, finished = task.get("startedAt"), task.get("stoppedAt")
    extra = {"lastStatus": last, "stopCode": task.get("stopCode"), "taskArn": task.get("taskArn")}
    if state is JobState.UNKNOWN:
        return JobStatus(JobState.UNKNOWN, reason=f"unmapped ECS status {last!r}", extra=extra)
    if last != "STOPPED":
        return JobStatus(state, started_at=started, extra=extra)
    stop_code = task.get("stopCode") or ""
    reason = str(task.get("stoppedReason") or "")
    container = _main_container(task.get("containers") or [], None) or {}
    code = container.get("exitCode")
    detail = str(container.get("reason") or "")
    if stop_code == "TaskFailedToStart" or (code is None and stop_code != "UserInitiated"):
        why = "; ".join(p for p in (reason, detail) if p) or "the task failed to start"
        return JobStatus(JobState.FAILED, None, f"ECS task failed to start: {why}", started, finished, extra)
    if stop_code in INFRASTRUCTURE_STOPS:  # AWS stopped it, whatever the container's exit code says
        why = f"{INFRASTRUCTURE_STOPS[stop_code]}: {reason}" if reason else INFRASTRUCTURE_STOPS[stop_code]
        return JobStatus(JobState.FAILED, code, why, started, finished, extra)
    if stop_code == "UserInitiated" and code in (None, 0, 143, 137):
        return JobStatus(JobState.STOPPED, code, f"ECS task stopped: {reason or 'stopped'}", started, finished, extra)
    if code == 0:
        return JobStatus(JobState.SUCCEEDED, 0, "container exited with code 0", started, finished, extra)
    why = f"container exited with {describe_exit(int(code))}" + (f": {detail}" if detail else "")
    if reason:
        why += f" ({reason})"
    return JobStatus(JobState.FAILED, int(code), why, started, finished, extra)


def _main_container(containers: Sequence[Mapping[str, Any]], name: str | None) -> Any:
    for wanted in (name, DEFAULT_CONTAINER):
        for container in containers:
            if wanted and container.get("name") == wanted:
                return container
    return containers[0] if containers else None


def _config(spec: JobSpec) -> EcsJobConfig:
    if not isinstance(spec.config, EcsJobConfig):
        raise BackendError(f"not an ECS job configuration: {type(spec.config).__name__}", backend=NAME)
    return spec.config


def _parse(job_id: str) -> tuple[str, str]:
    cluster, sep, arn = job_id.partition("::")
    if not sep or not arn.startswith("arn:"):
        raise JobNotFoundError(f"not an ECS job id: {job_id!r}", backend=NAME)
    return cluster, arn


def _arn_region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


def _fargate_strategy(strategy: Any) -> bool:
    return bool(strategy) and any("FARGATE" in str(s.get("capacityProvider", "")) for s in strategy)


def _slug(text: str) -> str:
    return _SLUG.sub("-", text).strip("-") or "pool"


def _tag(text: Any) -> str:
    return _TAG.sub("_", str(text))[:256]


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value if v not in (None, "", [], {})]
    return value


_REGISTRATION_FIELDS = (
    "compatibilities",
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


def _normalise(definition: Mapping[str, Any]) -> Any:
    """A definition as comparable data: registration fields dropped, defaults applied, lists sorted."""
    data = {k: copy.deepcopy(v) for k, v in definition.items() if k not in _REGISTRATION_FIELDS}
    data.setdefault("networkMode", "bridge")
    for container in data.get("containerDefinitions", []):
        container.setdefault("essential", True)
        for key in ("environment", "secrets", "environmentFiles"):
            if key in container:
                container[key] = sorted(container[key], key=lambda item: json.dumps(item, sort_keys=True))
    return _drop_empty(data)
