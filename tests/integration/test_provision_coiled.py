"""`--provision-infra` for ``coiled:push`` on an open-source Prefect server: the ``coiled-credentials`` block type is
registered with its secret field, the local token is checked against the local Coiled server and stored once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pushpool.providers.provisioning import ProvisioningError
from pushpool.usecases.provision_infra import deprovision, provision_infra

from tests.conftest import COILED_TOKEN
from tests.helpers import EXITS_AT_ONCE, PrefectHelper, make_deps

pytestmark = pytest.mark.integration


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, coiled_server):
    d = make_deps(prefect_api, tmp_path)
    yield d
    d.orchestrator.close()


def _provisioner():
    from pushpool.providers import provider_for_pool_type

    return provider_for_pool_type("coiled:push").create_provisioner(region=None, credentials="role")


def _block(prefect: PrefectHelper, pool: str):
    return prefect.request(
        "GET", f"/block_types/slug/coiled-credentials/block_documents/name/{pool}-coiled-credentials"
    )


def test_the_local_token_is_stored_once_as_a_secret_and_a_run_uses_it(
    deps, prefect: PrefectHelper, coiled_server
) -> None:
    pool = prefect.unique("coiled-prov")
    first = provision_infra(deps, _provisioner(), pool=pool, type_name="coiled:push")
    assert first.applied and f"credentials block {pool}-coiled-credentials" in first.outcome.created
    shown = _block(prefect, pool).json()
    assert COILED_TOKEN not in str(shown)  # api_token is a secret field: the server never returns it
    template = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    assert template["variables"]["properties"]["credentials"]["default"] == {
        "$ref": {"block_document_id": shown["id"]}}  # fmt: skip

    second = provision_infra(deps, _provisioner(), pool=pool, type_name="coiled:push")
    assert [s.action for s in second.plan] == ["exists"] and not second.outcome.created
    assert second.prefect is not None and not second.prefect.changed

    from pushpool.usecases.submit import submit_run

    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
    run = deps.orchestrator.read_flow_run(run_id)
    assert submit_run(deps, run, deps.orchestrator.read_work_pool(pool), trigger="test").outcome == "submitted"

    assert deprovision(deps, _provisioner(), pool=pool).applied
    assert _block(prefect, pool).status_code == 404


def test_no_local_token_is_one_clear_line_and_a_refused_one_is_coiled_s_answer(
    deps, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DASK_COILED__TOKEN")
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask"))
    pool = prefect.unique("coiled-none")
    with pytest.raises(ProvisioningError, match="coiled login"):
        provision_infra(deps, _provisioner(), pool=pool, type_name="coiled:push")
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 404
    monkeypatch.setenv("DASK_COILED__TOKEN", "revoked-token-value")
    with pytest.raises(Exception, match="Coiled refused the API token") as caught:
        provision_infra(deps, _provisioner(), pool=pool, type_name="coiled:push")
    assert "revoked-token-value" not in str(caught.value)


def test_the_cli_provisions_from_the_dask_configuration_coiled_login_writes(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, coiled_server
) -> None:
    config = tmp_path / "dask"
    config.mkdir()
    (config / "coiled.yaml").write_text(f"coiled:\n  account: pushpool-tests\n  token: {COILED_TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if k != "DASK_COILED__TOKEN"}
    env.update(PREFECT_API_URL=prefect_api, PUSHPOOL_HOME=str(tmp_path / "pp"), DASK_CONFIG=str(config))
    pool = prefect.unique("coiled-cli")
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", "work-pool", "create", pool, "--type", "coiled:push",
           "--provision-infra", "--yes"]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"{pool}-coiled-credentials" in out and COILED_TOKEN not in out
    assert _block(prefect, pool).status_code == 200
