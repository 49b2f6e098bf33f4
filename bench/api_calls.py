"""API economy of the ECS submit paths: orchestration and AWS calls per run, and task definitions registered.

Runs against a local Prefect server (SQLite) and moto in server mode (real HTTP). Prints a table; asserts nothing.
Two paths: the webhook's (``handle_run_event`` per run: the run's read, the pool, queue and deployment reads kept
2 s, submit) and the monitor's (runs created ``PER_TICK`` at a time, one tick of the pool after each group — the
bench's dispatch section creates ~20 runs per 5 s tick), on this server (bulk claims, Prefect 3.6.16+) and with the
client treating it as 3.6.15 (one ``set_state`` per claim).
Usage: .venv/bin/python bench/api_calls.py [RUNS] [PER_TICK] [INTERVAL] [webhook]
INTERVAL: on the webhook's path, each run is created just before it is submitted, then a pause from U(0, 2×INTERVAL)
(the dispatch section's arrival process, ``--interval``, same seed); 0 (the default): all created first, back to back.
``webhook``: that path only.
"""

from __future__ import annotations

import copy
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import boto3
import httpx
from pushpool import localserver
from pushpool.entrypoints.http import handle_run_event
from pushpool.prefect_api.dialect import ServerDialect
from pushpool.providers import base_job_template
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import SubmitOutcome


def main(runs: int, per_tick: int, interval: float = 0.0, only_webhook: bool = False) -> None:
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
        flow = http.post("/flows/", json={"name": "bench"}).json()
        deployments = {}
        for name in ("bench-ecs", "bench-bulk", "bench-one"):  # a pool per section: a tick sees only its own runs
            http.post("/work_pools/", json={"name": name, "type": "ecs:push", "base_job_template": template})
            deployments[name] = http.post(
                "/deployments/",
                json={"name": name, "flow_id": flow["id"], "work_pool_name": name, "entrypoint": "x.py:f"},
            ).json()["id"]

        def create(count: int, dep: str) -> list[str]:
            made = []
            for _ in range(count):
                for _attempt in range(20):  # SQLite may answer 503
                    response = http.post(f"/deployments/{dep}/create_flow_run", json={})
                    if response.status_code != 503:
                        break
                    time.sleep(0.05)
                made.append(response.json()["id"])
            return made

        def new_deps(server_version: str | None = None) -> tuple[Deps, Counter, Counter]:
            session = boto3.session.Session()
            aws_calls: Counter = Counter()
            session.events.register("before-call", lambda model, **_: aws_calls.update([model.name]))
            deps = Deps.from_settings(Settings.of(prefect_api_url=server.api_url, webhook_tokens=("t",)))
            deps._backends["ecs"] = EcsBackend(session=session)
            if server_version:
                deps.orchestrator._dialect = ServerDialect.of(server_version)
            deps.orchestrator.server_dialect()  # read once, before the counted calls
            paths: Counter = Counter()
            deps.orchestrator._http.event_hooks["request"].append(lambda r: paths.update([_shape(r)]))
            return deps, aws_calls, paths

        def table(title: str, deps: Deps, aws_calls: Counter, paths: Counter, done: int, elapsed: float) -> None:
            orchestration = deps.orchestrator.calls
            print(f"\n{title}")
            print(f"{'metric':<52}{'total':>8}{'per run':>10}")
            print(f"{'orchestration API calls':<52}{orchestration:>8}{orchestration / done:>10.2f}")
            for name, count in paths.most_common():
                print(f"{'  ' + name:<52}{count:>8}{count / done:>10.2f}")
            print(f"{'AWS API calls':<52}{sum(aws_calls.values()):>8}{sum(aws_calls.values()) / done:>10.2f}")
            for name, count in sorted(aws_calls.items()):
                print(f"{'  ' + name:<52}{count:>8}{count / done:>10.2f}")
            print(f"{'wall time per run (ms, SQLite + moto)':<52}{'':>8}{elapsed / done * 1000:>10.1f}")

        # The webhook's path: what handle_run_event does per delivery (its reads, then submit).
        run_ids = create(runs, deployments["bench-ecs"]) if not interval else []
        deps, aws_calls, paths = new_deps()
        deps.orchestrator.calls = 0
        started = time.perf_counter()
        outcomes: Counter = Counter()
        rng = random.Random(42)  # the dispatch section's seed
        for i in range(runs):
            run_id = run_ids[i] if not interval else create(1, deployments["bench-ecs"])[0]
            outcomes[handle_run_event(deps, run_id, trigger="bench")["outcome"]] += 1
            if interval:
                time.sleep(rng.uniform(0, 2 * interval))
        elapsed = time.perf_counter() - started
        how = f"each created then submitted, pauses U(0, {2 * interval:g} s)" if interval else "back to back"
        title = f"ECS webhook path, {runs} runs of one deployment, {how} (outcomes: {dict(outcomes)})"
        table(title, deps, aws_calls, paths, runs, elapsed)
        if only_webhook:
            return

        # The monitor's path: PER_TICK runs created, then one tick of the pool; with and without bulk claims.
        for label, version, name in (
            ("bulk claims, Prefect 3.8.8", None, "bench-bulk"),
            ("one set_state per claim, as 3.6.15", "3.6.15", "bench-one"),
        ):
            deps, aws_calls, paths = new_deps(version)
            pool = deps.orchestrator.read_work_pool(name)
            deps.orchestrator.calls = 0
            paths.clear()
            outcomes = Counter()
            elapsed = 0.0
            for _ in range(0, runs, per_tick):
                calls_before = deps.orchestrator.calls
                paths_before = paths.copy()
                create(per_tick, deployments[name])  # through the bench's own client: not counted
                assert (deps.orchestrator.calls, paths) == (calls_before, paths_before)
                started = time.perf_counter()
                report = tick(deps, pools=[pool])
                elapsed += time.perf_counter() - started
                outcomes.update(report.dispatched)
            done = outcomes[SubmitOutcome.SUBMITTED] or 1
            title = f"ECS monitor path ({label}), {runs} runs, {per_tick} per tick (outcomes: {dict(outcomes)})"
            table(title, deps, aws_calls, paths, done, elapsed)
    finally:
        server.stop()
        moto.stop()


def _shape(request: httpx.Request) -> str:
    """``POST /api/flow_runs/{id}/set_state``: the call with its ids replaced."""
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", request.url.path)
    return f"{request.method} {path}"


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 100,
        int(sys.argv[2]) if len(sys.argv) > 2 else 20,
        float(sys.argv[3]) if len(sys.argv) > 3 else 0.0,
        len(sys.argv) > 4 and sys.argv[4] == "webhook",
    )
