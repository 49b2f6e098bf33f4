"""The seventh provider's base job template: the common variables plus ``machine``."""

from __future__ import annotations

from typing import Any

from pushpool.templates.common import push_variables


def base_job_template() -> dict[str, Any]:
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "machine": "{{ machine }}",
            "max_run_time_seconds": "{{ max_run_time_seconds }}",
        },
        "variables": {
            "type": "object",
            "properties": {
                "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "env": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "command": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "machine": {"type": "string", "default": "small", "enum": ["small", "large"]},
                **push_variables(dispatch_lead_seconds=1.0),
            },
        },
    }
