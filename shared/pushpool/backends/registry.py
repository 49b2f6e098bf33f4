"""Backend name → implementation, imported only when first used (a Lambda for ECS never imports Modal)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import UnsupportedPoolError

if TYPE_CHECKING:
    from .base import Backend

BACKENDS: dict[str, str] = {
    "process": "pushpool.backends.process:ProcessBackend",
    "ecs": "pushpool.backends.ecs:EcsBackend",
}


def create_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with backend-specific ``options``.

    Raises:
        UnsupportedPoolError: no backend of that name in this build.
    """
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UnsupportedPoolError(f"no backend {name!r} in this build (available: {', '.join(BACKENDS)})") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_options(**options)  # type: ignore[no-any-return]
