"""Credentials per pool, on every call (design.md rule 8; issue 22 item 2).

Two pools on two tokens is the normal case after provisioning. Every call about a job — submit, find, status, cancel,
logs, cleanup — must be signed with the credentials of the job's own pool, also by a monitor in a fresh process that
never saw the submit, and a deployment author may not pick another pool's credentials. The emulators serve several
accounts and record which token made each call, and answer a wrong token as the real service does (Modal: NOT_FOUND
for another workspace's sandbox; Coiled: 403/404; ARM: 403 AuthorizationFailed): asked with the wrong token, a live
job would read as missing and its run would be crashed while the job runs on.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from pushpool.errors import TemplateError
from pushpool.providers import base_job_template
from pushpool.providers.token_blocks import TokenBlock
from pushpool.usecases.job_spec import build_job_spec
from pushpool.usecases.monitor import tick
from pushpool.usecases.run_logs import run_logs

from tests.helpers import PrefectHelper, make_deps, submit

pytestmark = pytest.mark.integration

MODAL_A = ("ak-poolcredsa000000000000", "as-poolcredsa000000000000")
MODAL_B = ("ak-poolcredsb000000000000", "as-poolcredsb000000000000")
COILED_A, COILED_B = "pool-creds-token-a-0000", "pool-creds-token-b-0000"
REFUSED = "job variables may not change"


# -- helpers ---------------------------------------------------------------------------------------------------------


def _pool(prefect: PrefectHelper, pool_type: str, **defaults: Any) -> str:
    """A pool of ``pool_type`` on pushpool's template with variable ``defaults`` (where the operator puts a block)."""
    template = copy.deepcopy(base_job_template(pool_type))
    for key, value in defaults.items():
        template["variables"]["properties"][key]["default"] = value
    name = prefect.unique("creds")
    prefect.create_pool(name, pool_type, base_job_template=template)
    return name


def _block(deps, block: TokenBlock, data: dict[str, str]) -> dict[str, Any]:
    """A credentials block stored as provisioning stores it (the type registered when missing); its ``$ref``."""
    ref: dict[str, Any] = {}
    for step in block.steps(PrefectHelper.unique("creds"), deps.orchestrator, lambda: data):
        ref.update(step.run() if step.run else {})
    return ref[block.variable]


def _modal(token: tuple[str, str]) -> dict[str, str]:
    return {"token_id": token[0], "token_secret": token[1]}


def _running(deps, prefect: PrefectHelper, pool: str, **variables: Any) -> tuple[str, str]:
    """A run of ``pool`` submitted by ``deps`` and marked Running (its job is alive): (run id, job id)."""
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    outcome = submit(deps, run_id)
    assert outcome.outcome == "submitted", outcome
    prefect.set_state(run_id, "RUNNING", force=True)
    return run_id, str(outcome.job_id)


def _tick(deps, *pools: str):
    return tick(deps, pools=[deps.orchestrator.read_work_pool(p) for p in pools])


@pytest.fixture
def fresh(prefect_api: str, tmp_path: Path):
    """Monitors in new processes: new Deps (new backends) that never saw a submit."""
    made = []

    def make(**backend_options: Any):
        deps = make_deps(prefect_api, tmp_path / f"fresh-{len(made)}")
        deps.backend_options.update(copy.deepcopy(backend_options))
        made.append(deps)
        return deps

    yield make
    for deps in made:
        deps.orchestrator.close()


# -- a hostile deployment author may not choose credentials -----------------------------------------------------------


@pytest.fixture(scope="module")
def modal_workspaces(modal_server):
    modal_server.add_workspace(MODAL_A, "pool-creds-a")
    modal_server.add_workspace(MODAL_B, "pool-creds-b")
    return modal_server


