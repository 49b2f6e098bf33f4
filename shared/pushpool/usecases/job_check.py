"""job_check: what submit would refuse about a pool's jobs, found before any run is (issue 24).

A template or credentials setting that submit refuses (an ARM function pushpool does not evaluate, a Cloud Run field
the run.v2 discovery document lacks, a credentials block of another project than the pool's, Coiled options outside
those pushpool supports, a field of the wrong type …) would otherwise show only as a crashed run. So the same
refusals are asked for earlier:

* when pushpool creates or updates a pool (``provision``): the template it is about to write, rendered with its
  defaults, is refused with the reason and nothing is created or changed;
* for each deployment of a push pool (``pushpool doctor``): Prefect creates deployments and pushpool cannot veto them,
  so doctor lists those whose job variables would be refused, with the reason.

The job is rendered as submit renders it (:func:`~pushpool.usecases.job_spec.build_job_spec`: the template, the job
variables, blocks and variables resolved, the credentials rule) for a stand-in flow run, then given to the provider's
``check_job`` (providers/base.py ``BackendBase.check_job``: the refusals its ``submit`` makes before any call, by the
same functions). Nothing is created at the provider and no call is made to it; pushpool's own cloud identity is not
used (the CLI that creates a pool is not where its jobs are submitted), so what depends on it (e.g. the Google project
pushpool runs in) is judged at submit only, as is an image's platform. A field the pool leaves unset
(``MissingValueError``) is not a refusal of the pool: a deployment may give it; doctor judges each deployment's.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pushpool.errors import BackendError, ConfigurationError, MissingValueError, TemplateError, UnsupportedPoolError
from pushpool.prefect_api.models import FlowRun
from pushpool.usecases.job_spec import build_job_spec

if TYPE_CHECKING:
    from pushpool.prefect_api.models import Deployment, WorkPool
    from pushpool.usecases.deps import Deps

STAND_IN_RUN_ID = "00000000-0000-4000-8000-000000000024"  # a flow run that does not exist: nothing is claimed


def job_refusal(
    deps: Deps, pool: WorkPool, deployment: Deployment | None = None, *, own_credential: bool = True
) -> str | None:
    """Why submit would refuse a run of ``deployment`` (None: a run with no job variables) in ``pool``, or None.

    ``own_credential``: judge the job with pushpool's own Prefect credential too (a provider that must deliver it by
    secret reference refuses a pool without one). Provision does not: the CLI creating a pool may hold a key the
    serve that submits does not, and the pool's secret is usually set afterwards (``--provision-infra`` sets it).

    Raises:
        OrchestratorError: a block or variable the template names could not be read (transient; a deleted block is a
            refusal).
    """
    run = FlowRun(
        id=STAND_IN_RUN_ID,
        name="pushpool-check",
        deployment_id=deployment.id if deployment else None,
        work_pool_name=pool.name,
    )
    try:
        spec = build_job_spec(
            settings=deps.settings, client=deps.orchestrator, run=run, pool=pool, deployment=deployment, attempt="check"
        )
    except MissingValueError as exc:
        return None if deployment is None else exc.one_line()
    except TemplateError as exc:
        return exc.one_line()
    if not own_credential:
        own = {deps.settings.prefect_api_key, deps.settings.prefect_api_auth_string} - {None}
        spec = dataclasses.replace(spec, secret_env={k: v for k, v in spec.secret_env.items() if v not in own})
    try:
        backend = deps.backend_for_pool(pool)
    except (UnsupportedPoolError, ConfigurationError):
        return None  # its provider cannot be loaded here: submit (where it is served) judges the rest
    check = getattr(backend, "check_job", None)
    if check is None:
        return None
    try:
        check(spec)
    except (TemplateError, BackendError) as exc:
        return exc.one_line()
    return None
