"""The differential tests need Prefect's ECS worker, which lives in its own environment (``.venv-bench``, the
``bench`` extra: prefect-aws pins an older boto3). ``make compat`` builds it and names its interpreter in
``PUSHPOOL_WORKER_PYTHON``; without it (``make test``) this folder is not collected."""

from __future__ import annotations

import os

collect_ignore_glob = ([] if os.environ.get("PUSHPOOL_WORKER_PYTHON") else ["test_ecs_*.py"]) + (
    [] if os.environ.get("PUSHPOOL_AZURE_WORKER_PYTHON") else ["test_aci_*.py"]
)
