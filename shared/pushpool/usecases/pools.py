"""pools: what pushpool made for each push pool, and removing all of it — ``pushpool work-pool ls | inspect | delete``.

For a pool, pushpool makes the work pool itself, a ``webhook`` block and an automation (both named
``pushpool-<pool>``), and, with ``provision-infra``, cloud resources carrying the pool's marker. ``prefect work-pool
delete`` removes only the first: the automation (still enabled) and the block stay behind. :func:`delete_pool` removes
everything — the pool is paused first (no run is dispatched meanwhile) and deleted last, so that a failure half-way
(a cloud resource still in use) leaves a pool to run the same command on again — and it cleans up after a pool that was
deleted behind pushpool's back: the pool's type is then read from its automation's tags.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import InvalidRequestError, ObjectNotFoundError, UnsupportedPoolError
from pushpool.prefect_api.models import BlockDocument, WorkPool
from pushpool.providers import WRAPPERS
from pushpool.providers.provisioning import DELETE, UPDATE, Provisioner, Step, apply, render_plan
from pushpool.usecases.deps import Deps
from pushpool.usecases.pool_kind import pool_kind
from pushpool.usecases.provision import AUTOMATION_TAG, STREAM_TAG, TYPE_TAG, validate_pool_name
from pushpool.usecases.provision_infra import Confirm, InfraResult, Progress

ProvisionerFor = Callable[[str], Provisioner]


@dataclass
class PoolParts:
    """A push pool and what pushpool made for it in Prefect (each part may be missing)."""

    name: str
    pool: WorkPool | None
    block: BlockDocument | None
    automations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def type_name(self) -> str | None:
        """The pool's type, or the one its automation records when the pool is gone."""
        if self.pool is not None:
            return self.pool.type
        return _recorded_type(self.automations)

    @property
    def found(self) -> bool:
        return self.pool is not None or self.block is not None or bool(self.automations)


def _recorded_type(automations: list[dict[str, Any]]) -> str | None:
    for automation in automations:
        for tag in automation.get("tags") or []:
            if isinstance(tag, str) and tag.startswith(TYPE_TAG):
                return tag[len(TYPE_TAG) :]
    return None


def _is_pushpools(automation: dict[str, Any]) -> bool:
    return str(automation.get("name", "")).startswith("pushpool-") and (
        AUTOMATION_TAG in (automation.get("tags") or [])
        or str(automation.get("description", "")).startswith("pushpool:")
    )


def pool_parts(deps: Deps, name: str) -> PoolParts:
    """Read the pool, its Webhook block and its automations (reads only)."""
    client = deps.orchestrator
    try:
        pool: WorkPool | None = client.read_work_pool(name)
    except ObjectNotFoundError:
        pool = None
    try:
        block: BlockDocument | None = client.read_block_document_by_name("webhook", f"pushpool-{name}")
    except ObjectNotFoundError:
        block = None
    return PoolParts(name, pool, block, client.find_automations(f"pushpool-{name}"))


def _pushpools(pool_type: str) -> bool:
    """A type of pool pushpool runs: a push pool, or a managed one."""
    return pool_type.endswith(":push") or pool_type in WRAPPERS


def pool_type(deps: Deps, name: str, given: str | None = None) -> str:
    """The type of pool ``name``: ``given``, else the pool's, else what its automation recorded.

    Raises:
        InvalidRequestError: the pool does not exist and nothing says what it was (nothing changed).
    """
    if given:
        return given
    found = pool_parts(deps, name).type_name
    if found is None:
        raise InvalidRequestError(
            f"work pool {name!r} does not exist and nothing records its type: give it with --type "
            "(e.g. --type ecs:push)"
        )
    return found


