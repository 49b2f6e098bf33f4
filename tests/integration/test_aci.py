"""ACI push pools end to end on this machine: the real Prefect server, pushpool's submit and monitor, the real
azure-mgmt-containerinstance client over TLS to the local ARM endpoint (tests/arm_emulator.py), and the container
command and environment ARM received, run here, so that the real flow completes."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle

from tests.conftest import AZ_IDENTITIES, AZ_IDENTITY, AZ_REGISTRY, AZ_RG, AZ_RG_OTHER, AZ_SUB
from tests.helpers import PrefectHelper, fake_deps, make_deps, pool_tick, run_as_its_container, skip_ahead, submit

pytestmark = pytest.mark.integration
KEY = "pnu_aci_key_never_in_plaintext"


@pytest.fixture
def aci_deps(prefect_api: str, tmp_path: Path, aci_options: dict):
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps.backend_options["aci"] = aci_options
    yield deps
    deps.orchestrator.close()


def _template(allowed: list[str] | None = None, **defaults) -> dict:
    """The pool's template; its operator allows the test identity (``allowed``: these instead)."""
    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    template["job_configuration"]["allowed_identities"] = [AZ_IDENTITY] if allowed is None else allowed
    props = template["variables"]["properties"]
    props["subscription_id"]["default"] = AZ_SUB
    props["resource_group_name"]["default"] = AZ_RG
    for key, value in defaults.items():
        props[key]["default"] = value
    return template


@pytest.fixture
def aci_pool(prefect: PrefectHelper):
    """A fresh ACI pool, deleted afterwards (no later test's monitor or serve should follow its groups)."""
    created = []

    def make(template: dict | None = None) -> str:
        name = prefect.unique("aci")
        prefect.create_pool(name, "azure-container-instance:push", base_job_template=template or _template())
        created.append(name)
        return name

    yield make
    for name in created:
        prefect.request("DELETE", f"/work_pools/{name}")


def _run(prefect: PrefectHelper, pool: str, **variables) -> str:
    return prefect.create_run(prefect.create_deployment(pool, job_variables=variables))


def test_the_group_carries_the_job_variables_and_the_key_only_as_a_secure_value(
    aci_deps, prefect: PrefectHelper, aci_pool, arm
) -> None:
    pool = aci_pool()
    run_id = _run(
        prefect,
        pool,
        image=f"{AZ_REGISTRY}/flows:1",
        cpu=2,
        memory=4,
        env={"TEAM": "data"},
        image_registry={"registry_url": AZ_REGISTRY, "identity": AZ_IDENTITY},
        subnet_ids=[
            f"/subscriptions/{AZ_SUB}/resourceGroups/{AZ_RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        ],
        dns_servers=["10.0.0.10"],
        gpu_count=1,
        gpu_sku="V100",
    )
    outcome = submit(aci_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    assert prefect.read_run(run_id)["infrastructure_pid"] == outcome.job_id
    body = arm.group(outcome.job_id).body
    container = body["properties"]["containers"][0]["properties"]
    assert container["image"] == f"{AZ_REGISTRY}/flows:1"
    assert container["command"] == ["/opt/prefect/entrypoint.sh", "prefect", "flow-run", "execute"]
    assert container["resources"]["requests"] == {"cpu": 2.0, "memoryInGB": 4.0, "gpu": {"count": 1, "sku": "V100"}}
    env = {e["name"]: e for e in container["environmentVariables"]}
    assert env["TEAM"] == {"name": "TEAM", "value": "data"}
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == run_id
    assert env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "secureValue": KEY}
    assert KEY not in json.dumps({**body, "properties": {**body["properties"], "containers": []}})
    assert body["location"] == "westeurope"  # the resource group's, as [resourceGroup().location]
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {AZ_IDENTITY: {}}}
    assert body["properties"]["imageRegistryCredentials"] == [{"server": AZ_REGISTRY, "identity": AZ_IDENTITY}]
    assert body["properties"]["subnetIds"][0]["id"].endswith("/subnets/s")
    assert body["properties"]["dnsConfig"] == {"nameServers": ["10.0.0.10"]}
    assert body["properties"]["restartPolicy"] == "Never" and body["properties"]["osType"] == "Linux"
    assert body["tags"]["prefect.io_flow-run-id"] == run_id and body["tags"]["pushpool-flow-run-id"] == run_id
    # ARM never gives the key back; nothing pushpool logged or wrote to the run has it.
    assert KEY not in json.dumps(
        arm._view(tuple(outcome.job_id.split("/")[i] for i in (2, 4, 8)), arm.group(outcome.job_id))
    )


