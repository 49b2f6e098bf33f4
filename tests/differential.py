"""What the differential (compat) suites share: Prefect's own worker driven over JSON lines, and the comparison.

Each compat suite compares what pushpool sends a cloud with what Prefect's worker for that cloud sends for the same
flow run. The worker lives in an environment of its own (``.venv-bench`` for ECS, ``.venv-compat-azure``,
``.venv-compat-gcp``, ``.venv-compat-coiled``: their pins clash with the test environment's), so each suite starts a
small driver script (``tests/compat*/…worker_driver.py``) with that environment's interpreter and talks to it on
stdin/stdout, one JSON line per request and per answer. What the drivers share is here, once:

- ``start`` (the test's end): starts a driver with ``tests`` importable, yields ``ask(request) -> answer``, and ends
  the process when the suite is done.
- ``serve`` (the worker's end): reads the requests and answers them. ``{"template": true}`` answers the worker's
  default base job template; ``{"block": …, "name": …}`` saves a credentials block and answers its id;
  ``{"pool": …, "run_id": …}`` does what the worker's polling loop does after claiming a run (``resolve``: the run's
  job configuration against its pool, then the suite's ``run``). A failure is answered (``ok: false``), never raised:
  the test decides.
- ``differences``: where what pushpool sent and what the worker sent differ, one line per place.

This module is imported in every worker environment, so it imports nothing but the standard library at the top
(Prefect is imported inside ``serve``, in the worker's process only).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Ask = Callable[[dict[str, Any]], dict[str, Any]]


# -- the test's end ----------------------------------------------------------------------------------------------------


def start(python: str, driver: Path, env: dict[str, str], *, cwd: Path | None = None) -> Iterator[Ask]:
    """Run ``driver`` with ``python`` in ``env`` (the repository root added to ``PYTHONPATH``, so that the driver
    imports this module); yield ``ask``. Lines that are not answers (what an SDK prints on stdout) are passed over."""
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(
        [python, str(driver)],
        env={**env, "PYTHONPATH": path},
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        while True:
            line = stdout.readline()
            assert line, "the worker driver ended"
            if line.startswith('{"ok"'):
                return json.loads(line)  # type: ignore[no-any-return]

    try:
        yield ask
    finally:
        stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def worker_env(prefect_api: str, key: str, home: Path, **extra: str) -> dict[str, str]:
    """A worker process's environment: its own home (no profile or setting of the machine's), the Prefect server,
    an API key (the worker holds one; its jobs get it by secret), and the suite's ``extra``."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_API_KEY": key,
        **extra,
    }


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where the two bodies differ, one line per place: ``path: pushpool's != the worker's``."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [
            d for k in sorted(set(ours) | set(theirs)) for d in differences(ours.get(k), theirs.get(k), f"{path}.{k}")
        ]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


# -- the worker's end --------------------------------------------------------------------------------------------------


async def resolve(worker: Any, run_id: str) -> tuple[Any, Any]:
    """The flow run and its job configuration resolved against the worker's pool, as the worker's loop does it
    (``resolve_for_flow_run``, which calls ``prepare_for_flow_run``)."""
    flow_run = await worker.client.read_flow_run(run_id)
    configuration = await worker.job_configuration.resolve_for_flow_run(
        flow_run,
        client=worker.client,
        work_pool=worker.work_pool,
        worker_name=worker.name,
        worker_id=worker.backend_id,
    )
    return flow_run, configuration


async def run(worker: Any, run_id: str) -> dict[str, Any]:
    """The worker's own ``run`` on the resolved run; answers its identifier."""
    flow_run, configuration = await resolve(worker, run_id)
    result = await worker.run(flow_run=flow_run, configuration=configuration)
    return {"identifier": result.identifier}


async def serve(
    worker_type: Any,
    *,
    run: Callable[[Any, str], Awaitable[dict[str, Any]]] = run,
    save_block: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
    choose: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    """Answer the requests on stdin until it closes. One worker per pool, entered as ``BaseWorker`` (without what a
    worker subclass starts beside its loop, e.g. the ECS worker's SQS observer: it watches, it sends nothing); of
    ``worker_type``, or of the type ``choose`` names for the request (a driver of two workers)."""
    from prefect.workers.base import BaseWorker

    workers: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            request = json.loads(line)
            try:
                kind = worker_type if choose is None else choose(request)
                if request.get("template"):
                    answer = {"ok": True, "template": kind.get_default_base_job_template()}
                elif request.get("block"):
                    if save_block is None:
                        raise ValueError("this driver saves no credentials block")
                    answer = {"ok": True, "id": str(await save_block(request))}
                else:
                    worker = workers.get(request["pool"])
                    if worker is None:
                        worker = kind(work_pool_name=request["pool"])
                        await BaseWorker.__aenter__(worker)
                        workers[request["pool"]] = worker
                    answer = {"ok": True, **await run(worker, request["run_id"])}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(json.dumps(answer), flush=True)
    finally:
        for worker in workers.values():
            await BaseWorker.__aexit__(worker, None, None, None)
