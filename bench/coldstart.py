"""Cold start: each function's entry imported in a fresh interpreter (``-X importtime``), then invoked once against
the local Prefect server and moto with a real-shaped event; peak RSS of that process. Backends are imported lazily
by the handlers, so the cost of the ECS backend (boto3 client) shows in the first invocation, not in the import.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import harness

sys.path.insert(0, str(harness.ROOT))
# The same real-shaped Lambda events the function tests use.
from tests.integration.test_functions import SCHEDULE_EVENT, url_event

ROOT = harness.ROOT
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


@dataclass
class ColdStart:
    function: str
    import_ms: float  # -X importtime: sum of the top-level cumulative times
    heaviest: list[tuple[str, float]] = field(default_factory=list)
    invoke: dict = field(default_factory=dict)
    backend_import_ms: dict[str, float] = field(default_factory=dict)


LAYER = Path(sys.prefix) / "layer"  # pip install --target of the aws extra: what the Lambda layer holds (Makefile)


def layer_env(env: dict) -> dict:
    """Run children like Lambda does: no site-packages (-S), only the layer's packages and pushpool's source."""
    return {**env, "PYTHONPATH": f"{ROOT / 'shared'}:{LAYER}"}


def importtime(code: str, env: dict, repeat: int = 5) -> tuple[float, list[tuple[str, float]]]:
    """The median of ``repeat`` fresh interpreters (this machine is shared and noisy), with that run's heaviest."""
    runs = sorted((_importtime_once(code, env) for _ in range(repeat)), key=lambda r: r[0])
    return runs[len(runs) // 2]


def _importtime_once(code: str, env: dict) -> tuple[float, list[tuple[str, float]]]:
    cmd = [sys.executable, "-S", "-X", "importtime", "-c", code]
    out = subprocess.run(cmd, env=layer_env(env), capture_output=True, text=True)
    total, top = 0.0, []
    for _self_us, cumulative_us, indent, name in LINE.findall(out.stderr):
        if len(indent) == 1:  # a top-level import of the entry
            total += int(cumulative_us) / 1000
        elif len(indent) == 3:  # what the entry itself imports
            top.append((name, int(cumulative_us) / 1000))
    return total, sorted(top, key=lambda item: -item[1])[:5]


def measure(api_url: str, moto: harness.Moto, net: harness.Network) -> list[ColdStart]:
    api = harness.Api(api_url)
    token = harness.token()
    arn = boto3.client("secretsmanager").create_secret(Name="bench-token", SecretString=token)["ARN"]
    template = harness.pushpool_template(net)
    api.call("POST", "/work_pools/", json={"name": "bench-cold", "type": "ecs:push", "base_job_template": template})
    run_id, _ = api.create_run(api.deployment("bench-cold", "bench-cold"))
    env = {
        **os.environ,
        **moto.env(),
        "PREFECT_API_URL": api_url,
        "PUSHPOOL_WEBHOOK_TOKEN_SECRET_ARN": arn,
        "PUSHPOOL_SUBMIT_URL": "http://127.0.0.1:9/submit",
        "POWERTOOLS_SERVICE_NAME": "pushpool",
        "POWERTOOLS_METRICS_NAMESPACE": "pushpool-bench",
    }
    events = {
        "submit": url_event({"flow_run_id": run_id}, token),
        "monitor": SCHEDULE_EVENT,
        "provision": {"name": "bench-cold-provision", "type": "ecs:push", "dry_run": True},
    }
    backends = {b: importtime(f"import pushpool.providers.{b}.backend", env)[0] for b in ("ecs", "process")}
    results = []
    for function, event in events.items():
        entry = ROOT / "functions" / function
        total, heaviest = importtime(f"import sys; sys.path.insert(0, {str(entry)!r}); import app", env)
        cold = ColdStart(function, total, heaviest)
        cold.backend_import_ms = backends
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(event, fh)
        out = subprocess.run(
            [sys.executable, "-S", str(ROOT / "bench" / "invoke.py"), function, fh.name],
            env=layer_env(env),
            capture_output=True,
            text=True,
        )
        try:
            cold.invoke = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            cold.invoke = {"error": (out.stderr or out.stdout)[-500:]}
        results.append(cold)
    api.delete_pool("bench-cold")
    return results
