"""``CloudTasksTrigger``: delayed delivery on Google Cloud (the ``punctual.DelayedTrigger`` of functions/gcp/main.py).

Arming creates one Cloud Tasks HTTP task on the delay queue (``PUSHPOOL_TASKS_QUEUE``) whose ``schedule_time`` is the
run's dispatch time: at that time Cloud Tasks POSTs ``{"flow_run_id", "at"}`` to the ``delayed`` function
(``PUSHPOOL_TASKS_URL``), which re-reads the run and acts only if it is still Scheduled and due
(``http.handle_delayed_run``). Nothing waits or polls on pushpool's side.

The task authenticates with an OIDC token Cloud Tasks mints for ``PUSHPOOL_TASKS_SERVICE_ACCOUNT``, an identity whose
only role is ``roles/run.invoker`` on the ``delayed`` function (IAM-only, checked by Google before any code runs):
no pushpool secret is stored in a task, and submit's public webhook stays as it is.

The task's name is derived from the run id and the time, so arming the same run for the same time twice (its
Scheduled event and the monitor's look-ahead) is deduplicated by Cloud Tasks (ALREADY_EXISTS: fine), and a run
rescheduled to another time gets a task of its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from pushpool.errors import ConfigurationError
from pushpool.providers.cloudrun.gcp import google_errors

MAX_SCHEDULE_SECONDS = 30 * 24 * 3600  # Cloud Tasks refuses a schedule_time more than 30 days ahead
QUEUE = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z0-9-]+/queues/[A-Za-z0-9-]{1,100}\Z")


def task_id(run_id: str, at: dt.datetime) -> str:
    """The task id of ``run_id`` armed for ``at``: the run id, then the time in milliseconds since the epoch
    (letters, digits and hyphens; a random prefix, so tasks spread over Cloud Tasks' key space)."""
    return f"{run_id}-{round(at.timestamp() * 1000)}"


class CloudTasksTrigger:
    max_delay_seconds: float | None = float(MAX_SCHEDULE_SECONDS - 3600)  # an hour's margin for clock skew
    early_seconds = 0.0  # Cloud Tasks dispatches at or after schedule_time

    def __init__(
        self,
        queue: str,
        url: str,
        service_account: str,
        *,
        client: Any = None,
        endpoint: str | None = None,
        credentials: Any = None,
    ) -> None:
        """
        Raises:
            ConfigurationError: a queue that is not ``projects/<p>/locations/<l>/queues/<q>``, a target that is not an
                http(s) URL, or no service account.
        """
        if not QUEUE.match(queue or ""):
            raise ConfigurationError(
                f"PUSHPOOL_TASKS_QUEUE must be projects/<project>/locations/<region>/queues/<queue>, not {queue!r}"
            )
        if not re.match(r"^https?://[^/\s]+", url or ""):
            raise ConfigurationError(f"PUSHPOOL_TASKS_URL must be the delayed function's http(s) URL, not {url!r}")
        if "@" not in (service_account or ""):
            raise ConfigurationError("PUSHPOOL_TASKS_SERVICE_ACCOUNT must be the tasks' service account email")
        self.queue, self.url, self.service_account = queue, url, service_account
        self._client, self._endpoint, self._credentials = client, endpoint, credentials

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import tasks_v2

            options = ClientOptions(api_endpoint=self._endpoint) if self._endpoint else None
            with google_errors("Cloud Tasks"):  # REST, like the Cloud Run client: one transport tested and deployed
                self._client = tasks_v2.CloudTasksClient(
                    credentials=self._credentials, transport="rest", client_options=options
                )
        return self._client

    def task(self, run_id: str, at: dt.datetime, *, pool_name: str | None = None) -> dict[str, Any]:
        """The Task resource armed for ``run_id`` at ``at`` (or, with ``pool_name``, the pool's sweep at ``at``)."""
        from google.protobuf import timestamp_pb2

        when = timestamp_pb2.Timestamp()
        when.FromDatetime(at.astimezone(dt.timezone.utc))
        message = {"work_pool": pool_name} if pool_name else {"flow_run_id": run_id}
        body = json.dumps({**message, "at": at.isoformat()})  # read back as http.FlowRunEvent / http.PoolSweep
        return {
            "name": f"{self.queue}/tasks/{task_id(run_id, at)}",
            "schedule_time": when,
            "http_request": {
                "http_method": "POST",
                "url": self.url,
                "headers": {"Content-Type": "application/json"},
                "body": body.encode(),
                "oidc_token": {"service_account_email": self.service_account, "audience": self.url},
            },
        }

    def arm(self, run_id: str, at: dt.datetime) -> None:
        """Create the run's task for ``at`` (one call); a task of that name already there is the same arming."""
        self._create(self.task(run_id, at))

    def arm_pool(self, pool_name: str, at: dt.datetime) -> None:
        """Create one task that sweeps ``pool_name`` at ``at`` (``punctual.arm_pool``), named by the pool's digest
        and the time, so that arming the same burst again is refused as ALREADY_EXISTS."""
        digest = hashlib.sha256(pool_name.encode()).hexdigest()[:32]
        self._create(self.task(f"pool-{digest}", at, pool_name=pool_name))

    def _create(self, task: dict[str, Any]) -> None:
        from google.api_core import exceptions

        with google_errors("arming the delay queue (Cloud Tasks)"):
            try:
                self.client.create_task(parent=self.queue, task=task)
            except exceptions.Conflict as exc:  # over REST every 409 is a Conflict: ALREADY_EXISTS or ABORTED
                if not already_exists(exc):
                    raise


def already_exists(exc: Exception) -> bool:
    """Whether Google answered ALREADY_EXISTS (by its status code, never by message text)."""
    from google.api_core import exceptions

    if isinstance(exc, exceptions.AlreadyExists):
        return True
    response = getattr(exc, "response", None)
    try:
        status = response.json().get("error", {}).get("status") if response is not None else None
    except ValueError:
        return False
    return status == "ALREADY_EXISTS"