def _ignore_missing(action: Callable[[], object]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        try:
            action()
        except ObjectNotFoundError:  # already gone (removed meanwhile): what we wanted
            pass
        return {}

    return run


def delete_pool(
    deps: Deps,
    *,
    pool: str,
    type_name: str | None = None,
    provisioner_for: ProvisionerFor | None = None,
    keep_infra: bool = False,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    plan_only: bool = False,
) -> InfraResult:
    """Remove push pool ``pool`` and everything pushpool made for it: plan (reads only), confirm, apply.

    The cloud side (what carries the pool's marker) is planned by ``provisioner_for(type)`` for types that have a
    provisioner, unless ``keep_infra``.

    Raises:
        InvalidRequestError: no such pool and nothing pushpool made for it, or a pool that is not a push pool
            (nothing changed).
        ProvisioningError: a deletion failed, with the reason (run again to finish).
    """
    validate_pool_name(pool)
    client = deps.orchestrator
    parts = pool_parts(deps, pool)
    if parts.pool is not None and not _pushpools(parts.pool.type):
        raise UnsupportedPoolError(
            f"work pool {pool!r} is of type {parts.pool.type!r}, not a push pool: delete it with "
            f"`prefect work-pool delete {pool}`"
        )
    kind = type_name or parts.type_name
    provisioner = None
    notes: list[str] = []
    cloud: list[Step] = []
    if kind is not None and pool_kind(kind).provisions_infra(kind):
        if keep_infra:
            notes.append(
                f"cloud resources kept: remove them with `pushpool work-pool deprovision {pool} --type {kind}`"
            )
        elif provisioner_for is not None:
            provisioner = provisioner_for(kind)
            with provisioner.errors():
                provisioner.check_access()
                cloud = provisioner.deprovision_plan(pool, client)
    elif kind is None and parts.pool is None:
        notes.append(
            f"the type of pool {pool!r} is not recorded: if it had cloud resources, remove them with "
            f"`pushpool work-pool deprovision {pool} --type <type>`"
        )
    if not parts.found and not cloud:
        raise InvalidRequestError(f"work pool {pool!r} does not exist")

    steps: list[Step] = []
    if parts.pool is not None and not parts.pool.is_paused:
        steps.append(
            Step(
                "work pool",
                pool,
                UPDATE,
                "pause it: no run is dispatched meanwhile",
                run=_ignore_missing(lambda: client.update_work_pool(pool, {"is_paused": True})),
            )
        )
    for automation in parts.automations:
        automation_id = str(automation["id"])
        steps.append(
            Step(
                "automation",
                str(automation["name"]),
                DELETE,
                run=_ignore_missing(lambda a=automation_id: client.delete_automation(a)),
            )
        )
    steps += cloud
    if parts.block is not None:
        block_id = parts.block.id
        steps.append(
            Step(
                "Webhook block",
                f"pushpool-{pool}",
                DELETE,
                run=_ignore_missing(lambda: client.delete_block_document(block_id)),
            )
        )
    if parts.pool is not None:
        steps.append(Step("work pool", pool, DELETE, run=_ignore_missing(lambda: client.delete_work_pool(pool))))

    result = InfraResult(pool, steps, applied=False, notes=notes)
    if plan_only:
        return result
    if confirm is not None and not confirm(
        render_plan(f"Deleting work pool {pool} and what pushpool made for it:", steps)
    ):
        result.notes.append("cancelled: nothing was changed")
        return result
    boundary: Callable[[], AbstractContextManager[None]] = (
        provisioner.errors if provisioner is not None else nullcontext
    )
    result.outcome, result.applied = apply(steps, boundary=boundary, progress=progress), True
    return result


def _automation_state(automation: dict[str, Any] | None) -> str:
    if automation is None:
        return "missing"
    if automation.get("enabled"):
        return "enabled"
    return "event stream" if STREAM_TAG in (automation.get("tags") or []) else "disabled"


def list_pools(deps: Deps) -> list[dict[str, Any]]:
    """The push pools, each with its automation's state (``enabled``, ``disabled``, ``missing``, or ``event stream``:
    disabled because a serve reads the pool's events from Prefect's event stream), then what deleted
    pools left behind (``leftover``: an automation with no pool; remove it with :func:`delete_pool`)."""
    client = deps.orchestrator
    automations = {str(a["name"])[len("pushpool-") :]: a for a in client.read_automations() if _is_pushpools(a)}
    rows: list[dict[str, Any]] = []
    for pool in sorted(client.filter_work_pools(), key=lambda p: p.name):
        if not _pushpools(pool.type):
            continue
        rows.append(
            {
                "name": pool.name,
                "type": pool.type,
                "id": pool.id,
                "concurrency_limit": pool.concurrency_limit,
                "is_paused": pool.is_paused,
                "served": deps.serves(pool),
                "automation": _automation_state(automations.pop(pool.name, None)),
                "leftover": False,
            }
        )
    for name, automation in sorted(automations.items()):
        rows.append(
            {
                "name": name,
                "type": None,
                "id": None,
                "concurrency_limit": None,
                "is_paused": None,
                "served": False,
                "automation": _automation_state(automation),
                "leftover": True,
            }
        )
    return rows


def inspect_pool(deps: Deps, name: str) -> dict[str, Any]:
    """The pool as Prefect has it, with its Webhook block's URL (never its headers: they hold the token) and its
    automation.

    Raises:
        InvalidRequestError: no such pool and nothing pushpool made for it.
    """
    parts = pool_parts(deps, name)
    if not parts.found:
        raise InvalidRequestError(f"work pool {name!r} does not exist")
    found: dict[str, Any] = (
        parts.pool.model_dump(mode="json") if parts.pool is not None else {"name": name, "type": parts.type_name}
    )
    found["exists"] = parts.pool is not None
    found["webhook"] = (
        {"block": parts.block.name, "id": parts.block.id, "url": parts.block.data.get("url")}
        if parts.block is not None
        else None
    )
    automation = parts.automations[0] if parts.automations else None
    found["automation"] = (
        {
            "name": automation.get("name"),
            "id": str(automation.get("id")),
            "enabled": bool(automation.get("enabled")),
            "tags": automation.get("tags") or [],
        }
        if automation is not None
        else None
    )
    return found


def runs_in_flight(deps: Deps, pool: str | None = None) -> list[dict[str, Any]]:
    """The in-flight runs of every push pool, or of ``pool``.

    Raises:
        InvalidRequestError: ``pool`` does not exist or is not a push pool (rather than "no runs in flight").
    """
    from pushpool.usecases.in_flight import in_flight

    if pool is not None:
        try:
            found = deps.orchestrator.read_work_pool(pool)
        except ObjectNotFoundError:
            raise InvalidRequestError(f"work pool {pool!r} does not exist") from None
        if not _pushpools(found.type):
            raise UnsupportedPoolError(f"work pool {pool!r} is of type {found.type!r}, not a push pool")
    return in_flight(deps, pool=pool)
