"""The base job template of ``ecs:push`` pools: Prefect's ``ecs`` worker template (so existing deployments' job
variables keep working) plus ``max_run_time_seconds`` and the Prefect credential by Secrets Manager reference."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any


def base_job_template() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "ecs_push.json").read_text())  # type: ignore[no-any-return]


# Fargate's CPU for a task of this much memory (MiB): the smallest size that allows it.
_FARGATE_CPU = ((2048, 256), (4096, 512), (8192, 1024), (16384, 2048), (30720, 4096))


def managed_variables(*, bootstrap: str, env: dict[str, Any], image: str, memory_mb: int) -> dict[str, Any]:
    """Job variables for a managed run on ECS: the operator's image, the tier's memory as the task size (ECS stops a
    task that exceeds it: ``OutOfMemoryError``), and the bootstrap as the container's command."""
    cpu = next((c for limit, c in _FARGATE_CPU if memory_mb <= limit), 4096)
    return {
        "image": image,
        "memory": memory_mb,
        "cpu": cpu,
        "command": shlex.join(["python", "-c", bootstrap]),
        "env": env,
    }
