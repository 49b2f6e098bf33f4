"""The base job template of ``process:push`` pools: Prefect's ``process`` template plus what push needs."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from pushpool.providers.process.config import DISPATCH_LEAD_SECONDS
from pushpool.templates.common import push_variables


def base_job_template() -> dict[str, Any]:
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "working_dir": "{{ working_dir }}",
            "memory_limit_mb": "{{ memory_limit_mb }}",
            "max_run_time_seconds": "{{ max_run_time_seconds }}",
        },
        "variables": {
            "type": "object",
            "properties": {
                "name": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "default": None,
                    "title": "Name",
                    "description": "Name given to the job (defaults to the flow run's name).",
                },
                "env": {
                    "type": "object",
                    "title": "Environment Variables",
                    "description": "Environment variables to set when starting a flow run.",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "labels": {
                    "type": "object",
                    "title": "Labels",
                    "description": "Labels recorded with the job.",
                    "additionalProperties": {"type": "string"},
                },
                "command": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "default": None,
                    "title": "Command",
                    "description": "The command that starts the flow run; leave blank for `prefect flow-run execute`.",
                },
                "working_dir": {
                    "anyOf": [{"type": "string", "format": "path"}, {"type": "null"}],
                    "default": None,
                    "title": "Working Directory",
                    "description": "Directory the flow run process starts in; by default the job's own directory.",
                },
                "memory_limit_mb": {
                    "anyOf": [{"type": "integer", "minimum": 16}, {"type": "null"}],
                    "default": None,
                    "title": "Memory Limit (MiB)",
                    "description": "The job (all its processes) is stopped, and the run crashed, when it uses more "
                    "memory than this; no limit by default.",
                },
                **push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS),
            },
        },
    }


def managed_variables(*, bootstrap: str, env: dict[str, Any], image: str, memory_mb: int) -> dict[str, Any]:
    """Job variables for a managed run on this machine: the bootstrap run by this interpreter, with its directory
    first on PATH (``prefect`` comes from the same environment), and the tier's memory as the job's limit. There is no
    image on this backend: ``image`` is not used."""
    bindir = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in (bindir, os.environ.get("PATH", "")) if p)
    return {
        "command": shlex.join([sys.executable, "-c", bootstrap]),
        "env": {**env, "PATH": path},
        "memory_limit_mb": memory_mb,
    }
