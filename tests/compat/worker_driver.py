"""Runs Prefect's ECS worker (prefect-aws) on flow runs named on stdin, one JSON line per request and per answer.

Started by tests/compat/test_ecs_vs_worker.py with the interpreter of ``.venv-bench`` (prefect-aws and its pins live
there, never in the test environment), through tests/differential.py (the requests and the loop every compat
driver shares). For each ``{"pool": …, "run_id": …}`` the worker resolves the run's job configuration against its
pool and calls ``ECSWorker.run`` — which registers the task definition and calls RunTask against the moto server in
``AWS_ENDPOINT_URL``. The SQS crash observer is not started (it watches, it sends nothing to ECS).
"""

from __future__ import annotations

import asyncio

from tests.differential import serve


async def main() -> None:
    from prefect_aws.workers.ecs_worker import ECSWorker

    await serve(ECSWorker)


if __name__ == "__main__":
    asyncio.run(main())