@pytest.mark.parametrize("where", ["deployment", "flow-run"])
def test_a_deployment_author_cannot_sign_their_job_with_another_pools_block(
    deps, prefect: PrefectHelper, modal_workspaces, where: str
) -> None:
    """Pool B's deployment (or its flow run) names pool A's credentials block by id: the run is crashed with the
    reason, and nothing at all is asked of Modal with pool A's token — nor is any sandbox made."""
    from pushpool.providers.modal.provisioner import BLOCK

    server = modal_workspaces
    block_a = _block(deps, BLOCK, _modal(MODAL_A))
    _pool(prefect, "modal:push", modal_credentials=block_a)
    pool_b = _pool(prefect, "modal:push", modal_credentials=_block(deps, BLOCK, _modal(MODAL_B)))
    hostile = {"modal_credentials": block_a, "command": "sleep 60"}
    if where == "deployment":
        run_id = prefect.create_run(prefect.create_deployment(pool_b, job_variables=hostile))
    else:
        run_id = prefect.create_run(prefect.create_deployment(pool_b), job_variables=hostile)
    mark = len(server.callers)
    assert submit(deps, run_id).outcome == "crashed"
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and REFUSED in state["message"] and "'modal_credentials'" in state["message"]
    assert MODAL_A[1] not in state["message"] and MODAL_A[0] not in state["message"]
    assert server.callers[mark:] == []  # nothing was asked of Modal, with any token
    assert not [s for s in server.sandboxes.values() if s.tags.get("pushpool-run") == run_id]


