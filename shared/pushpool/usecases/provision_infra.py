"""provision-infra and deprovision: the cloud side of a push pool through its provider's provisioner, then the Prefect
side, in one command.

``provision_infra`` plans (read-only), asks to confirm, applies with progress (every step inside the provisioner's
error boundary), runs the provider's credential steps, creates or updates the pool with the provisioned defaults plus
its Webhook block and automation, and verifies by planning again (everything must now exist). After a partial failure
the same command resumes: planning finds what was created. ``deprovision`` removes exactly what carries the pool's
marker, and the credentials the provider stored.

Static outbound IP addresses (ECS ``--static-ips``) are recorded in the pool's description, a ``[pushpool] `` line
(``managed/description.py``): when the pool is the operator's template pool of managed runs, the monitor copies them
onto the managed pools' descriptions and into its usage report without reading the cloud. Deprovisioning removes the
line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import ObjectNotFoundError, OrchestratorError
from pushpool.managed.description import addresses_line, with_lines
from pushpool.providers.provisioning import EXISTS, Outcome, Provisioner, ProvisioningError, Step, apply, render_plan
from pushpool.usecases.deps import Deps
from pushpool.usecases.provision import ProvisionResult, provision_pool, validate_pool_name

Confirm = Callable[[str], bool]
Progress = Callable[[int, int, Step], None]


@dataclass
class InfraResult:
    pool: str
    plan: list[Step]
    applied: bool
    outcome: Outcome | None = None
    prefect: ProvisionResult | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "applied": self.applied,
            "plan": [
                {"resource": s.resource, "name": s.name, "action": s.action, "detail": s.detail} for s in self.plan
            ],
            "created": self.outcome.created if self.outcome else [],
            "prefect": self.prefect.as_dict() if self.prefect else None,
            "notes": self.notes,
        }


def provision_infra(
    deps: Deps,
    provisioner: Provisioner,
    *,
    pool: str,
    type_name: str,
    submit_url: str | Callable[[], str] | None = None,
    concurrency_limit: int | None = None,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    plan_only: bool = False,
    settings: dict[str, Any] | None = None,
) -> InfraResult:
    """Plan, confirm, apply and verify the cloud side of ``pool``, then its Prefect side.

    ``settings``: the operator's own template settings (e.g. ACI's ``allowed_identities``), added to what the
    provisioner made (a list joins the provisioned one).

    Raises:
        InvalidRequestError: a pool name the cloud cannot use (nothing changed).
        ProvisioningError: a step failed (the message says what was created so far; run again to resume).
    """
    validate_pool_name(pool)
    if callable(submit_url) and not plan_only:  # before the cloud changes: a refusal here changes nothing
        submit_url = submit_url()
    with provisioner.errors():
        provisioner.check_access()
        steps = provisioner.plan(pool) + provisioner.credential_steps(pool, deps.orchestrator)
    result = InfraResult(pool, steps, applied=False)
    if plan_only:
        return result
    if confirm is not None and not confirm(render_plan(f"Provisioning infrastructure for work pool {pool}:", steps)):
        result.notes.append("cancelled: nothing was changed")
        return result
    outcome = apply(steps, boundary=provisioner.errors, progress=progress)
    defaults = {k: v for k, v in outcome.defaults.items() if not k.startswith("_")}
    for key, value in (settings or {}).items():
        made = defaults.get(key)
        defaults[key] = [*made, *(v for v in value if v not in made)] if isinstance(made, list) else value
    result.outcome, result.applied = outcome, True
    try:
        result.prefect = provision_pool(
            deps,
            name=pool,
            type_name=type_name,
            submit_url=submit_url,
            concurrency_limit=concurrency_limit,
            defaults=defaults,
        )
        record_addresses(deps, pool, outcome.defaults.get("_static_ips") or [])
    except OrchestratorError as exc:
        raise ProvisioningError(f"the Prefect side failed: {exc.one_line()}", created=outcome.created) from exc
    with provisioner.errors():
        again = [s for s in provisioner.plan(pool) if s.action != EXISTS]
    if again:
        result.notes.append("verify: still to do: " + "; ".join(s.line() for s in again))
    result.notes += provisioner.notes(outcome.defaults)
    return result


def deprovision(
    deps: Deps,
    provisioner: Provisioner,
    *,
    pool: str,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
) -> InfraResult:
    """Remove what carries ``pool``'s marker.

    Raises:
        ProvisioningError: a deletion failed, with the cloud's reason (e.g. a resource still in use).
    """
    validate_pool_name(pool)
    with provisioner.errors():
        provisioner.check_access()
        steps = provisioner.deprovision_plan(pool, deps.orchestrator)
    result = InfraResult(pool, steps, applied=False)
    if not steps:
        result.notes.append(f"nothing marked for pool {pool}")
        return result
    if confirm is not None and not confirm(render_plan(f"Removing the infrastructure of work pool {pool}:", steps)):
        result.notes.append("cancelled: nothing was changed")
        return result
    result.outcome, result.applied = apply(steps, boundary=provisioner.errors, progress=progress), True
    try:
        record_addresses(deps, pool, [])
    except ObjectNotFoundError:
        pass  # the pool is gone already: nothing to say
    except OrchestratorError as exc:  # the cloud side is gone; the description is a message, not a resource
        result.notes.append(f"the pool's description may still list static addresses: {exc.one_line()}")
    return result


def record_addresses(deps: Deps, pool: str, addresses: list[str]) -> None:
    """Make the pool's description tell its static outbound addresses (none: no such line); written only on change."""
    found = deps.orchestrator.read_work_pool(pool).description
    description = with_lines(found, [addresses_line(addresses)] if addresses else [])
    if description != (found or ""):
        deps.orchestrator.update_work_pool(pool, {"description": description})
