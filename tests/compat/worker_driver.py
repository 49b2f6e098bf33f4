"""Runs Prefect's ECS worker (prefect-aws) on flow runs named on stdin, one JSON line per request and per answer.

Started by tests/compat/test_ecs_vs_worker.py with the interpreter of ``.venv-bench`` (prefect-aws and its pins live
there, never in the test environment). For each ``{"pool": …, "run_id": …}`` the worker does what its polling loop
does after claiming a run: it resolves the run's job configuration against its pool (the same code path:
``resolve_for_flow_run``, ``prepare_for_flow_run``) and calls ``ECSWorker.run`` — which registers the task definition
and calls RunTask against the moto server in ``AWS_ENDPOINT_URL``. ``{"template": true}`` answers the worker's own
default base job template. The SQS crash observer is not started (it watches, it sends nothing to ECS).
"""

from __future__ import annotations

import asyncio
import json
import sys


async def main() -> None:
    from prefect.workers.base import BaseWorker
    from prefect_aws.workers.ecs_worker import ECSWorker

    workers: dict[str, ECSWorker] = {}
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            request = json.loads(line)
            try:
                if request.get("template"):
                    answer = {"ok": True, "template": ECSWorker.get_default_base_job_template()}
                else:
                    worker = workers.get(request["pool"])
                    if worker is None:
                        worker = ECSWorker(work_pool_name=request["pool"])
                        await BaseWorker.__aenter__(worker)  # the worker without its SQS observer
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
                    answer = {"ok": True, "identifier": result.identifier}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(json.dumps(answer), flush=True)
    finally:
        for worker in workers.values():
            await BaseWorker.__aexit__(worker, None, None, None)


if __name__ == "__main__":
    asyncio.run(main())
