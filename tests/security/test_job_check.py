"""The hostile deployment author, found before their run (issue 24): Prefect creates deployments and pushpool cannot
veto them, so ``pushpool doctor`` judges each deployment of a push pool as submit would judge its run and lists those
it would refuse, naming the deployment and the reason — job variables that sign the job with another credentials block,
a Prefect key in plaintext in ``env``, Coiled options pushpool does not support; and a template edited in Prefect that
its runs cannot use (an ARM function pushpool does not evaluate, a v1-shaped Cloud Run body). The deployments the pool
accepts are not listed, and no credential the author gave appears in what doctor says. Nothing is created or called
at a provider (submit still refuses each run on its own: tests/security/test_pool_credentials.py).

A real Prefect server; ``diagnose`` as ``pushpool doctor`` calls it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.usecases.doctor import FAIL, OK, ProbeAnswer, diagnose

from tests.gcp_emulator import service_account_info
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration
PLAIN_KEY = "pnu_deployment_author_plaintext_key"


def _no_probe(method: str, url: str, headers: object, body: bytes) -> ProbeAnswer:
    return ProbeAnswer(None, "not probed by this test")


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path):
    found = make_deps(prefect_api, tmp_path)
    yield found
    found.orchestrator.close()


def _findings(deps, pool: str) -> dict[str, tuple[str, str]]:
    result = diagnose(deps, pools=[pool], probe=_no_probe, versions={})
    return {f.check: (f.status, f.detail) for f in result.findings}


def test_doctor_lists_the_deployments_whose_runs_submit_would_refuse(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("dr-cr")
    prefect.create_pool(pool, "cloud-run-v2:push", base_job_template=base_job_template("cloud-run-v2:push"))
    stolen = service_account_info("pushpool-test", "http://127.0.0.1:9/token", "other-pool@pushpool-test.iam")
    signer = prefect.create_deployment(pool, job_variables={"credentials": {"service_account_info": stolen}})
    plain = prefect.create_deployment(pool, "flows.py:fail", job_variables={"env": {"PREFECT_API_KEY": PLAIN_KEY}})
    fine = prefect.create_deployment(pool, "flows.py:sleep", job_variables={"image": "example.dev/app:1"})

    status, detail = _findings(deps, pool)[f"pool {pool}: deployments"]
    assert status == FAIL
    assert f"({signer}): job variables may not change 'credentials'" in detail
    assert f"({plain}): " in detail and "refusing to send PREFECT_API_KEY in plaintext" in detail
    assert fine not in detail
    shown = json.dumps(_findings(deps, pool))
    assert stolen["private_key"] not in shown and PLAIN_KEY not in shown


def test_doctor_lists_a_coiled_deployment_with_options_pushpool_does_not_support(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("dr-coiled")
    prefect.create_pool(pool, "coiled:push", base_job_template=base_job_template("coiled:push"))
    odd = prefect.create_deployment(pool, job_variables={"additional_coiled_options": {"host_setup_script": "x"}})

    status, detail = _findings(deps, pool)[f"pool {pool}: deployments"]
    assert status == FAIL and f"({odd}): " in detail and "host_setup_script" in detail


def test_an_edited_template_the_pool_s_runs_cannot_use_is_a_failure(deps, prefect: PrefectHelper) -> None:
    """Edited in Prefect (pushpool cannot veto it): an ARM function pushpool does not evaluate."""
    pool = prefect.unique("dr-aci")
    template = base_job_template("azure-container-instance:push")
    props = template["variables"]["properties"]
    props["resource_group_name"]["default"] = "rg"
    props["subscription_id"]["default"] = "00000000-0000-0000-0000-0000000000aa"
    resource = template["job_configuration"]["arm_template"]["resources"][0]
    resource["properties"]["containers"][0]["name"] = "[listKeys('x', '2020-01-01').key1]"
    prefect.create_pool(pool, "azure-container-instance:push", base_job_template=template)
    fine = prefect.unique("dr-aci-ok")
    prefect.create_pool(fine, "azure-container-instance:push", base_job_template=base_job_template(
        "azure-container-instance:push"))  # fmt: skip

    status, detail = _findings(deps, pool)[f"pool {pool}: template"]
    assert status == FAIL and "listKeys" in detail
    assert _findings(deps, fine)[f"pool {fine}: jobs"][0] == OK


def test_a_cloud_run_pool_still_holding_the_v1_worker_s_body_is_a_failure(deps, prefect: PrefectHelper) -> None:
    """A `cloud-run:push` pool whose template was copied from Prefect's v1 worker: its Knative-shaped body is no
    run.v2 Job (pushpool sends v2 only; docs/cloudrun-compat.md)."""
    pool = prefect.unique("dr-v1")
    template = base_job_template("cloud-run:push")
    template["job_configuration"]["job_body"] = {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {"annotations": {"run.googleapis.com/launch-stage": "BETA"}},
        "spec": {"template": {"spec": {"template": {"spec": {"containers": [{"image": "{{ image }}"}]}}}}},
    }
    prefect.create_pool(pool, "cloud-run:push", base_job_template=template)

    status, detail = _findings(deps, pool)[f"pool {pool}: template"]
    assert status == FAIL and "not a Cloud Run v2 Job" in detail and "apiVersion" in detail
