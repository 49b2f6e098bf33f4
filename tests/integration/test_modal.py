"""``modal:push`` end to end: a real Prefect server, pushpool's submit and monitor, the real ``modal`` SDK over gRPC
to the local Modal control plane (tests/modal_emulator.py), which runs each sandbox's command on this machine with
exactly the environment it was sent — so a flow reaches Completed only if what pushpool sent Modal is enough.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle

from tests.helpers import PrefectHelper, make_deps, pool_tick, run_through_serve, skip_ahead, submit

pytest.importorskip("modal")
pytestmark = pytest.mark.integration

KEY = "pnu_modal_test_key_do_not_log"


@pytest.fixture
def modal_deps(prefect_api: str, tmp_path: Path, modal_server):
    deps = make_deps(prefect_api, tmp_path)
    yield deps
    deps.orchestrator.close()


@pytest.fixture
def modal_pool(prefect: PrefectHelper, modal_server) -> str:
    name = prefect.unique("modal")
    prefect.create_pool(name, "modal:push")
    return name


def _sandbox(modal_server, run: dict):
    return modal_server.sandboxes[run["infrastructure_pid"]]


def test_a_flow_runs_to_completed_in_a_sandbox_from_exactly_what_was_sent(
    modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server
) -> None:
    variables = {"env": {"GREETING": "hi"}, "cpu": 2, "memory": 1024, "region": "us-east", "pip_packages": ["rich"]}
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables=variables))
    assert submit(modal_deps, run_id).outcome == "submitted"
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    sandbox = _sandbox(modal_server, run)
    definition = sandbox.definition
    assert list(definition.entrypoint_args) == ["prefect", "flow-run", "execute"]
    assert definition.timeout_secs == 24 * 3600  # max_run_time_seconds, enforced by Modal too
    assert definition.resources.milli_cpu == 2000 and definition.resources.memory_mb == 1024
    assert list(definition.scheduler_placement.regions) == ["us-east"]
    assert sandbox.env["GREETING"] == "hi" and sandbox.env["PREFECT__FLOW_RUN_ID"] == run_id
    assert sandbox.tags == {"pushpool-run": run_id, "pushpool-attempt": sandbox.tags["pushpool-attempt"],
                            "pushpool-pool": modal_pool}  # fmt: skip
    images = [r.image for m, r in modal_server.requests if m == "ImageGetOrCreate"]
    assert "FROM prefecthq/prefect:3-latest" in [c for i in images for c in i.dockerfile_commands]
    assert "RUN python -m pip install rich" in [c for i in images for c in i.dockerfile_commands]
    app = next(name for name, app_id in modal_server.apps.items() if app_id == sandbox.app_id)
    assert app == f"pushpool-{modal_pool}"
    assert not modal_server.unimplemented


def test_the_prefect_credential_goes_as_a_modal_secret_never_in_the_definition(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, modal_pool: str, modal_server, caplog
) -> None:
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    caplog.set_level(logging.DEBUG)
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables={"command": "true"}))
    outcome = submit(deps, run_id)
    deps.orchestrator.close()
    sandbox = modal_server.sandboxes[outcome.job_id]
    assert sandbox.env["PREFECT_API_KEY"] == KEY  # the container gets it, from a secret source
    assert KEY not in modal_server.sent(outcome.job_id)
    assert KEY not in caplog.text


def test_a_gpu_sandbox_takes_modal_s_other_path_and_completes(
    modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server
) -> None:
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables={"gpu": "T4"}))
    assert submit(modal_deps, run_id).outcome == "submitted"
    run = prefect.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert _sandbox(modal_server, run).definition.resources.gpu_config.gpu_type == "T4"
    assert "SandboxCreate" in modal_server.calls  # GPU sandboxes are created by the V1 RPCs in modal 1.6.4


def test_a_non_zero_exit_crashes_the_run_with_the_exit_code_and_output(
    modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server
) -> None:
    command = "sh -c 'echo about to fail; exit 3'"
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables={"command": command}))
    outcome = submit(modal_deps, run_id)
    modal_server.wait_process(outcome.job_id)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(modal_deps, modal_pool))
    assert "exit code 3" in run["state"]["message"] and "about to fail" in run["state"]["message"]


def test_cancel_terminates_the_sandbox(modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server) -> None:
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables={"command": "sleep 60"}))
    outcome = submit(modal_deps, run_id)
    prefect.set_state(run_id, "CANCELLING")
    assert pool_tick(modal_deps, modal_pool).reconciled["stop-and-cancel"] >= 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    sandbox = modal_server.wait_process(outcome.job_id, timeout=10)
    assert sandbox.result.status == sandbox.result.GENERIC_STATUS_TERMINATED
    backend = modal_deps.backend("modal")
    backend.cancel(JobHandle("modal", outcome.job_id))  # already terminated: fine
    assert backend.status([JobHandle("modal", outcome.job_id)])[outcome.job_id].state.is_final


def test_the_maximum_run_time_terminates_the_sandbox_and_crashes_the_run(
    modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server
) -> None:
    variables = {"command": "sleep 60", "max_run_time_seconds": 5}
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables=variables))
    outcome = submit(modal_deps, run_id)
    assert modal_server.sandboxes[outcome.job_id].definition.timeout_secs == 5  # Modal ends it even without us
    prefect.set_state(run_id, "RUNNING", force=True)
    skip_ahead(modal_deps, 60)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=30, tick=lambda: pool_tick(modal_deps, modal_pool))
    assert "maximum run time" in run["state"]["message"]
    assert modal_server.wait_process(outcome.job_id, timeout=10).result.status != 0


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"image": "example/no-such-image:1"}, "manifest unknown"),
        ({"gpu": "B9000"}, "Unknown GPU type"),
        ({"secrets": ["no-such-secret"]}, "no-such-secret"),
    ],
    ids=["image", "gpu", "secret"],
)
def test_bad_input_crashes_the_run_with_modal_s_message(
    modal_deps, prefect: PrefectHelper, modal_pool: str, variables: dict, fragment: str
) -> None:
    run_id = prefect.create_run(prefect.create_deployment(modal_pool, job_variables=variables))
    assert submit(modal_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and fragment in state["message"]


def test_a_malformed_or_refused_token_in_the_block_crashes_the_run_naming_the_block(
    modal_deps, prefect: PrefectHelper
) -> None:
    for block, fragment in (
        ({"token_id": "ak-x", "token_secret": "not-a-secret-value"}, "modal_credentials block"),
        ({"token_id": "ak-expired", "token_secret": "as-expired-secret-value"}, "Modal refused the credentials"),
    ):
        template = base_job_template("modal:push")  # the pool's block: a deployment may not choose credentials
        template["variables"]["properties"]["modal_credentials"]["default"] = block
        pool = prefect.unique("modal")
        prefect.create_pool(pool, "modal:push", base_job_template=template)
        run_id = prefect.create_run(prefect.create_deployment(pool))
        assert submit(modal_deps, run_id).outcome == "crashed"  # refused credentials are not a transient error
        message = prefect.read_run(run_id)["state"]["message"]
        assert fragment in message and block["token_secret"] not in message


def test_transport_errors_are_retried_then_the_run_is_given_back_with_backoff(
    modal_deps, prefect: PrefectHelper, modal_pool: str, modal_server
) -> None:
    from grpclib.const import Status

    dep = prefect.create_deployment(modal_pool, job_variables={"command": "true"})
    modal_server.faults["SandboxCreateV2"] = [Status.UNAVAILABLE]  # once: the SDK retries it
    run_id = prefect.create_run(dep)
    assert submit(modal_deps, run_id).outcome == "submitted"
    assert not modal_server.faults["SandboxCreateV2"]
    assert len(modal_server.of_attempt(run_id, modal_server.sandboxes[prefect.read_run(run_id)["infrastructure_pid"]]
                                       .tags["pushpool-attempt"])) == 1  # fmt: skip
    modal_server.faults["SandboxCreateV2"] = [Status.UNAVAILABLE] * 50  # Modal stays down
    run_id = prefect.create_run(dep)
    try:
        assert submit(modal_deps, run_id).outcome == "released"  # a transient error: retried later, not crashed
    finally:
        modal_server.faults.pop("SandboxCreateV2")
    state = prefect.read_run(run_id)["state"]
    assert (state["type"], state["name"]) == ("SCHEDULED", "AwaitingInfrastructure"), state
    assert "Modal is unavailable" in state["message"] and "retry 1 of 5" in state["message"], state["message"]


def test_automation_webhook_to_serve_to_modal_starts_the_sandbox(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, modal_server
) -> None:
    """Prefect's automation calls `pushpool serve`'s webhook, which starts the run's sandbox with the pool serve made
    (a flow completing in a sandbox: test_a_flow_runs_to_completed_in_a_sandbox_from_exactly_what_was_sent)."""
    run = run_through_serve(prefect_api, tmp_path, prefect, "modal:push", until="submitted")
    assert run["infrastructure_pid"] in modal_server.sandboxes
