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
* The request is built as Prefect's ECS worker builds it (docs/ecs-compat.md lists the intended differences): the
  rendered ``task_run_request`` is the base and pushpool only adds to it; a ``task_definition_arn`` is used as it is,
  its own container (``container_name``, else ``prefect``, else the first) running the flow.
* AWS credentials: the default chain (the function's IAM role), or the pool's ``aws_credentials`` block's own keys,
  profile or role, on every call: submit and find with the spec's, status, cancel and logs with the handle's (the
  job's pool's, which the monitor puts in the handle), never another pool's. A block naming another account than
  pushpool's is refused (clearly, before anything is sent): pushpool serves pools of its own account only.
* The image pre-flight (``check_image_platform``) reads a private ECR image with an ECR token of the job's identity
  (``GetAuthorizationToken`` in the image's region, kept until 10 minutes before it expires); only ECR hosts get it.
"""

from __future__ import annotations

import base64
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
from typing import Any, NamedTuple

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from pushpool.errors import BackendError, JobNotFoundError, QuotaExceededError
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit
from pushpool.providers.ecs.aws import aws_error_code, aws_errors, new_session
from pushpool.providers.ecs.config import EcsJobConfig

NAME = "ecs"
DEFAULT_IMAGE = "prefecthq/prefect:3-latest"
DEFAULT_CONTAINER = "prefect"
DEFAULT_CPU, DEFAULT_MEMORY = 1024, 2048  # Prefect's worker's defaults
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
# A private ECR registry (docker pull's host): the only hosts that receive an ECR token.
_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\Z")
_TAG = re.compile(r"[^A-Za-z0-9_./=+:@ -]+")


class EcsBackend(BackendBase):
    name = NAME
    start_timeout_seconds = 600.0  # image pulls and Fargate capacity can take minutes
    dispatch_lead_seconds = 30.0  # a Fargate task takes 30-60 s from RunTask to a running flow (the pool may differ)

    def __init__(
        self,
        *,
        session: Any = None,
        region: str | None = None,
        max_attempts: int = 5,
        failure_retries: int = 3,
        check_image_platform: bool = False,
        registry_client: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from pushpool.providers.image_platform import ImagePlatforms

        self._session = session
        self.region = region
        self.max_attempts = max_attempts
        self.failure_retries = failure_retries
        self.sleep = sleep
        # The image's platforms are read from its registry before the task (on by PUSHPOOL_IMAGE_PLATFORM_CHECK); a
        # private ECR image with an ECR token of the job's identity (_ecr_credentials). registry_client: how the
        # registries are reached (an httpx.Client factory; tests route registry hosts to 127.0.0.1).
        self.image_platforms = ImagePlatforms(client=registry_client) if check_image_platform else None
        self._ecr_tokens: dict[tuple[str, str], tuple[tuple[str, str], dt.datetime]] = {}
        self._ecr_lock = threading.Lock()
        self._clients: dict[tuple[str, str | None, str], Any] = {}
        self._known_definitions: dict[str, str] = {}
        # Sessions of aws_credentials blocks, by a digest of the block (never the block itself): (session, expiry).
        self._sessions: dict[str, tuple[Any, dt.datetime | None]] = {}
        self._own_account: str | None = None

    @classmethod
    def from_options(cls, **options: Any) -> EcsBackend:
        return cls(**options)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        config = _config(spec)
        cluster = config.target_cluster
        region = config.region or self.region
        self._check_secrets(spec, config)  # before anything is looked up, registered or started
        identity = self._identity(config.aws_credentials, region)
        ecs = self._client("ecs", region, identity)
        with aws_errors():
            # A retry of this attempt finds its task. Straight after the claim there is none to find (one ListTasks
            # round trip less before the job); RunTask's clientToken still dedups a retried request on AWS for 24 h.
            if not spec.new_attempt:
                found = self._find(ecs, cluster, started_by(spec.run_id, spec.attempt), stopped_too=False)
                if found is not None:
                    return spec.handle(NAME, found.id)
            request, registration = self._run_task_request(spec, cluster, ecs, identity)
            try:
                task = self._run_task(ecs, request)
            except Exception as exc:
                # A definition remembered from an earlier run may have been deregistered since (INACTIVE): look
                # again, register it if so, and start the task once more (the same clientToken: one task).
                if registration is None or aws_error_code(exc) not in ("ClientException", "InvalidParameterException"):
                    raise
                self._known_definitions.pop(registration.key, None)
                reference, registered = self._ensure_task_definition(ecs, registration)
                if not registered:
                    raise
                task = self._run_task(ecs, {**request, "taskDefinition": reference})
        return spec.handle(NAME, f"{cluster}::{task['taskArn']}")

    def find(self, spec: JobSpec) -> JobHandle | None:
        config = _config(spec)
        region = config.region or self.region
        ecs = self._client("ecs", region, self._identity(config.aws_credentials, region))
        try:
            with aws_errors():
                found = self._find(ecs, config.target_cluster, started_by(spec.run_id, spec.attempt))
                return spec.handle(NAME, found.id) if found else None
        except BackendError as exc:
            if isinstance(exc.__cause__, Exception) and aws_error_code(exc.__cause__) == "ClusterNotFoundException":
                return None  # no such cluster: no task of this attempt can be in it
            raise

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        by_target: dict[tuple[str, str, str | None], list[tuple[str, str]]] = {}
        out: dict[str, JobStatus] = {}
        for handle in handles:
            try:
                cluster, arn = _parse(handle.id)
                identity = self._handle_identity(handle, _arn_region(arn))
            except JobNotFoundError as exc:
                out[handle.id] = JobStatus(JobState.MISSING, reason=exc.one_line())
                continue
            except BackendError as exc:  # its pool's credentials do not work: this handle cannot be judged now
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
                continue
            by_target.setdefault((identity, cluster, _arn_region(arn)), []).append((handle.id, arn))
        for (identity, cluster, region), items in by_target.items():
            for start in range(0, len(items), DESCRIBE_BATCH):
                batch = items[start : start + DESCRIBE_BATCH]
                try:  # a region whose client cannot be made, or a throttled call, concerns its own tasks only
                    ecs = self._client("ecs", region, identity)
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
        ecs = self._client("ecs", _arn_region(arn), self._handle_identity(handle, _arn_region(arn)))
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
        identity = self._handle_identity(handle, region)
        ecs = self._client("ecs", region, identity)
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
            logs = self._client("logs", options.get("awslogs-region") or region, identity)
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

    def _run_task_request(
        self, spec: JobSpec, cluster: str, ecs: Any, identity: str
    ) -> tuple[dict[str, Any], _Registration | None]:
        """The RunTask request: the rendered ``task_run_request`` with what the run needs added (as Prefect's worker).

        Returns the request and, when pushpool registered (or remembered) the definition, what it took to do so.
        """
        config = _config(spec)
        request = copy.deepcopy(config.task_run_request)
        registration = None
        if request.get("taskDefinition"):
            definition = self._named_definition(ecs, str(request["taskDefinition"]))
        else:
            definition = self._task_definition(spec, ecs.meta.region_name)
        container = config.container_name or _orchestration_container(definition) or DEFAULT_CONTAINER
        self._check_platform(definition, container, identity)  # before anything is registered or started
        if request.get("taskDefinition"):
            _check_named_definition(spec, definition, container)
        else:
            registration = self._registration(spec, definition, ecs.meta.region_name, identity)
            request["taskDefinition"], _ = self._ensure_task_definition(ecs, registration)

        count = request.pop("count", None)
        if count not in (None, 1):
            raise BackendError(f"pushpool starts one task per run: task_run_request has count {count!r}", backend=NAME)
        request["cluster"] = cluster
        request["clientToken"] = spec.attempt[:64]
        request["startedBy"] = started_by(spec.run_id, spec.attempt)

        requires_ec2 = "EC2" in (definition.get("requiresCompatibilities") or [])
        if not request.get("launchType"):
            request.pop("launchType", None)
            if not requires_ec2:
                request["launchType"] = "FARGATE"
        if request.get("capacityProviderStrategy"):
            request.pop("launchType", None)
        else:
            request.pop("capacityProviderStrategy", None)
            if request.get("launchType") == "FARGATE_SPOT":
                del request["launchType"]
                request["capacityProviderStrategy"] = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        if definition.get("networkMode") == "awsvpc":
            if config.network_configuration:  # the pool's or deployment's variable wins over the template's request
                request["networkConfiguration"] = _awsvpc(config.network_configuration)
            elif not request.get("networkConfiguration"):
                request["networkConfiguration"] = self._default_network(config, ecs.meta.region_name, identity)

        overrides = request.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise BackendError("task_run_request overrides must be an object", backend=NAME)
        containers = [dict(o) for o in overrides.get("containerOverrides") or [] if isinstance(o, dict)]
        if containers and not containers[0].get("name"):
            containers[0]["name"] = container
        main = next((o for o in containers if o.get("name") == container), None)
        if main is None:
            main = {"name": container}
            containers.append(main)
        for override in containers:
            if isinstance(override.get("command"), str):
                override["command"] = shlex.split(override["command"])
            environment = override.get("environment") or []
            if isinstance(environment, dict):
                environment = [{"name": k, "value": v} for k, v in environment.items()]
            # A credential goes by its secret reference only: the template's {{ env }} would repeat it in plaintext.
            override["environment"] = [
                {"name": e["name"], "value": str(e["value"])}
                for e in environment
                if e.get("value") is not None and e.get("name") not in spec.secret_env
            ]
        main["command"] = list(spec.command)
        main["environment"] = [e for e in main["environment"] if e["name"] not in spec.env] + [
            {"name": k, "value": str(v)} for k, v in sorted(spec.env.items())
        ]
        for key in ("cpu", "memory"):
            if overrides.get(key):
                overrides[key] = str(overrides[key])
        overrides["containerOverrides"] = [_drop_empty(o) for o in containers if _drop_empty(o)]
        request["overrides"] = _drop_empty(overrides)

        tags = request.get("tags") or []
        if isinstance(tags, dict):
            tags = [{"key": k, "value": v} for k, v in tags.items()]
        tags = [t for t in tags if t.get("key") not in spec.labels and t.get("value") is not None]
        tags += [{"key": k, "value": v} for k, v in spec.labels.items() if v is not None]
        tags = [{"key": _tag(t["key"]), "value": _tag(t["value"])} for t in tags if _tag(t["key"])]
        request["tags"] = tags[:50]
        return {k: v for k, v in request.items() if v not in (None, "", [], {})}, registration

    def _check_platform(self, definition: Mapping[str, Any], container: str, identity: str = "") -> None:
        """Refuse a task whose image has no variant for the definition's ``runtimePlatform`` (X86_64 unless it says
        ARM64), before it is registered or started; an image whose registry cannot be read is not judged. A private
        ECR image is read with an ECR token of the job's identity (and only an ECR host ever receives it)."""
        from pushpool.providers.image_platform import missing_platform

        if self.image_platforms is None:
            return
        found = next((c for c in definition.get("containerDefinitions") or [] if c.get("name") == container), None)
        image = (found or {}).get("image")
        if not image:
            return
        arch = str((definition.get("runtimePlatform") or {}).get("cpuArchitecture") or "X86_64").upper()
        wanted = "linux/arm64" if arch == "ARM64" else "linux/amd64"
        offered = self.image_platforms.platforms(
            str(image), credentials=lambda host: self._ecr_credentials(host, identity)
        )
        if missing_platform(offered, wanted):
            raise BackendError(
                f"image {image} has no {wanted} variant (it has {', '.join(sorted(offered or ()))}), and the task "
                f'runs on {arch}: build it with platform="{wanted}" (docker build --platform {wanted}), or set the '
                f"task definition's runtimePlatform.cpuArchitecture to match the image",
                backend=NAME,
            )

    def _ecr_credentials(self, host: str, identity: str = "") -> tuple[str, str] | None:
        """``("AWS", password)`` for an ECR registry host (``<account>.dkr.ecr.<region>.amazonaws.com``), from
        ``GetAuthorizationToken`` in the host's region with the job's identity, kept until 10 minutes before it
        expires (12 hours); None for any other host: AWS credentials never go to another registry.

        Raises:
            BackendError: no token (AccessDenied, no credentials …); the caller logs it and reads anonymously.
        """
        match = _ECR_HOST.match(host)
        if match is None:
            return None
        key = (identity, match.group("region"))
        now = dt.datetime.now(dt.timezone.utc)
        with self._ecr_lock:
            known = self._ecr_tokens.get(key)
            if known is not None and known[1] - now > dt.timedelta(minutes=10):
                return known[0]
        with aws_errors():
            data = self._client("ecr", key[1], identity).get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        expires = data.get("expiresAt")
        if not isinstance(expires, dt.datetime):
            expires = now + dt.timedelta(hours=1)
        elif expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.timezone.utc)
        with self._ecr_lock:
            self._ecr_tokens[key] = ((user, password), expires)
        return user, password

    def _check_secrets(self, spec: JobSpec, config: EcsJobConfig) -> None:
        refs = {
            "PREFECT_API_KEY": "prefect_api_key_secret_arn",
            "PREFECT_API_AUTH_STRING": "prefect_api_auth_string_secret_arn",
        }
        for name in spec.secret_env:
            if not getattr(config, refs.get(name, ""), None):
                raise BackendError(
                    f"refusing to send {name} in plaintext: set the pool variable {refs.get(name, name)} to the ARN "
                    "of a Secrets Manager secret holding it (`pushpool work-pool provision-infra <pool>` stores it "
                    "and grants the execution role access to exactly that secret)",
                    backend=NAME,
                )

    def _named_definition(self, ecs: Any, reference: str) -> dict[str, Any]:
        """The definition a ``task_definition_arn`` names (ARN, family or family:revision), which must be ACTIVE."""
        definition = ecs.describe_task_definition(taskDefinition=reference)["taskDefinition"]
        if definition.get("status") not in (None, "ACTIVE"):
            raise BackendError(
                f"task definition {reference} is {definition['status']}: register it again, or remove "
                "task_definition_arn so pushpool registers one from the pool's template",
                backend=NAME,
            )
        return definition  # type: ignore[no-any-return]

    def _task_definition(self, spec: JobSpec, region: str | None) -> dict[str, Any]:
        """The definition to register, built from the rendered ``task_definition`` as Prefect's worker builds it."""
        config = _config(spec)
        definition = copy.deepcopy(config.task_definition)
        containers = [c for c in definition.get("containerDefinitions") or [] if c]
        definition["containerDefinitions"] = containers
        name = config.container_name or _orchestration_container(definition) or DEFAULT_CONTAINER
        container = next((c for c in containers if c.get("name") == name), None)
        if container is None:
            if name != DEFAULT_CONTAINER:
                raise BackendError(f"container {name!r} is not in the pool's task definition", backend=NAME)
            container = next((c for c in containers if "name" not in c), None)
            if container is None:
                container = {}
                containers.append(container)
            container["name"] = name
        container.setdefault("image", DEFAULT_IMAGE)
        unset = {k for k, v in config.env.items() if v is None}
        if container.get("environment"):
            container["environment"] = [
                e for e in container["environment"] if e.get("name") not in unset and e.get("value") is not None
            ]
        if config.execution_role_arn:
            definition["executionRoleArn"] = config.execution_role_arn
        if config.configure_cloudwatch_logs:
            if not definition.get("executionRoleArn"):
                raise BackendError("configure_cloudwatch_logs needs execution_role_arn", backend=NAME)
            container["logConfiguration"] = {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-create-group": "true",
                    "awslogs-group": "prefect",
                    "awslogs-region": region,
                    "awslogs-stream-prefix": config.cloudwatch_logs_prefix or f"pushpool-{_slug(spec.pool_name)}",
                    **config.cloudwatch_logs_options,
                },
            }
        cpu, memory = definition.get("cpu") or DEFAULT_CPU, definition.get("memory") or DEFAULT_MEMORY
        run_request = config.task_run_request
        launch_type = run_request.get("launchType")
        if launch_type in ("FARGATE", "FARGATE_SPOT") or _fargate_strategy(run_request.get("capacityProviderStrategy")):
            definition["cpu"], definition["memory"] = cpu, memory  # Fargate sizes tasks, not containers
            compatibilities = definition.setdefault("requiresCompatibilities", [])
            if "FARGATE" not in compatibilities:
                compatibilities.append("FARGATE")
            definition.setdefault("networkMode", "awsvpc")
        else:  # EC2 and EXTERNAL place containers: each needs its own cpu and memory
            container.setdefault("cpu", int(cpu))
            container.setdefault("memory", int(memory))
        for key in ("cpu", "memory"):  # the API takes task-level sizes as strings
            if definition.get(key):
                definition[key] = str(definition[key])
        definition = _drop_empty(definition)
        container = next(c for c in definition["containerDefinitions"] if c.get("name") == name)

        prefect_secrets = {
            name: arn
            for name, arn in (
                ("PREFECT_API_KEY", config.prefect_api_key_secret_arn),
                ("PREFECT_API_AUTH_STRING", config.prefect_api_auth_string_secret_arn),
            )
            if arn
        }
        if prefect_secrets:  # merged into the container's own secrets; ours win over one of the same name
            if container.get("environment"):
                container["environment"] = [e for e in container["environment"] if e["name"] not in prefect_secrets]
            secrets = [dict(s) for s in container.get("secrets") or [] if s.get("name") not in prefect_secrets]
            container["secrets"] = secrets + [{"name": k, "valueFrom": v} for k, v in prefect_secrets.items()]
        return definition  # type: ignore[no-any-return]

    def _registration(
        self, spec: JobSpec, definition: dict[str, Any], region: str | None, identity: str
    ) -> _Registration:
        definition = copy.deepcopy(definition)
        explicit_family = definition.pop("family", None)
        digest = hashlib.sha256(json.dumps(_normalise(definition), sort_keys=True).encode()).hexdigest()[:16]
        family = explicit_family or f"pushpool-{_slug(spec.pool_name)[:200]}-{digest}"
        return _Registration(f"{identity}:{region}:{family}:{digest}", family, bool(explicit_family), definition)

    def _ensure_task_definition(self, ecs: Any, registration: _Registration) -> tuple[str, bool]:
        """What RunTask names for ``registration`` (registered only when missing or INACTIVE), and whether this call
        registered it."""
        key, family, explicit, definition = registration
        if key in self._known_definitions:
            return self._known_definitions[key], False
        try:
            latest = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        except Exception as exc:
            if aws_error_code(exc) not in ("ClientException", "InvalidParameterException"):
                raise
            latest = None
        registered = not (
            latest is not None
            and latest.get("status") == "ACTIVE"
            and (not explicit or _normalise(latest) == _normalise({**definition, "family": family}))
        )
        if registered:
            arn = str(ecs.register_task_definition(family=family, **definition)["taskDefinition"]["taskDefinitionArn"])
        else:
            arn = str(latest["taskDefinitionArn"])  # type: ignore[index]
        # Every revision of a content-addressed family has the same content: name the family, not a revision, so
        # that every submit of one attempt sends the same RunTask request (concurrent registrations may add twins).
        self._known_definitions[key] = arn if explicit else family
        return self._known_definitions[key], registered

    def _default_network(self, config: EcsJobConfig, region: str | None, identity: str) -> dict[str, Any]:
        """Every subnet of ``vpc_id`` (else of the default VPC), as Prefect's worker does when none is given."""
        ec2 = self._client("ec2", region, identity)
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
        return {
            "awsvpcConfiguration": {
                "subnets": [s["SubnetId"] for s in subnets],
                "assignPublicIp": "ENABLED",
                "securityGroups": [],
            }
        }

    # -- credentials -------------------------------------------------------------------------------------------

    def _handle_identity(self, handle: JobHandle, region: str | None) -> str:
        """The identity that signs the calls about a handle's job: its pool's ``aws_credentials`` (the handle's)."""
        return self._identity((handle.credentials or {}).get("aws_credentials"), region)

    def _identity(self, aws_credentials: Any, region: str | None) -> str:
        """The key of the session that signs a job's calls: "" for pushpool's own, else a digest of the pool's
        ``aws_credentials`` block (keys, profile or role), whose account must be pushpool's.

        Raises:
            BackendError: the block names another account, or its credentials do not work.
        """
        block = aws_credentials if isinstance(aws_credentials, Mapping) else {}
        if not any(block.get(k) for k in _IDENTITY_FIELDS):
            return ""
        fields = {k: block.get(k) for k in (*_IDENTITY_FIELDS, "assume_role_kwargs", "region_name")}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]
        known = self._sessions.get(key)
        now = dt.datetime.now(dt.timezone.utc)
        if known is not None and (known[1] is None or known[1] - now > dt.timedelta(minutes=5)):
            return key

        with aws_errors():
            session = new_session(
                aws_access_key_id=block.get("aws_access_key_id") or None,
                aws_secret_access_key=block.get("aws_secret_access_key") or None,
                aws_session_token=block.get("aws_session_token") or None,
                profile_name=block.get("profile_name") or None,
                region_name=region,
            )
            expiry = None
            role = block.get("assume_role_arn")
            if role:
                self._same_account(str(role).split(":")[4] if str(role).count(":") >= 5 else "", "assume_role_arn")
                options = dict(block.get("assume_role_kwargs") or {})
                options = {k: v for k, v in options.items() if v not in (None, "", [], {})}
                options.setdefault("RoleSessionName", "pushpool")
                credentials = session.client("sts", region_name=region).assume_role(RoleArn=role, **options)[
                    "Credentials"
                ]
                session = new_session(
                    aws_access_key_id=credentials["AccessKeyId"],
                    aws_secret_access_key=credentials["SecretAccessKey"],
                    aws_session_token=credentials["SessionToken"],
                    region_name=region,
                )
                expiry = credentials.get("Expiration")
            else:
                account = session.client("sts", region_name=region).get_caller_identity()["Account"]
                self._same_account(str(account), "its keys")
        self._sessions[key] = (session, expiry)
        self._clients = {k: v for k, v in self._clients.items() if k[2] != key}
        return key

    def _same_account(self, account: str, source: str) -> None:
        if self._own_account is None:
            with aws_errors():
                self._own_account = str(self._client("sts", self.region).get_caller_identity()["Account"])
        if account != self._own_account:
            raise BackendError(
                f"the pool's aws_credentials block names AWS account {account or '(unreadable)'} ({source}), but "
                f"pushpool runs in account {self._own_account} and serves pools of its own account only (the Prefect "
                f"credential's secret and the tasks' definitions are kept there). Run pushpool in account {account} "
                f"for this pool, or give the block credentials of account {self._own_account}",
                backend=NAME,
            )

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

    def _client(self, service: str, region: str | None, identity: str = "") -> Any:
        """A client per service, region and identity (pushpool's own: ""), made once (inside the boundary: no region,
        a bad profile … are BackendErrors, like every other AWS failure)."""
        key = (service, region, identity)
        if key not in self._clients:
            from botocore.config import Config

            with aws_errors():
                session = self._sessions[identity][0] if identity else self._session or new_session()
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
    accepted = task.get("createdAt")  # ECS accepted the task (RunTask); startedAt: its containers started
    extra = {"lastStatus": last, "stopCode": task.get("stopCode"), "taskArn": task.get("taskArn")}
    if state is JobState.UNKNOWN:
        return JobStatus(JobState.UNKNOWN, reason=f"unmapped ECS status {last!r}", extra=extra, accepted_at=accepted)
    if last != "STOPPED":
        return JobStatus(state, started_at=started, extra=extra, accepted_at=accepted)
    stop_code = task.get("stopCode") or ""
    reason = str(task.get("stoppedReason") or "")
    container = _main_container(task.get("containers") or [], None) or {}
    code = container.get("exitCode")
    detail = str(container.get("reason") or "")
    if stop_code == "TaskFailedToStart" or (code is None and stop_code != "UserInitiated"):
        why = "; ".join(p for p in (reason, detail) if p) or "the task failed to start"
        return JobStatus(JobState.FAILED, None, f"ECS task failed to start: {why}", started, finished, extra, accepted)
    if stop_code in INFRASTRUCTURE_STOPS:  # AWS stopped it, whatever the container's exit code says
        why = f"{INFRASTRUCTURE_STOPS[stop_code]}: {reason}" if reason else INFRASTRUCTURE_STOPS[stop_code]
        return JobStatus(JobState.FAILED, code, why, started, finished, extra, accepted)
    if stop_code == "UserInitiated" and code in (None, 0, 143, 137):
        return JobStatus(
            JobState.STOPPED, code, f"ECS task stopped: {reason or 'stopped'}", started, finished, extra, accepted
        )
    if code == 0:
        return JobStatus(JobState.SUCCEEDED, 0, "container exited with code 0", started, finished, extra, accepted)
    why = f"container exited with {describe_exit(int(code))}" + (f": {detail}" if detail else "")
    if reason:
        why += f" ({reason})"
    return JobStatus(JobState.FAILED, int(code), why, started, finished, extra, accepted)