CREDENTIALS = {  # pool type -> (its credentials variable, the pool's block, another block, defaults it needs)
    "modal:push": ("modal_credentials", _modal(MODAL_A), _modal(MODAL_B), {}),
    "coiled:push": ("credentials", {"api_token": COILED_A}, {"api_token": COILED_B}, {}),
    "ecs:push": ("aws_credentials", {"aws_access_key_id": "AKIAPOOLA", "aws_secret_access_key": "pool-a-secret"},
                 {"aws_access_key_id": "AKIAPOOLB", "aws_secret_access_key": "pool-b-secret"}, {}),
    "cloud-run-v2:push": ("credentials", {"service_account_info": {"client_email": "a@p.iam.gserviceaccount.com"}},
                          {"service_account_info": {"client_email": "b@p.iam.gserviceaccount.com"}}, {}),
    "azure-container-instance:push": (
        "aci_credentials", {"client_id": "app-a", "tenant_id": "tenant-a", "client_secret": "pool-a-secret"},
        {"client_id": "app-b", "tenant_id": "tenant-b", "client_secret": "pool-b-secret"},
        {"subscription_id": "00000000-0000-0000-0000-0000000000a1", "resource_group_name": "rg"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("pool_type", sorted(CREDENTIALS))
@pytest.mark.parametrize("how", ["another-block", "a-block-where-the-pool-has-none", "a-dotted-field"])
def test_every_provider_refuses_job_variables_that_change_the_pools_credentials(
    deps, prefect: PrefectHelper, pool_type: str, how: str
) -> None:
    """Whatever the provider and however the job variables touch it (a whole block, a block where the pool uses
    pushpool's own identity, one field of the block), the job's credentials stay the pool's: the job is refused, the
    field is named, no value is shown. The pool's own block repeated in a deployment is no change, and is accepted."""
    variable, own, other, needed = CREDENTIALS[pool_type]
    pool = _pool(prefect, pool_type, **needed, **({} if how == "a-block-where-the-pool-has-none" else {variable: own}))
    key, value = next(iter(other.items()))
    hostile = {f"{variable}.{key}": value} if how == "a-dotted-field" else {variable: other}
    client = deps.orchestrator

    def spec(job_variables: dict) -> Any:
        deployment = client.read_deployment(prefect.create_deployment(pool, job_variables=job_variables))
        run = client.read_flow_run(prefect.create_run(deployment.id))
        return build_job_spec(
            settings=deps.settings, client=client, run=run, pool=client.read_work_pool(pool), deployment=deployment,
            attempt="a",
        )  # fmt: skip

    with pytest.raises(TemplateError) as refused:
        spec(hostile)
    message = str(refused.value)
    assert REFUSED in message and repr(variable) in message
    assert all(str(v) not in message for block in (own, other) for v in block.values())
    if how != "a-block-where-the-pool-has-none":
        assert spec({variable: own}).credentials == {variable: own}  # the pool's own block, repeated: accepted


# -- two pools, two tokens: a fresh monitor follows each job with its own pool's token ---------------------------------


def test_modal_jobs_of_two_pools_are_followed_cancelled_and_read_with_their_own_pools_token(
    deps, fresh, prefect: PrefectHelper, modal_workspaces
) -> None:
    """Pool A's sandbox runs in workspace A, pool B's in workspace B; B's token was used last. The submitting process
    and a monitor in a new process both see both jobs alive (Modal answers NOT_FOUND to the other workspace's token: a
    run would be crashed); logs and cancel reach A's sandbox; every call about a sandbox carries its own pool's token.
    """
    from pushpool.providers.modal.provisioner import BLOCK

    server = modal_workspaces
    pool_a = _pool(prefect, "modal:push", modal_credentials=_block(deps, BLOCK, _modal(MODAL_A)))
    pool_b = _pool(prefect, "modal:push", modal_credentials=_block(deps, BLOCK, _modal(MODAL_B)))
    run_a, sandbox_a = _running(deps, prefect, pool_a, command="sh -c 'echo output-of-pool-a; sleep 60'")
    run_b, sandbox_b = _running(deps, prefect, pool_b, command="sleep 60")  # B's token is the last used
    assert server.sandboxes[sandbox_a].workspace == "pool-creds-a"
    assert server.sandboxes[sandbox_b].workspace == "pool-creds-b"

    for monitor in (deps, fresh(), fresh()):  # the same process, then new ones
        report = _tick(monitor, pool_a, pool_b)
        assert not report.errors, report.errors
        assert prefect.state(run_a)[0] == prefect.state(run_b)[0] == "RUNNING"

    logs = run_logs(fresh(), run_a, lines=20)
    assert "output-of-pool-a" in logs["job_output"], logs

    prefect.set_state(run_a, "CANCELLING")
    assert _tick(fresh(), pool_a).reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_a)[0] == "CANCELLED"
    assert server.sandboxes[sandbox_a].result.status == server.sandboxes[sandbox_a].result.GENERIC_STATUS_TERMINATED
    assert server.tokens_about(sandbox_a) == {MODAL_A[0]}
    assert server.tokens_about(sandbox_b) == {MODAL_B[0]}

    prefect.set_state(run_b, "CANCELLING")
    _tick(fresh(), pool_b)
    assert prefect.state(run_b)[0] == "CANCELLED"
    assert server.tokens_about(sandbox_b) == {MODAL_B[0]}


@pytest.fixture(scope="module")
def coiled_accounts(coiled_server):
    coiled_server.add_account(COILED_A, "pool-creds-a", {"pool-creds-a"})
    coiled_server.add_account(COILED_B, "pool-creds-b", {"pool-creds-b"})
    return coiled_server


def test_coiled_jobs_of_two_pools_are_followed_cancelled_and_read_with_their_own_pools_token(
    deps, fresh, prefect: PrefectHelper, coiled_accounts
) -> None:
    """As for Modal: each job's status, logs and cancel are asked with its own pool's token (Coiled answers 403/404
    to another account's), by the submitting process (B's token last) and by monitors in new processes."""
    from pushpool.providers.coiled.provisioner import BLOCK

    server = coiled_accounts
    pool_a = _pool(prefect, "coiled:push", credentials=_block(deps, BLOCK, {"api_token": COILED_A}))
    pool_b = _pool(prefect, "coiled:push", credentials=_block(deps, BLOCK, {"api_token": COILED_B}))
    run_a, job_a = _running(deps, prefect, pool_a, command="sh -c 'echo output-of-pool-a; sleep 60'")
    run_b, job_b = _running(deps, prefect, pool_b, command="sleep 60")
    assert job_a.startswith("pool-creds-a/") and job_b.startswith("pool-creds-b/")
    cluster_a, cluster_b = job_a.split("/")[1], job_b.split("/")[1]

    for monitor in (deps, fresh(), fresh()):
        report = _tick(monitor, pool_a, pool_b)
        assert not report.errors, report.errors
        assert prefect.state(run_a)[0] == prefect.state(run_b)[0] == "RUNNING"

    logs = run_logs(fresh(), run_a, lines=20)
    assert "output-of-pool-a" in logs["job_output"], logs

    prefect.set_state(run_a, "CANCELLING")
    assert _tick(fresh(), pool_a).reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_a)[0] == "CANCELLED"
    assert server.clusters[int(cluster_a)].state == "stopped"
    assert server.tokens_for_cluster(cluster_a) == {COILED_A}
    assert server.tokens_for_cluster(cluster_b) == {COILED_B}

    prefect.set_state(run_b, "CANCELLING")
    _tick(fresh(), pool_b)
    assert prefect.state(run_b)[0] == "CANCELLED"
    assert server.tokens_for_cluster(cluster_b) == {COILED_B}


ARM_A, ARM_B = "pool-creds-principal-a-token", "pool-creds-principal-b-token"
SUB_A, SUB_B = "00000000-0000-0000-0000-00000000c0a1", "00000000-0000-0000-0000-00000000c0b2"
ACI_A = {"client_id": "pool-creds-app-a", "tenant_id": "tenant-a", "client_secret": "pool-a-secret"}
ACI_B = {"client_id": "pool-creds-app-b", "tenant_id": "tenant-b", "client_secret": "pool-b-secret"}


def test_aci_groups_of_two_pools_in_two_subscriptions_are_followed_with_their_own_pools_principal(
    fresh, prefect: PrefectHelper, aci_options: dict, arm
) -> None:
    """Each pool's service principal reaches only its own subscription (ARM: 403 AuthorizationFailed elsewhere);
    pushpool's own identity could reach both, but no call about a pool's group is made with it: status, logs and
    cancel, by the submitting process and by monitors in new processes, are signed with the group's pool's block."""
    from tests.arm_emulator import FakeCredential

    arm.add_resource_group(SUB_A, "rg-a")
    arm.add_resource_group(SUB_B, "rg-b")
    arm.add_account(ARM_A, {SUB_A})
    arm.add_account(ARM_B, {SUB_B})
    principals = {ACI_A["client_id"]: FakeCredential(ARM_A), ACI_B["client_id"]: FakeCredential(ARM_B)}
    options = {"aci": {**aci_options, "block_credential": principals}}
    kind = "azure-container-instance:push"
    pool_a = _pool(prefect, kind, subscription_id=SUB_A, resource_group_name="rg-a", aci_credentials=ACI_A)
    pool_b = _pool(prefect, kind, subscription_id=SUB_B, resource_group_name="rg-b", aci_credentials=ACI_B)
    submitter = fresh(**options)
    mark = len(arm.callers)
    run_a, group_a = _running(submitter, prefect, pool_a)
    run_b, group_b = _running(submitter, prefect, pool_b)  # B's principal is the last used
    arm.start_container(group_a)
    arm.start_container(group_b)

    for monitor in (submitter, fresh(**options), fresh(**options)):
        report = _tick(monitor, pool_a, pool_b)
        assert not report.errors, report.errors
        assert prefect.state(run_a)[0] == prefect.state(run_b)[0] == "RUNNING"
    run_logs(fresh(**options), run_a, lines=20)
    prefect.set_state(run_a, "CANCELLING")
    assert _tick(fresh(**options), pool_a).reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_a)[0] == "CANCELLED"

    calls = arm.callers[mark:]
    assert {route for _, route, sub, _ in calls if sub == SUB_A} >= {"put", "list", "get", "logs", "stop"}
    assert {token for _, _, sub, token in calls if sub == SUB_A} == {ARM_A}
    assert {token for _, _, sub, token in calls if sub == SUB_B} == {ARM_B}


