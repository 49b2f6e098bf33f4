"""The Azure portal's page of a container group, from its handle id (the group's resource id): the link from a run
to its job. No call; an id that is not a container group's has no page (None)."""

from __future__ import annotations

import re

_GROUP = re.compile(
    r"^/subscriptions/[\w-]+/resourceGroups/[\w.()-]+/providers/Microsoft\.ContainerInstance/containerGroups/[\w.-]+$",
    re.IGNORECASE,
)


def console_url(job_id: str) -> str | None:
    """
    Example:
        >>> console_url("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g")
        'https://portal.azure.com/#resource/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g/overview'
    """
    if not _GROUP.match(job_id):
        return None
    return f"https://portal.azure.com/#resource{job_id}/overview"
