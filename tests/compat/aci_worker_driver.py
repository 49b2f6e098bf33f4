"""Runs Prefect's ACI worker (prefect-azure) on flow runs named on stdin, one JSON line per request and per answer.

Started by tests/compat/test_aci_vs_worker.py with the interpreter of ``.venv-compat-azure`` (prefect-azure and its
azure-mgmt-resource live there, never in the test environment), through tests/differential.py (the requests and
the loop every compat driver shares). The worker's two ARM clients are pointed at the local ARM endpoint
(``ARM_URL``, its certificate ``ARM_CERT``) with a fake credential — the SDK pipeline is unchanged. For each
``{"pool": …, "run_id": …}`` the worker resolves the run's job configuration against its pool and calls
``AzureContainerWorker.run``: the ARM deployment, the watch until the container terminates, the group's deletion.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Any

from tests.differential import resolve, serve


class _Credential:
    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("fake-arm-token", int(dt.datetime.now().timestamp()) + 3600)

    def get_token_info(self, *scopes, options=None):
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-arm-token", int(dt.datetime.now().timestamp()) + 3600)


def _local(cls):
    def make(credential=None, subscription_id=None, **kwargs):
        return cls(
            _Credential(), subscription_id, base_url=os.environ["ARM_URL"], connection_verify=os.environ["ARM_CERT"]
        )

    return make


async def _run(worker: Any, run_id: str) -> dict[str, Any]:
    flow_run, configuration = await resolve(worker, run_id)
    result = await worker.run(flow_run=flow_run, configuration=configuration)
    return {"identifier": result.identifier, "status_code": result.status_code}


async def main() -> None:
    import prefect_azure.credentials as credentials
    from prefect_azure.workers.container_instance import AzureContainerWorker

    credentials.ContainerInstanceManagementClient = _local(credentials.ContainerInstanceManagementClient)
    credentials.ResourceManagementClient = _local(credentials.ResourceManagementClient)
    await serve(AzureContainerWorker, run=_run)


if __name__ == "__main__":
    asyncio.run(main())
