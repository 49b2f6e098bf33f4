"""The Coiled differential test needs Prefect's Coiled worker (prefect-coiled and the coiled SDK), which lives in its
own environment (``.venv-compat-coiled``). ``make compat-coiled`` builds it and names its interpreter in
``PUSHPOOL_COILED_WORKER_PYTHON``; without it (``make test``) this folder is not collected."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("PUSHPOOL_COILED_WORKER_PYTHON") else ["test_*.py"]
