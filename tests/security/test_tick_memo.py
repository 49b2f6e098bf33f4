"""What a backend remembers between ticks never answers for another pool's credentials (design.md rule 8).

Cloud Run and ACI keep, in a warm process, what cannot change any more (an ended execution's or group's status, a
failed execution's exit code, a job they deleted), so that a tick costs one list per location rather than calls per
run (issue 23 item 3). Those memos are keyed by the identity that read them: a handle of the same job that carries
another pool's credentials — which cannot reach the job's project or subscription — is asked with its own credentials
and refused, never told what the first pool's credentials read, and its cleanup deletes nothing.
"""

from __future__ import annotations

import pytest
from pushpool.errors import BackendError
from pushpool.providers.base import JobHandle, JobState

from tests.helpers import PrefectHelper
from tests.security import test_pool_credentials as creds
from tests.security.test_pool_credentials import (
    ACI_A,
    ACI_B,
    ARM_A,
    ARM_B,
    PROJECT_A,
    PROJECT_B,
    SUB_A,
    SUB_B,
    _pool,
    _running,
)

# The two-pool, two-project (two-subscription) setups of the credentials suite: the same emulators and fixtures.
fresh, google = creds.fresh, creds.google


def test_cloud_run_what_one_pools_credentials_read_never_answers_for_anothers(
    fresh,
    prefect: PrefectHelper,
    google,
) -> None:
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
            "retry_timeout": 2.0,
            "ready_timeout": 10.0,
            "check_image_platform": False,
        }
    }
    block_a = {"service_account_info": keys["pool-a"], "project": PROJECT_A}
    block_b = {"service_account_info": keys["pool-b"], "project": PROJECT_B}
    secret = {"secret": "prefect-api-key", "version": "latest"}
    pool = _pool(prefect, "cloud-run-v2:push", project=PROJECT_A, prefect_api_key_secret=secret, credentials=block_a)
    deps = fresh(**options)
    deps.settings = deps.settings.replace(prefect_api_key="pnu_tick_memo_key")
    _, execution = _running(deps, prefect, pool)
    emulator.exit(execution, 1, ["boom"])
    backend = deps.backend("cloudrun")
    as_a = JobHandle("cloudrun", execution, {"credentials": block_a})
    as_b = JobHandle("cloudrun", execution, {"credentials": block_b})  # another pool's: no role in project A

    assert backend.status([as_a])[execution].state is JobState.FAILED  # remembered for A's identity
    mark = len(emulator.callers)
    status = backend.status([as_b])[execution]
    assert status.state is JobState.UNKNOWN and "403" in status.reason  # asked with B's, refused: not A's answer
    backend.cleanup(as_b)
    assert execution in emulator.executions  # B's cleanup deleted nothing
    signed = {account for _, where, account in emulator.callers[mark:] if f"projects/{PROJECT_A}/" in where}
    assert signed == {keys["pool-b"]["client_email"]}  # every call about it, B's

    backend.cleanup(as_a)  # A's, from what A read: deleted
    assert execution not in emulator.executions
    status = backend.status([as_b])[execution]
    assert status.state is JobState.UNKNOWN  # A's "deleted" is not B's either


def test_aci_what_one_pools_principal_read_never_answers_for_anothers(
    fresh,
    prefect: PrefectHelper,
    aci_options: dict,
    arm,
) -> None:
    from tests.arm_emulator import FakeCredential

    arm.add_resource_group(SUB_A, "rg-a")
    arm.add_account(ARM_A, {SUB_A})
    arm.add_account(ARM_B, {SUB_B})
    principals = {ACI_A["client_id"]: FakeCredential(ARM_A), ACI_B["client_id"]: FakeCredential(ARM_B)}
    deps = fresh(aci={**aci_options, "block_credential": principals})
    pool = _pool(
        prefect,
        "azure-container-instance:push",
        subscription_id=SUB_A,
        resource_group_name="rg-a",
        aci_credentials=ACI_A,
    )
    _, group = _running(deps, prefect, pool)
    arm.exit(group, 1, ["boom"])
    backend = deps.backend("aci")
    as_a = JobHandle("aci", group, {"aci_credentials": ACI_A})
    as_b = JobHandle("aci", group, {"aci_credentials": ACI_B})  # another pool's principal: no access to SUB_A

    assert backend.status([as_a])[group].state is JobState.FAILED  # remembered for A's principal
    mark = len(arm.callers)
    status = backend.status([as_b])[group]
    assert status.state is JobState.UNKNOWN and "AuthorizationFailed" in status.reason  # B's, refused: not A's answer
    with pytest.raises(BackendError, match="AuthorizationFailed"):
        backend.cleanup(as_b)  # refused for B's principal
    assert arm.group(group)  # B's cleanup deleted nothing
    assert {token for _, _, sub, token in arm.callers[mark:] if sub == SUB_A} == {ARM_B}

    backend.cleanup(as_a)  # A's: deleted
    status = backend.status([as_b])[group]
    assert status.state is JobState.UNKNOWN  # A's "deleted" is not B's either
