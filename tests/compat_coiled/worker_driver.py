"""Runs Prefect's Coiled worker (prefect-coiled 0.0.4, the coiled SDK 1.135.6) on flow runs named on stdin, one JSON
line per request and answer.

Started by tests/compat_coiled/test_coiled_vs_worker.py with the interpreter of ``.venv-compat-coiled``, through
tests/differential.py (the requests and the loop every compat driver shares); the coiled SDK reaches the local
Coiled server in ``DASK_COILED__SERVER``. For each ``{"pool": …, "run_id": …}`` the worker syncs with its pool,
resolves the run's job configuration against it and calls ``CoiledWorker.run``, which submits with
``coiled.batch.run`` — every request of the SDK's batch path goes to the local server. Two things are replaced,
neither part of what is compared: waiting for the job to end (``coiled.batch.wait_for_job_done``: answered at once)
and the SDK's look-up of the image's architecture on Docker Hub (``is_arm_only_image``: no registry is reachable
here; it answers "not ARM-only", as the SDK does when the look-up fails). ``{"block": token, "name": …}`` saves a
coiled-credentials block.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tests import differential


async def _run(worker: Any, run_id: str) -> dict[str, Any]:
    await worker.sync_with_backend()
    return await differential.run(worker, run_id)


async def _save_block(request: dict[str, Any]) -> Any:
    from prefect_coiled import CoiledCredentials

    return await CoiledCredentials(api_token=request["block"]).save(request["name"], overwrite=True)


async def main() -> None:
    import coiled.batch
    import coiled.v2.cluster
    from prefect_coiled import CoiledWorker

    coiled.batch.wait_for_job_done = lambda job_id, **_: "done"
    coiled.v2.cluster.is_arm_only_image = lambda image: False
    logging.getLogger("coiled").setLevel(logging.WARNING)
    await differential.serve(CoiledWorker, run=_run, save_block=_save_block)


if __name__ == "__main__":
    asyncio.run(main())
