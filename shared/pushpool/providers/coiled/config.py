"""The typed job configuration of ``coiled:push`` pools: the job variables of prefect-coiled's worker, plus push's own.

Where a job goes is its Coiled ``workspace`` (else ``DASK_COILED__WORKSPACE``, else the token's own account), so the
monitor looks for a job whose ``infrastructure_pid`` was never written in the run's own workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from pushpool.providers.base import JobConfig

DEFAULT_IMAGE = "prefecthq/prefect:3-latest"
DISPATCH_LEAD_SECONDS = 120.0  # a Coiled VM boots in about two minutes


class CoiledJobConfig(JobConfig):
    credential_fields = ("credentials",)  # the pool's only: job variables may not change it

    credentials: dict[str, Any] | None = Field(default=None, repr=False, description="coiled-credentials block")
    workspace: str | None = Field(default=None, description="Coiled workspace")
    software: str | None = Field(default=None, description="Coiled software environment (instead of an image)")
    image: str | None = Field(default=None, description="container image (Prefect's official image by default)")
    region: str | None = Field(default=None, description="cloud region")
    vm_types: tuple[str, ...] = Field(default=(), description="VM types the job may run on")
    arm: bool | None = Field(default=None, description="ARM VMs")
    cpu: int | None = Field(default=None, description="CPU cores (resolved to VM types by Coiled's SDK)")
    memory: str | None = Field(default=None, description="memory, e.g. '16 GiB' (resolved to VM types by the SDK)")
    gpu: bool | None = Field(default=None, description="a GPU VM")
    additional_coiled_options: dict[str, Any] = Field(default_factory=dict, description="extra cluster fields")

    @field_validator("vm_types", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if value in (None, ""):
            return ()
        return (value,) if isinstance(value, str) else value

    @field_validator("additional_coiled_options", mode="before")
    @classmethod
    def _dict(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("workspace", "software", "image", "region", "memory", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        return None if value == "" else value

    def api_token(self) -> str | None:
        """The block's ``api_token``, or None (then ``DASK_COILED__TOKEN``).

        Raises:
            ValueError: a block without a usable token (named, never showing it).
        """
        block = self.credentials
        if not block:
            return None
        token = block.get("api_token") if isinstance(block, Mapping) else None
        if isinstance(token, Mapping):
            token = token.get("value")
        if not token or not isinstance(token, str) or any(c.isspace() for c in token):
            raise ValueError("the coiled-credentials block has no usable api_token")
        return token
