"""The base job template of ``azure-container-instance:push`` pools: Prefect's ACI worker template (so existing
deployments' job variables keep working, a customised ``arm_template`` included) plus ``location``,
``max_run_time_seconds`` and ``dispatch_lead_seconds``. The Prefect credential is not a variable: pushpool sends it
as a ``secureValue`` environment variable of the container, which ARM never returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pushpool.templates.common import push_variables

DISPATCH_LEAD_SECONDS = 30.0  # a container group takes ~30-90 s from PUT to a running flow (image pull)


def base_job_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads((Path(__file__).parent / "aci_push.json").read_text())
    template["variables"]["properties"].update(push_variables(dispatch_lead_seconds=DISPATCH_LEAD_SECONDS))
    return template
