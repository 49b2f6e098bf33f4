"""The Google Cloud console's page of a Cloud Run job execution, from its handle id (the execution's resource name,
``projects/<p>/locations/<l>/jobs/<job>/executions/<execution>``, maybe followed by ``#keep``): the link from a run
to its job. No call; a malformed id has no page (None)."""

from __future__ import annotations

import re
from urllib.parse import quote

_EXECUTION = re.compile(r"^projects/([^/]+)/locations/([^/]+)/jobs/[^/]+/executions/([^/#]+)(#keep)?\Z")


def console_url(job_id: str) -> str | None:
    """
    Example:
        >>> console_url("projects/p1/locations/europe-west1/jobs/run-1/executions/run-1-abc")
        'https://console.cloud.google.com/run/jobs/executions/details/europe-west1/run-1-abc/tasks?project=p1'
    """
    found = _EXECUTION.match(job_id)
    if found is None:
        return None
    project, location, execution = (quote(part, safe="") for part in found.groups()[:3])
    return (
        f"https://console.cloud.google.com/run/jobs/executions/details/{location}/{execution}/tasks?project={project}"
    )
