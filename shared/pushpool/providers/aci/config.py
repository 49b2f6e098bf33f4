"""The typed job configuration of ``azure-container-instance:push`` pools: the fields of Prefect's ACI worker
template, plus push's own.

Where a job goes (subscription, resource group) is read from here, both by submit and by the monitor's look-up of a
job whose ``infrastructure_pid`` was never written — so a deployment that overrides ``resource_group_name`` is
searched in its own resource group.

``allowed_identities`` is the pool operator's list of the user-assigned identities its jobs may have: a literal of the
base job template's ``job_configuration`` (not a variable; job_spec refuses a placeholder there), written by
``pushpool work-pool create --allowed-identity`` and by the provisioner (the pool's own identity). Empty: no job may
have an identity.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pushpool.errors import InvalidRequestError
from pushpool.providers.base import JobConfig

# Azure's rule for resource group names: 1-90 characters, letters, digits, underscores, hyphens, periods and
# parentheses, not ending in a period.
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]\Z")
_SUBSCRIPTION = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
# A user-assigned identity's ARM id, exactly (ASCII only: no look-alike letters, no spaces, no trailing "/").
_IDENTITY = re.compile(
    r"^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourcegroups/[-\w.()]{0,89}[-\w()]"
    r"/providers/microsoft\.managedidentity/userassignedidentities/[a-z0-9][-\w]{2,127}$",
    re.IGNORECASE | re.ASCII,
)


def identity_key(identity: Any) -> str | None:
    """A user-assigned identity's ARM id in the one form pushpool compares (ARM ids are case-insensitive: lower case),
    or None when ``identity`` is not such an id.

    Example:
        >>> identity_key("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG/providers/"
        ...              "Microsoft.ManagedIdentity/userAssignedIdentities/Jobs")
        '/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/jobs'
        >>> identity_key("/subscriptions/x/../jobs") is None
        True
    """
    if not isinstance(identity, str) or not _IDENTITY.match(identity):
        return None
    return identity.lower()


def operator_settings(*, allowed_identities: list[str]) -> dict[str, Any]:
    """The operator's settings of an ACI pool (``work-pool create --allowed-identity``), as literals of its job
    configuration: the identities its jobs may use, each checked to be a user-assigned identity's ARM id.

    Raises:
        InvalidRequestError: a malformed id (nothing is changed).
    """
    for identity in allowed_identities:
        if identity_key(identity) is None:
            raise InvalidRequestError(
                f"--allowed-identity {identity!r} is not a user-assigned identity's resource id (/subscriptions/<id>/"
                "resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>); nothing "
                "was changed"
            )
    return {"allowed_identities": list(dict.fromkeys(allowed_identities))}


class AciJobConfig(JobConfig):
    credential_fields = ("aci_credentials",)  # the pool's only: job variables may not change it
    operator_fields: ClassVar[frozenset[str]] = frozenset({"allowed_identities"})

    image: str | None = Field(default=None, description="the container image (Prefect's image by default)")
    resource_group_name: str = Field(description="the resource group the container groups are created in")
    subscription_id: str = Field(repr=False, description="the Azure subscription")
    identities: list[str] | None = Field(default=None, description="user-assigned identities (ARM resource ids)")
    entrypoint: str | None = Field(default="/opt/prefect/entrypoint.sh", description="prepended to the command")
    image_registry: dict[str, Any] | None = Field(
        default=None, repr=False, description="ACRManagedIdentity {registry_url, identity} or docker credentials"
    )
    cpu: float = Field(default=1.0, gt=0, description="vCPUs of the container")
    gpu_count: int | None = Field(default=None, ge=1, description="GPUs of the container")
    gpu_sku: str | None = Field(default=None, description="the GPU SKU")
    memory: float = Field(default=1.0, gt=0, description="memory of the container in GB")
    subnet_ids: list[str] | None = Field(default=None, description="subnets the group joins")
    dns_servers: list[str] | None = Field(default=None, description="DNS servers of the group")
    stream_output: bool = Field(default=False, description="accepted for compatibility (no worker to stream to)")
    aci_credentials: dict[str, Any] | None = Field(
        default=None, repr=False, description="azure-container-instance-credentials block data"
    )
    task_start_timeout_seconds: int = Field(default=240, description="accepted for compatibility")
    task_watch_poll_interval: float = Field(default=5.0, description="accepted for compatibility")
    arm_template: dict[str, Any] = Field(default_factory=dict, description="ARM template with one container group")
    keep_container_group: bool = Field(default=False, description="keep the finished group (no cleanup)")
    location: str | None = Field(default=None, description="Azure region (default: the resource group's)")
    allowed_identities: list[str] = Field(
        default_factory=list, description="the operator's: the only user-assigned identities a group may have"
    )

    @field_validator("allowed_identities", mode="before")
    @classmethod
    def _allowed(cls, value: Any) -> Any:
        if value is None or value == "":
            return []
        if isinstance(value, list):
            for i, identity in enumerate(value):
                if identity_key(identity) is None:
                    raise ValueError(
                        f"entry {i} is not a user-assigned identity's resource id (/subscriptions/<subscription id>/"
                        "resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>)"
                    )
        return value

    @field_validator("resource_group_name")
    @classmethod
    def _resource_group(cls, value: str) -> str:
        if not _RESOURCE_GROUP.match(value or ""):
            raise ValueError(
                f"{value!r} is not a valid Azure resource group name (1-90 letters, digits, '_', '-', '.', '(' or ')'"
                ", not ending in '.')"
            )
        return value

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        if not _SUBSCRIPTION.match(value or ""):
            raise ValueError("subscription_id is not an Azure subscription id (a GUID)")
        return value

    @field_validator(
        "arm_template", "stream_output", "keep_container_group", "cpu", "memory", "entrypoint", mode="before"
    )
    @classmethod
    def _unset_is_default(cls, value: Any, info: Any) -> Any:
        if value is None or value == "":
            defaults = {
                "arm_template": {},
                "stream_output": False,
                "keep_container_group": False,
                "cpu": 1.0,
                "memory": 1.0,
                "entrypoint": None,
            }
            return defaults[info.field_name]
        return value

    @field_validator("task_start_timeout_seconds", "task_watch_poll_interval", mode="before")
    @classmethod
    def _compat_defaults(cls, value: Any, info: Any) -> Any:
        if value is None or value == "":
            return 240 if info.field_name == "task_start_timeout_seconds" else 5.0
        return value
