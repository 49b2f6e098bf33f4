"""Runs Prefect's Cloud Run v2 worker (prefect-gcp) on flow runs named on stdin, one JSON line per request and answer.

Started by tests/compat_gcp/test_cloudrun_vs_worker.py with the interpreter of ``.venv-compat-gcp``. For each
``{"pool": …, "run_id": …}`` the worker does what its polling loop does after claiming a run: it resolves the run's
job configuration against its pool (``resolve_for_flow_run``, which calls ``prepare_for_flow_run``), creates the job
and waits for it, and starts its execution (``_create_job_and_wait_for_registration``, ``_begin_job_execution``: what
``CloudRunWorkerV2.run`` does before it watches). Its discovery-built client is pointed at the local Cloud Run API in
``PUSHPOOL_CLOUD_RUN_ENDPOINT`` (the worker hard-codes Google's endpoint). ``{"block": {...}}`` saves a gcp-credentials
block and answers its id; ``{"template": true}`` answers the worker's default base job template. With ``"v1": true``
the same is done by Prefect's v1 ``cloud-run`` worker (``CloudRunWorker``, the Knative-shaped v1 Admin API), whose
per-region endpoint (``https://<region>-run.googleapis.com``) is pointed at the same local API; its answer names the
region and project it used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys


async def main() -> None:
    from google.api_core.client_options import ClientOptions
    from prefect.workers.base import BaseWorker
    from prefect_gcp import GcpCredentials
    from prefect_gcp.workers import cloud_run, cloud_run_v2
    from prefect_gcp.workers.cloud_run import CloudRunWorker
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerV2

    endpoint = os.environ["PUSHPOOL_CLOUD_RUN_ENDPOINT"]
    cloud_run_v2.ClientOptions = lambda api_endpoint: ClientOptions(api_endpoint=endpoint)
    cloud_run.ClientOptions = lambda api_endpoint: ClientOptions(api_endpoint=endpoint)
    workers: dict[str, CloudRunWorkerV2 | CloudRunWorker] = {}
    log = logging.getLogger("compat")
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            request = json.loads(line)
            try:
                kind = CloudRunWorker if request.get("v1") else CloudRunWorkerV2
                if request.get("template"):
                    answer = {"ok": True, "template": kind.get_default_base_job_template()}
                elif request.get("block"):
                    block = GcpCredentials(**request["block"])
                    block_id = await block.save(request["name"], overwrite=True)
                    answer = {"ok": True, "id": str(block_id)}
                else:
                    worker = workers.get(request["pool"])
                    if worker is None:
                        worker = kind(work_pool_name=request["pool"])
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
                    if request.get("v1"):
                        with worker._get_client(configuration) as client:
                            worker._create_job_and_wait_for_registration(configuration, client, log)
                            worker._begin_job_execution(configuration, client, log)
                    else:
                        with worker._get_client(configuration=configuration) as client:
                            worker._create_job_and_wait_for_registration(
                                configuration=configuration, cr_client=client, logger=log
                            )
                            worker._begin_job_execution(configuration=configuration, cr_client=client, logger=log)
                    answer = {
                        "ok": True,
                        "identifier": configuration.job_name,
                        "region": configuration.region,
                        "project": configuration.project,
                    }
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(json.dumps(answer), flush=True)
    finally:
        for worker in workers.values():
            await BaseWorker.__aexit__(worker, None, None, None)


if __name__ == "__main__":
    asyncio.run(main())
