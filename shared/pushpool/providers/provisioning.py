"""The provisioning framework every backend's provisioner uses: plan → confirm → apply (with progress) → verify.

A provisioner turns a pool into an ordered list of :class:`Step`. Planning only reads: each step says whether its
resource will be created, updated, or already exists (and is reused). Applying runs the steps in order; each returns
the pool template defaults it contributes (cluster, network configuration …). A failure stops at once with the
cloud's reason and the list of what was created so far — all of it tagged with the pool's name, so
``deprovision`` can remove it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import PushpoolError

CREATE, UPDATE, EXISTS, DELETE = "create", "update", "exists", "delete"


@dataclass
class Step:
    resource: str  # a kind, e.g. "ECS cluster"
    name: str
    action: str  # CREATE | UPDATE | EXISTS | DELETE
    detail: str = ""
    run: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)  # returns template defaults

    def line(self) -> str:
        verb = {CREATE: "create", UPDATE: "update", EXISTS: "already exists:", DELETE: "delete"}[self.action]
        extra = f" ({self.detail})" if self.detail else ""
        return f"{verb} {self.resource} {self.name}{extra}"


class ProvisioningError(PushpoolError):
    http_status = 502

    def __init__(self, message: str, *, created: Sequence[str] = ()) -> None:
        done = f" Created so far (all tagged with the pool's name): {', '.join(created)}." if created else ""
        super().__init__(message + done)
        self.created = list(created)


@dataclass
class Outcome:
    steps: list[Step]
    defaults: dict[str, Any]
    created: list[str]

    @property
    def changed(self) -> bool:
        return any(s.action != EXISTS for s in self.steps)


def render_plan(title: str, steps: Sequence[Step]) -> str:
    """The plan as a boxed table, like Prefect's provisioners print it."""
    lines = [title, ""] + [f"  - {s.line()}" for s in steps]
    width = max(len(line) for line in lines) + 4
    border = "_" * width
    body = [f"| {line.ljust(width - 4)} |" for line in lines]
    return "\n".join([border, *body, border])


def apply(steps: Sequence[Step], *, progress: Callable[[int, int, Step], None] | None = None) -> Outcome:
    """Run the steps in order. Raises ProvisioningError with what was created when a step fails."""
    defaults: dict[str, Any] = {}
    created: list[str] = []
    for index, step in enumerate(steps, start=1):
        if progress is not None:
            progress(index, len(steps), step)
        if step.run is None:
            continue
        try:
            defaults.update(step.run() or {})
        except PushpoolError as exc:
            raise ProvisioningError(f"{step.resource} {step.name}: {exc.one_line()}", created=created) from exc
        if step.action == CREATE:
            created.append(f"{step.resource} {step.name}")
    return Outcome(list(steps), defaults, created)


def with_defaults(template: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``template`` with ``variables.properties.<name>.default`` set from ``defaults``."""
    updated = copy.deepcopy(template)
    properties = updated.setdefault("variables", {}).setdefault("properties", {})
    for name, value in defaults.items():
        if name in properties:
            properties[name]["default"] = value
    return updated
