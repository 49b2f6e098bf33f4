"""The ECS backend's options from pushpool's settings: whether an image's platforms are read from its registry before
its task is started (``PUSHPOOL_IMAGE_PLATFORM_CHECK``)."""

from __future__ import annotations

from typing import Any

from pushpool.settings import Settings


def backend_options(settings: Settings) -> dict[str, Any]:
    return {"check_image_platform": settings.image_platform_check}
