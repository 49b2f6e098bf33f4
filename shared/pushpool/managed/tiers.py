"""The tiers of managed execution and the calendar month compute hours are counted in.

The defaults are the seed page's: free (1 concurrent run, 1 managed pool, 10 compute hours a month) and pro (10, 5,
250); both 2 GB of memory per run (dependency installation included) and 24 hours of run time. An operator changes a
tier, or adds one, with ``PUSHPOOL_MANAGED_TIERS`` (JSON: the fields given replace the default's) and picks the
workspace's with ``PUSHPOOL_MANAGED_TIER``.

Example:
    >>> tiers_from({"pro": {"compute_hours": 500}})["pro"].compute_hours
    500.0
    >>> month_window(dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.timezone.utc))[1].isoformat()
    '2027-01-01T00:00:00+00:00'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pushpool.errors import ConfigurationError


class Tier(BaseModel):
    """The limits of one tier, per workspace (concurrency and compute hours across all its managed pools)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    concurrent_runs: int = Field(ge=0, description="managed runs in flight at once, across the workspace's pools")
    pools: int = Field(ge=0, description="managed work pools the workspace may have")
    compute_hours: float = Field(ge=0, description="hours of managed runs (start to end) per calendar month, UTC")
    memory_mb: int = Field(default=2048, ge=64, description="memory per run, dependency installation included")
    max_run_time_seconds: int = Field(default=24 * 60 * 60, ge=1, description="a run is stopped after this long")


DEFAULT_TIERS: Mapping[str, Tier] = {
    "free": Tier(name="free", concurrent_runs=1, pools=1, compute_hours=10),
    "pro": Tier(name="pro", concurrent_runs=10, pools=5, compute_hours=250),
}


def tiers_from(overrides: Mapping[str, Any] | None) -> dict[str, Tier]:
    """The default tiers with ``overrides`` (tier name → the fields to change) applied; a new name adds a tier.

    Raises:
        ConfigurationError: a field that is unknown or out of range, named with its tier.
    """
    tiers = dict(DEFAULT_TIERS)
    for name, fields in (overrides or {}).items():
        if not isinstance(fields, Mapping):
            raise ConfigurationError(f"PUSHPOOL_MANAGED_TIERS: tier {name!r} must be an object of limits")
        base = tiers[name].model_dump() if name in tiers else {}
        try:
            tiers[name] = Tier.model_validate({**base, **fields, "name": name})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigurationError(f"PUSHPOOL_MANAGED_TIERS: tier {name!r}: {where}: {first['msg']}") from None
    return tiers


def month_window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The calendar month (UTC) that ``now`` falls in: [start, end)."""
    now = now.astimezone(dt.timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end