def test_an_operators_customised_arm_template_is_the_group_that_is_created(
    aci_deps, prefect: PrefectHelper, aci_pool, arm
) -> None:
    template = _template()
    arm_template = template["job_configuration"]["arm_template"]
    arm_template["parameters"]["team"] = {"type": "string", "defaultValue": "analytics"}
    resource = arm_template["resources"][0]
    resource["tags"] = {"cost-center": "[parameters('team')]", "owner": "ops"}
    resource["zones"] = ["1"]
    resource["properties"]["priority"] = "Spot"
    resource["properties"]["containers"][0]["properties"]["ports"] = [{"port": 8080, "protocol": "TCP"}]
    resource["properties"]["containers"][0]["properties"]["environmentVariables"] = [
        {"name": "FROM_TEMPLATE", "value": "1"}
    ]
    run_id = _run(prefect, aci_pool(template))
    outcome = submit(aci_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    body = arm.group(outcome.job_id).body
    assert body["tags"]["cost-center"] == "analytics" and body["tags"]["owner"] == "ops"
    assert body["zones"] == ["1"] and body["properties"]["priority"] == "Spot"
    container = body["properties"]["containers"][0]
    assert container["name"] == "prefect"  # [parameters('container_name')]
    assert container["properties"]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    names = [e["name"] for e in container["properties"]["environmentVariables"]]
    # The job's environment replaces the template's own, as Prefect's ACI worker does (docs/aci-compat.md): a value
    # hidden in the arm_template never reaches the job.
    assert "FROM_TEMPLATE" not in names and "PREFECT__FLOW_RUN_ID" in names


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"resource_group_name": "rg-missing"}, "ResourceGroupNotFound"),
        ({"identities": [f"{AZ_IDENTITIES}/nobody"]}, "identities: identity 'nobody'"),
        ({"image_registry": {"registry_url": "other.azurecr.io", "identity": AZ_IDENTITY}}, "InaccessibleImage"),
        ({"resource_group_name": "bad/name"}, "not a valid Azure resource group name"),
        ({"subscription_id": "my-subscription"}, "not an Azure subscription id"),
    ],
)
def test_what_azure_refuses_crashes_the_run_with_azures_message(
    aci_deps, prefect: PrefectHelper, aci_pool, variables: dict, fragment: str
) -> None:
    run_id = _run(prefect, aci_pool(), **variables)
    assert submit(aci_deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and fragment in state["message"], state["message"]
    assert "Traceback" not in state["message"] and KEY not in state["message"]


def _tags(resource: dict) -> None:
    resource["tags"] = {"t": "[utcNow()]"}


def _storage(resource: dict) -> None:
    resource["type"] = "Microsoft.Storage/storageAccounts"


def _unknown_field(resource: dict) -> None:
    resource["properties"]["containers"][0]["properties"]["livenessProbe"] = {"exec": {"command": ["true"]}}
    resource["properties"]["containers"][0]["properties"]["healthCheck"] = {"path": "/"}


def _text_cpu(resource: dict) -> None:
    resource["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] = "lots"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (_tags, "[utcNow()]"),
        (_storage, "exactly one Microsoft.ContainerInstance/containerGroups"),
        (_unknown_field, "properties.containers[].properties.healthCheck"),
        (_text_cpu, "'lots'"),
    ],
)
def test_an_arm_template_pushpool_cannot_send_crashes_the_run_naming_what(
    aci_deps, prefect: PrefectHelper, aci_pool, arm, mutate, fragment: str
) -> None:
    template = _template()
    mutate(template["job_configuration"]["arm_template"]["resources"][0])
    puts = arm.count("put")
    run_id = _run(prefect, aci_pool(template))
    assert submit(aci_deps, run_id).outcome == "crashed"
    assert fragment in prefect.read_run(run_id)["state"]["message"]
    assert arm.count("put") == puts  # refused before anything was sent


def test_quota_exceeded_gives_the_run_back_with_the_reason(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    """No capacity may pass: the run waits (Scheduled, saying why), it is not crashed on the first refusal."""
    arm.quota = 0
    try:
        run_id = _run(prefect, aci_pool())
        assert submit(aci_deps, run_id).outcome == "released"
    finally:
        arm.quota = None
    state = prefect.read_run(run_id)["state"]
    assert state["name"] == "AwaitingInfrastructure" and "ContainerGroupQuotaReached" in state["message"]


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (503, "ServiceUnavailable")])
def test_arm_throttling_and_unavailability_are_retried(
    aci_deps, prefect: PrefectHelper, aci_pool, arm, status: int, code: str
) -> None:
    run_id = _run(prefect, aci_pool())
    puts = arm.count("put")
    arm.fail_next("PUT", "put", status, code, times=2)
    arm.fail_next("GET", "get", status, code, times=1)
    outcome = submit(aci_deps, run_id)
    assert outcome.outcome == "submitted", outcome
    assert arm.count("put") - puts == 3  # two refused, the third created the group
    assert sum(1 for g in arm.groups.values() if g.body["tags"]["pushpool-flow-run-id"] == run_id) == 1


