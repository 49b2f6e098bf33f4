"""API economy of the ECS submit path: orchestration and AWS calls per run, and task definitions registered.

Runs against a local Prefect server (SQLite) and moto in server mode (real HTTP). Prints a table; asserts nothing.
Usage: .venv/bin/python bench/api_calls.py [RUNS]
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import boto3
import httpx
from pushpool import localserver
from pushpool.providers import base_job_template
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.submit import submit_run


def main(runs: int) -> None:
    from moto.server import ThreadedMotoServer

    port = localserver.free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    server = localserver.start(Path(tempfile.mkdtemp(prefix="pushpool-bench-")))
    try:
        ecs, ec2 = boto3.client("ecs"), boto3.client("ec2")
        ecs.create_cluster(clusterName="bench")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnets = [
            s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        ]
        group = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)["GroupId"]
        template = copy.deepcopy(base_job_template("ecs:push"))
        props = template["variables"]["properties"]
        props["cluster"]["default"] = "bench"
        props["network_configuration"]["default"] = {"subnets": subnets[:2], "securityGroups": [group]}
        template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512  # moto
        http = httpx.Client(base_url=server.api_url, timeout=30)
        http.post("/work_pools/", json={"name": "bench-ecs", "type": "ecs:push", "base_job_template": template})
        flow = http.post("/flows/", json={"name": "bench"}).json()
        dep = http.post(
            "/deployments/",
            json={"name": "bench", "flow_id": flow["id"], "work_pool_name": "bench-ecs", "entrypoint": "x.py:f"},
        ).json()["id"]
        run_ids = []
        for _ in range(runs):
            for _attempt in range(20):  # SQLite may answer 503
                response = http.post(f"/deployments/{dep}/create_flow_run", json={})
                if response.status_code != 503:
                    break
                time.sleep(0.05)
            run_ids.append(response.json()["id"])

        session = boto3.session.Session()
        aws_calls: Counter = Counter()
        session.events.register("before-call", lambda model, **_: aws_calls.update([model.name]))
        deps = Deps.from_settings(Settings.of(prefect_api_url=server.api_url, webhook_tokens=("t",)))
        deps._backends["ecs"] = EcsBackend(session=session)
        pool = deps.orchestrator.read_work_pool("bench-ecs")
        deps.orchestrator.calls = 0
        started = time.perf_counter()
        outcomes = Counter()
        for run_id in run_ids:
            run = deps.orchestrator.read_flow_run(run_id)
            outcomes[submit_run(deps, run, pool, trigger="bench").outcome] += 1
        elapsed = time.perf_counter() - started
        orchestration = deps.orchestrator.calls + runs  # + the webhook handler's read of the pool per run
        print(f"\nECS submit path, {runs} runs of one deployment (outcomes: {dict(outcomes)})")
        print(f"{'metric':<44}{'total':>8}{'per run':>10}")
        print(f"{'orchestration API calls (incl. handler reads)':<44}{orchestration:>8}{orchestration / runs:>10.2f}")
        print(f"{'AWS API calls':<44}{sum(aws_calls.values()):>8}{sum(aws_calls.values()) / runs:>10.2f}")
        for name, count in sorted(aws_calls.items()):
            print(f"{'  ' + name:<44}{count:>8}{count / runs:>10.2f}")
        print(f"{'wall time per submit (ms, SQLite + moto)':<44}{'':>8}{elapsed / runs * 1000:>10.1f}")
    finally:
        server.stop()
        moto.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
