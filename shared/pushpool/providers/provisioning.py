"""The provisioning framework every provider's provisioner uses: plan → confirm → apply → verify → deprovision.

A :class:`Provisioner` turns a pool into an ordered list of :class:`Step`. Planning only reads: each step says whether
its resource will be created, updated, or already exists (and is reused). Applying runs the steps in order, each inside
the provisioner's own error boundary (so every cloud error, deprovision's included, leaves as a pushpool error), and
each returns the pool template defaults it contributes (cluster, network configuration …). A failure stops at once
with the cloud's reason and what was created so far; everything created carries the pool's :class:`Marker`, and
planning again finds it, so running again resumes where the failure stopped and ``deprovision`` removes it.

Credentials are the provider's own business (``credential_steps``): an AWS access key in an ``aws-credentials`` block,
a GCP service-account key, an ACI service principal — the generic code only runs the steps it is given.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pushpool.errors import PushpoolError

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient

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
        done = f" Created so far (all marked with the pool's name): {', '.join(created)}." if created else ""
        super().__init__(message + done)
        self.created = list(created)


@dataclass(frozen=True)
class Marker:
    """How a pool's resources are recognised, in the form each cloud can hold.

    AWS tags take ``pushpool:pool``; GCP and Kubernetes-style label keys cannot hold ``:`` (lowercase letters, digits,
    ``-`` and ``_``, at most 63), so labels use ``pushpool-pool`` and a sanitised value; what carries no labels at all
    (IAM bindings, role assignments) is recognised by its deterministic name and its description.
    """

    pool: str

    TAG_KEY = "pushpool:pool"
    LABEL_KEY = "pushpool-pool"

    def aws_tags(self) -> list[dict[str, str]]:
        return [{"Key": self.TAG_KEY, "Value": self.pool}, {"Key": "Name", "Value": f"pushpool-{self.pool}"}]

    def labels(self) -> dict[str, str]:
        value = re.sub(r"[^a-z0-9_-]", "-", self.pool.lower())[:63]
        return {self.LABEL_KEY: value, "managed-by": "pushpool"}

    def description(self) -> str:
        return f"pushpool: created for work pool {self.pool}"

    def name(self, suffix: str = "") -> str:
        return f"pushpool-{self.pool}" + (f"-{suffix}" if suffix else "")


@runtime_checkable
class Provisioner(Protocol):
    """What a provider implements to set up (and remove) the cloud side of its pools."""

    credentials: str  # how the deployed functions authenticate: "role" (their own identity) or a provider mode

    def check_access(self) -> str:
        """Who we are in the cloud; a clear error when there are no usable credentials."""

    def plan(self, pool: str) -> list[Step]:
        """The resources the pool needs, each marked create, update or exists. Reads only."""

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        """Steps that store the provider's credentials for the pool in Prefect (none in role mode)."""

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        """Everything marked with the pool (and its stored credentials), in deletion order. Reads only."""

    def errors(self) -> AbstractContextManager[None]:
        """The cloud's error boundary: SDK exceptions leave it as pushpool errors."""

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        """What the operator should know after applying (e.g. where to push images)."""


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


def apply(
    steps: Sequence[Step],
    *,
    boundary: Callable[[], AbstractContextManager[None]],
    progress: Callable[[int, int, Step], None] | None = None,
) -> Outcome:
    """Run the steps in order, each inside ``boundary()``.

    Raises:
        ProvisioningError: a step failed; the message has the cloud's reason and what was created so far.
    """
    defaults: dict[str, Any] = {}
    created: list[str] = []
    for index, step in enumerate(steps, start=1):
        if progress is not None:
            progress(index, len(steps), step)
        if step.run is None:
            continue
        try:
            with boundary():
                defaults.update(step.run() or {})
        except PushpoolError as exc:
            raise ProvisioningError(f"{step.resource} {step.name}: {exc.one_line()}", created=created) from exc
        if step.action == CREATE:
            created.append(f"{step.resource} {step.name}")
    return Outcome(list(steps), defaults, created)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float = 300.0,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Poll a long-running operation until ``ready()``.

    Raises:
        ProvisioningError: still not ready after ``timeout`` seconds.
    """
    deadline = monotonic() + timeout
    while not ready():
        if monotonic() >= deadline:
            raise ProvisioningError(f"{what} was not ready after {timeout:.0f} s")
        sleep(interval)


def with_defaults(template: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``template`` with ``variables.properties.<name>.default`` set from ``defaults``; a name that is no variable but
    a literal (placeholder-free) key of ``job_configuration`` — an operator-only setting such as ACI's
    ``allowed_identities`` — is set there instead."""
    updated = copy.deepcopy(template)
    properties = updated.setdefault("variables", {}).setdefault("properties", {})
    config = updated.get("job_configuration") or {}
    for name, value in defaults.items():
        if name in properties:
            properties[name]["default"] = value
        elif name in config and "{{" not in json.dumps(config[name], default=str):
            config[name] = copy.deepcopy(value)
    return updated