def test_arm_unavailable_past_the_retries_gives_the_run_back_with_the_reason(
    aci_deps, prefect: PrefectHelper, aci_pool, arm
) -> None:
    run_id = _run(prefect, aci_pool())
    arm.fail_next("PUT", "put", 503, "ServiceUnavailable", times=10)
    try:
        assert submit(aci_deps, run_id).outcome == "released"
    finally:
        arm.faults.clear()
    state = prefect.read_run(run_id)["state"]
    assert state["name"] == "AwaitingInfrastructure"
    assert "503" in state["message"] and "ServiceUnavailable" in state["message"]


def test_the_group_sent_to_aci_runs_the_flow(aci_deps, prefect: PrefectHelper, aci_pool, arm, tmp_path: Path) -> None:
    """Take the container command and environment ARM received (the secureValue too), run them here: the flow
    completes, and the monitor then deletes the finished group."""
    entrypoint = tmp_path / "entrypoint.sh"  # Prefect's image runs its entrypoint with the command as arguments
    entrypoint.write_text('#!/bin/sh\nexec "$@"\n')
    entrypoint.chmod(0o755)
    pool = aci_pool()
    run_id = _run(prefect, pool, entrypoint=str(entrypoint))
    outcome = submit(aci_deps, run_id)
    container = arm.group(outcome.job_id).body["properties"]["containers"][0]["properties"]
    env = {e["name"]: e.get("value", e.get("secureValue")) for e in container["environmentVariables"]}
    arm.start_container(outcome.job_id)
    result = run_as_its_container(container["command"], env, tmp_path)
    assert prefect.state(run_id)[0] == "COMPLETED"
    arm.exit(outcome.job_id, 0, result.stdout.splitlines())
    report = pool_tick(aci_deps, pool)
    assert report.reconciled["cleanup"] == 1
    assert aci_deps.backend("aci").status([JobHandle("aci", outcome.job_id)])[outcome.job_id].state.value == "MISSING"


