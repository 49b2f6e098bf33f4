"""Bulk claims on a real Prefect 3.8.8 server (issue 25, item 4): a monitor tick claims a pool's due runs with
``bulk_set_state``; the same tick on a client that treats the server as 3.6.15 claims them one ``set_state`` each.
Both hold the pool's limit when another claimer takes slots between the listing and the claims."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import httpx
import pytest
from pushpool.prefect_api.dialect import ServerDialect
from pushpool.usecases.monitor import TickReport, dispatch_due
from pushpool.usecases.submit import SubmitOutcome

from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", ["3.8.8", "3.6.15"])
def test_the_pool_limit_holds_when_slots_are_taken_between_the_listing_and_the_claims(
    deps, prefect: PrefectHelper, server: str
) -> None:
    """Pool limit 3, seven runs due: the listing hands out three; before the first claim reaches the server another
    claimer takes two slots (runs due later). Counted after its claims, the tick keeps one and starts one job; with
    bulk claims it gives its two other claims back (AwaitingConcurrencySlot), one by one it stops after the first."""
    pool = prefect.unique("bulk")
    prefect.create_pool(pool, concurrency_limit=3)
    deployment = prefect.create_deployment(pool, job_variables={"command": "sleep 2"})
    runs = [prefect.create_run(deployment) for _ in range(7)]
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    scheduled_later = {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}
    others = [prefect.create_run(deployment, state=scheduled_later) for _ in range(2)]
    client = deps.orchestrator
    client._dialect = ServerDialect.of(server)  # 3.6.15: the client speaks to the server as to one without bulk claims
    calls: Counter = Counter()

    def count(request: httpx.Request) -> None:
        path = request.url.path
        kind = "bulk_set_state" if path.endswith("/bulk_set_state") else "set_state"
        if not path.endswith("set_state"):
            return
        if not calls:  # the first claim is about to reach the server: the other claimer is faster
            for run in others:
                assert prefect.set_state(run, "PENDING")["status"] == "ACCEPT"
        calls[kind] += 1

    client._http.event_hooks["request"].append(count)
    report = TickReport()  # the sweep alone: a tick's reconciliation would recover the other claimer's runs (no job)
    dispatch_due(deps, client.read_work_pool(pool), report)
    assert report.errors == []
    assert report.dispatched[SubmitOutcome.SUBMITTED] == 1
    states = [prefect.state(run) for run in runs]
    in_flight = [s for s in states + [prefect.state(run) for run in others] if s[0] in ("PENDING", "RUNNING")]
    assert len(in_flight) == 3
    assert states.count(("PENDING", "InfrastructurePending")) == 1
    for run in runs:
        read = prefect.read_run(run)
        assert bool(read["infrastructure_pid"]) is (read["state"]["name"] == "InfrastructurePending")
    if server == "3.8.8":  # the claims in one request, the progress state in another; two slots given back
        assert states.count(("SCHEDULED", "AwaitingConcurrencySlot")) == 2
        assert (calls["bulk_set_state"], calls["set_state"]) == (2, 2)
    else:  # the first run's claim and progress state; the second run is turned away before its claim
        assert (calls["bulk_set_state"], calls["set_state"]) == (0, 2)
