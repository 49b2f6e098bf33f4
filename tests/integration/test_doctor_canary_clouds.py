"""`pushpool doctor --canary` on cloud pools against the local emulators: a serve (in this process, reading Prefect's
event stream) runs the pool; the canary deploys its flow, runs it once and times each stage. The emulators of Modal and
Coiled run the job's real command on this machine (``prefect flow-run execute`` with exactly the environment pushpool
sent), so the flow reaches Completed only if the job pushpool made is enough. For ECS (moto server), the test plays the
task's container: it runs the command and environment of the task ECS was given (its task definition with the run's
overrides, read back through the ECS API) on this machine, RUNNING while it runs, STOPPED with its exit code after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.usecases.canary import STAGES, run_canary

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration


class EcsContainers:
    """Plays the container of each new task in moto: runs the task's command with the task's environment (the task
    definition's, then the run's overrides) here, marks it RUNNING, then STOPPED with the command's exit code."""

    def __init__(self, aws: dict) -> None:
        from moto.backends import get_backend

        self.ecs = aws["ecs"]
        self.tasks = get_backend("ecs")["123456789012"]["us-east-1"].tasks
        self.seen: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> EcsContainers:
        self.seen = {arn for cluster in list(self.tasks.values()) for arn in list(cluster)}  # other tests' tasks
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            for cluster in list(self.tasks.values()):
                for arn, task in list(cluster.items()):
                    if arn not in self.seen:
                        self.seen.add(arn)
                        threading.Thread(target=self._run, args=(task,), daemon=True).start()
            time.sleep(0.1)

    def _run(self, task) -> None:
        described = self.ecs.describe_tasks(cluster=task.cluster_name, tasks=[task.task_arn])["tasks"][0]
        definition = self.ecs.describe_task_definition(taskDefinition=described["taskDefinitionArn"])
        container = definition["taskDefinition"]["containerDefinitions"][0]
        env = {e["name"]: e["value"] for e in container.get("environment") or []}
        command = container.get("command") or []
        for override in described.get("overrides", {}).get("containerOverrides") or []:
            env.update({e["name"]: e["value"] for e in override.get("environment") or []})
            command = override.get("command") or command
        task.last_status = "RUNNING"
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])  # the image's prefect: this one
        code = 127
        try:
            code = subprocess.run(
                command, env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env},
                capture_output=True, check=False, timeout=300,
            ).returncode  # fmt: skip
        finally:
            task.containers[0].exitCode = code
            task.last_status = task.desired_status = "STOPPED"


def _pool(request, prefect: PrefectHelper, cloud: str) -> str:
    if cloud == "ecs":
        return request.getfixturevalue("ecs_pool")
    if cloud == "modal":
        pytest.importorskip("modal")
        request.getfixturevalue("modal_server")
        name = prefect.unique("canary-modal")
        prefect.create_pool(name, "modal:push")
    else:
        request.getfixturevalue("coiled_server")
        name = prefect.unique("canary-coiled")
        prefect.create_pool(name, "coiled:push")
    return name


@pytest.mark.parametrize("cloud", ["ecs", "modal", "coiled"])
def test_the_canary_completes_on_a_cloud_pool(
    request, cloud: str, prefect_api: str, prefect: PrefectHelper, tmp_path: Path
) -> None:
    pool = _pool(request, prefect, cloud)
    deps = make_deps(prefect_api, tmp_path / "serve")
    server = Server(deps, port=localserver.free_port(), monitor_interval=2, event_stream=True, pool_names=[pool])
    server.start()
    reported: list[str] = []
    lock = threading.Lock()

    def report(stage, result) -> None:
        with lock:
            reported.append(stage.name)

    canary_deps = make_deps(prefect_api, tmp_path / "canary")
    containers = EcsContainers(request.getfixturevalue("aws")) if cloud == "ecs" else None
    try:
        if containers is not None:
            with containers:
                result = run_canary(canary_deps, pool, timeout=240, cleanup_timeout=60, report=report)
        else:
            result = run_canary(canary_deps, pool, timeout=240, cleanup_timeout=60, report=report)
    finally:
        server.stop()
        deps.orchestrator.close()
        canary_deps.orchestrator.close()
    assert result.ok, (result.problem, result.as_dict())
    assert reported == list(STAGES)  # every stage, in order
    seconds = [result.seconds(s) for s in ("run created", "claimed", "job accepted", "flow Running", "Completed")]
    assert None not in seconds and seconds == sorted(seconds), result.as_dict()
    assert prefect.state(result.run_id)[0] == "COMPLETED"
    print(cloud, {s["stage"]: s["seconds"] for s in result.as_dict()["stages"]})
