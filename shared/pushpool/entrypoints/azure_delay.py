"""``StorageQueueTrigger``: delayed delivery on Azure (the ``punctual.DelayedTrigger`` of functions/azure).

Arming puts one message ``{"flow_run_id", "at"}`` on the delay queue (``PUSHPOOL_DELAY_QUEUE_URL``, an Azure Storage
queue) with a visibility timeout of the delay (at most 7 days, Storage's limit): the message stays invisible until
then, and the ``delayed`` function (a queue trigger, functions/azure/function_app.py) receives it when it shows,
re-reads the run and acts only if it is still Scheduled and due (``http.handle_delayed_run``). pushpool itself
neither waits nor polls: the Functions host's queue listener reads the queue (``host.json`` bounds its back-off).

Messages are sent base64-encoded, as the Functions queue trigger expects by default, with the function app's managed
identity (``DefaultAzureCredential``; role "Storage Queue Data Message Sender" on this queue only, infra/azure).
Storage queues do not deduplicate: arming the same run twice may deliver twice, which submit absorbs (idempotent).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pushpool.errors import BackendError, ConfigurationError, translating
from pushpool.providers.aci.azure import translate_azure_error

MAX_VISIBILITY_SECONDS = 7 * 24 * 3600  # Azure Storage's longest visibility timeout
EXPIRY_AFTER_SECONDS = 24 * 3600  # an unread message expires a day after its time (the monitor covered the run)


class StorageQueueTrigger:
    max_delay_seconds: float | None = float(MAX_VISIBILITY_SECONDS)
    early_seconds = 1.0  # visibility timeouts are whole seconds, rounded down: submit waits out the rest

    def __init__(
        self,
        queue_url: str,
        *,
        credential: Any = None,
        client: Any = None,
        client_options: dict[str, Any] | None = None,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """
        Raises:
            ConfigurationError: ``queue_url`` is not an http(s) queue URL (``https://<account>.queue.core.windows.net/
                <queue>``).
        """
        head, _, queue = (queue_url or "").rstrip("/").rpartition("/")
        if not queue_url.startswith(("https://", "http://")) or "://" not in head or not queue:
            raise ConfigurationError(
                f"PUSHPOOL_DELAY_QUEUE_URL must be the Storage queue's URL (https://<account>.queue.core.windows.net/"
                f"<queue>), not {queue_url!r}"
            )
        self.queue_url = queue_url.rstrip("/")
        self._credential, self._client, self._options = credential, client, dict(client_options or {})
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def client(self) -> Any:
        if self._client is None:
            from azure.storage.queue import QueueClient, TextBase64EncodePolicy

            with queue_errors():
                credential = self._credential
                if credential is None:
                    from azure.identity import DefaultAzureCredential

                    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
                self._client = QueueClient.from_queue_url(
                    self.queue_url,
                    credential=credential,
                    message_encode_policy=TextBase64EncodePolicy(),  # what the Functions queue trigger decodes
                    **self._options,
                )
        return self._client

    def arm(self, run_id: str, at: dt.datetime) -> None:
        """Put the run's message, invisible until ``at`` rounded *down* to the second (at most 7 days): it shows up to
        a second early and submit waits out the rest (``http.handle_delayed_run``), instead of up to a second late."""
        self._put({"flow_run_id": run_id, "at": at.isoformat()}, at)  # read back as http.FlowRunEvent

    def arm_pool(self, pool_name: str, at: dt.datetime) -> None:
        """Put one message that sweeps ``pool_name`` at ``at`` (``punctual.arm_pool``)."""
        self._put({"work_pool": pool_name, "at": at.isoformat()}, at)  # read back as http.PoolSweep

    def _put(self, message: dict[str, str], at: dt.datetime) -> None:
        delay = max(0, min(MAX_VISIBILITY_SECONDS, math.floor((at - self._now()).total_seconds())))
        body = json.dumps(message)
        with queue_errors():
            self.client.send_message(body, visibility_timeout=delay, time_to_live=delay + EXPIRY_AFTER_SECONDS)


def queue_errors() -> AbstractContextManager[None]:
    """The Storage boundary: azure-core's exceptions leave as pushpool errors (as the ACI provider translates them),
    named by Storage's error code (``QueueNotFound``, ``AuthorizationPermissionMismatch`` …), never by message text."""
    return translating(_translate_queue_error)


def _translate_queue_error(exc: Exception) -> BackendError | None:
    translated = translate_azure_error(exc)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # a StorageErrorCode: its wire name (ServerBusy), not the enum's repr
    if translated is None or not code:
        return translated
    return type(translated)(f"Storage queue: {code}: {translated.message}", backend=translated.backend)