class _Registration(NamedTuple):
    key: str  # the cache key: identity, region, family, content digest
    family: str
    explicit: bool  # a family named by the pool or deployment (compared with its latest revision)
    definition: dict[str, Any]


_IDENTITY_FIELDS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "profile_name",
    "assume_role_arn",
)


def _orchestration_container(definition: Mapping[str, Any]) -> str | None:
    """The container that runs the flow when none is named: ``prefect`` if the definition has one, else its first."""
    containers = definition.get("containerDefinitions") or []
    if any(c.get("name") == DEFAULT_CONTAINER for c in containers):
        return DEFAULT_CONTAINER
    return containers[0].get("name") if containers else None


def _check_named_definition(spec: JobSpec, definition: Mapping[str, Any], container: str) -> None:
    """A definition pushpool does not register must carry the Prefect credential itself (by secret reference)."""
    found = next((c for c in definition.get("containerDefinitions") or [] if c.get("name") == container), None)
    if found is None:
        raise BackendError(
            f"container {container!r} is not in task definition {definition.get('taskDefinitionArn')}", backend=NAME
        )
    names = {s.get("name") for s in found.get("secrets") or []} | {
        e.get("name") for e in found.get("environment") or []
    }
    for name in spec.secret_env:
        if name not in names:
            raise BackendError(
                f"task definition {definition.get('taskDefinitionArn')} gives container {container!r} no {name}: add "
                f"a secret {name} (valueFrom: its Secrets Manager ARN) to it, or remove task_definition_arn so "
                "pushpool registers a definition with it",
                backend=NAME,
            )


def _awsvpc(network: Mapping[str, Any]) -> dict[str, Any]:
    return dict(network) if "awsvpcConfiguration" in network else {"awsvpcConfiguration": dict(network)}


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
