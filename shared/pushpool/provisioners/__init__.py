"""Provisioners: the cloud resources a push pool needs, planned, applied idempotently, tagged and reversible.

One module per backend, loaded lazily by pool type (a provisioner imports its cloud SDK only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UnsupportedPoolError

PROVISIONERS = {"ecs:push": "pushpool.provisioners.ecs:EcsProvisioner"}


def provisioner_for(pool_type: str, **options: Any) -> Any:
    try:
        target = PROVISIONERS[pool_type]
    except KeyError:
        raise UnsupportedPoolError(f"no infrastructure provisioner for pool type {pool_type!r}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(**options)
