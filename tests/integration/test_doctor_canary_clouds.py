"""`pushpool doctor --canary` on cloud pools against the local emulators: a serve (in this process, reading Prefect's
event stream) runs the pool; the canary deploys its flow, runs it once and times each stage. The emulators of Modal and
Coiled run the job's real command on this machine (``prefect flow-run execute`` with exactly the environment pushpool
sent), so the flow reaches Completed only if the job pushpool made is enough. For ECS (moto server), the test plays the
task's container: it runs the command and environment of the task ECS was given (its task definition with the run's
overrides, read back through the ECS API) on this machine, RUNNING while it runs, STOPPED with its exit code after.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.providers import base_job_template
from pushpool.usecases.canary import STAGES, run_canary

from tests.conftest import AZ_RG, AZ_SUB
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration


def _play(command: list[str], env: dict[str, str]) -> int:
    """A job's container, here: its command with its environment (this interpreter's ``prefect`` is the image's)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])
    try:
        done = subprocess.run(
            command, env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env},
            capture_output=True, check=False, timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return 127
    return done.returncode


class Containers:
    """Plays the container of each job an emulator holds (jobs there when it starts are other tests')."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def jobs(self) -> dict[str, object]:
        raise NotImplementedError

    def run(self, key: str, job: object) -> None:
        raise NotImplementedError

    def __enter__(self) -> Containers:
        self.seen = set(self.jobs())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            for key, job in self.jobs().items():
                if key not in self.seen:
                    self.seen.add(key)
                    threading.Thread(target=self.run, args=(key, job), daemon=True).start()
            time.sleep(0.1)


class AciContainers(Containers):
    """The ARM emulator's container groups: the group's first container (command, environment with its secure values
    as ACI would give them), started, then exited with the command's code."""

    def __init__(self, arm) -> None:
        super().__init__()
        self.arm = arm

    def jobs(self) -> dict[str, object]:
        with self.arm.lock:
            groups = list(self.arm.groups.items())
        kind = "providers/Microsoft.ContainerInstance/containerGroups"
        return {f"/subscriptions/{sub}/resourceGroups/{g.rg}/{kind}/{name}": g for (sub, _, name), g in groups}

    def run(self, key: str, job) -> None:
        container = job.body["properties"]["containers"][0]["properties"]
        env = {e["name"]: e.get("value", e.get("secureValue", "")) for e in container.get("environmentVariables") or []}
        command = list(container.get("command") or [])
        if command and command[0].endswith("entrypoint.sh"):  # the Prefect image's entrypoint: it execs the rest
            command = command[1:]
        self.arm.start_container(key)
        self.arm.exit(key, _play(command, env), [])


class CloudRunContainers(Containers):
    """The Cloud Run emulator's executions: the job template's container (command and args; its plain env values —
    a secret reference is not resolved), running, then exited with the command's code."""

    def __init__(self, emulator) -> None:
        super().__init__()
        self.emulator = emulator

    def jobs(self) -> dict[str, object]:
        with self.emulator.lock:
            return {name: entry["json"] for name, entry in self.emulator.executions.items()}

    def run(self, key: str, job) -> None:
        container = job["template"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        self.emulator.set_running(key)
        code = _play([*(container.get("command") or []), *(container.get("args") or [])], env)
        with contextlib.suppress(KeyError):  # the monitor may have stopped a job that outlived its run: gone
            self.emulator.exit(key, code)


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
    if cloud == "aci":
        request.getfixturevalue("arm")
        template = copy.deepcopy(base_job_template("azure-container-instance:push"))
        template["variables"]["properties"]["subscription_id"]["default"] = AZ_SUB
        template["variables"]["properties"]["resource_group_name"]["default"] = AZ_RG
        name = prefect.unique("canary-aci")
        prefect.create_pool(name, "azure-container-instance:push", base_job_template=template)
        return name
    if cloud == "cloudrun":
        from tests.integration.test_cloudrun import make_pool

        request.getfixturevalue("cloud_run")
        return make_pool(prefect)
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


@pytest.fixture(scope="module")
def cloud_run():
    from tests.gcp_emulator import CloudRunEmulator

    found = CloudRunEmulator().start()
    yield found
    found.stop()


def _wire(request, cloud: str, deps) -> None:
    """Point ``deps``' backend at the cloud's emulator, where the SDK is not pointed by the environment."""
    if cloud == "aci":
        deps.backend_options["aci"] = request.getfixturevalue("aci_options")
    elif cloud == "cloudrun":
        from tests.integration.test_cloudrun import backend_options

        deps.backend_options["cloudrun"] = backend_options(request.getfixturevalue("cloud_run"))


def _containers(request, cloud: str):
    if cloud == "ecs":
        return EcsContainers(request.getfixturevalue("aws"))
    if cloud == "aci":
        return AciContainers(request.getfixturevalue("arm"))
    if cloud == "cloudrun":
        return CloudRunContainers(request.getfixturevalue("cloud_run"))
    return None  # Modal's and Coiled's emulators run the command themselves


@pytest.mark.parametrize("cloud", ["ecs", "aci", "cloudrun", "modal", "coiled"])
def test_the_canary_completes_on_a_cloud_pool(
    request, cloud: str, prefect_api: str, prefect: PrefectHelper, tmp_path: Path
) -> None:
    pool = _pool(request, prefect, cloud)
    deps = make_deps(prefect_api, tmp_path / "serve")
    _wire(request, cloud, deps)
    server = Server(deps, port=localserver.free_port(), monitor_interval=2, event_stream=True, pool_names=[pool])
    server.start()
    reported: list[str] = []
    lock = threading.Lock()

    def report(stage, result) -> None:
        with lock:
            reported.append(stage.name)

    canary_deps = make_deps(prefect_api, tmp_path / "canary")
    _wire(request, cloud, canary_deps)
    containers = _containers(request, cloud)
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
    seconds = [result.seconds(s) for s in ("run created", "claimed", "flow Running", "Completed")]
    assert None not in seconds and seconds == sorted(seconds), result.as_dict()
    # The provider's acceptance is on its clock (ACI: the time pushpool tagged on the group as it asked for it, in whole
    # seconds), the claim on Prefect's: only their order with the run's creation (to within that second: -0.379 s was
    # seen) and the flow's start is certain.
    accepted = result.seconds("job accepted")
    assert accepted is not None and -1.0 <= accepted <= result.seconds("flow Running"), result.as_dict()
    assert prefect.state(result.run_id)[0] == "COMPLETED"
    print(cloud, {s["stage"]: s["seconds"] for s in result.as_dict()["stages"]})
