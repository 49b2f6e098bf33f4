"""managed: the limits of managed execution on every path a run can start by (submit, the monitor's dispatch).

* **pools**: a workspace serves as many managed pools as its tier allows — the oldest first. ``pushpool work-pool
  create`` refuses one more (``usecases/provision.py`` asks :func:`check_pool_limit`); a pool created behind
  pushpool's back over the REST API is not served: its runs are left Scheduled, it gets no heartbeat, and its
  description says why (:func:`mark_pools`) until a pool is deleted and it moves within the limit. The served pools'
  descriptions carry the static outbound IP addresses of managed runs, when the operator's template pool has them
  (ECS with ``--static-ips``). pushpool writes only its own ``[pushpool] `` lines (``managed/description.py``), and
  only when they differ: the user's text stays.
* **concurrency**: managed runs in flight across the workspace's pools count against the tier's limit
  (:class:`WorkspaceLimit`, one more limit for ``admission.full``): a run over it waits, Scheduled and untouched, and
  the monitor starts it in the first tick after a slot frees (one at a time in managed pools).
* **compute hours**: checked after the claim (:func:`quota_refusal`); with the month's hours used up the run is
  Cancelled with the reason (nothing ran; the limit resets on the 1st, UTC). A run that is already running when the
  line is crossed is *left to finish* — within the tier's maximum run time — and all of its time counts: stopping
  flows half-way loses work users cannot get back, while the overrun is bounded (concurrency × run time) and visible
  in ``pushpool usage``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pushpool.errors import ConfigurationError, InvalidRequestError, ObjectNotFoundError
from pushpool.managed import MANAGED_POOL_TYPE, MANAGED_TAG
from pushpool.managed.description import NOTE, addresses_line, with_lines
from pushpool.managed.job import BOOTSTRAP, managed_job
from pushpool.managed.job import base_job_template as managed_template
from pushpool.managed.tiers import month_window
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import IN_FLIGHT_STATES, Deployment, FlowRun, WorkPool
from pushpool.providers import Provider, managed_provider
from pushpool.providers.base import JobStatus
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.pool_kind import PoolKind
from pushpool.usecases.tick_report import TickReport
from pushpool.usecases.usage import (
    compute_seconds,
    managed_pools,
    publish,
    record_job_time,
    recorded_static_ips,
    served_and_refused,
    usage,
)

log = logging.getLogger("pushpool.usecases.managed")


class ManagedKind(PoolKind):
    """``prefect:managed`` as the use-cases see it (``usecases/pool_kind.py``): the operator's provider runs its jobs
    (translated by :func:`managed_job_variables`), the workspace's pool, concurrency and compute-hours limits hold on
    every path, its runs are tagged for compute hours, and the monitor records their jobs' times and publishes the
    workspace's usage."""

    shares_lane = True  # the workspace's concurrency limit spans the managed pools

    def template(self, pool_type: str) -> dict[str, Any]:
        return managed_template()

    def operator_fields(self, pool_type: str) -> frozenset[str]:
        return frozenset()

    def provisions_infra(self, pool_type: str) -> bool:
        return False  # its jobs run in the operator's infrastructure

    def before_provision(self, deps: Deps, name: str) -> None:
        # Compute hours are counted from the runs' pushpool.io/job-time labels: a server without labels (3.0) would
        # keep them as run tags, which whoever creates a run can set. Refused, naming the server and the upgrade.
        deps.orchestrator.server_dialect().require("flow_run_labels")
        check_pool_limit(deps, name)  # the workspace's tier allows so many managed pools: one more is refused

    def job(
        self,
        settings: Settings,
        pool: WorkPool,
        template: dict[str, Any],
        deployment: Deployment | None,
        values: dict[str, Any],
        client: PrefectClient | None,
    ) -> tuple[dict[str, Any], dict[str, Any], Provider]:
        return managed_job_variables(settings, deployment, values, client=client)

    def credentials_template(
        self, settings: Settings, pool: WorkPool, template: dict[str, Any], client: PrefectClient | None
    ) -> tuple[dict[str, Any], Provider]:
        return managed_provider_template(settings, client)

    def max_run_time(self, deps: Deps, pool: WorkPool) -> int | None:
        return int(deps.settings.tier.max_run_time_seconds)

    def served(self, deps: Deps, pools: list[WorkPool], every: list[WorkPool]) -> tuple[list[WorkPool], list[str]]:
        kept, notes = mark_pools(deps, every)  # managed pools over the workspace's pool limit are not served
        names = {p.name for p in kept}
        return [p for p in pools if p.name in names], notes

    def not_served(self, deps: Deps, pool: WorkPool) -> str | None:
        return not_served(deps, pool)

    def limits(self, deps: Deps) -> list[Any]:
        return [workspace_limit(deps)]

    def refusal(self, deps: Deps) -> str | None:
        return quota_refusal(deps)

    def tags(self, run: FlowRun) -> list[str] | None:
        # compute hours count the tagged runs, whatever becomes of their pool
        return None if MANAGED_TAG in run.tags else [*run.tags, MANAGED_TAG]

    def on_status(self, deps: Deps, run: FlowRun, status: JobStatus) -> None:
        record_job_time(deps, run, status)  # what the job's times come from, before a cleanup removes it

    def after_tick(self, deps: Deps, pools: list[WorkPool], every: list[WorkPool] | None, report: TickReport) -> None:
        found = usage(deps, pools=every)
        report.managed = found.as_dict()
        publish(deps, found)


