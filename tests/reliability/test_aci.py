"""The reliability scenarios for ACI pools, against the local ARM endpoint over TLS: a duplicate storm (webhook
deliveries and monitor dispatch racing), ARM throttling and 5xx on every call kind (a group that vanishes:
test_every_provider.py)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_RG, AZ_SUB
from tests.helpers import PrefectHelper, make_deps, pool_tick
from tests.reliability.storm import shuffled, storm, unsettled

pytestmark = pytest.mark.integration
KEY = "pnu_aci_reliability_key"


@pytest.fixture
def aci_deps(prefect_api: str, tmp_path: Path, aci_options: dict):
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps.backend_options["aci"] = aci_options
    yield deps
    deps.orchestrator.close()


@pytest.fixture
def aci_pool(prefect: PrefectHelper):
    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    template["variables"]["properties"]["subscription_id"]["default"] = AZ_SUB
    template["variables"]["properties"]["resource_group_name"]["default"] = AZ_RG
    name = prefect.unique("aci-rel")
    prefect.create_pool(name, "azure-container-instance:push", base_job_template=template)
    yield name
    prefect.request("DELETE", f"/work_pools/{name}")


def _groups_of(arm, run_id: str) -> int:
    return sum(1 for g in arm.groups.values() if g.body["tags"].get("pushpool-flow-run-id") == run_id)


def test_duplicate_storm_makes_one_group_per_run_and_restarts_none(
    aci_deps, prefect: PrefectHelper, aci_pool: str, arm, report, scale: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runs_n, dup_m = 6 * scale, 6
    dep = prefect.create_deployment(aci_pool)
    runs = [prefect.create_run(dep) for _ in range(runs_n)]
    restarts = arm.restarts
    arm.fail_next("PUT", "put", 429, "TooManyRequests", times=3)  # throttled on the way, too
    answers = storm(aci_deps, aci_pool, shuffled(runs, dup_m, seed=16))
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    wrong = unsettled(aci_deps, aci_pool, prefect, runs)  # first: its ticks may start jobs
    per_run = {r: _groups_of(arm, r) for r in runs}
    report.add(
        "duplicate storm (webhook × monitor, 3 throttled PUTs)",
        provider="aci",
        runs=runs_n,
        faults=len(answers) - runs_n + 3,
        lost=sum(n == 0 for n in per_run.values()),
        duplicated=sum(n > 1 for n in per_run.values()) + arm.restarts - restarts,
        stuck=len(wrong),
    )
    assert set(per_run.values()) == {1} and arm.restarts == restarts
    assert wrong == {}, wrong
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("status", "code"), [(429, "TooManyRequests"), (500, "InternalServerError"), (503, "ServiceUnavailable")]
)
def test_arm_faults_on_every_call_kind_are_absorbed(
    aci_deps, prefect: PrefectHelper, aci_pool: str, arm, report, status: int, code: str
) -> None:
    runs = [prefect.create_run(prefect.create_deployment(aci_pool)) for _ in range(3)]
    for method, route in (("GET", "get"), ("PUT", "put"), ("GET", "list"), ("GET", "resource_group")):
        arm.fail_next(method, route, status, code, times=2)
    try:
        for run_id in runs:
            run = aci_deps.orchestrator.read_flow_run(run_id)
            assert submit_run(aci_deps, run, aci_deps.orchestrator.read_work_pool(aci_pool), trigger="t").outcome == (
                "submitted"
            )
        report_ = pool_tick(aci_deps, aci_pool)
    finally:
        arm.faults.clear()
    assert report_.errors == []
    report.add(
        f"ARM {status} on GET/PUT/list",
        provider="aci",
        runs=len(runs),
        faults=8,
        duplicated=sum(_groups_of(arm, r) > 1 for r in runs),
    )
    assert all(_groups_of(arm, r) == 1 for r in runs)
