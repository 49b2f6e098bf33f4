"""The hostile (or careless) deployment author's Prefect credential in a job's ``env`` (issue 22, item 4): it reaches
the job only by the provider's secret mechanism — an ACI ``secureValue`` (ARM never returns it), an ECS container
``secrets`` reference, a Cloud Run ``secretKeyRef`` — or the run is refused with a reason that names the variable,
never its value, and no job is made. Read back from what each cloud holds: the ARM endpoint's view of the group (and
the real SDK's GET), moto's DescribeTasks and task definition, the Cloud Run emulator's job.

The real Prefect server and pushpool's submit; the clouds are the local emulators (tests/arm_emulator.py, moto in
server mode, tests/gcp_emulator.py) reached by the real SDK clients.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import boto3
import pytest
from google.auth.credentials import AnonymousCredentials
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_RG, AZ_SUB
from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import SECRET_ARN, PrefectHelper, make_deps

pytestmark = pytest.mark.integration
USER_KEY = "pnu_deployment_authors_key_never_plain"
USER_AUTH = "admin:deployment-authors-password"
OTHER_SECRETS = {"DB_PASSWORD": "hunter2-db", "GITHUB_TOKEN": "ghp_never_plain", "AWS_SECRET_ACCESS_KEY": "aws-plain"}
VALUES = (USER_KEY, USER_AUTH, *OTHER_SECRETS.values())


def _run(deps, prefect: PrefectHelper, pool: str, **variables):
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    run = deps.orchestrator.read_flow_run(run_id)
    return run_id, submit_run(deps, run, deps.orchestrator.read_work_pool(pool), trigger="test")


def _crashed_naming(prefect: PrefectHelper, run_id: str, outcome, *fragments: str) -> None:
    assert outcome.outcome == "crashed", outcome
    message = prefect.read_run(run_id)["state"]["message"]
    for fragment in fragments:
        assert fragment in message, message
    assert not any(value in message for value in VALUES), message
    assert not any(value in outcome.detail for value in VALUES)


# -- ACI ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def aci_pool(prefect: PrefectHelper):
    template = copy.deepcopy(base_job_template("azure-container-instance:push"))
    props = template["variables"]["properties"]
    props["subscription_id"]["default"], props["resource_group_name"]["default"] = AZ_SUB, AZ_RG
    name = prefect.unique("aci-env")
    prefect.create_pool(name, "azure-container-instance:push", base_job_template=template)
    yield name
    prefect.request("DELETE", f"/work_pools/{name}")


def test_aci_credentials_and_secret_looking_env_values_are_secure_values(
    prefect_api: str, tmp_path: Path, aci_options: dict, prefect: PrefectHelper, aci_pool: str, arm
) -> None:
    """Prefect's own worker sends only PREFECT_API_KEY as a secureValue; pushpool also PREFECT_API_AUTH_STRING and
    every name that looks secret. ARM returns none of them, to any reader of the group."""
    deps = make_deps(prefect_api, tmp_path)  # pushpool holds no key: the job's own is the one it gets
    deps.backend_options["aci"] = aci_options
    env = {"PREFECT_API_KEY": USER_KEY, "PREFECT_API_AUTH_STRING": USER_AUTH, **OTHER_SECRETS, "TEAM": "data"}
    try:
        run_id, outcome = _run(deps, prefect, aci_pool, env=env)
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "submitted", outcome
    sent = arm.group(outcome.job_id).body["properties"]["containers"][0]["properties"]["environmentVariables"]
    kinds = {e["name"]: ("secureValue" if "secureValue" in e else "value") for e in sent}
    assert {name: kinds[name] for name in env} == {
        **{name: "secureValue" for name in env if name != "TEAM"},
        "TEAM": "value",
    }
    secure = {e["name"]: e["secureValue"] for e in sent if "secureValue" in e}
    assert secure["PREFECT_API_KEY"] == USER_KEY and secure["DB_PASSWORD"] == "hunter2-db"  # the container gets them
    # Whoever reads the group back (the portal, `az container show`, the SDK) sees none of the values.
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    client = ContainerInstanceManagementClient(
        aci_options["credential"],
        AZ_SUB,
        base_url=aci_options["base_url"],
        connection_verify=aci_options["connection_verify"],
    )
    read = json.dumps(client.container_groups.get(AZ_RG, outcome.job_id.rsplit("/", 1)[-1]).serialize())
    listed = json.dumps([g.serialize() for g in client.container_groups.list_by_resource_group(AZ_RG)])
    assert "data" in read  # the plain value is there: the read works
    assert not any(value in read or value in listed for value in VALUES)
    assert not any(value in prefect.json("GET", f"/flow_runs/{run_id}").__repr__() for value in VALUES)


# -- ECS ---------------------------------------------------------------------------------------------------------


def _ecs_tasks(pool_run_id: str, cluster: str) -> list[dict]:
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster=cluster)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    return [t for t in tasks if t.get("startedBy", "").startswith(pool_run_id)]


@pytest.mark.parametrize("credential", ["PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"])
def test_ecs_a_credential_in_env_without_a_secret_reference_is_refused_and_no_task_starts(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, ecs_pool: str, aws: dict, credential: str
) -> None:
    """Before, it went into the task's containerOverrides in plaintext (DescribeTasks and CloudTrail show those)."""
    deps = make_deps(prefect_api, tmp_path)
    try:
        value = USER_KEY if credential == "PREFECT_API_KEY" else USER_AUTH
        run_id, outcome = _run(deps, prefect, ecs_pool, env={credential: value})
    finally:
        deps.orchestrator.close()
    _crashed_naming(prefect, run_id, outcome, f"refusing to send {credential} in plaintext", "_secret_arn")
    assert _ecs_tasks(run_id, aws["cluster"]) == []