def test_a_failed_container_crashes_the_run_with_its_logs_read_before_the_group_is_deleted(
    aci_deps, prefect: PrefectHelper, aci_pool, arm
) -> None:
    pool = aci_pool()
    run_id = _run(prefect, pool)
    outcome = submit(aci_deps, run_id)
    arm.start_container(outcome.job_id)
    prefect.set_state(run_id, "RUNNING")
    arm.exit(outcome.job_id, 1, ["downloading flow code", "ModuleNotFoundError: No module named 'pandas'"])
    before = len(arm.requests)
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(aci_deps, pool))
    assert "exit code 1" in run["state"]["message"] and "No module named 'pandas'" in run["state"]["message"]
    logs = prefect.json("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}})
    assert any("No module named 'pandas'" in entry["message"] for entry in logs)
    pool_tick(aci_deps, pool)  # the run is final: its group is deleted
    calls = [route for _, route in arm.requests[before:]]
    assert "logs" in calls and "delete" in calls and calls.index("logs") < calls.index("delete")
    assert not any(g.body["tags"]["pushpool-flow-run-id"] == run_id for g in arm.groups.values())


def test_image_pull_failure_crashes_the_run_with_azures_event(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    pool = aci_pool()
    run_id = _run(prefect, pool)
    outcome = submit(aci_deps, run_id)
    arm.fail_provisioning(outcome.job_id, 'Failed to pull image "flows:404": manifest unknown')
    run = prefect.wait_for(run_id, {"CRASHED"}, timeout=20, tick=lambda: pool_tick(aci_deps, pool))
    assert "manifest unknown" in run["state"]["message"]


def test_cancel_stops_the_group(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    pool = aci_pool()
    run_id = _run(prefect, pool)
    outcome = submit(aci_deps, run_id)
    arm.start_container(outcome.job_id)
    stops = arm.count("stop")
    prefect.set_state(run_id, "CANCELLING")
    report = pool_tick(aci_deps, pool)
    assert report.reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_id)[0] == "CANCELLED"
    assert arm.count("stop") == stops + 1 and arm.group(outcome.job_id).group_state == "Stopped"


def test_max_run_time_crashes_the_run_and_stops_the_group(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    pool = aci_pool()
    run_id = _run(prefect, pool, max_run_time_seconds=60)
    outcome = submit(aci_deps, run_id)
    arm.start_container(outcome.job_id)
    prefect.set_state(run_id, "RUNNING")
    skip_ahead(aci_deps, 120)
    pool_tick(aci_deps, pool)
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "maximum run time" in state["message"]
    assert arm.group(outcome.job_id).group_state == "Stopped"


def test_keep_container_group_keeps_the_finished_group(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    pool = aci_pool()
    run_id = _run(prefect, pool, keep_container_group=True)
    outcome = submit(aci_deps, run_id)
    arm.exit(outcome.job_id, 0, [])
    prefect.set_state(run_id, "COMPLETED", force=True)
    pool_tick(aci_deps, pool)
    assert arm.group(outcome.job_id).body["tags"]["pushpool-keep"] == "true"


def test_a_group_in_the_deployments_own_resource_group_is_adopted(
    aci_deps, prefect: PrefectHelper, aci_pool, arm
) -> None:
    """Submit died between the group and the pid: the monitor renders the run again and finds the group where the
    deployment put it (its own resource group), then writes the pid."""
    pool = aci_pool()
    run_id = _run(prefect, pool, resource_group_name=AZ_RG_OTHER)
    outcome = submit(aci_deps, run_id)
    assert f"/resourceGroups/{AZ_RG_OTHER}/" in outcome.job_id
    prefect.json("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": None})
    skip_ahead(aci_deps, 30)
    report = pool_tick(aci_deps, pool)
    assert report.reconciled["adopt"] == 1
    assert prefect.read_run(run_id)["infrastructure_pid"] == outcome.job_id


def test_arm_calls_per_submit_and_per_monitor_tick(aci_deps, prefect: PrefectHelper, aci_pool, arm) -> None:
    """The figures the README gives: a submit is GET (not found) + PUT (+ one resource-group GET per process and
    resource group for its location); a tick is one list per resource group + one GET per provisioned group."""
    pool = aci_pool()
    runs = [_run(prefect, pool) for _ in range(4)]
    first = len(arm.requests)
    outcomes = [submit(aci_deps, r) for r in runs]
    per_submit = [route for _, route in arm.requests[first:]]
    assert per_submit.count("resource_group") <= 1  # cached per process
    assert per_submit.count("get") == 4 and per_submit.count("put") == 4
    for outcome in outcomes[:2]:
        arm.start_container(outcome.job_id)
    for run_id in runs:
        prefect.set_state(run_id, "RUNNING")
    before = len(arm.requests)
    pool_tick(aci_deps, pool)
    tick = [route for _, route in arm.requests[before:]]
    assert tick.count("list") == 1
    assert tick.count("get") == 2  # the two provisioned groups; the two still creating are judged from the list


def test_an_aci_credentials_block_creates_the_group_and_the_monitor_follows_it_with_the_block(
    prefect_api: str, tmp_path: Path, aci_options: dict, prefect: PrefectHelper, aci_pool, arm
) -> None:
    from tests.arm_emulator import FakeCredential

    block_credential = FakeCredential(token="block-principal-token")
    arm.add_account(block_credential.token, {AZ_SUB})
    deps = make_deps(prefect_api, tmp_path)
    deps.backend_options["aci"] = {**aci_options, "block_credential": block_credential}
    try:
        block = {"client_id": "app-id", "tenant_id": "tenant-id", "client_secret": "s3cr3t-never-logged"}
        pool = aci_pool(_template(aci_credentials=block))  # the pool's block: job variables may not choose one
        run_id = _run(prefect, pool)
        outcome = submit(deps, run_id)
        assert outcome.outcome == "submitted", outcome
        assert arm.tokens_for(AZ_SUB, "put") >= {block_credential.token}  # the block's service principal made it
        before = len(arm.callers)
        arm.start_container(outcome.job_id)
        fresh = make_deps(prefect_api, tmp_path / "fresh")  # a monitor in a new process, that never saw the submit
        fresh.backend_options["aci"] = {**aci_options, "block_credential": FakeCredential(block_credential.token)}
        pool_tick(fresh, pool)
        fresh.orchestrator.close()
        followed = {(route, token) for _, route, _, token in arm.callers[before:]}
        assert followed and {token for _, token in followed} == {block_credential.token}, followed
        assert "s3cr3t-never-logged" not in json.dumps(arm.group(outcome.job_id).body)

        partial = _run(prefect, aci_pool(_template(aci_credentials={"client_id": "app-id"})))
        assert submit(deps, partial).outcome == "crashed"
        assert "client_id, tenant_id and client_secret" in prefect.read_run(partial)["state"]["message"]
    finally:
        deps.orchestrator.close()


def test_a_ticks_calls_grow_with_the_resource_groups_and_the_groups_alive_not_with_every_group(
    tmp_path: Path, aci_options: dict, arm
) -> None:
    """Issue 23 item 3: a tick over 51 in-flight runs in one resource group is one list of it, one GET per group still
    alive (ARM's list carries no instance view: the floor), and what the groups that changed need. A group seen ended
    is not read again, one this process deleted is not looked for again; a group just created and not listed yet
    (lag) is read alone — never declared gone on the list alone.

    The runs live in the orchestration fake (tests/fake_prefect.py, held to the real server by
    tests/contract/test_orchestration_contract.py), as in test_tick_scale_modal_coiled.py: what is counted is ARM's
    calls, and 51 runs made, claimed and moved on the real server cost it far more than the tick."""
    from pushpool.clock import SystemClock
    from pushpool.prefect_api.models import StateType

    from tests.fake_prefect import FakePrefect

    rg = "rg-pushpool-tick"  # a resource group of this test's own: other tests' groups are not in its list
    arm.add_resource_group(AZ_SUB, rg, "westeurope")
    fake = FakePrefect(clock=SystemClock())
    aci_deps = fake_deps(fake, tmp_path, prefect_api_key=KEY)
    aci_deps.backend_options["aci"] = aci_options
    pool = "aci-tick"
    fake.add_pool(pool, "azure-container-instance:push", base_job_template=_template(resource_group_name=rg))
    deployment = fake.add_deployment(pool)
    runs = [fake.add_run(deployment) for _ in range(51)]
    jobs = [submit(aci_deps, r).job_id for r in runs]
    assert all(f"/resourceGroups/{rg}/" in j for j in jobs)
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).isoformat()
    for run_id, job in zip(runs, jobs, strict=True):
        arm.start_container(job)
        fake.set_state_raw(run_id, StateType.RUNNING)
        arm.group(job).created = old
    late = jobs[50]
    arm.group(late).created = dt.datetime.now(dt.timezone.utc).isoformat()  # created moments ago: not listed yet
    failed, done, alive = jobs[:3], jobs[3:6], jobs[6:]
    for job in failed:
        arm.exit(job, 1, ["ModuleNotFoundError: No module named 'pandas'"])
    for run_id, job in zip(runs[3:6], done, strict=True):
        arm.exit(job, 0, ["done"])
        fake.force_state(run_id, StateType.COMPLETED)

    def reads(since: int) -> dict[str, int]:
        """GETs of each group since ``since`` (by resource id), and the other calls by route."""
        out: dict[str, int] = {}
        for route, path in arm.paths[since:]:
            key = next((j for j in jobs if j.lower() == path.lower()), route) if route == "get" else route
            out[key] = out.get(key, 0) + 1
        return out

    arm.bad_days.list_after(300)
    try:
        before = len(arm.paths)
        report = pool_tick(aci_deps, pool)
    finally:
        arm.bad_days.clear()
    calls = reads(before)
    assert report.reconciled["crash"] == 3 and report.reconciled["cleanup"] == 3, report
    assert calls.pop("list") == 1
    assert calls.pop("logs") == 3 and calls.pop("delete") == 3
    assert calls.pop(late) == 1 and fake.read_flow_run(runs[50]).state_type is StateType.RUNNING  # not declared gone
    # Each alive group once (the floor); a failed one also for its logs, a completed one also before its delete.
    assert calls == {**{j: 1 for j in alive[:-1]}, **{j: 2 for j in failed + done}}

    before = len(arm.paths)
    report = pool_tick(aci_deps, pool)  # the crashed runs are final: their groups go; the deleted ones are not read
    calls = reads(before)
    assert report.reconciled["cleanup"] == 3, report
    assert calls.pop("list") == 1 and calls.pop("delete") == 3
    assert calls == {**{j: 1 for j in alive}, **{j: 1 for j in failed}}  # a failed group: its delete's GET only

    before = len(arm.paths)
    pool_tick(aci_deps, pool)  # nothing changed: the list, and the groups still alive
    calls = reads(before)
    assert calls.pop("list") == 1 and calls == {j: 1 for j in alive}