PROJECT_A, PROJECT_B = "pool-creds-a", "pool-creds-b"


@pytest.fixture(scope="module")
def google():
    """A Cloud Run emulator of its own with accounts: pushpool's own service account reaches both projects, each pool's
    only its own (Google: 403 PERMISSION_DENIED elsewhere, 401 for an unknown signer)."""
    from tests.gcp_emulator import CloudRunEmulator, service_account_info

    emulator = CloudRunEmulator().start()
    keys = {
        who: service_account_info(project, f"{emulator.endpoint}/token", f"{who}@{project}.iam.gserviceaccount.com")
        for who, project in (("own", PROJECT_A), ("pool-a", PROJECT_A), ("pool-b", PROJECT_B))
    }
    emulator.add_account(keys["own"]["client_email"], {PROJECT_A, PROJECT_B})
    emulator.add_account(keys["pool-a"]["client_email"], {PROJECT_A})
    emulator.add_account(keys["pool-b"]["client_email"], {PROJECT_B})
    yield emulator, keys
    emulator.stop()


def test_cloud_run_jobs_of_two_pools_in_two_projects_are_followed_with_their_own_pools_service_account(
    fresh, prefect: PrefectHelper, google
) -> None:
    """Status, the unstarted-job sweep, logs, cancel and cleanup of each pool's job are signed with its pool's
    gcp-credentials block — by the submitting process and by monitors in new processes — never by pushpool's own
    service account (which could reach both projects) nor by the other pool's."""
    from google.oauth2 import service_account
    from pushpool.providers.cloudrun.backend import SCOPES

    emulator, keys = google
    own = service_account.Credentials.from_service_account_info(keys["own"], scopes=SCOPES)
    options = {
        "cloudrun": {
            "credentials": own,
            "project": PROJECT_A,
            "endpoint": emulator.endpoint,
            "logging_endpoint": emulator.endpoint,
            "retry_initial": 0.01,
            "retry_timeout": 5.0,
            "ready_timeout": 10.0,
            "check_image_platform": False,
        }
    }
    secret = {"secret": "prefect-api-key", "version": "latest"}
    pools = {
        who: _pool(
            prefect,
            "cloud-run-v2:push",
            project=project,
            prefect_api_key_secret=secret,
            credentials={"service_account_info": keys[who], "project": project},
        )
        for who, project in (("pool-a", PROJECT_A), ("pool-b", PROJECT_B))
    }
    submitter = fresh(**options)
    submitter.settings = submitter.settings.replace(prefect_api_key="pnu_pool_creds_key")
    mark = len(emulator.callers)
    run_a, execution_a = _running(submitter, prefect, pools["pool-a"])
    run_b, execution_b = _running(submitter, prefect, pools["pool-b"])  # B's account is the last used
    emulator.set_running(execution_a)
    emulator.set_running(execution_b)

    for monitor in (submitter, fresh(**options), fresh(**options)):
        report = _tick(monitor, *pools.values())
        assert not report.errors, report.errors
        assert prefect.state(run_a)[0] == prefect.state(run_b)[0] == "RUNNING"
    run_logs(fresh(**options), run_a, lines=20)
    prefect.set_state(run_a, "CANCELLING")
    assert _tick(fresh(**options), pools["pool-a"]).reconciled["stop-and-cancel"] == 1
    assert prefect.state(run_a)[0] == "CANCELLED"
    _tick(fresh(**options), pools["pool-a"])  # the run is final and its job ended: cleaned up
    assert execution_a not in emulator.executions

    calls = emulator.callers[mark:]

    def of(project: str, where: str) -> bool:  # by the path's project segment (a job's name may contain the other's)
        return re.search(rf"projects/{re.escape(project)}(/|\s|$)", where) is not None

    about_a = [(method, where) for method, where, _ in calls if of(PROJECT_A, where)]
    assert {m for m, w in about_a if ":cancel" in w} and {m for m, w in about_a if "entries:list" in w}
    assert {m for m, w in about_a if m == "DELETE"} and {m for m, w in about_a if w.endswith("/jobs/-/executions")}
    for project, who in ((PROJECT_A, "pool-a"), (PROJECT_B, "pool-b")):
        others = [call for call in calls if of(project, call[1]) and call[2] != keys[who]["client_email"]]
        assert others == [] and any(of(project, where) for _, where, _ in calls), others


