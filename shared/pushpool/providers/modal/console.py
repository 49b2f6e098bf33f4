"""Modal's dashboard page of a sandbox, from its handle id (the sandbox's object id, ``sb-…``): the link from a run to
its job. ``https://modal.com/id/<object id>`` is the address Modal's own SDK gives for an object's dashboard page
(``_Object.get_dashboard_url``). No call; another id has no page (None)."""

from __future__ import annotations

import re

_OBJECT_ID = re.compile(r"^(sb|ap)-[A-Za-z0-9]+\Z")


def console_url(job_id: str) -> str | None:
    """
    Example:
        >>> console_url("sb-AbC123")
        'https://modal.com/id/sb-AbC123'
    """
    return f"https://modal.com/id/{job_id}" if _OBJECT_ID.match(job_id) else None
