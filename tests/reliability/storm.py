"""The duplicate storm every provider's reliability scenario drives: each run's webhook delivered several times, in a
shuffled order, by several threads at once, while a monitor loop ticks the same pool — what Prefect's automations
(at-least-once) and the monitor's sweep do to pushpool at their worst. The scenarios count what reached the cloud."""

from __future__ import annotations

import json
import random
import threading
import time
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


def unsettled(deps: Any, pool: str, prefect: Any, runs: list[str]) -> dict[str, Any]:
    """After the monitor's ticks have dispatched again any run given back during the storm (as in production), the
    runs of ``runs`` a storm left wrong, with why: not Pending with a pid, or claimed more often than once per attempt
    the monitor gave back (a recovery: the submit outlasted the pending timeout, as it can on a loaded machine;
    the next claim keeps the attempt's key and finds its job, so a recovery never means a second job)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(prefect.read_run(r)["state_type"] == "SCHEDULED" for r in runs):
        pool_tick(deps, pool)
    wrong: dict[str, Any] = {}
    for run_id in runs:
        run = prefect.read_run(run_id)
        history = prefect.state_history(run_id)
        claims = sum(1 for s in history if (s["type"], s["name"]) == ("PENDING", "Pending"))
        recovered = [s for s in history if s["type"] == "SCHEDULED" and "Pending with no job" in (s["message"] or "")]
        recoveries = len(recovered)
        if run["state_type"] != "PENDING" or not run["infrastructure_pid"] or claims != 1 + recoveries:
            wrong[run_id] = (run["state_type"], run["infrastructure_pid"], claims, recoveries)
    return wrong


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
