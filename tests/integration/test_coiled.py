"""``coiled:push`` end to end: a real Prefect server, pushpool's submit and monitor, httpx to the local Coiled REST
server (tests/coiled_emulator.py), which runs each job's command on this machine with exactly the environment it was
sent — so a flow reaches Completed only if what pushpool sent Coiled is enough."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle

from tests.helpers import PrefectHelper, make_deps, pool_tick, run_through_serve, skip_ahead, submit

pytestmark = pytest.mark.integration

KEY = "pnu_coiled_test_key_do_not_log"


@pytest.fixture
def coiled_deps(prefect_api: str, tmp_path: Path, coiled_server):
    deps = make_deps(prefect_api, tmp_path)
    yield deps
    deps.orchestrator.close()


@pytest.fixture
def coiled_pool(prefect: PrefectHelper, coiled_server) -> str:
    name = prefect.unique("coiled")
    prefect.create_pool(name, "coiled:push")
    return name


def _job(coiled_server, job_handle: str):
    return coiled_server.jobs[int(job_handle.split("/")[2])]


def test_a_flow_runs_to_completed_from_exactly_what_was_sent(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, coiled_pool: str, coiled_server, caplog
) -> None:
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    caplog.set_level(logging.DEBUG)
    variables = {"env": {"GREETING": "hi"}, "vm_types": ["t3.medium"], "region": "us-east-1"}
    run_id = prefect.create_run(prefect.create_deployment(coiled_pool, job_variables=variables))
    try:
        outcome = submit(deps, run_id)
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "submitted"
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    job = _job(coiled_server, run["infrastructure_pid"])
    assert job.spec["user_command"] == "prefect flow-run execute"
    secret = job.spec["secret_env_vars"]  # the whole environment as secrets, as prefect-coiled's worker sends it
    assert secret["GREETING"] == "hi" and secret["PREFECT__FLOW_RUN_ID"] == run_id and secret["PREFECT_API_KEY"] == KEY
    assert job.spec["env_vars"] == {}
    assert KEY not in coiled_server.sent(job.id) and KEY not in caplog.text
    cluster = coiled_server.clusters[job.cluster_id].body
    assert cluster["extra_user_container"] == "prefecthq/prefect:3-latest"
    assert cluster["scheduler_instance_types"] == ["t3.medium"] and cluster["options"]["region_name"] == "us-east-1"


def test_a_non_zero_exit_crashes_the_run_with_the_exit_code_and_output(
    coiled_deps, prefect: PrefectHelper, coiled_pool: str, coiled_server
) -> None:
    command = "sh -c 'echo about to fail; exit 3'"
    run_id = prefect.create_run(prefect.create_deployment(coiled_pool, job_variables={"command": command}))
    outcome = submit(coiled_deps, run_id)
    coiled_server.wait_process(int(outcome.job_id.split("/")[2]))
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(coiled_deps, coiled_pool))
    assert "exit code 3" in run["state"]["message"] and "about to fail" in run["state"]["message"]


def test_cancel_stops_the_job_s_cluster(coiled_deps, prefect: PrefectHelper, coiled_pool: str, coiled_server) -> None:
    run_id = prefect.create_run(prefect.create_deployment(coiled_pool, job_variables={"command": "sleep 60"}))
    outcome = submit(coiled_deps, run_id)
    prefect.set_state(run_id, "CANCELLING")
    assert pool_tick(coiled_deps, coiled_pool).reconciled["stop-and-cancel"] >= 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    job = coiled_server.wait_process(int(outcome.job_id.split("/")[2]), timeout=10)
    assert coiled_server.clusters[job.cluster_id].state == "stopped"
    backend = coiled_deps.backend("coiled")
    backend.cancel(JobHandle("coiled", outcome.job_id))  # already stopped: fine
    assert backend.status([JobHandle("coiled", outcome.job_id)])[outcome.job_id].state.is_final


def test_the_maximum_run_time_stops_the_job_and_crashes_the_run(
    coiled_deps, prefect: PrefectHelper, coiled_pool: str, coiled_server
) -> None:
    variables = {"command": "sleep 60", "max_run_time_seconds": 5}
    run_id = prefect.create_run(prefect.create_deployment(coiled_pool, job_variables=variables))
    outcome = submit(coiled_deps, run_id)
    assert _job(coiled_server, outcome.job_id).spec["job_timeout_seconds"] == 5  # Coiled's own limit too
    prefect.set_state(run_id, "RUNNING", force=True)
    skip_ahead(coiled_deps, 60)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(coiled_deps, coiled_pool))
    assert "maximum run time" in run["state"]["message"]


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"workspace": "no-such-workspace"}, "Workspace 'no-such-workspace' not found"),
        ({"vm_types": ["x9.nonexistent"]}, "VM type 'x9.nonexistent' is not available"),
        ({"cpu": 4, "vm_types": ["t3.xlarge"]}, "either vm_types or cpu/memory"),
        ({"additional_coiled_options": {"forward_aws_credentials": True}}, "not supported by coiled:push"),
        ({"credentials": {"api_token": "expired-token"}}, "Coiled refused the API token"),
        ({"credentials": {"api_token": "two words"}}, "credentials block"),
    ],
    ids=["workspace", "vm-type", "cpu-with-vm-types", "forward-aws-credentials", "expired-token", "malformed-token"],
)
def test_bad_input_crashes_the_run_with_coiled_s_message(
    coiled_deps, prefect: PrefectHelper, coiled_pool: str, variables: dict, fragment: str
) -> None:
    variables = dict(variables)
    if "credentials" in variables:  # the pool's block: a deployment may not choose credentials
        template = base_job_template("coiled:push")
        template["variables"]["properties"]["credentials"]["default"] = variables.pop("credentials")
        coiled_pool = prefect.unique("coiled")
        prefect.create_pool(coiled_pool, "coiled:push", base_job_template=template)
    run_id = prefect.create_run(prefect.create_deployment(coiled_pool, job_variables=variables))
    assert submit(coiled_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and fragment in state["message"]
    assert "expired-token" not in state["message"] and "two words" not in state["message"]


def test_transport_errors_are_retried_then_the_run_is_given_back_with_backoff(
    coiled_deps, prefect: PrefectHelper, coiled_pool: str, coiled_server
) -> None:
    dep = prefect.create_deployment(coiled_pool, job_variables={"command": "true"})
    coiled_server.faults["/api/v2/jobs/compressed"] = [503]  # once: retried
    run_id = prefect.create_run(dep)
    assert submit(coiled_deps, run_id).outcome == "submitted"
    coiled_server.faults["/api/v2/jobs/compressed"] = [503] * 10  # Coiled stays down
    run_id = prefect.create_run(dep)
    try:
        assert submit(coiled_deps, run_id).outcome == "released"  # a transient error: retried later, not crashed
    finally:
        coiled_server.faults.pop("/api/v2/jobs/compressed")
    state = prefect.read_run(run_id)["state"]
    assert (state["type"], state["name"]) == ("SCHEDULED", "AwaitingInfrastructure"), state
    assert "Coiled is unavailable (503)" in state["message"] and "retry 1 of 5" in state["message"], state["message"]


def test_automation_webhook_to_serve_to_coiled_starts_the_job(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, coiled_server
) -> None:
    """Prefect's automation calls `pushpool serve`'s webhook, which starts the run's Coiled job with the pool serve
    made (a flow completing on Coiled: test_a_flow_runs_to_completed_from_exactly_what_was_sent)."""
    run = run_through_serve(prefect_api, tmp_path, prefect, "coiled:push", until="submitted")
    job = _job(coiled_server, run["infrastructure_pid"])
    assert job.spec["user_command"] == "true" and job.spec["secret_env_vars"]["PREFECT__FLOW_RUN_ID"] == run["id"]
