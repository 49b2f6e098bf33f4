"""The base job templates of ``cloud-run-v2:push`` and ``cloud-run:push`` pools: the variables of Prefect's
``cloud-run-v2`` and ``cloud-run`` workers (so existing deployments' job variables keep working), a job body in the
Cloud Run Admin API v2 shape for both (pushpool speaks v2 only), plus ``project``, ``max_run_time_seconds`` (the task
timeout follows it unless ``timeout`` is set) and ``dispatch_lead_seconds``. The Prefect credential goes by Secret
Manager reference (``prefect_api_key_secret`` / ``prefect_api_auth_string_secret``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pushpool.templates.common import push_variables

DISPATCH_LEAD_SECONDS = 15.0  # a Cloud Run job execution takes ~10-20 s from RunJob to a running container


def _load(file: str) -> dict[str, Any]:
    template = json.loads((Path(__file__).parent / file).read_text())
    template["variables"]["properties"].update(push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS))
    return template  # type: ignore[no-any-return]


def cloud_run_v2_template() -> dict[str, Any]:
    return _load("cloud_run_v2_push.json")


def cloud_run_template() -> dict[str, Any]:
    return _load("cloud_run_push.json")
