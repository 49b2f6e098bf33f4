"""Pool types pushpool serves, each with its base job template and the backend that runs its jobs.

A pool type is the Prefect work-pool ``type`` string (``process:push``, ``ecs:push`` …). Adding one means
adding its template module here and its backend under :mod:`pushpool.backends`; see backends/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedPoolError
from .render import merge_job_variables, render_job_configuration


@dataclass(frozen=True)
class PoolType:
    name: str
    backend: str
    template: Callable[[], dict[str, Any]]


def _process_template() -> dict[str, Any]:
    from .process import base_job_template

    return base_job_template()


def _ecs_template() -> dict[str, Any]:
    """Prefect's ``ecs`` template (so existing deployments' job variables keep working) + max run time."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "ecs_push.json").read_text())  # type: ignore[no-any-return]


POOL_TYPES: dict[str, PoolType] = {
    "process:push": PoolType("process:push", "process", _process_template),
    "ecs:push": PoolType("ecs:push", "ecs", _ecs_template),
}


def pool_type(type_name: str) -> PoolType:
    """The pushpool pool type for a work pool's ``type``.

    Raises:
        UnsupportedPoolError: not a push pool, or a push type this build does not serve.
    """
    if not type_name.endswith(":push"):
        raise UnsupportedPoolError(f"work pool type {type_name!r} is not a push pool type")
    try:
        return POOL_TYPES[type_name]
    except KeyError:
        supported = ", ".join(sorted(POOL_TYPES))
        raise UnsupportedPoolError(f"unknown push pool type {type_name!r} (supported: {supported})") from None


def base_job_template(type_name: str) -> dict[str, Any]:
    return pool_type(type_name).template()


__all__ = [
    "POOL_TYPES",
    "PoolType",
    "base_job_template",
    "merge_job_variables",
    "pool_type",
    "render_job_configuration",
]
