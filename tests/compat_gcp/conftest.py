"""The Cloud Run differential test needs Prefect's cloud-run-v2 worker, which lives in its own environment
(``.venv-compat-gcp``: prefect-gcp and its pins). ``make compat-gcp`` builds it and names its interpreter in
``PUSHPOOL_GCP_WORKER_PYTHON``; without it (``make test``) this folder is not collected."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("PUSHPOOL_GCP_WORKER_PYTHON") else ["test_*.py"]
