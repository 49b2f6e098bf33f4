"""The AWS console's page of an ECS task, from its handle id (``<cluster>::<task ARN>``): the link from a run to its
job. The region and cluster come from the id alone (no call); a malformed id has no page (None)."""

from __future__ import annotations

import re
from urllib.parse import quote

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d\Z")  # us-east-1, ap-southeast-2, us-gov-west-1: the host's first label


def console_url(job_id: str) -> str | None:
    """
    Example:
        >>> console_url("prefect::arn:aws:ecs:eu-west-1:123456789012:task/prefect/0a1b2c")
        'https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/prefect/tasks/0a1b2c/configuration?region=eu-west-1'
    """
    cluster, _, arn = job_id.partition("::")
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[5].startswith("task/"):
        return None
    region, path = parts[3], parts[5].split("/")
    task = path[-1]
    cluster = (path[1] if len(path) == 3 else cluster.rsplit("/", 1)[-1]) or "default"
    if not _REGION.match(region) or not task:
        return None  # a pid anyone with Prefect API access can write: never a host of its choosing
    return (
        f"https://{region}.console.aws.amazon.com/ecs/v2/clusters/{quote(cluster, safe='')}/tasks/"
        f"{quote(task, safe='')}/configuration?region={region}"
    )
