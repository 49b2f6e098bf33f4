"""Every setting pushpool reads from the environment, in one place (pydantic-settings), validated, with secrets kept
out of ``repr``. Nothing else in the package reads a setting from the environment.

Prefect's own names are used where they exist (``PREFECT_API_URL``, ``PREFECT_API_KEY``,
``PREFECT_API_AUTH_STRING``); pushpool's are prefixed ``PUSHPOOL_``. In code and tests the fields are set by name
(``Settings(prefect_api_url=...)``); copies with changes are made with :meth:`Settings.replace`.

Example:
    >>> Settings.from_env({"PREFECT_API_URL": "http://127.0.0.1:4200/api/"}).prefect_api_url
    'http://127.0.0.1:4200/api'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pushpool.errors import ConfigurationError


def _env(name: str) -> Any:
    """Read from environment variable ``name`` (in code, fields are set by their own names: populate_by_name)."""
    return name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, case_sensitive=True, env_ignore_empty=True
    )

    prefect_api_url: str = Field(validation_alias="PREFECT_API_URL")
    prefect_api_key: str | None = Field(default=None, repr=False, validation_alias=_env("PREFECT_API_KEY"))
    prefect_api_auth_string: str | None = Field(
        default=None, repr=False, validation_alias=_env("PREFECT_API_AUTH_STRING")
    )
    # The API URL jobs should use, when it differs from the one pushpool reaches Prefect by.
    job_api_url: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_JOB_API_URL"))
    # Webhook authentication: bearer tokens (current, previous) and Standard Webhooks signing secrets.
    webhook_token: str | None = Field(default=None, repr=False, exclude=True, validation_alias="PUSHPOOL_WEBHOOK_TOKEN")
    webhook_token_previous: str | None = Field(
        default=None, repr=False, exclude=True, validation_alias="PUSHPOOL_WEBHOOK_TOKEN_PREVIOUS"
    )
    webhook_secret: str | None = Field(
        default=None, repr=False, exclude=True, validation_alias="PUSHPOOL_WEBHOOK_SECRET"
    )
    webhook_secret_previous: str | None = Field(
        default=None, repr=False, exclude=True, validation_alias="PUSHPOOL_WEBHOOK_SECRET_PREVIOUS"
    )
    webhook_tokens: tuple[str, ...] = Field(default=(), repr=False, validation_alias="webhook_tokens")
    # `pushpool serve`'s /provision and /monitor: the admin token (never the webhook token, which Prefect stores in a
    # block its API users can read). The CLI reads it from <home>/admin-token (created on first use) when unset.
    admin_token: str | None = Field(default=None, repr=False, exclude=True, validation_alias="PUSHPOOL_ADMIN_TOKEN")
    # Variables of pushpool's environment that jobs also get, beyond what they need to start (pushpool/job_environment:
    # an allowlist; a comma-separated list of names).
    job_env_passthrough: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias=_env("PUSHPOOL_JOB_ENV_PASSTHROUGH")
    )
    webhook_signing_secrets: tuple[str, ...] = Field(default=(), repr=False, validation_alias="webhook_signing_secrets")
    # On AWS, the Prefect key and the webhook token come from Secrets Manager or SSM by these references.
    prefect_api_key_secret_arn: str | None = Field(
        default=None, validation_alias=_env("PUSHPOOL_PREFECT_API_KEY_SECRET_ARN")
    )
    webhook_token_secret_arn: str | None = Field(
        default=None, validation_alias=_env("PUSHPOOL_WEBHOOK_TOKEN_SECRET_ARN")
    )
    # On AWS, the SQS queue that delivers delayed triggers to submit (scheduled runs on time; usecases/punctual.py).
    # On Azure, the Storage queue that does the same (a queue-triggered function calls submit's delayed path).
    delay_queue_url: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_DELAY_QUEUE_URL"))
    # On Google Cloud, the Cloud Tasks queue (projects/<p>/locations/<l>/queues/<q>) whose HTTP tasks call the
    # `delayed` function (its URL) at a run's time, with an OIDC token of the tasks' service account.
    tasks_queue: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_TASKS_QUEUE"))
    tasks_url: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_TASKS_URL"))
    tasks_service_account: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_TASKS_SERVICE_ACCOUNT"))
    # Where Prefect's automation should send flow-run events (the submit function's URL).
    submit_url: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_SUBMIT_URL"))
    # Monitor policy, in seconds.
    pending_timeout_seconds: float = Field(default=120.0, ge=1, validation_alias=_env("PUSHPOOL_PENDING_TIMEOUT"))
    start_timeout_seconds: float | None = Field(  # None: each provider's own (backend.start_timeout_seconds)
        default=None, ge=1, validation_alias=_env("PUSHPOOL_START_TIMEOUT")
    )
    exit_grace_seconds: float = Field(default=30.0, ge=0, validation_alias=_env("PUSHPOOL_EXIT_GRACE"))
    cancel_grace_seconds: float = Field(default=10.0, ge=0, validation_alias=_env("PUSHPOOL_CANCEL_GRACE"))
    # How long before its scheduled time a run's job is started, for every pool (None: each pool's own
    # `dispatch_lead_seconds` template default, else its provider's; see usecases/punctual.py).
    dispatch_lead_seconds: float | None = Field(
        default=None, ge=0, validation_alias=AliasChoices("PUSHPOOL_DISPATCH_LEAD", "PUSHPOOL_DISPATCH_AHEAD")
    )
    # Pool, queue and deployment reads shared between runs of the event path for this long, counted from when each
    # read was sent: how old a pause flag, a limit or a deployment's job variables may be (usecases/pool_reads.py;
    # 0: off).
    read_cache_seconds: float = Field(default=2.0, ge=0, le=60, validation_alias=_env("PUSHPOOL_READ_CACHE_SECONDS"))
    max_recoveries: int = Field(default=3, ge=0, validation_alias=_env("PUSHPOOL_MAX_RECOVERIES"))
    # A transient backend error at submit (throttled, 5xx, no capacity) gives the run back to Scheduled with backoff,
    # keeping its idempotency key, this many times and for this long since its first attempt; then it is Crashed with
    # every attempt's error (usecases/submit.py). 0 retries: crash at once.
    transient_retries: int = Field(default=5, ge=0, validation_alias=_env("PUSHPOOL_TRANSIENT_RETRIES"))
    transient_retry_seconds: float = Field(
        default=900.0, ge=0, validation_alias=_env("PUSHPOOL_TRANSIENT_RETRY_SECONDS")
    )
    # Due runs the monitor submits at once (a backlog after an outage or a burst); 1 in pools with a limit.
    dispatch_concurrency: int = Field(default=8, ge=1, validation_alias=_env("PUSHPOOL_DISPATCH_CONCURRENCY"))
    # Pools a monitor tick dispatches at once, so that a slow backend or pool holds back only its own runs
    # (managed pools share the workspace's limit and go one after another; see usecases/monitor.py).
    pool_concurrency: int = Field(default=4, ge=1, le=64, validation_alias=_env("PUSHPOOL_POOL_CONCURRENCY"))
    # The monitor heartbeats into every pool it serves as this worker, so Prefect shows the pool Ready; the interval
    # is how often the monitor ticks (Prefect marks the worker offline after three intervals without a tick).
    worker_name: str = Field(default="pushpool", min_length=1, validation_alias=_env("PUSHPOOL_WORKER_NAME"))
    heartbeat_interval_seconds: float = Field(default=60.0, ge=1, validation_alias=_env("PUSHPOOL_HEARTBEAT_INTERVAL"))
    # The process backend's job directories (default: <home>/jobs).
    process_dir: Path | None = Field(default=None, validation_alias=_env("PUSHPOOL_PROCESS_DIR"))
    # The pool types this deployment serves (empty: every type whose provider SDK is installed).
    pool_types: Annotated[tuple[str, ...], NoDecode] = Field(  # a comma-separated list, not JSON
        default=(), validation_alias=_env("PUSHPOOL_POOL_TYPES")
    )
    # Google Cloud: the Cloud Tasks endpoint of punctual dispatch's delay queue (entrypoints/gcp_delay.py), and
    # whether an image's platforms are read from its registry before its job is created (ECS, Cloud Run).
    cloud_tasks_endpoint: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_CLOUD_TASKS_ENDPOINT"))
    image_platform_check: bool = Field(default=True, validation_alias=_env("PUSHPOOL_IMAGE_PLATFORM_CHECK"))

    # Managed execution (prefect:managed pools; pushpool/managed): the provider that runs them, the image their jobs
    # use, the workspace (default: this Prefect API's, i.e. the server) and its tier, and changes to the tiers (JSON:
    # {"free": {"compute_hours": 20}, "team": {"concurrent_runs": 3, "pools": 2, "compute_hours": 50}}).
    managed_backend: str = Field(default="process", min_length=1, validation_alias=_env("PUSHPOOL_MANAGED_BACKEND"))
    managed_image: str = Field(
        default="prefecthq/prefect:3-latest", min_length=1, validation_alias=_env("PUSHPOOL_MANAGED_IMAGE")
    )
    managed_workspace: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_MANAGED_WORKSPACE"))
    # A pool of the managed backend's type whose template (provisioned cluster, network, roles) managed runs use.
    managed_template_pool: str | None = Field(default=None, validation_alias=_env("PUSHPOOL_MANAGED_TEMPLATE_POOL"))
    managed_tier: str = Field(default="free", min_length=1, validation_alias=_env("PUSHPOOL_MANAGED_TIER"))
    managed_tiers: dict[str, Any] = Field(default_factory=dict, validation_alias=_env("PUSHPOOL_MANAGED_TIERS"))

    # The variables of particular providers (any PUSHPOOL_* no field above names, e.g. PUSHPOOL_CLOUD_RUN_ENDPOINT):
    # read here like every other setting, and validated by the provider's own model (``providers/<name>/options.py``,
    # named in the registry) when its backend is built: a provider's settings live in its folder.
    provider_environ: dict[str, str] = Field(default_factory=dict)

    # `pushpool serve` and the CLI: the local state directory (webhook token, jobs) and serve's port.
    home: Path = Field(default_factory=lambda: Path.home() / ".pushpool", validation_alias=_env("PUSHPOOL_HOME"))
    port: int = Field(default=4280, ge=1, le=65535, validation_alias=_env("PUSHPOOL_PORT"))

    @field_validator(
        "prefect_api_url",
        "job_api_url",
        "submit_url",
        "cloud_tasks_endpoint",
        "tasks_url",
    )
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:4200/api")
        return url.strip().rstrip("/")

    @field_validator("managed_tiers", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        return value

    @field_validator("pool_types", "job_env_passthrough", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("job_env_passthrough")
    @classmethod
    def _variable_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from pushpool.job_environment import check_passthrough

        return check_passthrough(value)

    @model_validator(mode="after")
    def _gather_secrets(self) -> Settings:
        """The rotation pairs become the tuples the rest of pushpool uses."""
        if not self.webhook_tokens:
            tokens = tuple(v.strip() for v in (self.webhook_token, self.webhook_token_previous) if v and v.strip())
            object.__setattr__(self, "webhook_tokens", tokens)
        if not self.webhook_signing_secrets:
            found = tuple(v.strip() for v in (self.webhook_secret, self.webhook_secret_previous) if v and v.strip())
            object.__setattr__(self, "webhook_signing_secrets", found)
        return self

    @model_validator(mode="after")
    def _known_tier(self) -> Settings:
        from pushpool.managed.tiers import tiers_from

        tiers = tiers_from(self.managed_tiers)
        if self.managed_tier not in tiers:
            raise ConfigurationError(
                f"PUSHPOOL_MANAGED_TIER: no tier {self.managed_tier!r} (tiers: {', '.join(tiers)})"
            )
        return self

    @property
    def tier(self):
        """The managed tier of this deployment's workspace."""
        from pushpool.managed.tiers import tiers_from

        return tiers_from(self.managed_tiers)[self.managed_tier]

    @property
    def workspace(self) -> str:
        """The managed workspace: ``PUSHPOOL_MANAGED_WORKSPACE``, else the Prefect API's (Cloud's
        ``…/workspaces/<id>``, else the server's host and port)."""
        if self.managed_workspace:
            return self.managed_workspace
        path = urlparse(self.prefect_api_url).path.strip("/").split("/")
        if "workspaces" in path and path.index("workspaces") + 1 < len(path):
            return path[path.index("workspaces") + 1]
        return urlparse(self.prefect_api_url).netloc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings (from ``environ`` instead of the process environment when given).

        Raises:
            ConfigurationError: a missing ``PREFECT_API_URL`` or a malformed value, naming the variable.
        """
        source = os.environ if environ is None else environ
        declared = _declared_variables()
        others = {k: v for k, v in source.items() if k.startswith("PUSHPOOL_") and k not in declared and v != ""}
        try:
            settings = cls() if environ is None else _of({k: v for k, v in environ.items() if v != ""})
            return settings.replace(provider_environ=others) if others else settings
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    @classmethod
    def of(cls, **fields: Any) -> Settings:
        """Settings from these fields alone (the process environment is not read): tests, benchmarks."""
        try:
            return _of(fields)
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (``dataclasses.replace`` for settings)."""
        try:
            return _of({**self._by_name(), **changes})
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    def _by_name(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    @property
    def api_url_for_jobs(self) -> str:
        return self.job_api_url or self.prefect_api_url

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value pushpool holds (for redaction checks)."""
        values = [self.prefect_api_key, self.prefect_api_auth_string, self.admin_token, *self.webhook_tokens]
        values += list(self.webhook_signing_secrets)
        return tuple(v for v in values if v)


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else ""
    variable = _variable(field)
    if first.get("type") == "missing" and field in ("prefect_api_url", "PREFECT_API_URL"):
        return ConfigurationError(
            "PREFECT_API_URL is not set: point it at your Prefect server's API, e.g. http://127.0.0.1:4200/api"
        )
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return ConfigurationError(f"{variable}: {message[:1].lower()}{message[1:]} (got {first.get('input')!r})")


def _variable(field: str) -> str:
    """The environment variable behind a field (or the field itself when it has none)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias or field)


def _declared_variables() -> set[str]:
    """Every environment variable a field of :class:`Settings` reads."""
    found: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            found.update(str(choice) for choice in alias.choices)
        else:
            found.add(str(alias))
    return found


class _Given(Settings):
    """Settings whose only source is what is passed in (no environment variables, no files)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any) -> tuple[Any, ...]:
        return (init_settings,)


def _of(values: Mapping[str, Any]) -> Settings:
    given = _Given(**values)
    return Settings.model_construct(_fields_set=given.model_fields_set, **given._by_name())
