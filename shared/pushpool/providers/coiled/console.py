"""Coiled's page of the cluster that runs a job, from its handle id (``<workspace>/<cluster id>/<job id>``): the link
from a run to its job, on the server pushpool talks to (``DASK_COILED__SERVER``, Coiled's cloud by default). No call;
a malformed id has no page (None)."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from pushpool.providers.coiled.api import DEFAULT_SERVER

_JOB = re.compile(r"^([^/]+)/([^/]+)/([^/]+)\Z")


def console_url(job_id: str) -> str | None:
    """
    Example:
        >>> console_url("team/4821/97")
        'https://cloud.coiled.io/clusters/4821/information?workspace=team'
    """
    found = _JOB.match(job_id)
    if found is None:
        return None
    server = (os.environ.get("DASK_COILED__SERVER") or DEFAULT_SERVER).rstrip("/")
    return f"{server}/clusters/{quote(found.group(2), safe='')}/information?workspace={quote(found.group(1), safe='')}"
