"""The base job template of ``modal:push`` pools (Prefect publishes none): what a Modal user sets on a Sandbox."""

from __future__ import annotations

from typing import Any

from pushpool.providers.modal.config import DEFAULT_IMAGE, DISPATCH_LEAD_SECONDS, MAX_SANDBOX_SECONDS
from pushpool.templates.common import push_variables

_FIELDS = (
    "command", "env", "labels", "name", "image", "pip_packages", "cpu", "memory", "gpu", "region", "secrets",
    "app_name", "modal_credentials", "max_run_time_seconds",
)  # fmt: skip


def _optional(kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"anyOf": [{"type": kind, **extra}, {"type": "null"}], "default": None, "title": title,
            "description": description}  # fmt: skip


def base_job_template() -> dict[str, Any]:
    push = push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS)
    push["max_run_time_seconds"] = {**push["max_run_time_seconds"], "maximum": MAX_SANDBOX_SECONDS,
                                    "description": "The sandbox's timeout, enforced by Modal and by pushpool "
                                    "(24 hours by default, Modal's longest)."}  # fmt: skip
    return {
        "job_configuration": {field: "{{ " + field + " }}" for field in _FIELDS},
        "variables": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "string",
                    "default": DEFAULT_IMAGE,
                    "title": "Image",
                    "description": "Container image the sandbox runs (Prefect's official image by default); "
                    "it must have `prefect` on its PATH.",
                },
                "pip_packages": {
                    "type": "array",
                    "items": {"type": "string"},
                    "title": "Pip Packages",
                    "description": "Packages pip installs on top of the image (Modal caches the layer).",
                },
                "cpu": _optional(
                    "number", "CPU", "CPU cores requested (Modal's default when unset).", exclusiveMinimum=0
                ),
                "memory": _optional(
                    "integer", "Memory (MiB)", "Memory requested in MiB (Modal's default when unset).", minimum=1
                ),
                "gpu": _optional("string", "GPU", "GPU type, e.g. T4, A10G, A100-80GB, H100:2 (none by default)."),
                "region": _optional("string", "Region", "Region the sandbox runs in, e.g. us-east (any by default)."),
                "env": {
                    "type": "object",
                    "title": "Environment Variables",
                    "description": "Environment variables of the flow run.",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "secrets": {
                    "type": "array",
                    "items": {"type": "string"},
                    "title": "Modal Secrets",
                    "description": "Names of Modal secrets whose keys become environment variables.",
                },
                "app_name": _optional(
                    "string", "App Name", "The Modal app the sandboxes belong to (pushpool-<pool> by default)."
                ),
                "name": _optional("string", "Name", "Name recorded with the job (the flow run's name by default)."),
                "labels": {
                    "type": "object",
                    "title": "Labels",
                    "additionalProperties": {"type": "string"},
                    "description": "Labels recorded with the job.",
                },
                "command": _optional(
                    "string", "Command", "The command that starts the flow run; blank for `prefect flow-run execute`."
                ),
                "modal_credentials": {
                    "allOf": [{"$ref": "#/definitions/ModalCredentials"}],
                    "title": "Modal Credentials",
                    "description": "A modal-credentials block (token_id, token_secret); when "
                    "unset, pushpool's own Modal configuration is used.",
                },
                **push,
            },
            "definitions": {
                "ModalCredentials": {
                    "title": "ModalCredentials",
                    "type": "object",
                    "block_type_slug": "modal-credentials",
                    "block_schema_references": {},
                    "properties": {
                        "token_id": {"type": "string", "title": "Token ID"},
                        "token_secret": {
                            "type": "string",
                            "format": "password",
                            "writeOnly": True,
                            "title": "Token Secret",
                        },
                    },
                    "required": ["token_id", "token_secret"],
                    "secret_fields": ["token_secret"],
                },
            },
        },
    }
