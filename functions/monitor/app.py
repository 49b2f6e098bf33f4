"""monitor: a scheduled function — dispatch due runs, reconcile in-flight runs with their jobs."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pushpool.deps import Deps
from pushpool.monitor import tick
from pushpool.settings import Settings


@lru_cache(maxsize=1)
def _deps() -> Deps:
    return Deps.from_settings(Settings.from_env())


def lambda_handler(event: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
    return tick(_deps()).as_dict()
