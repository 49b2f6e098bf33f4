"""provision-infra and deprovision: the cloud side of a push pool, then the Prefect side, in one command.

``provision_infra`` plans (read-only), asks to confirm, applies with progress, stores credentials (access-key mode
only, once), creates or updates the pool with the provisioned defaults plus its Webhook block and automation, and
verifies by planning again (everything must now exist). ``deprovision`` removes exactly what carries the pool's tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import ObjectNotFoundError, OrchestratorError
from pushpool.providers.provisioning import EXISTS, Outcome, ProvisioningError, Step, apply, render_plan
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
    provisioner: Any,
    *,
    pool: str,
    type_name: str,
    submit_url: str | None = None,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    plan_only: bool = False,
) -> InfraResult:
    validate_pool_name(pool)
    provisioner.check_access()
    steps = provisioner.plan(pool)
    if provisioner.credentials == "access-key":
        steps.append(_credentials_block_step(deps, provisioner, pool))
    result = InfraResult(pool, steps, applied=False)
    if plan_only:
        return result
    if confirm is not None and not confirm(render_plan(f"Provisioning infrastructure for work pool {pool}:", steps)):
        result.notes.append("cancelled: nothing was changed")
        return result
    outcome = apply(steps, progress=progress)
    defaults = {k: v for k, v in outcome.defaults.items() if not k.startswith("_")}
    result.outcome, result.applied = outcome, True
    try:
        result.prefect = provision_pool(deps, name=pool, type_name=type_name, submit_url=submit_url, defaults=defaults)
    except OrchestratorError as exc:
        raise ProvisioningError(f"the Prefect side failed: {exc.one_line()}", created=outcome.created) from exc
    again = [s for s in provisioner.plan(pool) if s.action != EXISTS]
    if again:
        result.notes.append("verify: still to do: " + "; ".join(s.line() for s in again))
    if "_registry" in outcome.defaults:
        result.notes.append(f"image namespace: push flow images to {outcome.defaults['_repository']}")
    return result


def _credentials_block_step(deps: Deps, provisioner: Any, pool: str) -> Step:
    client, name = deps.orchestrator, f"{pool}-aws-credentials"
    try:
        existing = client.read_block_document_by_name("aws-credentials", name)
    except ObjectNotFoundError:
        existing = None

    def run() -> dict[str, Any]:
        block_id = existing.id if existing else None
        if block_id is None:
            data = provisioner.create_access_key(pool)
            type_id = client.read_block_type_id("aws-credentials")
            schema_id = client.read_latest_block_schema_id(type_id)
            block_id = client.create_block_document(
                {"name": name, "data": data, "block_type_id": type_id, "block_schema_id": schema_id}
            ).id
        return {"aws_credentials": {"$ref": {"block_document_id": block_id}}}

    return Step(
        "credentials block",
        name,
        EXISTS if existing else "create",
        "an access key for the IAM user, stored once in an aws-credentials block",
        run,
    )


def deprovision(
    deps: Deps, provisioner: Any, *, pool: str, confirm: Confirm | None = None, progress: Progress | None = None
) -> InfraResult:
    validate_pool_name(pool)
    provisioner.check_access()
    steps = provisioner.deprovision_plan(pool)
    client = deps.orchestrator
    try:
        block = client.read_block_document_by_name("aws-credentials", f"{pool}-aws-credentials")
        steps.append(
            Step(
                "credentials block",
                f"{pool}-aws-credentials",
                "delete",
                "",
                lambda: (client.delete_block_document(block.id), {})[1],
            )
        )
    except ObjectNotFoundError:
        pass
    result = InfraResult(pool, steps, applied=False)
    if not steps:
        result.notes.append(f"nothing tagged for pool {pool}")
        return result
    if confirm is not None and not confirm(render_plan(f"Removing the infrastructure of work pool {pool}:", steps)):
        result.notes.append("cancelled: nothing was changed")
        return result
    result.outcome, result.applied = apply(steps, progress=progress), True
    return result
