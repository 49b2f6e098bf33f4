"""Variables every pushpool template adds to Prefect's hybrid templates."""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_RUN_TIME_SECONDS = 24 * 60 * 60


def push_variables() -> dict[str, Any]:
    return {
        "max_run_time_seconds": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_MAX_RUN_TIME_SECONDS,
            "title": "Maximum Run Time (seconds)",
            "description": "pushpool stops the job and marks the run Crashed when it has run this long "
            "(24 hours by default).",
        },
    }
