"""Runs Prefect's ACI worker (prefect-azure) on flow runs named on stdin, one JSON line per request and per answer.

Started by tests/compat/test_aci_vs_worker.py with the interpreter of ``.venv-compat-azure`` (prefect-azure and its
azure-mgmt-resource live there, never in the test environment). The worker's two ARM clients are pointed at the local
ARM endpoint (``ARM_URL``, its certificate ``ARM_CERT``) with a fake credential — the SDK pipeline is unchanged. For
each ``{"pool": …, "run_id": …}`` the worker resolves the run's job configuration against its pool and calls
``AzureContainerWorker.run``: the ARM deployment, the watch until the container terminates, the group's deletion.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys


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


async def main() -> None:
    import prefect_azure.credentials as credentials
    from prefect.workers.base import BaseWorker
    from prefect_azure.workers.container_instance import AzureContainerWorker

    credentials.ContainerInstanceManagementClient = _local(credentials.ContainerInstanceManagementClient)
    credentials.ResourceManagementClient = _local(credentials.ResourceManagementClient)
    workers: dict[str, AzureContainerWorker] = {}
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        request = json.loads(line)
        try:
            if request.get("template"):
                answer = {"ok": True, "template": AzureContainerWorker.get_default_base_job_template()}
            else:
                worker = workers.get(request["pool"])
                if worker is None:
                    worker = AzureContainerWorker(work_pool_name=request["pool"])
                    await BaseWorker.__aenter__(worker)
                    workers[request["pool"]] = worker
                flow_run = await worker.client.read_flow_run(request["run_id"])
                configuration = await worker.job_configuration.resolve_for_flow_run(
                    flow_run,
                    client=worker.client,
                    work_pool=worker.work_pool,
                    worker_name=worker.name,
                    worker_id=worker.backend_id,
                )
                result = await worker.run(flow_run=flow_run, configuration=configuration)
                answer = {"ok": True, "identifier": result.identifier, "status_code": result.status_code}
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
