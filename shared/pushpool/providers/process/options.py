"""The process backend's options from pushpool's settings: where jobs live (``PUSHPOOL_PROCESS_DIR``, else
``<PUSHPOOL_HOME>/jobs``) and which of serve's environment variables jobs also get
(``PUSHPOOL_JOB_ENV_PASSTHROUGH``)."""

from __future__ import annotations

from typing import Any

from pushpool.settings import Settings


def backend_options(settings: Settings) -> dict[str, Any]:
    return {"root": settings.process_dir or settings.home / "jobs", "env_passthrough": settings.job_env_passthrough}
