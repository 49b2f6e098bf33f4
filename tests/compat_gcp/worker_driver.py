"""Runs Prefect's Cloud Run v2 worker (prefect-gcp) on flow runs named on stdin, one JSON line per request and answer.

Started by tests/compat_gcp/test_cloudrun_vs_worker.py with the interpreter of ``.venv-compat-gcp``, through
tests/differential.py (the requests and the loop every compat driver shares). For each ``{"pool": …, "run_id": …}``
the worker resolves the run's job configuration against its pool, creates the job and waits for it, and starts its
execution (``_create_job_and_wait_for_registration``, ``_begin_job_execution``: what ``CloudRunWorkerV2.run`` does
before it watches). Its discovery-built client is pointed at the local Cloud Run API in
``PUSHPOOL_CLOUD_RUN_ENDPOINT`` (the worker hard-codes Google's endpoint). ``{"block": {...}, "name": …}`` saves a
gcp-credentials block. With ``"v1": true`` the same is done by Prefect's v1 ``cloud-run`` worker (``CloudRunWorker``,
the Knative-shaped v1 Admin API), whose per-region endpoint (``https://<region>-run.googleapis.com``) is pointed at the
same local API; the answer names the region and project the worker used.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from tests.differential import resolve, serve

log = logging.getLogger("compat")


async def _run(worker: Any, run_id: str) -> dict[str, Any]:
    from prefect_gcp.workers.cloud_run import CloudRunWorker

    _, configuration = await resolve(worker, run_id)
    if isinstance(worker, CloudRunWorker):
        with worker._get_client(configuration) as client:
            worker._create_job_and_wait_for_registration(configuration, client, log)
            worker._begin_job_execution(configuration, client, log)
    else:
        with worker._get_client(configuration=configuration) as client:
            worker._create_job_and_wait_for_registration(configuration=configuration, cr_client=client, logger=log)
            worker._begin_job_execution(configuration=configuration, cr_client=client, logger=log)
    return {"identifier": configuration.job_name, "region": configuration.region, "project": configuration.project}


async def _save_block(request: dict[str, Any]) -> Any:
    from prefect_gcp import GcpCredentials

    return await GcpCredentials(**request["block"]).save(request["name"], overwrite=True)


async def main() -> None:
    from google.api_core.client_options import ClientOptions
    from prefect_gcp.workers import cloud_run, cloud_run_v2

    endpoint = os.environ["PUSHPOOL_CLOUD_RUN_ENDPOINT"]
    cloud_run_v2.ClientOptions = lambda api_endpoint: ClientOptions(api_endpoint=endpoint)
    cloud_run.ClientOptions = lambda api_endpoint: ClientOptions(api_endpoint=endpoint)
    await serve(
        cloud_run_v2.CloudRunWorkerV2,
        run=_run,
        save_block=_save_block,
        choose=lambda request: cloud_run.CloudRunWorker if request.get("v1") else cloud_run_v2.CloudRunWorkerV2,
    )


if __name__ == "__main__":
    asyncio.run(main())