def test_ecs_a_credential_in_env_goes_by_the_pools_secret_reference_only(
    prefect_api: str, tmp_path: Path, prefect: PrefectHelper, ecs_pool: str, aws: dict
) -> None:
    """With a secret ARN, the container gets the credential from Secrets Manager (as Prefect's ECS worker does: the
    env value is dropped for the reference); the value itself is in no override and no definition."""
    deps = make_deps(prefect_api, tmp_path)
    try:
        run_id, outcome = _run(
            deps, prefect, ecs_pool, env={"PREFECT_API_KEY": USER_KEY}, prefect_api_key_secret_arn=SECRET_ARN
        )
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "submitted", outcome
    (task,) = _ecs_tasks(run_id, aws["cluster"])
    definition = aws["ecs"].describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["containerDefinitions"][0]["secrets"] == [{"name": "PREFECT_API_KEY", "valueFrom": SECRET_ARN}]
    override = task["overrides"]["containerOverrides"][0]
    assert "PREFECT_API_KEY" not in {e["name"] for e in override.get("environment", [])}
    assert USER_KEY not in json.dumps(task, default=str) and USER_KEY not in json.dumps(definition, default=str)


# -- Cloud Run ---------------------------------------------------------------------------------------------------

PROJECT = "pushpool-test"


@pytest.fixture(scope="module")
def cloudrun():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


@pytest.fixture
def cr_deps(prefect_api: str, tmp_path: Path, cloudrun: CloudRunEmulator):
    deps = make_deps(prefect_api, tmp_path)  # pushpool holds no key: only the job's env names one
    deps.backend_options["cloudrun"] = {
        "credentials": AnonymousCredentials(),
        "project": PROJECT,
        "endpoint": cloudrun.endpoint,
        "logging_endpoint": cloudrun.endpoint,
        "retry_initial": 0.01,
        "retry_timeout": 5.0,
        "ready_timeout": 10.0,
        "check_image_platform": False,
    }
    yield deps
    deps.orchestrator.close()


def _cr_pool(prefect: PrefectHelper, secret: dict | None) -> str:
    template = copy.deepcopy(base_job_template("cloud-run-v2:push"))
    props = template["variables"]["properties"]
    props["project"]["default"] = PROJECT
    if secret is not None:
        props["prefect_api_key_secret"]["default"] = secret
    name = prefect.unique("cloudrun-env")
    prefect.create_pool(name, "cloud-run-v2:push", base_job_template=template)
    return name


def _cr_jobs_of(cloudrun: CloudRunEmulator, run_id: str) -> list[dict]:
    return [j for j in cloudrun.jobs.values() if (j.get("labels") or {}).get("prefect-io-flow-run-id") == run_id]


def test_cloudrun_a_credential_in_env_without_a_secret_reference_is_refused_and_no_job_is_made(
    cr_deps, prefect: PrefectHelper, cloudrun: CloudRunEmulator
) -> None:
    creates = cloudrun.count("POST", "/jobs")
    run_id, outcome = _run(cr_deps, prefect, _cr_pool(prefect, None), env={"PREFECT_API_KEY": USER_KEY})
    _crashed_naming(prefect, run_id, outcome, "refusing to send PREFECT_API_KEY in plaintext", "prefect_api_key_secret")
    assert cloudrun.count("POST", "/jobs") == creates and _cr_jobs_of(cloudrun, run_id) == []


def test_cloudrun_a_credential_in_env_goes_by_secret_key_ref_only(
    cr_deps, prefect: PrefectHelper, cloudrun: CloudRunEmulator
) -> None:
    secret = {"secret": "prefect-api-key", "version": "latest"}
    run_id, outcome = _run(cr_deps, prefect, _cr_pool(prefect, secret), env={"PREFECT_API_KEY": USER_KEY})
    assert outcome.outcome == "submitted", outcome
    (job,) = _cr_jobs_of(cloudrun, run_id)
    env = {e["name"]: e for e in job["template"]["template"]["containers"][0]["env"]}
    assert env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "valueSource": {"secretKeyRef": secret}}
    assert USER_KEY not in json.dumps(job)
