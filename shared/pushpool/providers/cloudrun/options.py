"""Cloud Run's own settings and its backend's options: the Cloud Run Admin API and Cloud Logging endpoints
(``PUSHPOOL_CLOUD_RUN_ENDPOINT``, ``PUSHPOOL_CLOUD_LOGGING_ENDPOINT``; Google's own by default — tests point them at
local emulators), and the image platform check every provider that pulls images shares.

Example:
    >>> CloudRunSettings.model_validate({"PUSHPOOL_CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8080/"}).endpoint
    'http://127.0.0.1:8080'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushpool.settings import Settings, http_url


class CloudRunSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    endpoint: str | None = Field(default=None, alias="PUSHPOOL_CLOUD_RUN_ENDPOINT")
    logging_endpoint: str | None = Field(default=None, alias="PUSHPOOL_CLOUD_LOGGING_ENDPOINT")

    @field_validator("endpoint", "logging_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return http_url(url, "https://run.googleapis.com")


def backend_options(settings: Settings) -> dict[str, Any]:
    from pushpool.providers import provider_named

    own: CloudRunSettings = provider_named("cloudrun").own_settings(settings)
    found: dict[str, Any] = {"check_image_platform": settings.image_platform_check}
    if own.endpoint is not None:
        found["endpoint"] = own.endpoint
    if own.logging_endpoint is not None:
        found["logging_endpoint"] = own.logging_endpoint
    return found
