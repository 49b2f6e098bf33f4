"""From a flow run to a :class:`JobSpec`: merge job variables, render the pool's template, add what the job needs.

What the job receives (design.md rule 7): ``PREFECT_API_URL``, ``PREFECT__FLOW_RUN_ID``, attribution variables and
the job's own ``env``; the Prefect credential travels separately in ``secret_env`` so each backend can deliver it by
secret reference. ``{{ $NAME }}`` placeholders read only a filtered environment: pushpool's own secrets and
credentials are never available to a template.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .backends.base import JobSpec
from .errors import ObjectNotFoundError, TemplateError
from .models import Deployment, FlowRun, WorkPool
from .orchestrator import PrefectClient
from .settings import Settings
from .templates import pool_type
from .templates.common import DEFAULT_MAX_RUN_TIME_SECONDS
from .templates.render import NOTSET, apply_values, merge_job_variables, render_job_configuration

DEFAULT_COMMAND = "prefect flow-run execute"
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|AUTH_STRING|ACCESS_KEY)", re.I)


def template_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``{{ $NAME }}`` placeholders may read: no ``PUSHPOOL_*`` and nothing secret-looking."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not k.startswith("PUSHPOOL_") and not _SECRET_NAME.search(k)}


class OrchestratorResolver:
    """Block documents and variables for template rendering, read from the Prefect API (cached per render)."""

    def __init__(self, client: PrefectClient) -> None:
        self.client = client
        self._by_id: dict[str, dict[str, Any]] = {}
        self._by_name: dict[tuple[str, str], dict[str, Any]] = {}

    def block_data_by_id(self, block_document_id: str) -> dict[str, Any]:
        if block_document_id not in self._by_id:
            self._by_id[block_document_id] = self.client.read_block_document(block_document_id).data
        return self._by_id[block_document_id]

    def block_data_by_name(self, block_type_slug: str, name: str) -> dict[str, Any]:
        key = (block_type_slug, name)
        if key not in self._by_name:
            self._by_name[key] = self.client.read_block_document_by_name(block_type_slug, name).data
        return self._by_name[key]

    def variable(self, name: str) -> Any:
        try:
            return self.client.read_variable(name)
        except ObjectNotFoundError:
            return NOTSET


def pool_template(pool: WorkPool) -> dict[str, Any]:
    """The pool's base job template, or pushpool's default for its type when the pool has none."""
    if pool.base_job_template.get("job_configuration"):
        return pool.base_job_template
    return pool_type(pool.type).template()


def pool_defaults(pool: WorkPool) -> dict[str, Any]:
    """The pool's job configuration with no run values and no block lookups (where a backend looks for jobs)."""
    try:
        return render_job_configuration(pool_template(pool), {})
    except TemplateError:
        return {}


def max_run_time_seconds(config: Mapping[str, Any]) -> int:
    value = config.get("max_run_time_seconds", DEFAULT_MAX_RUN_TIME_SECONDS)
    if value in (None, "", NOTSET):
        return DEFAULT_MAX_RUN_TIME_SECONDS
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise TemplateError(f"max_run_time_seconds must be a whole number of seconds, got {value!r}") from None
    if seconds < 1:
        raise TemplateError(f"max_run_time_seconds must be at least 1, got {seconds}")
    return seconds


def effective_max_run_time(pool: WorkPool, deployment: Deployment | None, run: FlowRun) -> int:
    """The run's maximum run time without resolving blocks (what the monitor needs, cheaply)."""
    values = merge_job_variables(deployment.job_variables if deployment else None, run.job_variables)
    template = pool_template(pool)
    try:
        config = render_job_configuration(template, values)
        return max_run_time_seconds(config)
    except TemplateError:
        return DEFAULT_MAX_RUN_TIME_SECONDS


def build_job_spec(
    *,
    settings: Settings,
    client: PrefectClient,
    run: FlowRun,
    pool: WorkPool,
    deployment: Deployment | None,
    attempt: str,
    environ: Mapping[str, str] | None = None,
) -> JobSpec:
    """Render the job for ``run``.

    Raises:
        TemplateError: the template or the job variables do not render.
        OrchestratorError: a block or variable could not be read (transient: the caller may retry).
    """
    values = merge_job_variables(deployment.job_variables if deployment else None, run.job_variables)
    config = render_job_configuration(
        pool_template(pool), values, resolver=OrchestratorResolver(client), environ=template_environ(environ)
    )
    job_env = config.get("env") or {}
    env: dict[str, str | None] = {
        "PREFECT_API_URL": settings.api_url_for_jobs,
        "PREFECT__FLOW_RUN_ID": run.id,
    }
    if run.flow_id:
        env["PREFECT__FLOW_ID"] = run.flow_id
    if deployment is not None:
        env["PREFECT__DEPLOYMENT_ID"] = deployment.id
        env["PREFECT__DEPLOYMENT_NAME"] = deployment.name
    env.update(job_env)
    secret_env: dict[str, str] = {}
    if settings.prefect_api_key and "PREFECT_API_KEY" not in job_env:
        secret_env["PREFECT_API_KEY"] = settings.prefect_api_key
    elif settings.prefect_api_auth_string and "PREFECT_API_AUTH_STRING" not in job_env:
        secret_env["PREFECT_API_AUTH_STRING"] = settings.prefect_api_auth_string

    labels = {
        "prefect.io/flow-run-id": run.id,
        "prefect.io/flow-run-name": run.name,
        "prefect.io/work-pool-name": pool.name,
        "prefect.io/work-pool-id": pool.id,
    }
    if deployment is not None:
        labels["prefect.io/deployment-id"] = deployment.id
        labels["prefect.io/deployment-name"] = deployment.name
    config_labels = config.get("labels") or {}
    if not isinstance(config_labels, dict):
        raise TemplateError(f"labels must be a mapping, got {type(config_labels).__name__}")
    labels.update({str(k): str(v) for k, v in config_labels.items()})

    name = config.get("name")
    if name:
        rendered = apply_values(str(name), {"ctx": {"flow_run": run.model_dump(mode="json")}})
        name = None if rendered is NOTSET else rendered
    command = config.get("command") or DEFAULT_COMMAND
    if not isinstance(command, str):
        raise TemplateError(f"command must be a string, got {type(command).__name__}")

    return JobSpec(
        run_id=run.id,
        attempt=attempt,
        pool_name=pool.name,
        name=str(name or run.name or run.id),
        command=command,
        env={k: v for k, v in env.items() if v is not None},
        labels=labels,
        config=config,
        max_run_time_seconds=max_run_time_seconds(config),
        secret_env=secret_env,
    )