def _ecs_pool(prefect: PrefectHelper, aws: dict, **defaults: Any) -> str:
    """An ecs:push pool on the session's moto cluster and network (as tests/integration/test_ecs_parity.py's)."""
    template = copy.deepcopy(base_job_template("ecs:push"))
    props = template["variables"]["properties"]
    props["cluster"]["default"] = aws["cluster"]
    props["network_configuration"]["default"] = {
        "subnets": aws["subnets"],
        "securityGroups": [aws["security_group"]],
        "assignPublicIp": "ENABLED",
    }
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512  # moto
    for key, value in defaults.items():
        props[key]["default"] = value
    name = prefect.unique("creds")
    prefect.create_pool(name, "ecs:push", base_job_template=template)
    return name


def test_ecs_tasks_of_two_pools_are_followed_and_stopped_with_their_own_pools_keys(
    deps, fresh, prefect: PrefectHelper, aws: dict
) -> None:
    """Two pools, each with an aws-credentials block of its own IAM user: every DescribeTasks and StopTask about a
    pool's task — by the submitting process (the other pool's keys last) and by monitors in new processes — is signed
    with that pool's keys, never pushpool's own identity nor the other pool's."""
    import boto3

    from tests.emulators import MotoServer
    from tests.helpers import SECRET_ARN

    iam = boto3.client("iam")
    keys = {}
    for who in ("a", "b"):
        user = PrefectHelper.unique(f"pool-creds-{who}")
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[who] = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"],
                     "region_name": "us-east-1"}  # fmt: skip
    pool_a = _ecs_pool(prefect, aws, aws_credentials=keys["a"], prefect_api_key_secret_arn=SECRET_ARN)
    pool_b = _ecs_pool(prefect, aws, aws_credentials=keys["b"], prefect_api_key_secret_arn=SECRET_ARN)
    assert MotoServer.instance is not None
    log = MotoServer.instance.requests
    mark = log.mark()
    run_a, task_a = _running(deps, prefect, pool_a)
    run_b, task_b = _running(deps, prefect, pool_b)  # B's keys are the last used

    for monitor in (deps, fresh(), fresh()):
        report = _tick(monitor, pool_a, pool_b)
        assert not report.errors, report.errors
        assert prefect.state(run_a)[0] == prefect.state(run_b)[0] == "RUNNING"
    prefect.set_state(run_a, "CANCELLING")
    assert _tick(fresh(), pool_a).reconciled["stop-and-cancel"] == 1

    signers: dict[str, set[str | None]] = {task_a: set(), task_b: set()}
    for entry in log.since(mark):
        if entry["action"] in ("DescribeTasks", "StopTask"):
            body = entry["body"] or {}
            for arn in [*(body.get("tasks") or []), body.get("task")]:
                for handle, found in signers.items():
                    if arn and handle.endswith(str(arn)):
                        found.add(entry["key_id"])
    assert signers[task_a] == {keys["a"]["aws_access_key_id"]}
    assert signers[task_b] == {keys["b"]["aws_access_key_id"]}
    assert "StopTask" in {e["action"] for e in log.since(mark) if e["key_id"] == keys["a"]["aws_access_key_id"]}


