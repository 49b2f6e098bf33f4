"""The duplicate storm every provider's reliability scenario drives: each run's webhook delivered several times, in a
shuffled order, by several threads at once, while a monitor loop ticks the same pool — what Prefect's automations
(at-least-once) and the monitor's sweep do to pushpool at their worst. The scenarios count what reached the cloud."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit

from tests.helpers import pool_tick

HEADERS = {"Authorization": "Bearer test-token"}


def shuffled(runs: list[str], times: int, *, seed: int) -> list[str]:
    """Each of ``runs`` ``times`` times, in an order shuffled with ``seed`` (the same order on every machine)."""
    deliveries = [r for r in runs for _ in range(times)]
    random.Random(seed).shuffle(deliveries)
    return deliveries


def storm(deps: Any, pool: str, deliveries: list[str], *, senders: int = 8) -> list[Any]:
    """Deliver the webhook of each run id in ``deliveries``, ``senders`` at a time, while a monitor loop ticks
    ``pool`` throughout; the answers, in the order of the deliveries."""
    auth = WebhookAuth(deps.settings.webhook_tokens)
    stop = threading.Event()

    def monitor_loop() -> None:
        while not stop.is_set():
            pool_tick(deps, pool)

    def deliver(run_id: str) -> Any:
        return handle_submit(deps, auth, HEADERS, json.dumps({"flow_run_id": run_id}).encode(), trigger="storm")

    monitor = threading.Thread(target=monitor_loop)
    monitor.start()
    try:
        with ThreadPoolExecutor(max_workers=senders) as executor:
            return list(executor.map(deliver, deliveries))
    finally:
        stop.set()
        monitor.join()
