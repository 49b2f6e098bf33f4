"""Child process of the per-provider monitor-scale bench: one provider, N in-flight runs, two monitor ticks; JSON on
stdout.

Usage: python bench/provider_tick.py PROVIDER N   (PROVIDER: process, ecs, cloudrun, aci, modal, coiled)

The provider's emulator from tests/ on 127.0.0.1 (moto server for ECS, the Cloud Run Admin API, the ARM endpoint,
the Modal control plane, the Coiled API; the process backend runs ``sleep`` on this machine), reached by pushpool's
real backend and the provider's real SDK. The orchestration side is tests/fake_prefect.py (held to a real Prefect
server by the orchestration contract suite): the runs are submitted through pushpool's submit use-case, then set
Running as the engine would, so every run has a real job; the ticks then measure what the monitor costs the
backend — its calls, counted where the emulator receives them, by kind — and pushpool's own time. The first tick is
a fresh process's (a cold function), the second a warm one's. Needs the provider's SDK (the bench runs this with the
test environment's Python: ``PUSHPOOL_BENCH_PROVIDERS_PYTHON``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "shared"))

from pushpool.clock import SystemClock  # noqa: E402
from pushpool.prefect_api.models import StateType  # noqa: E402
from pushpool.providers import base_job_template  # noqa: E402
from pushpool.settings import Settings  # noqa: E402
from pushpool.usecases.deps import Deps  # noqa: E402
from pushpool.usecases.monitor import tick  # noqa: E402
from pushpool.usecases.submit import submit_run  # noqa: E402

from tests.fake_prefect import FakePrefect  # noqa: E402

POOL = "bench-scale"


class Bed:
    """One provider on its emulator: the pool type and template, backend options, the call log and how to read it."""

    pool_type: str
    job_variables: dict[str, Any] = {}

    def template(self) -> dict[str, Any]:
        return copy.deepcopy(base_job_template(self.pool_type))

    def options(self) -> dict[str, Any]:
        return {}

    def calls(self) -> list[str]:
        """Every backend call received so far, named as the emulator names it."""
        raise NotImplementedError

    @staticmethod
    def kind(call: str) -> str:
        """``list`` (one call about many jobs: a listing or a batched describe), ``job`` (about one job), ``other``."""
        raise NotImplementedError

    def stop(self) -> None:
        return None


class ProcessBed(Bed):
    pool_type = "process:push"
    job_variables = {"command": "sleep 600"}

    def __init__(self, root: Path) -> None:
        self.root = root

    def options(self) -> dict[str, Any]:
        return {"root": self.root, "env_passthrough": ()}

    def calls(self) -> list[str]:
        return []  # no remote API: the job directory and the process table

    @staticmethod
    def kind(call: str) -> str:
        return "other"

    def stop(self) -> None:
        import signal

        import psutil

        for path in self.root.glob("*/job.json"):
            try:
                pid = int(json.loads(path.read_text()).get("pid") or 0)
                if pid and psutil.pid_exists(pid):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (OSError, ValueError, ProcessLookupError):
                continue


class EcsBed(Bed):
    pool_type = "ecs:push"

    def __init__(self) -> None:
        import boto3

        sys.path.insert(0, str(ROOT / "bench"))
        import harness

        self.moto = harness.Moto().start()
        os.environ.update(self.moto.env())
        ecs, ec2 = boto3.client("ecs"), boto3.client("ec2")
        self.cluster = ecs.create_cluster(clusterName="bench-scale")["cluster"]["clusterName"]
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        self.subnets = [s["SubnetId"] for s in subnets][:2]
        self.group = ec2.create_security_group(GroupName="bench-scale", Description="bench", VpcId=vpc)["GroupId"]
        self.seen: Counter = Counter()

    def template(self) -> dict[str, Any]:
        template = super().template()
        props = template["variables"]["properties"]
        props["cluster"]["default"] = self.cluster
        props["network_configuration"]["default"] = {
            "subnets": self.subnets,
            "securityGroups": [self.group],
            "assignPublicIp": "ENABLED",
        }
        # moto cannot place a Fargate task whose memory is set at task level only (as tests/conftest.py).
        template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512
        return template

    def options(self) -> dict[str, Any]:
        return {"check_image_platform": False}

    def calls(self) -> list[str]:
        self.seen.update(self.moto.app.take())
        return [name for name, count in self.seen.items() for _ in range(count)]

    @staticmethod
    def kind(call: str) -> str:
        # DescribeTasks takes up to 100 tasks a call: a batched read, counted with the lists.
        if call in ("ecs:ListTasks", "ecs:DescribeTasks"):
            return "list"
        return "job" if call in ("ecs:StopTask", "logs:GetLogEvents", "logs:FilterLogEvents") else "other"

    def stop(self) -> None:
        self.moto.stop()


class CloudRunBed(Bed):
    pool_type = "cloud-run-v2:push"

    def __init__(self) -> None:
        from tests.gcp_emulator import CloudRunEmulator

        self.emulator = CloudRunEmulator().start()

    def template(self) -> dict[str, Any]:
        from tests.integration.test_cloudrun import PROJECT

        template = super().template()
        template["variables"]["properties"]["project"]["default"] = PROJECT
        return template

    def options(self) -> dict[str, Any]:
        from tests.integration.test_cloudrun import backend_options

        return backend_options(self.emulator, retry_timeout=30.0)

    def calls(self) -> list[str]:
        with self.emulator.lock:
            return [f"{method} {path}" for method, path in self.emulator.requests]

    @staticmethod
    def kind(call: str) -> str:
        path = call.split(" ", 1)[1].split("?")[0].rstrip("/")
        if path.endswith(("/jobs", "/executions", "/operations", "entries:list")):
            return "list"
        return "job" if "/jobs/" in path or "/executions/" in path else "other"

    def stop(self) -> None:
        self.emulator.stop()


class AciBed(Bed):
    pool_type = "azure-container-instance:push"

    def __init__(self, work: Path) -> None:
        from tests.arm_emulator import ArmEmulator
        from tests.conftest import AZ_IDENTITY, AZ_REGISTRY, AZ_RG, AZ_SUB

        (work / "arm").mkdir(parents=True, exist_ok=True)
        self.emulator = ArmEmulator(work / "arm").start()
        self.emulator.add_resource_group(AZ_SUB, AZ_RG, "westeurope")
        self.emulator.identities.add(AZ_IDENTITY)
        self.emulator.pullable[AZ_REGISTRY] = {AZ_IDENTITY}
        self.sub, self.rg = AZ_SUB, AZ_RG

    def template(self) -> dict[str, Any]:
        template = super().template()
        props = template["variables"]["properties"]
        props["subscription_id"]["default"] = self.sub
        props["resource_group_name"]["default"] = self.rg
        return template

    def options(self) -> dict[str, Any]:
        from tests.arm_emulator import FakeCredential

        return {
            "credential": FakeCredential(),
            "base_url": self.emulator.url,
            "connection_verify": str(self.emulator.cert),
            "retry_backoff_factor": 0.01,
        }

    def calls(self) -> list[str]:
        with self.emulator.lock:
            return [f"{method} {route}" for method, route in self.emulator.requests]

    @staticmethod
    def kind(call: str) -> str:
        route = call.split(" ", 1)[1]  # the emulator's route names (tests/arm_emulator.py ROUTES)
        if route == "list":
            return "list"
        return "job" if route in ("get", "delete", "patch", "stop", "logs", "put") else "other"

    def stop(self) -> None:
        self.emulator.stop()


class ModalBed(Bed):
    pool_type = "modal:push"

    def __init__(self, work: Path) -> None:
        from tests.conftest import MODAL_TOKEN
        from tests.modal_emulator import ModalEmulator

        self.emulator = ModalEmulator(token=MODAL_TOKEN, run_commands=False).start()
        os.environ.update(
            {
                "MODAL_SERVER_URL": self.emulator.url,
                "MODAL_TOKEN_ID": MODAL_TOKEN[0],
                "MODAL_TOKEN_SECRET": MODAL_TOKEN[1],
                "MODAL_CONFIG_PATH": str(work / "modal.toml"),
            }
        )

    def calls(self) -> list[str]:
        return [method for method, _, _ in list(self.emulator.callers)]

    @staticmethod
    def kind(call: str) -> str:
        if call in ("SandboxList", "SandboxListV2"):
            return "list"
        return "job" if call.startswith("Sandbox") or call == "AppFetchLogs" else "other"

    def stop(self) -> None:
        self.emulator.stop()


class CoiledBed(Bed):
    pool_type = "coiled:push"

    def __init__(self) -> None:
        from tests.coiled_emulator import CoiledEmulator
        from tests.conftest import COILED_TOKEN

        self.emulator = CoiledEmulator(token=COILED_TOKEN, run_commands=False).start()
        os.environ.update({"DASK_COILED__SERVER": self.emulator.url, "DASK_COILED__TOKEN": COILED_TOKEN})

    def calls(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in list(self.emulator.callers)]

    @staticmethod
    def kind(call: str) -> str:
        path = call.split(" ", 1)[1]
        if path == "/api/v2/jobs/":
            return "list"
        return "job" if path.startswith(("/api/v2/jobs/cluster/", "/api/v2/clusters/account/")) else "other"

    def stop(self) -> None:
        self.emulator.stop()


def make_bed(provider: str, work: Path) -> Bed:
    beds: dict[str, Callable[[], Bed]] = {
        "process": lambda: ProcessBed(work / "jobs"),
        "ecs": EcsBed,
        "cloudrun": CloudRunBed,
        "aci": lambda: AciBed(work),
        "modal": lambda: ModalBed(work),
        "coiled": CoiledBed,
    }
    return beds[provider]()


def by_kind(bed: Bed, calls: list[str]) -> dict[str, Any]:
    kinds = Counter(bed.kind(c) for c in calls)
    return {"list": kinds["list"], "job": kinds["job"], "other": kinds["other"], "by_call": dict(Counter(calls))}


def main(provider: str, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"pushpool-bench-{provider}-"))
    bed = make_bed(provider, work)
    try:
        print(json.dumps(measure(bed, provider, runs, work)))
    finally:
        bed.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure(bed: Bed, provider: str, runs: int, work: Path) -> dict[str, Any]:
    fake = FakePrefect(clock=SystemClock())  # the emulators' times are this machine's
    settings = Settings.of(
        prefect_api_url="http://fake-prefect/api",
        webhook_tokens=("bench",),
        process_dir=work / "jobs",
        image_platform_check=False,
    )

    def deps_now() -> Deps:
        return Deps(settings=settings, orchestrator=fake, backend_options={bed_name: bed.options()})

    bed_name = {"ecs:push": "ecs", "cloud-run-v2:push": "cloudrun", "azure-container-instance:push": "aci"}.get(
        bed.pool_type, provider
    )
    fake.add_pool(POOL, bed.pool_type, base_job_template=bed.template())
    deployment = fake.add_deployment(POOL, job_variables=bed.job_variables)
    run_ids = [fake.add_run(deployment) for _ in range(runs)]
    submitter = deps_now()
    pool = fake.read_work_pool(POOL)
    started = time.perf_counter()

    def submit(run_id: str) -> str:
        outcome = submit_run(submitter, fake.read_flow_run(run_id), pool, trigger="bench")
        return outcome.outcome

    with ThreadPoolExecutor(8) as workers:
        outcomes = Counter(workers.map(submit, run_ids))
    submit_seconds = time.perf_counter() - started
    for run_id in run_ids:
        if fake.read_flow_run(run_id).infrastructure_pid:
            fake.force_state(run_id, StateType.RUNNING)  # the engine in the job started the flow
    in_flight = sum(1 for r in run_ids if fake.read_flow_run(r).infrastructure_pid)
    result: dict[str, Any] = {
        "provider": provider,
        "runs": runs,
        "in_flight": in_flight,
        "submit_seconds": submit_seconds,
        "submits": dict(outcomes),
        "ticks": [],
    }
    monitor = deps_now()  # a monitor process that never saw the submits
    monitor.backend(bed_name)  # its SDK client made before the clock starts, as a warm function has it
    for _ in range(2):
        before = len(bed.calls())
        started = time.perf_counter()
        report = tick(monitor, pools=[fake.read_work_pool(POOL)])
        seconds = time.perf_counter() - started
        calls = bed.calls()[before:]
        result["ticks"].append({"seconds": seconds, "calls": by_kind(bed, calls), "report": report.as_dict()})
    return result


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
