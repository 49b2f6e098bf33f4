"""The base job template of ``process:push`` pools: Prefect's ``process`` template plus what push needs."""

from __future__ import annotations

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
                **push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS),
            },
        },
    }
