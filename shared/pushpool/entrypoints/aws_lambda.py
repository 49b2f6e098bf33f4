"""What the AWS Lambda entry points share: settings with secrets read through Powertools Parameters, event models
for the parser, and the metric names. Imported only by ``functions/*/app.py`` on AWS.

Secrets: ``PUSHPOOL_PREFECT_API_KEY_SECRET_ARN`` and ``PUSHPOOL_WEBHOOK_TOKEN_SECRET_ARN`` name a Secrets Manager
secret (``arn:…:secretsmanager:…``) or an SSM SecureString parameter (``/path`` or ``arn:…:ssm:…``). A webhook token
secret may hold one token or ``{"current": …, "previous": …}`` during rotation. Values are cached for five minutes
(Powertools' cache) and never logged.

Metrics: the series of ``usecases/metrics.py`` (serve's ``/metrics`` names) as CloudWatch EMF, namespace from
``POWERTOOLS_METRICS_NAMESPACE`` (``entrypoints/function_metrics.EmfMetrics``), printed by :func:`flush_metrics` at
the end of each invocation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.function_metrics import EmfMetrics
from pushpool.errors import ConfigurationError, InvalidRequestError
from pushpool.settings import Settings
from pushpool.usecases import event_publisher, run_events
from pushpool.usecases.deps import Deps

SECRET_MAX_AGE = 300
ECS_TASK_STATE_CHANGE = "ECS Task State Change"  # the EventBridge detail-type the monitor acts on


def read_secret(reference: str) -> str:
    """The value behind a Secrets Manager ARN or an SSM parameter name/ARN."""
    from aws_lambda_powertools.utilities import parameters

    try:
        if reference.startswith("arn:") and ":secretsmanager:" in reference:
            value = parameters.get_secret(reference, max_age=SECRET_MAX_AGE)
        else:
            value = parameters.get_parameter(reference, decrypt=True, max_age=SECRET_MAX_AGE)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigurationError(f"cannot read the secret {reference}: {type(exc.__cause__ or exc).__name__}") from None
    return value if isinstance(value, str) else value.decode()


def _tokens(raw: str) -> tuple[str, ...]:
    try:
        data = json.loads(raw)
    except ValueError:
        return (raw.strip(),)
    if isinstance(data, dict):
        return tuple(str(data[k]) for k in ("current", "previous") if data.get(k))
    return (str(data),)


def lambda_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings, with the Prefect key and the webhook token read from the secrets they reference."""
    settings = Settings.from_env(environ)
    changes: dict[str, Any] = {}
    if settings.prefect_api_key_secret_arn and not (settings.prefect_api_key or settings.prefect_api_auth_string):
        value = read_secret(settings.prefect_api_key_secret_arn)
        changes["prefect_api_auth_string" if ":" in value and not value.startswith("pnu_") else "prefect_api_key"] = (
            value
        )
    if settings.webhook_token_secret_arn and not settings.webhook_tokens:
        changes["webhook_tokens"] = _tokens(read_secret(settings.webhook_token_secret_arn))
    return settings.replace(**changes) if changes else settings


@lru_cache(maxsize=1)
def lambda_deps() -> tuple[Deps, WebhookAuth]:
    """Dependencies for this warm container (settings, Prefect client, backends), built once."""
    settings = lambda_settings()
    deps = Deps.from_settings(settings)
    deps.use_metrics(EmfMetrics())
    if settings.delay_queue_url:  # scheduled runs: a delayed message per run, delivered to submit at its time
        from pushpool.entrypoints.aws_delay import SqsTrigger

        deps.trigger = SqsTrigger(settings.delay_queue_url)
    return deps, WebhookAuth(settings.webhook_tokens, settings.webhook_signing_secrets)


def flush_metrics() -> None:
    """Print what this invocation measured (EMF on stdout); nothing when the dependencies were never built."""
    if lambda_deps.cache_info().currsize:
        metrics = lambda_deps()[0].metrics
        if isinstance(metrics, EmfMetrics):
            metrics.flush()


def flush_events() -> None:
    """The end of an invocation: send the run events it made to Prefect (a short timeout; never raises)."""
    try:
        deps, _ = lambda_deps()
    except Exception:  # noqa: BLE001 - no dependencies, no events
        return
    event_publisher.flush_events(deps.events, deps.orchestrator)


def configure_logging(logger: Any) -> None:
    """pushpool's log lines as the function's own JSON (Powertools' handler on the ``pushpool`` logger), each line
    about a run with its ``flow_run_id``, ``work_pool`` and ``job_id`` fields (usecases/run_events.py)."""
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("pushpool")  # registered, so that Powertools finds it
    copy_config_to_registered_loggers(source_logger=logger, include={"pushpool"})
    run_events.install_log_fields(*logging.getLogger("pushpool").handlers)


def check_provision_request(event: Mapping[str, Any]) -> None:
    """The deployed provision function makes no IAM users and no access keys: its functions run tasks with their own
    role, so a long-lived key would only widen what a leaked block can do, and the stack's provision role holds no
    iam:CreateUser / iam:CreateAccessKey (infra/template.yaml). Access-key mode stays with the CLI, run by an operator
    with their own credentials.

    Raises:
        InvalidRequestError: ``credentials`` other than ``role``.
    """
    credentials = event.get("credentials", "role")
    if credentials != "role":
        raise InvalidRequestError(
            f"credentials {credentials!r} is not offered by the deployed provision function: its functions use their "
            "own IAM role (credentials 'role'); to make an IAM user and access key for pushpool outside AWS, run "
            "`pushpool work-pool create … --provision-infra --credentials access-key` with your own credentials"
        )


class EcsTaskDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_arn: str = Field(alias="taskArn")
    cluster_arn: str = Field(alias="clusterArn")
    last_status: str = Field(alias="lastStatus")
    started_by: str | None = Field(default=None, alias="startedBy")
    stopped_reason: str | None = Field(default=None, alias="stoppedReason")


def ecs_task_state_change_model() -> type[BaseModel]:
    """The Powertools parser model of EventBridge's ``ECS Task State Change`` (built lazily: parser import)."""
    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    class EcsTaskStateChange(EventBridgeModel):  # type: ignore[misc, valid-type]
        detail: EcsTaskDetail

    return EcsTaskStateChange
