"""Runs Prefect's Coiled worker (prefect-coiled 0.0.4, the coiled SDK 1.135.6) on flow runs named on stdin, one JSON
line per request and answer.

Started by tests/compat_coiled/test_coiled_vs_worker.py with the interpreter of ``.venv-compat-coiled``; the coiled SDK
reaches the local Coiled server in ``DASK_COILED__SERVER``. For each ``{"pool": …, "run_id": …}`` the worker does what
its polling loop does after claiming a run: it resolves the run's job configuration against its pool
(``resolve_for_flow_run``) and calls ``CoiledWorker.run``, which submits with ``coiled.batch.run`` — every request of
the SDK's batch path goes to the local server. Two things are replaced, neither part of what is compared: waiting for
the job to end (``coiled.batch.wait_for_job_done``: answered at once) and the SDK's look-up of the image's
architecture on Docker Hub (``is_arm_only_image``: no registry is reachable here; it answers "not ARM-only", as the
SDK does when the look-up fails). ``{"block": token, "name": …}`` saves a coiled-credentials block and answers its
id; ``{"template": true}`` answers the worker's default base job template.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys


async def main() -> None:
    import coiled.batch
    import coiled.v2.cluster
    from prefect.workers.base import BaseWorker
    from prefect_coiled import CoiledCredentials, CoiledWorker

    coiled.batch.wait_for_job_done = lambda job_id, **_: "done"
    coiled.v2.cluster.is_arm_only_image = lambda image: False
    workers: dict[str, CoiledWorker] = {}
    loop = asyncio.get_running_loop()
    logging.getLogger("coiled").setLevel(logging.WARNING)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            request = json.loads(line)
            try:
                if request.get("template"):
                    answer = {"ok": True, "template": CoiledWorker.get_default_base_job_template()}
                elif request.get("block"):
                    block_id = await CoiledCredentials(api_token=request["block"]).save(request["name"], overwrite=True)
                    answer = {"ok": True, "id": str(block_id)}
                else:
                    worker = workers.get(request["pool"])
                    if worker is None:
                        worker = CoiledWorker(work_pool_name=request["pool"])
                        await BaseWorker.__aenter__(worker)
                        workers[request["pool"]] = worker
                    await worker.sync_with_backend()
                    flow_run = await worker.client.read_flow_run(request["run_id"])
                    configuration = await worker.job_configuration.resolve_for_flow_run(
                        flow_run,
                        client=worker.client,
                        work_pool=worker.work_pool,
                        worker_name=worker.name,
                        worker_id=worker.backend_id,
                    )
                    result = await worker.run(flow_run=flow_run, configuration=configuration)
                    answer = {"ok": True, "identifier": result.identifier}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(json.dumps(answer), flush=True)
    finally:
        for worker in workers.values():
            await BaseWorker.__aexit__(worker, None, None, None)


if __name__ == "__main__":
    asyncio.run(main())
