"""From a flow run to a :class:`JobSpec`: merge job variables, render the pool's template, add what the job needs.

What the job receives (design.md rule 7): ``PREFECT_API_URL``, ``PREFECT__FLOW_RUN_ID``, attribution variables and
the job's own ``env``; the Prefect credential — pushpool's, or one the job's ``env`` names (``PREFECT_API_KEY``,
``PREFECT_API_AUTH_STRING``) — travels separately in ``secret_env`` so each backend delivers it by secret reference or
refuses the job. ``{{ $NAME }}`` placeholders (a deployment author's too: its ``env`` is rendered when the pool gives
``env`` defaults) read only the environment a job may see (``pushpool/job_environment.py``: an allowlist plus the
operator's ``PUSHPOOL_JOB_ENV_PASSTHROUGH``): pushpool's own secrets and the operator's credentials never reach a job
this way. A provider's operator-only fields (``JobConfig.operator_fields``, e.g. ACI's ``allowed_identities``) must be
literal in the pool's template: no job variable may reach them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from pushpool.errors import MissingValueError, ObjectNotFoundError, PushpoolError, TemplateError
from pushpool.job_environment import job_environ
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import Deployment, FlowRun, WorkPool
from pushpool.providers import Provider, provider_for_pool_type
from pushpool.providers.base import DEFAULT_COMMAND, PREFECT_CREDENTIALS, JobConfig, JobHandle, JobSpec
from pushpool.settings import Settings
from pushpool.templates.common import DEFAULT_MAX_RUN_TIME_SECONDS
from pushpool.templates.render import NOTSET, apply_values, merge_job_variables, render_job_configuration
from pushpool.usecases.pool_kind import pool_kind

_PLACEHOLDER = re.compile(r"{{.*?}}", re.DOTALL)


def template_environ(environ: Mapping[str, str] | None = None, passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The environment ``{{ $NAME }}`` placeholders may read: what a job may see of ``environ`` (an allowlist)."""
    return job_environ(passthrough, environ)


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
    return pool_kind(pool.type).template(pool.type)


def typed_config(pool: WorkPool, rendered: Mapping[str, Any], provider: Provider | None = None) -> JobConfig:
    """The rendered configuration validated into the provider's model (``provider``: the pool type's by default).

    Raises:
        TemplateError: a field of the wrong type, named (the run is crashed with this message).
    """
    model = (provider or provider_for_pool_type(pool.type)).config_model()
    try:
        return model.model_validate(dict(rendered))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "job configuration"
        # The value itself is never quoted: it may have come from a Secret block.
        got = type(first.get("input")).__name__
        error = MissingValueError if all(e.get("type") == "missing" for e in exc.errors()) else TemplateError
        raise error(f"{where}: {first.get('msg', 'invalid value')} (got a value of type {got})") from None


def check_operator_fields(template: Mapping[str, Any], model: type[JobConfig]) -> None:
    """Refuse a template whose operator-only fields are (or hold) a ``{{ placeholder }}``: a job variable, a Prefect
    variable or a block would then decide what only the pool's operator may (e.g. which identities a job may have).

    Raises:
        TemplateError: naming the field.
    """
    config = template.get("job_configuration") or {}
    for name in sorted(model.operator_fields):
        if name in config and _PLACEHOLDER.search(json.dumps(config[name], default=str)):
            raise TemplateError(
                f"job_configuration.{name} is the pool operator's setting and must be a literal value in the base job "
                "template, not a placeholder (job variables may not set it)"
            )


def max_run_time_seconds(config: Mapping[str, Any]) -> int:
    """The rendered configuration's maximum run time, by the rule of :class:`JobConfig`'s own field."""
    value = config.get("max_run_time_seconds")
    try:
        return JobConfig.model_validate({"max_run_time_seconds": value}).max_run_time_seconds
    except ValidationError:
        raise TemplateError(
            f"max_run_time_seconds must be a whole number of seconds, at least 1, got {value!r}"
        ) from None


def pool_credentials(
    settings: Settings, client: PrefectClient, pool: WorkPool, *, resolver: OrchestratorResolver | None = None
) -> dict[str, Any] | None:
    """The provider credentials of the pool's jobs (its config model's ``credential_fields``), or None when its
    provider has none: the pool's template rendered with the pool's own defaults, blocks resolved — what every job of
    the pool is signed with (:func:`build_job_spec` refuses a job whose job variables would change them), so the
    monitor can sign every call about a job with its pool's credentials without the run's job variables.

    Raises:
        TemplateError: the pool's template does not render (e.g. its credentials block was deleted).
        OrchestratorError: a block could not be read (transient).
    """
    template, provider = pool_kind(pool.type).credentials_template(settings, pool, pool_template(pool), client)
    fields = provider.config_model().credential_fields
    if not fields:
        return None
    return _own_credentials(
        template,
        fields,
        resolver or OrchestratorResolver(client),
        template_environ(passthrough=settings.job_env_passthrough),
    )


def _own_credentials(
    template: Mapping[str, Any], fields: tuple[str, ...], resolver: OrchestratorResolver, environ: Mapping[str, str]
) -> dict[str, Any]:
    rendered = render_job_configuration(template, {}, resolver=resolver, environ=environ)
    return {name: rendered.get(name) for name in fields}