# -- the emulators answer a call made with the wrong credentials as the real service does ------------------------------


def test_modal_answers_an_unknown_token_unauthenticated_and_another_workspaces_sandbox_not_found(
    deps, prefect: PrefectHelper, modal_workspaces
) -> None:
    from pushpool.providers.base import JobHandle, JobState
    from pushpool.providers.modal.backend import ModalBackend

    pool = _pool(prefect, "modal:push", modal_credentials=_modal(MODAL_A))
    _, sandbox = _running(deps, prefect, pool, command="sleep 30")
    backend = ModalBackend()  # a fresh one
    with_b = JobHandle("modal", sandbox, {"modal_credentials": _modal(MODAL_B)})
    with_unknown = JobHandle("modal", sandbox, {"modal_credentials": _modal(("ak-unknown00000", "as-unknown00000"))})
    assert backend.status([with_b])[sandbox].state is JobState.MISSING  # NOT_FOUND: why the wrong token crashes runs
    unknown = backend.status([with_unknown])[sandbox]
    assert unknown.state is JobState.UNKNOWN and "refused the credentials" in unknown.reason
    assert backend.status([JobHandle("modal", sandbox, {"modal_credentials": _modal(MODAL_A)})])[sandbox].state.is_alive
    backend.cancel(JobHandle("modal", sandbox, {"modal_credentials": _modal(MODAL_A)}))


