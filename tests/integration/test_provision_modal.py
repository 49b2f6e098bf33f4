"""`--provision-infra` for ``modal:push`` on an open-source Prefect server: the ``modal-credentials`` block type is
registered with its secret field, the local Modal token is checked against the local Modal control plane and stored
once, and the pool's ``modal_credentials`` names it — then a run submitted with that block completes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pushpool.providers.provisioning import ProvisioningError
from pushpool.usecases.provision_infra import deprovision, provision_infra

from tests.conftest import MODAL_TOKEN
from tests.helpers import EXITS_AT_ONCE, PrefectHelper, make_deps

pytest.importorskip("modal")
pytestmark = pytest.mark.integration


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path, modal_server):
    d = make_deps(prefect_api, tmp_path)
    yield d
    d.orchestrator.close()


def _provisioner():
    from pushpool.providers import provider_for_pool_type

    return provider_for_pool_type("modal:push").create_provisioner(region=None, credentials="role")


def test_the_local_token_is_stored_once_as_a_secret_and_the_pool_refers_to_it(
    deps, prefect: PrefectHelper, modal_server
) -> None:
    pool = prefect.unique("modal-prov")
    first = provision_infra(deps, _provisioner(), pool=pool, type_name="modal:push")
    assert first.applied and f"credentials block {pool}-modal-credentials" in first.outcome.created
    block_type = prefect.json("GET", "/block_types/slug/modal-credentials")
    schema = prefect.json("POST", "/block_schemas/filter", json={
        "block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}})[0]  # fmt: skip
    assert schema["fields"]["secret_fields"] == ["token_secret"]
    shown = prefect.json("GET", f"/block_types/slug/modal-credentials/block_documents/name/{pool}-modal-credentials")
    assert shown["data"]["token_id"] == MODAL_TOKEN[0] and MODAL_TOKEN[1] not in str(shown)  # Prefect hides it
    template = prefect.json("GET", f"/work_pools/{pool}")["base_job_template"]
    ref = template["variables"]["properties"]["modal_credentials"]["default"]
    assert ref == {"$ref": {"block_document_id": shown["id"]}}

    second = provision_infra(deps, _provisioner(), pool=pool, type_name="modal:push")
    assert [s.action for s in second.plan] == ["exists"] and not second.outcome.created
    assert second.prefect is not None and not second.prefect.changed

    # Submitted with the block's token (the emulator checks the token on every call).
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
    from pushpool.usecases.submit import submit_run

    run = deps.orchestrator.read_flow_run(run_id)
    assert submit_run(deps, run, deps.orchestrator.read_work_pool(pool), trigger="test").outcome == "submitted"

    removed = deprovision(deps, _provisioner(), pool=pool)
    assert removed.applied
    assert prefect.request("GET", f"/block_types/slug/modal-credentials/block_documents/name/{pool}-modal-credentials"
                           ).status_code == 404  # fmt: skip


def test_a_block_that_already_exists_is_reused_not_overwritten(deps, prefect: PrefectHelper) -> None:
    pool = prefect.unique("modal-kept")
    provision_infra(deps, _provisioner(), pool=pool, type_name="modal:push")  # registers the type
    block = prefect.json("GET", f"/block_types/slug/modal-credentials/block_documents/name/{pool}-modal-credentials")
    other = prefect.unique("modal-other")
    created = deps.orchestrator.create_block_document({
        "name": f"{other}-modal-credentials", "data": {"token_id": "ak-theirs", "token_secret": "as-theirs"},
        "block_type_id": block["block_type_id"], "block_schema_id": block["block_schema_id"]})  # fmt: skip
    result = provision_infra(deps, _provisioner(), pool=other, type_name="modal:push")
    assert [s.action for s in result.plan] == ["exists"]
    kept = deps.orchestrator.read_block_document(created.id)
    assert kept.data["token_id"] == "ak-theirs"


def test_no_local_token_is_one_clear_line_and_changes_nothing(
    deps, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    pool = prefect.unique("modal-none")
    with pytest.raises(ProvisioningError, match="modal token new"):
        provision_infra(deps, _provisioner(), pool=pool, type_name="modal:push")
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 404


def test_a_malformed_or_refused_local_token_is_a_clear_error_that_never_shows_it(
    deps, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    for token_id, secret, fragment in (
        ("ak-x", "not-a-token-secret-value", "malformed"),
        ("ak-revoked", "as-revoked-secret-value", "Modal refused the credentials"),
    ):
        monkeypatch.setenv("MODAL_TOKEN_ID", token_id)
        monkeypatch.setenv("MODAL_TOKEN_SECRET", secret)
        with pytest.raises(Exception, match=fragment) as caught:
            provision_infra(deps, _provisioner(), pool=prefect.unique("modal-bad"), type_name="modal:push")
        assert secret not in str(caught.value)


def test_the_cli_provisions_a_modal_pool_from_the_local_modal_profile(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, modal_server
) -> None:
    profile = tmp_path / "modal.toml"
    profile.write_text(f'[pushpool-tests]\ntoken_id = "{MODAL_TOKEN[0]}"\ntoken_secret = "{MODAL_TOKEN[1]}"\n'
                       "active = true\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")}
    env.update(PREFECT_API_URL=prefect_api, PUSHPOOL_HOME=str(tmp_path / "pp"), MODAL_CONFIG_PATH=str(profile))
    pool = prefect.unique("modal-cli")
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", "work-pool", "create", pool, "--type", "modal:push",
           "--provision-infra", "--yes"]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"{pool}-modal-credentials" in out and MODAL_TOKEN[1] not in out
