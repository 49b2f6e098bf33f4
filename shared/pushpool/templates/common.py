"""Variables every pushpool template adds to Prefect's hybrid templates."""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_RUN_TIME_SECONDS = 24 * 60 * 60


def push_variables(*, dispatch_lead_seconds: float | None = None) -> dict[str, Any]:
    """``max_run_time_seconds``, and ``dispatch_lead_seconds`` with the provider's default when one is given."""
    found: dict[str, Any] = {
        "max_run_time_seconds": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_MAX_RUN_TIME_SECONDS,
            "title": "Maximum Run Time (seconds)",
            "description": "pushpool stops the job and marks the run Crashed when it has run this long "
            "(24 hours by default).",
        },
    }
    if dispatch_lead_seconds is not None:
        found["dispatch_lead_seconds"] = {
            "type": "number",
            "minimum": 0,
            "default": dispatch_lead_seconds,
            "title": "Dispatch Lead (seconds)",
            "description": "pushpool starts a scheduled run's job this long before its scheduled time, so that the "
            "flow starts on time (read from the pool; a deployment's value is not used).",
        }
    return found
