"""A deployment serves the pool types it is configured for: a type whose SDK is missing is a clear error at start,
an error in one provider never stops the others, and nothing is claimed (left Pending) by a provider that cannot load.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pushpool import providers
from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.http import handle_submit
from pushpool.errors import ConfigurationError
from pushpool.usecases.monitor import tick

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration


@pytest.fixture
def ecs_sdk_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ECS provider as it is where boto3 is not installed (its SDK module cannot be found)."""
    ecs = providers.provider_named("ecs")
    missing = dataclasses.replace(ecs, sdk=("boto3_not_installed_here",))
    monkeypatch.setattr(providers, "PROVIDERS", tuple(missing if p is ecs else p for p in providers.PROVIDERS))
    monkeypatch.setitem(providers._BY_POOL_TYPE, "ecs:push", missing)


def _due_run(prefect: PrefectHelper, pool: str, **pool_args) -> str:
    prefect.create_pool(pool, **pool_args)
    return prefect.create_run(prefect.create_deployment(pool, job_variables={"command": "true"}))


def test_a_configured_type_whose_sdk_is_missing_is_an_error_at_start(
    prefect_api: str, tmp_path: Path, ecs_sdk_missing: None
) -> None:
    with pytest.raises(ConfigurationError, match=r"pushpool\[aws\]"):
        make_deps(prefect_api, tmp_path, pool_types=("ecs:push",))
    with pytest.raises(ConfigurationError, match="unknown push pool type 'nomad:push'"):
        make_deps(prefect_api, tmp_path, pool_types=("nomad:push",))


def test_by_default_only_types_whose_sdk_is_installed_are_served(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, ecs_sdk_missing: None
) -> None:
    deps = make_deps(prefect_api, tmp_path)
    assert "ecs:push" not in deps.pool_types and "process:push" in deps.pool_types
    assert deps.pool_types == providers.installed_pool_types(deps.settings.managed_backend)
    assert "prefect:managed" in deps.pool_types  # its operator-chosen backend (process) is installed
    ecs_pool, process_pool = prefect.unique("no-sdk-ecs"), prefect.unique("no-sdk-proc")
    ecs_run = _due_run(prefect, ecs_pool, type_name="ecs:push")
    process_run = _due_run(prefect, process_pool)
    pools = [deps.orchestrator.read_work_pool(p) for p in (ecs_pool, process_pool)]
    report = tick(deps, pools=pools)
    assert report.errors == [] and report.pools == 1  # the ECS pool is not this deployment's to serve
    assert prefect.state(ecs_run) == ("SCHEDULED", "Scheduled")  # untouched: never claimed
    assert prefect.read_run(process_run)["infrastructure_pid"]


def test_a_provider_that_fails_to_load_is_reported_and_the_others_go_on(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecs = providers.provider_named("ecs")
    broken = dataclasses.replace(ecs, backend="pushpool.providers.ecs.backend_lost_in_packaging:EcsBackend")
    monkeypatch.setitem(providers._BY_POOL_TYPE, "ecs:push", broken)
    monkeypatch.setattr(providers, "PROVIDERS", tuple(broken if p is ecs else p for p in providers.PROVIDERS))
    deps = make_deps(prefect_api, tmp_path, pool_types=("ecs:push", "process:push"))
    ecs_pool, process_pool = prefect.unique("broken-ecs"), prefect.unique("fine-proc")
    ecs_run = _due_run(prefect, ecs_pool, type_name="ecs:push")
    process_run = _due_run(prefect, process_pool)
    report = tick(deps, pools=[deps.orchestrator.read_work_pool(p) for p in (ecs_pool, process_pool)])
    assert any("cannot be loaded" in e for e in report.errors), report.errors
    assert report.dispatched["submitted"] == 1
    assert prefect.read_run(process_run)["infrastructure_pid"]
    assert prefect.states(ecs_run) == [("SCHEDULED", "Scheduled")]  # never claimed, so never stuck in Pending


def test_submit_for_a_type_this_deployment_does_not_serve_changes_nothing(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper
) -> None:
    deps = make_deps(prefect_api, tmp_path, pool_types=("ecs:push",))
    run_id = _due_run(prefect, prefect.unique("not-served"))
    answer = handle_submit(
        deps,
        WebhookAuth(["test-token"]),
        {"Authorization": "Bearer test-token"},
        json.dumps({"flow_run_id": run_id}).encode(),
        trigger="test",
    )
    assert answer.status == 422 and "not served" in answer.body["error"]
    assert prefect.states(run_id) == [("SCHEDULED", "Scheduled")]
