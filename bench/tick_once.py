"""Child process of the monitor-scale bench: one monitor tick over one pool; JSON on stdout.

Usage: python bench/tick_once.py API_URL POOL ecs|fake [LATENCY_SECONDS JOB_IDS_FILE]
With ``fake``, the pool's ECS backend is replaced by tests/fakes.LatencyBackend holding the jobs listed in the file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick


def rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(api_url: str, pool_name: str, backend: str, latency: float = 0.0, ids_file: str | None = None) -> None:
    deps = Deps.from_settings(Settings.of(prefect_api_url=api_url, webhook_tokens=("bench",)))
    fake = None
    if backend == "fake":
        from tests.fakes import LatencyBackend

        fake = LatencyBackend(latency=latency)
        for line in Path(ids_file).read_text().split():
            fake.seed(line, "seeded", job_id=line)
        deps._backends["ecs"] = fake
    else:
        deps.backend("ecs")  # create the boto3 client before the clock starts, as a warm function has it
    pool = deps.orchestrator.read_work_pool(pool_name)
    deps.orchestrator.calls = 0
    base = rss("VmRSS")
    started = time.perf_counter()
    report = tick(deps, pools=[pool])
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "report": report.as_dict(),
                "orchestration_calls": deps.orchestrator.calls,
                "backend_calls": dict(fake.calls) if fake else None,
                "rss_before_mb": base,
                "peak_rss_mb": rss("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(float(sys.argv[4]), sys.argv[5]) if len(sys.argv) > 4 else ())
