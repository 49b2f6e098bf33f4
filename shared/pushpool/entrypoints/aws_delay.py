"""``SqsTrigger``: delayed delivery on AWS (the ``punctual.DelayedTrigger`` of the Lambda functions).

Arming sends one message ``{"flow_run_id", "at"}`` (or ``{"work_pool", "at"}``: sweep the pool, for a burst of runs
due at once) to the delay queue (``PUSHPOOL_DELAY_QUEUE_URL``) with
``DelaySeconds`` up to SQS's 900 s; the queue invokes submit (``functions/submit/app.py``, SQS records), which
re-reads the run and acts only if it is still Scheduled and due. A run further ahead is armed later by the monitor's
look-ahead. Nothing waits or polls on pushpool's side (Lambda's event source mapping reads the queue).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

from pushpool.providers.ecs.aws import aws_errors

SQS_MAX_DELAY_SECONDS = 900


class SqsTrigger:
    max_delay_seconds: float | None = float(SQS_MAX_DELAY_SECONDS)
    early_seconds = 1.0  # delays are whole seconds, rounded down: submit waits out the rest (http.handle_delayed_run)

    def __init__(self, queue_url: str, *, client: Any = None, now: Callable[[], dt.datetime] | None = None) -> None:
        self.queue_url = queue_url
        self._client = client
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            with aws_errors():
                self._client = boto3.client("sqs")
        return self._client

    def arm(self, run_id: str, at: dt.datetime) -> None:
        """Send the run's message, delayed until ``at`` rounded *down* to the second (at most 900 s): it arrives up to
        a second early and submit waits out the rest (``http.handle_delayed_run``), instead of up to a second late."""
        self._send({"flow_run_id": run_id, "at": at.isoformat()}, at)  # read back as http.FlowRunEvent

    def arm_pool(self, pool_name: str, at: dt.datetime) -> None:
        """Send one message that sweeps ``pool_name`` at ``at`` (``punctual.arm_pool``)."""
        self._send({"work_pool": pool_name, "at": at.isoformat()}, at)  # read back as http.PoolSweep

    def _send(self, message: dict[str, str], at: dt.datetime) -> None:
        delay = math.floor((at - self._now()).total_seconds())
        with aws_errors():
            self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(message),
                DelaySeconds=max(0, min(SQS_MAX_DELAY_SECONDS, delay)),
            )
