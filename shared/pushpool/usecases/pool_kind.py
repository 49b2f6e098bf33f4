"""pool_kind: what the use-cases ask of a pool's type beyond its provider's backend — small hooks with the answers of
an ordinary push pool, which a pool type that wraps another provider overrides.

A push pool type (``ecs:push``, ``process:push`` …) is run by its own provider and needs none of them. A wrapping
type — ``prefect:managed``, run by the provider the operator chose, with workspace limits, quotas and a job-variable
translation of its own (``usecases/managed.py``: :class:`~pushpool.usecases.managed.ManagedKind`) — is named in the
providers' registry (``providers.WRAPPERS``) with its kind, so the use-cases name no pool type: they ask
``pool_kind(pool.type)``.

Example:
    >>> pool_kind("ecs:push").shares_lane
    False
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from pushpool.providers import WRAPPERS, Provider, load, provider_for_pool_type

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient
    from pushpool.prefect_api.models import Deployment, FlowRun, WorkPool
    from pushpool.providers.base import JobStatus
    from pushpool.settings import Settings
    from pushpool.usecases.deps import Deps
    from pushpool.usecases.tick_report import TickReport


class PoolKind:
    """The hooks, with an ordinary push pool's answers."""

    # The monitor dispatches the pools of this kind one after another, one run at a time: a limit spans them, and
    # claimers over a limit at the same time all give their slots back (``admission``).
    shares_lane = False

    def template(self, pool_type: str) -> dict[str, Any]:
        """pushpool's base job template for a pool of this type."""
        return provider_for_pool_type(pool_type).template(pool_type)

    def operator_fields(self, pool_type: str) -> frozenset[str]:
        """Fields of the job configuration only the operator sets (kept as they are when a pool is updated)."""
        return provider_for_pool_type(pool_type).config_model().operator_fields

    def provisions_infra(self, pool_type: str) -> bool:
        """Whether pools of this type have cloud resources of their own (``work-pool delete`` removes them)."""
        return provider_for_pool_type(pool_type).provisioner is not None

    def before_provision(self, deps: Deps, name: str) -> None:
        """Refuse to create or update pool ``name`` (InvalidRequestError, nothing changed); nothing by default."""

    def job(
        self,
        settings: Settings,
        pool: WorkPool,
        template: dict[str, Any],
        deployment: Deployment | None,
        values: dict[str, Any],
        client: PrefectClient | None,
    ) -> tuple[dict[str, Any], dict[str, Any], Provider]:
        """The template and job variables a run's job renders, and the provider that validates and runs it."""
        return template, values, provider_for_pool_type(pool.type)

    def credentials_template(
        self, settings: Settings, pool: WorkPool, template: dict[str, Any], client: PrefectClient | None
    ) -> tuple[dict[str, Any], Provider]:
        """The template the pool's job credentials render from, and its provider."""
        return template, provider_for_pool_type(pool.type)

    def max_run_time(self, deps: Deps, pool: WorkPool) -> int | None:
        """This kind's maximum run time for every run (None: the pool's, deployment's or run's own)."""
        return None

    def served(self, deps: Deps, pools: list[WorkPool], every: list[WorkPool]) -> tuple[list[WorkPool], list[str]]:
        """Of ``pools`` (to be served this tick; ``every``: all the server's), those served, and notes on the rest."""
        return pools, []

    def not_served(self, deps: Deps, pool: WorkPool) -> str | None:
        """Why ``pool``'s runs are not started (submit leaves them Scheduled), or None."""
        return None

    def limits(self, deps: Deps) -> list[Any]:
        """Concurrency limits beyond the pool's and queue's (``admission`` limits)."""
        return []

    def refusal(self, deps: Deps) -> str | None:
        """Checked after the claim: why the run may not start at all (it is Cancelled with this), or None.

        Raises:
            OrchestratorUnavailableError: Prefect did not answer (the run is given back).
        """
        return None

    def tags(self, run: FlowRun) -> list[str] | None:
        """The tags the claimed run must carry (None: leave them)."""
        return None

    def on_status(self, deps: Deps, run: FlowRun, status: JobStatus) -> None:
        """The monitor read the run's job's status (before any cleanup)."""

    def after_tick(self, deps: Deps, pools: list[WorkPool], every: list[WorkPool] | None, report: TickReport) -> None:
        """At the end of a tick that served pools of this kind (``pools``)."""


PUSH = PoolKind()


@cache
def _wrapping(pool_type: str) -> PoolKind:
    return load(WRAPPERS[pool_type])()  # type: ignore[no-any-return]


def pool_kind(pool_type: str) -> PoolKind:
    """The hooks of ``pool_type``: a wrapping type's own, else an ordinary push pool's."""
    return _wrapping(pool_type) if pool_type in WRAPPERS else PUSH


def kinds(pools: list[WorkPool]) -> list[PoolKind]:
    """The wrapping kinds among ``pools``' types (each once, in order)."""
    found: list[PoolKind] = []
    for pool in pools:
        kind = pool_kind(pool.type)
        if kind is not PUSH and kind not in found:
            found.append(kind)
    return found
