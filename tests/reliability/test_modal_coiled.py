"""The reliability scenarios for ``modal:push`` and ``coiled:push``: a duplicate storm (webhook deliveries and monitor
dispatch racing, no throttling) — against the local Modal and Coiled servers, which hold the jobs (nothing runs: the
emulators leave every job running until it is stopped). Submit dying between the job and its pid, and the rest of the
table: test_every_provider.py."""

from __future__ import annotations

import pytest
from pushpool.providers.base import JobHandle

from tests.helpers import PrefectHelper
from tests.reliability.storm import shuffled, storm, unsettled

pytestmark = pytest.mark.integration


@pytest.fixture(params=["modal:push", "coiled:push"])
def emulated(request, prefect: PrefectHelper):
    """(pool type, pool, jobs of a run counted on the provider's side) with the provider's emulator driven."""
    type_name = request.param
    if type_name == "modal:push":
        pytest.importorskip("modal")
        server = request.getfixturevalue("modal_server")

        def jobs_of(run_id: str) -> int:
            return sum(1 for s in list(server.sandboxes.values()) if s.tags.get("pushpool-run") == run_id)
    else:
        server = request.getfixturevalue("coiled_server")

        def jobs_of(run_id: str) -> int:
            return sum(
                1 for c in list(server.clusters.values()) if c.body.get("tags", {}).get("pushpool-run") == run_id
            )

    server.run_commands = False
    pool = prefect.unique(type_name.split(":")[0] + "-rel")
    prefect.create_pool(pool, type_name)
    yield type_name, pool, jobs_of
    server.run_commands = True


def _stop_all(deps, prefect: PrefectHelper, type_name: str, runs: list[str]) -> None:
    backend = deps.backend(type_name.split(":")[0])
    for run_id in runs:
        pid = prefect.read_run(run_id)["infrastructure_pid"]
        if pid:
            backend.cancel(JobHandle(backend.name, pid), grace_seconds=1)


def test_duplicate_storm(deps, prefect: PrefectHelper, emulated, report, scale: int) -> None:
    type_name, pool, jobs_of = emulated
    runs_n, dup_m = 5 * scale, 6
    dep = prefect.create_deployment(pool)
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    answers = storm(deps, pool, shuffled(runs, dup_m, seed=7))
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    wrong = unsettled(deps, pool, prefect, runs)  # first: its ticks may start jobs
    counts = {r: jobs_of(r) for r in runs}
    duplicated, lost = sum(n > 1 for n in counts.values()), sum(n == 0 for n in counts.values())
    report.add(
        "duplicate storm",
        provider=type_name.split(":")[0],
        runs=runs_n,
        faults=len(answers) - runs_n,
        lost=lost,
        duplicated=duplicated,
        stuck=len(wrong),
    )
    _stop_all(deps, prefect, type_name, runs)
    assert (duplicated, lost, wrong) == (0, 0, {}), counts