@dataclass(frozen=True)
class WorkspaceLimit:
    """The tier's concurrency limit, over the managed runs of every managed pool (an ``admission`` limit)."""

    workspace: str
    tier: str
    limit: int

    def describe(self) -> str:
        return f"managed workspace {self.workspace!r} ({self.tier} tier: {self.limit} concurrent runs)"

    def in_flight_filter(self) -> dict[str, Any]:
        return {
            "flow_runs": {"state": {"type": {"any_": [s.value for s in IN_FLIGHT_STATES]}}},
            "work_pools": {"type": {"any_": [MANAGED_POOL_TYPE]}},
        }


def workspace_limit(deps: Deps) -> WorkspaceLimit:
    tier = deps.settings.tier
    return WorkspaceLimit(deps.settings.workspace, tier.name, tier.concurrent_runs)


def _over_limit_reason(deps: Deps, served: list[WorkPool]) -> str:
    tier = deps.settings.tier
    names = ", ".join(p.name for p in served) or "none"
    return (
        f"pushpool does not serve this pool: the {tier.name} tier of workspace {deps.settings.workspace!r} allows "
        f"{tier.pools} managed work pool(s) (served: {names}); delete one to have this one served"
    )


def not_served(deps: Deps, pool: WorkPool) -> str | None:
    """Why ``pool`` (a managed pool) is not served — it is over the workspace's pool limit — or None."""
    served, refused = served_and_refused(deps.settings.tier, managed_pools(deps))
    if any(p.name == pool.name for p in refused):
        return _over_limit_reason(deps, served)
    return None


def mark_pools(deps: Deps, pools: list[WorkPool]) -> tuple[list[WorkPool], list[str]]:
    """Of ``pools`` (every pool, as read), those this deployment serves, and one note per managed pool over the limit
    (its description now says why; a pool back within the limit loses that note, and shows the static outbound IP
    addresses recorded on the template pool, if any)."""
    served, refused = served_and_refused(deps.settings.tier, managed_pools(deps, pools))
    refused_names = {p.name for p in refused}
    notes = []
    why = _over_limit_reason(deps, served)
    addresses = recorded_static_ips(deps, pools)
    for pool in refused:
        notes.append(f"pool {pool.name}: {why}")
        _describe(deps, pool, [NOTE + why])
    for pool in served:
        _describe(deps, pool, [addresses_line(addresses)] if addresses else [])
    return [p for p in pools if p.name not in refused_names], notes