def test_coiled_answers_an_unknown_token_401_another_workspace_403_and_its_cluster_404(coiled_accounts) -> None:
    from pushpool.errors import BackendError, JobNotFoundError
    from pushpool.providers.coiled.api import CoiledApi

    server = coiled_accounts
    api_a, api_b = CoiledApi(COILED_A, server=server.url), CoiledApi(COILED_B, server=server.url)
    job = api_a.create_job({"user_command": "true", "workspace": "pool-creds-a"})
    cluster, _ = api_a.create_cluster("pool-creds-a", {"name": PrefectHelper.unique("c"), "batch_job_ids": [job]})
    assert api_a.jobs_of_cluster(cluster)
    with pytest.raises(JobNotFoundError):
        api_b.jobs_of_cluster(cluster)  # 404: not among B's workspaces' clusters
    with pytest.raises(BackendError, match=r"refused the API token \(403\)"):
        api_b.cluster_by_name("pool-creds-a", "anything")
    with pytest.raises(BackendError, match=r"refused the API token \(401\)"):
        CoiledApi("no-such-token", server=server.url, attempts=1).account()
    api_a.stop_cluster("pool-creds-a", cluster, "test over")


def test_arm_answers_an_unknown_token_401_and_another_subscription_403(aci_options: dict, arm) -> None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    from tests.arm_emulator import FakeCredential

    arm.add_account(ARM_A, {SUB_A})
    arm.add_resource_group(SUB_B, "rg-b")

    def groups(token: str, subscription: str) -> list:
        client = ContainerInstanceManagementClient(
            FakeCredential(token), subscription, base_url=arm.url, connection_verify=aci_options["connection_verify"]
        )
        return list(client.container_groups.list_by_resource_group("rg-b"))

    with pytest.raises(HttpResponseError) as denied:
        groups(ARM_A, SUB_B)
    assert denied.value.status_code == 403 and denied.value.error.code == "AuthorizationFailed"
    with pytest.raises(ClientAuthenticationError) as unknown:
        groups("no-such-token", SUB_B)
    assert unknown.value.status_code == 401
    assert isinstance(groups(FakeCredential().token, SUB_B), list)  # pushpool's own identity reaches every one


def test_google_answers_an_unknown_signer_401_and_another_project_403(google) -> None:
    from google.api_core import exceptions
    from google.cloud import run_v2
    from google.oauth2 import service_account
    from pushpool.providers.cloudrun.backend import SCOPES

    from tests.gcp_emulator import service_account_info

    emulator, keys = google
    stranger = service_account_info(
        PROJECT_A, f"{emulator.endpoint}/token", "stranger@pool-creds-a.iam.gserviceaccount.com"
    )

    def jobs(key: dict, project: str) -> list:
        credentials = service_account.Credentials.from_service_account_info(key, scopes=SCOPES)
        client = run_v2.JobsClient(
            credentials=credentials, transport="rest", client_options={"api_endpoint": emulator.endpoint}
        )
        return list(client.list_jobs(parent=f"projects/{project}/locations/us-central1"))

    with pytest.raises(exceptions.Forbidden):  # 403 PERMISSION_DENIED
        jobs(keys["pool-a"], PROJECT_B)
    with pytest.raises(exceptions.Unauthorized):  # 401 UNAUTHENTICATED
        jobs(stranger, PROJECT_A)
    jobs(keys["pool-a"], PROJECT_A)


