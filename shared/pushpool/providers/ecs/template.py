"""The base job template of ``ecs:push`` pools: Prefect's ``ecs`` worker template (so existing deployments' job
variables keep working) plus ``max_run_time_seconds`` and the Prefect credential by Secrets Manager reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def base_job_template() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "ecs_push.json").read_text())  # type: ignore[no-any-return]
