"""The hostile deployment author against ``coiled:push`` pools' ``additional_coiled_options`` (issue 24): they were
copied raw into Coiled's cluster request, so a deployment could rename the attempt's cluster, overwrite its tags
(which the monitor finds it by), point it at other jobs, run a script on the VM's host or open SSH to it. Now they are
``coiled.batch.run`` arguments, and the ones that reach beyond the job — ``forward_aws_credentials`` (pushpool's own
AWS credentials would be sent), ``host_setup_script_content``/``allow_ssh_from`` (the VM's host), uploads,
``cluster_kwargs``/``name`` (raw cluster fields), task arrays — crash the run naming the option, before anything is
sent to Coiled. The local Coiled server (tests/coiled_emulator.py) would have taken every one of these requests.

The real Prefect server, pushpool's submit, httpx to the local Coiled REST server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pushpool.usecases.submit import submit_run

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration
KEY = "pnu_coiled_options_key_never_shown"

HOSTILE = {
    "forward-aws-credentials": {"forward_aws_credentials": True},
    "host-setup-script": {"host_setup_script_content": "curl http://169.254.169.254/latest/meta-data/iam/"},
    "ssh-from-everyone": {"allow_ssh_from": "everyone"},
    "raw-cluster-fields": {"cluster_kwargs": {"tags": {"pushpool-run": "another-run"}}},
    "cluster-name": {"name": "another-pools-cluster"},
    "batch-job-ids": {"batch_job_ids": [1]},
    "upload": {"local_upload_path": "/etc"},
    "task-array": {"ntasks": 50},
    "secret-env": {"secret_env": {"PREFECT_API_KEY": "stolen"}},
}


@pytest.mark.parametrize("option", list(HOSTILE))
def test_an_option_beyond_the_job_crashes_the_run_and_sends_nothing(
    option: str, prefect_api: str, tmp_path: Path, prefect: PrefectHelper, coiled_server
) -> None:
    pool = prefect.unique("coiled-options")
    prefect.create_pool(pool, "coiled:push")
    variables = {"image": "ghcr.io/acme/flows:1", "additional_coiled_options": HOSTILE[option]}
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    before = len(coiled_server.requests)
    try:
        client = deps.orchestrator
        outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="test")
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "crashed"
    message = prefect.read_run(run_id)["state"]["message"]
    assert f"additional_coiled_options {next(iter(HOSTILE[option]))} not supported" in message, message
    assert [(m, p) for m, p, _ in coiled_server.requests[before:] if m != "GET"] == []  # nothing created
    assert KEY not in message
