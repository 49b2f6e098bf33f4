"""Duplicate storm: N runs × M concurrent deliveries, webhook and monitor dispatch racing → exactly N jobs."""

from __future__ import annotations

import os
import time

import pytest
from pushpool.providers.base import JobHandle

from tests.helpers import PrefectHelper, pool_tick
from tests.reliability.storm import shuffled, storm

pytestmark = pytest.mark.integration


def test_duplicate_storm(deps, prefect: PrefectHelper, pool: str, report, scale: int) -> None:
    runs_n, dup_m = 10 * scale, 6
    dep = prefect.create_deployment(pool, job_variables={"command": "sleep 30"})
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    answers = storm(deps, pool, shuffled(runs, dup_m, seed=7))
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    # A claim given back during the storm (Prefect answering 503 under the load: released to Scheduled, no job) is
    # dispatched by the next tick, as it would be in production: settle with ticks, then count jobs.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(prefect.state(r)[0] == "SCHEDULED" for r in runs):
        pool_tick(deps, pool)
    jobs = os.listdir(deps.settings.process_dir)
    per_run = {r: [j for j in jobs if j.startswith(r)] for r in runs}
    duplicated = sum(len(j) > 1 for j in per_run.values())
    lost = sum(len(j) == 0 for j in per_run.values())
    claims = {r: sum(1 for s in prefect.states(r) if s == ("PENDING", "Pending")) for r in runs}
    given_back = {r: sum(1 for s in prefect.states(r) if s[0] == "SCHEDULED") - 1 for r in runs}
    report.add(
        "duplicate storm (webhook × monitor)",
        runs=runs_n,
        faults=len(answers) - runs_n,
        lost=lost,
        duplicated=duplicated,
        stuck=sum(c != 1 + given_back[r] for r, c in claims.items()),
    )
    assert duplicated == 0 and lost == 0
    assert all(c == 1 + given_back[r] for r, c in claims.items()), (claims, given_back)  # one claim per time it was due
    backend = deps.backend("process")
    for r in runs:
        backend.cancel(JobHandle("process", prefect.read_run(r)["infrastructure_pid"]), grace_seconds=1)
