"""The base job template of ``coiled:push`` pools: prefect-coiled's worker variables (so its deployments' job variables
keep working) plus ``max_run_time_seconds`` and ``dispatch_lead_seconds``."""

from __future__ import annotations

from typing import Any

from pushpool.providers.coiled.config import DEFAULT_IMAGE, DISPATCH_LEAD_SECONDS
from pushpool.templates.common import push_variables

_FIELDS = (
    "command", "env", "labels", "name", "credentials", "workspace", "software", "image", "region", "vm_types", "arm",
    "cpu", "memory", "gpu", "additional_coiled_options", "max_run_time_seconds",
)  # fmt: skip


def _optional(kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"anyOf": [{"type": kind, **extra}, {"type": "null"}], "default": None, "title": title,
            "description": description}  # fmt: skip


def base_job_template() -> dict[str, Any]:
    return {
        "job_configuration": {field: "{{ " + field + " }}" for field in _FIELDS},
        "variables": {
            "type": "object",
            "properties": {
                "credentials": {
                    "allOf": [{"$ref": "#/definitions/CoiledCredentials"}],
                    "title": "Credentials",
                    "description": "A coiled-credentials block (api_token); when unset, "
                    "DASK_COILED__TOKEN of pushpool's environment.",
                },
                "workspace": _optional("string", "Workspace", "The Coiled workspace (your default when unset)."),
                "software": _optional(
                    "string", "Software Environment", "A Coiled software environment to run in instead of an image."
                ),
                "image": {
                    "type": "string",
                    "default": DEFAULT_IMAGE,
                    "title": "Image",
                    "description": "Container image of the job (it must have `prefect` on its PATH).",
                },
                "region": _optional("string", "Region", "The cloud region of the VM."),
                "vm_types": {
                    "type": "array",
                    "items": {"type": "string"},
                    "title": "VM Types",
                    "description": "VM types the job may run on, e.g. t3.medium.",
                },
                "arm": _optional("boolean", "ARM", "Use ARM VMs (give ARM vm_types)."),
                "cpu": _optional("integer", "CPU", "CPU cores of the VM (Coiled chooses VM types, as its SDK does)."),
                "memory": _optional("string", "Memory", "Memory of the VM, e.g. '16 GiB' (chooses VM types)."),
                "gpu": _optional("boolean", "GPU", "A VM with an NVIDIA GPU."),
                "additional_coiled_options": {
                    "type": "object",
                    "title": "Additional Coiled Options",
                    "description": "coiled.batch.run arguments: spot_policy, allow_cross_zone, disk_size, job_timeout, "
                    "max_retries, ignore_container_entrypoint, env, scheduler_vm_type.",
                },
                "env": {
                    "type": "object",
                    "title": "Environment Variables",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "labels": {
                    "type": "object",
                    "title": "Labels",
                    "additionalProperties": {"type": "string"},
                    "description": "Labels, recorded as cluster tags (prefect.io/ stripped).",
                },
                "name": _optional("string", "Name", "Name of the job (the flow run's name by default)."),
                "command": _optional(
                    "string", "Command", "The command that starts the flow run; blank for `prefect flow-run execute`."
                ),
                **push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS),
            },
            "definitions": {
                "CoiledCredentials": {
                    "title": "CoiledCredentials",
                    "type": "object",
                    "block_type_slug": "coiled-credentials",
                    "block_schema_references": {},
                    "secret_fields": ["api_token"],
                    "required": ["api_token"],
                    "properties": {
                        "api_token": {"type": "string", "format": "password", "writeOnly": True, "title": "API Token"}
                    },
                },
            },
        },
    }