def test_cloud_tasks_answers_an_unknown_signer_401_and_another_project_403() -> None:
    from google.oauth2 import service_account
    from pushpool.entrypoints.gcp_delay import CloudTasksTrigger
    from pushpool.errors import BackendError

    from tests.cloudtasks_emulator import CloudTasksEmulator
    from tests.gcp_emulator import service_account_info

    emulator = CloudTasksEmulator().start()
    try:
        keys = {
            who: service_account_info(
                PROJECT_A, f"{emulator.endpoint}/token", f"{who}@{PROJECT_A}.iam.gserviceaccount.com"
            )
            for who in ("queuer", "stranger")
        }
        emulator.add_account(keys["queuer"]["client_email"], {PROJECT_A})
        queue_a = emulator.add_queue(PROJECT_A, "us-central1", "q")
        queue_b = emulator.add_queue(PROJECT_B, "us-central1", "q")

        def arm(who: str, queue: str) -> None:
            credentials = service_account.Credentials.from_service_account_info(
                keys[who], scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
            trigger = CloudTasksTrigger(
                queue, "https://x.example/delayed", keys["queuer"]["client_email"], endpoint=emulator.endpoint,
                credentials=credentials,
            )  # fmt: skip
            trigger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now())

        with pytest.raises(BackendError, match="403"):
            arm("queuer", queue_b)
        with pytest.raises(BackendError, match="401"):
            arm("stranger", queue_a)
        assert not emulator.tasks
        arm("queuer", queue_a)
        assert len(emulator.tasks) == 1
        assert {account for _, _, account in emulator.callers} == {
            keys["queuer"]["client_email"],
            keys["stranger"]["client_email"],
        }
    finally:
        emulator.stop()


def test_storage_queue_answers_an_unknown_token_401_and_a_queue_not_granted_403(tmp_path: Path) -> None:
    from pushpool.entrypoints.azure_delay import StorageQueueTrigger
    from pushpool.errors import BackendError

    from tests.arm_emulator import FakeCredential
    from tests.storage_queue_emulator import StorageQueueEmulator

    emulator = StorageQueueEmulator(tmp_path).start()
    try:
        mine, other = emulator.add_queue("queue-a"), emulator.add_queue("queue-b")
        emulator.add_identity("identity-a-token", {"queue-a"})
        options = {"connection_verify": str(emulator.cert)}

        def arm(token: str, url: str) -> None:
            trigger = StorageQueueTrigger(url, credential=FakeCredential(token), client_options=options)
            trigger.arm("3f1c0a52-7d3e-4a4b-9a57-1d2f3e4a5b6c", _now())

        with pytest.raises(BackendError, match="AuthorizationPermissionMismatch"):
            arm("identity-a-token", other)
        with pytest.raises(BackendError, match="InvalidAuthenticationInfo"):
            arm("no-such-token", mine)
        assert emulator.sent("queue-a") == emulator.sent("queue-b") == []
        arm("identity-a-token", mine)
        assert len(emulator.sent("queue-a")) == 1
    finally:
        emulator.stop()


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def test_a_pool_whose_credentials_cannot_be_read_has_its_jobs_left_alone_not_asked_with_other_credentials(
    deps, fresh, prefect: PrefectHelper, modal_workspaces
) -> None:
    """Pool A's block is gone (deleted, or Prefect cannot read it now): the monitor reports it and leaves the pool's
    runs as they are this tick — asked with pushpool's own token instead, the live sandbox would read as missing and
    its run would be crashed."""
    from pushpool.providers.modal.provisioner import BLOCK

    server = modal_workspaces
    block = _block(deps, BLOCK, _modal(MODAL_A))
    pool = _pool(prefect, "modal:push", modal_credentials=block)
    run_id, sandbox = _running(deps, prefect, pool, command="sleep 60")
    deps.orchestrator.delete_block_document(block["$ref"]["block_document_id"])
    asked = len(server.callers)
    report = _tick(fresh(), pool)
    assert any(run_id in error and "block not found" in error for error in report.errors), report.errors
    assert prefect.state(run_id)[0] == "RUNNING"
    assert [c for c in server.callers[asked:] if c[2] == sandbox] == []  # never asked about, with any token
    server._terminate(sandbox, "pool-creds-a")