def _check_credentials(
    template: Mapping[str, Any],
    rendered: Mapping[str, Any],
    model: type[JobConfig],
    resolver: OrchestratorResolver,
    environ: Mapping[str, str],
) -> None:
    """A job's credentials are its pool's: job variables (a deployment's, a flow run's) that change a credentials
    field are refused — a deployment author may not sign their job with another pool's block, or any block the pool's
    operator did not give the pool (design.md rule 8).

    Raises:
        TemplateError: the field named, never its value.
    """
    fields = model.credential_fields
    if not fields:
        return
    own = _own_credentials(template, fields, resolver, environ)
    for name in fields:
        if rendered.get(name) != own[name]:
            raise TemplateError(
                f"job variables may not change {name!r}: a job is signed with its work pool's own credentials (the "
                "pool's base job template); remove it from the deployment's or flow run's job variables, or run the "
                "deployment in a pool whose operator set the credentials it needs"
            )


def effective_max_run_time(pool: WorkPool, deployment: Deployment | None, run: FlowRun) -> int:
    """The run's maximum run time without resolving blocks (what the monitor needs, cheaply)."""
    values = merge_job_variables(deployment.job_variables if deployment else None, run.job_variables)
    try:
        return max_run_time_seconds(render_job_configuration(pool_template(pool), values))
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
    """Render the job of ``run``'s ``attempt`` into its provider's typed configuration.

    The same function serves submit (before the job exists) and the monitor (to find a job whose
    ``infrastructure_pid`` was never written, where the run's own configuration put it).

    Raises:
        TemplateError: the template or the job variables do not render, or a field has the wrong type.
        OrchestratorError: a block or variable could not be read (transient: the caller may retry).
    """
    values = merge_job_variables(deployment.job_variables if deployment else None, run.job_variables)
    # A wrapping pool type (prefect:managed) translates the job: the operator's provider runs it (usecases/pool_kind.py)
    kind = pool_kind(pool.type)
    template, values, provider = kind.job(settings, pool, pool_template(pool), deployment, values, client)
    model = provider.config_model()
    check_operator_fields(template, model)
    resolver, environ = OrchestratorResolver(client), template_environ(environ, settings.job_env_passthrough)
    rendered = render_job_configuration(template, values, resolver=resolver, environ=environ)
    _check_credentials(template, rendered, model, resolver, environ)
    config = typed_config(pool, rendered, provider)
    env: dict[str, str | None] = {
        "PREFECT_API_URL": settings.api_url_for_jobs,
        "PREFECT__FLOW_RUN_ID": run.id,
    }
    if run.flow_id:
        env["PREFECT__FLOW_ID"] = run.flow_id
    if deployment is not None:
        env["PREFECT__DEPLOYMENT_ID"] = deployment.id
        env["PREFECT__DEPLOYMENT_NAME"] = deployment.name
    env.update(config.env)
    secret_env: dict[str, str] = {}
    for credential in PREFECT_CREDENTIALS:  # the job's own credential is a secret too: never sent as a plain value
        value = env.pop(credential, None)
        if value is not None:
            secret_env[credential] = value
    if settings.prefect_api_key and "PREFECT_API_KEY" not in config.env:
        secret_env["PREFECT_API_KEY"] = settings.prefect_api_key
    elif settings.prefect_api_auth_string and "PREFECT_API_AUTH_STRING" not in config.env:
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
    labels.update(config.labels)

    name = config.name
    if name:
        rendered_name = apply_values(name, {"ctx": {"flow_run": run.model_dump(mode="json")}})
        name = None if rendered_name is NOTSET else str(rendered_name)

    return JobSpec(
        run_id=run.id,
        attempt=attempt,
        pool_name=pool.name,
        name=str(name or run.name or run.id),
        command=config.command or DEFAULT_COMMAND,
        env={k: v for k, v in env.items() if v is not None},
        labels=labels,
        config=config,
        secret_env=secret_env,
    )


class PoolCredentials:
    """Handles of jobs carrying their pool's credentials (:func:`pool_credentials`), each pool rendered once: one per
    monitor tick or CLI call, so a monitor that never saw the submit signs every call about a job with its pool's
    credentials, never with another pool's nor with whatever the process used last.
    """

    def __init__(self, settings: Settings, client: PrefectClient) -> None:
        self.settings, self.client = settings, client
        self._resolver = OrchestratorResolver(client)  # a block shared by pools is read once
        self._found: dict[str, dict[str, Any] | PushpoolError | None] = {}

    def of(self, pool: WorkPool) -> dict[str, Any] | None:
        """The pool's credentials (None: pushpool's own configuration).

        Raises:
            PushpoolError: they cannot be rendered (remembered: the pool's other runs are not tried again).
        """
        if pool.name not in self._found:
            try:
                self._found[pool.name] = pool_credentials(self.settings, self.client, pool, resolver=self._resolver)
            except PushpoolError as exc:
                self._found[pool.name] = exc
        found = self._found[pool.name]
        if isinstance(found, PushpoolError):
            raise found
        return found

    def handle(self, backend: str, pool: WorkPool, job_id: str) -> JobHandle:
        """The handle of a job of ``pool``, carrying the pool's credentials.

        Raises:
            PushpoolError: the pool's credentials cannot be rendered: the job is not to be asked about now (asking
                with other credentials would find it missing).
        """
        return JobHandle(backend, job_id, self.of(pool))
