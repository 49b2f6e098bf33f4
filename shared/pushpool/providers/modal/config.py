"""The typed job configuration of ``modal:push`` pools.

Where a sandbox goes is its Modal app (``app_name``, default ``pushpool-<pool>``) in the workspace of the credentials
(``modal_credentials``, a ``modal-credentials`` block: ``token_id``, ``token_secret``), so the monitor looks for a job
whose ``infrastructure_pid`` was never written in the run's own app.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from pushpool.providers.base import JobConfig

DEFAULT_IMAGE = "prefecthq/prefect:3-latest"
MAX_SANDBOX_SECONDS = 24 * 60 * 60  # Modal's longest sandbox timeout
DISPATCH_LEAD_SECONDS = 10.0  # a sandbox on a cached image runs its command a few seconds after SandboxCreate


class ModalJobConfig(JobConfig):
    credential_fields = ("modal_credentials",)  # the pool's only: job variables may not change it

    modal_credentials: dict[str, Any] | None = Field(
        default=None, repr=False, description="modal-credentials block data: token_id, token_secret"
    )
    app_name: str | None = Field(default=None, description="the Modal app the sandboxes belong to")
    image: str = Field(default=DEFAULT_IMAGE, description="container image the sandbox runs (a registry reference)")
    pip_packages: tuple[str, ...] = Field(default=(), description="pip packages installed on top of the image")
    cpu: float | None = Field(default=None, gt=0, description="CPU cores requested")
    memory: int | None = Field(default=None, gt=0, description="memory requested, in MiB")
    gpu: str | None = Field(default=None, description="GPU type, e.g. 'T4', 'A10G', 'H100:2'")
    region: str | tuple[str, ...] | None = Field(default=None, description="region(s) the sandbox may run in")
    secrets: tuple[str, ...] = Field(default=(), description="names of Modal secrets injected as environment")
    max_run_time_seconds: int = Field(
        default=MAX_SANDBOX_SECONDS,
        ge=1,
        le=MAX_SANDBOX_SECONDS,
        description="the sandbox's own timeout (Modal's limit is 24 h) and the monitor's limit",
    )

    @field_validator("pip_packages", "secrets", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if value in (None, ""):
            return ()
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        return value

    @field_validator("image", mode="before")
    @classmethod
    def _default_image(cls, value: Any) -> Any:
        return DEFAULT_IMAGE if value in (None, "") else value

    @field_validator("cpu", "memory", "gpu", "region", "app_name", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        return None if value in ("", [], ()) else value

    def app_for(self, pool_name: str) -> str:
        """The app the pool's sandboxes go to: ``app_name``, else ``pushpool-<pool>``."""
        return self.app_name or f"pushpool-{re.sub(r'[^A-Za-z0-9._-]+', '-', pool_name)}"[:64]

    def token(self) -> tuple[str, str] | None:
        """The block's token id and secret, or None (then the SDK's own configuration is used).

        Raises:
            ValueError: the block is incomplete (named, never showing the secret).
        """
        block = self.modal_credentials
        if not block:
            return None
        if not isinstance(block, Mapping):
            raise ValueError("modal_credentials must be a modal-credentials block")
        token_id, token_secret = block.get("token_id"), block.get("token_secret")
        if isinstance(token_secret, Mapping):  # a SecretStr as Prefect may render it
            token_secret = token_secret.get("value")
        if not token_id or not token_secret:
            raise ValueError("the modal-credentials block needs both token_id and token_secret")
        if not str(token_id).startswith("ak-") or not str(token_secret).startswith("as-"):
            raise ValueError("the modal-credentials block holds a malformed token (token_id ak-…, token_secret as-…)")
        return str(token_id), str(token_secret)