def _describe(deps: Deps, pool: WorkPool, lines: list[str]) -> None:
    """Make pushpool's lines of the pool's description ``lines`` (a write only when they differ)."""
    description = with_lines(pool.description, lines)
    if description == (pool.description or ""):
        return
    try:
        deps.orchestrator.update_work_pool(pool.name, {"description": description})
    except Exception as exc:  # noqa: BLE001 - the description is a message to users; serving goes on without it
        log.warning("could not update the description of pool %s: %s", pool.name, type(exc).__name__)


def check_pool_limit(deps: Deps, name: str) -> None:
    """Refuse to create one more managed pool than the workspace's tier allows (an existing pool ``name`` is fine).

    Raises:
        InvalidRequestError: the limit is reached (nothing changed).
    """
    pools = managed_pools(deps)
    if any(p.name == name for p in pools):
        return
    tier = deps.settings.tier
    if len(pools) >= tier.pools:
        names = ", ".join(p.name for p in pools)
        raise InvalidRequestError(
            f"the {tier.name} tier of workspace {deps.settings.workspace!r} allows {tier.pools} managed work pool(s), "
            f"and it has {len(pools)} ({names}): delete one first, or ask the operator for another tier"
        )


def quota_refusal(deps: Deps) -> str | None:
    """Why a managed run may not start now — the month's compute hours are used up — or None."""
    tier, now = deps.settings.tier, deps.clock.now()
    used = compute_seconds(deps, now=now) / 3600
    if used < tier.compute_hours:
        return None
    _, next_month = month_window(now)
    return (
        f"pushpool did not start this run: workspace {deps.settings.workspace!r} has used {used:.2f} of the "
        f"{tier.compute_hours:g} compute hours its {tier.name} tier allows in {now:%Y-%m} (UTC); managed runs start "
        f"again on {next_month:%Y-%m-%d} (UTC)"
    )


def managed_job_variables(
    settings: Settings, deployment: Deployment | None, values: Mapping[str, Any], *, client: PrefectClient | None = None
) -> tuple[dict[str, Any], dict[str, Any], Provider]:
    """A managed run's job as the operator's provider runs it: that provider's template — the one of the operator's
    pool ``PUSHPOOL_MANAGED_TEMPLATE_POOL`` (its provisioned cluster, network, roles), else the provider's own — and
    the variables for it (the bootstrap, the user's env, the operator's image, the tier's memory and run time).

    Raises:
        JobRefusedError: job variables a managed pool does not take, or no pull step that fetches the code.
        ConfigurationError: the operator's provider cannot run managed pools, or its template pool is not usable.
    """
    job = managed_job(values, deployment.pull_steps if deployment is not None else None)
    template, provider = managed_provider_template(settings, client)
    tier = settings.tier
    variables = provider.managed_variables(
        bootstrap=BOOTSTRAP, env=job.job_env(), image=settings.managed_image, memory_mb=tier.memory_mb
    )
    variables["max_run_time_seconds"] = tier.max_run_time_seconds
    return template, variables, provider


def managed_provider_template(settings: Settings, client: PrefectClient | None) -> tuple[dict[str, Any], Provider]:
    """The template managed runs render (see :func:`managed_job_variables`) and the provider that runs them.

    Raises:
        ConfigurationError: the operator's provider cannot run managed pools, or its template pool is not usable.
    """
    provider = managed_provider(settings.managed_backend)
    template = provider.template(provider.pool_types[0])
    if settings.managed_template_pool and client is not None:
        try:
            carrier = client.read_work_pool(settings.managed_template_pool)
        except ObjectNotFoundError:
            raise ConfigurationError(
                f"PUSHPOOL_MANAGED_TEMPLATE_POOL: work pool {settings.managed_template_pool!r} does not exist"
            ) from None
        if carrier.type not in provider.pool_types:
            raise ConfigurationError(
                f"PUSHPOOL_MANAGED_TEMPLATE_POOL: pool {carrier.name!r} is of type {carrier.type!r}, not one of "
                f"the {provider.name} provider's ({', '.join(provider.pool_types)})"
            )
        template = carrier.base_job_template if carrier.base_job_template.get("job_configuration") else template
    return template, provider
