"""Managed execution: what computing a workspace's usage costs a monitor tick, for 1,000 managed runs of history.

Starts its own Prefect server (SQLite, as in the tests; or pass an API URL), makes one ``prefect:managed`` pool with
RUNS runs that ran this month (Scheduled → Running → Completed, forced), then times, REPEAT times each:

* ``usage()`` — what the monitor adds to a tick when managed pools are served (three paged run reads, one count, the
  pools' read), with the month read in full, and
* ``quota_refusal()`` — what submit adds to each managed run after its claim: with the month read in full (a cold
  process, or the finished runs kept longer than ``usecases/finished_runs.py``'s TTL), and with them kept (three
  small reads: what ended since the reading, what is going, what is Pending).

The runs are tagged as pushpool tags the runs it starts (``pushpool:managed``: what compute hours count), and the
clock is then moved six minutes on, as if they had ended that long ago (most of a month's runs did).

Usage: ``.venv/bin/python bench/managed_usage.py [RUNS] [REPEAT]`` (defaults 1000 and 10); prints one line per
measure (median, p90, calls per computation).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pushpool import localserver  # noqa: E402
from pushpool.managed import MANAGED_POOL_TYPE, MANAGED_TAG  # noqa: E402
from pushpool.usecases.finished_runs import OVERLAP_SECONDS  # noqa: E402
from pushpool.usecases.managed import quota_refusal  # noqa: E402
from pushpool.usecases.usage import usage  # noqa: E402

from tests.helpers import PrefectHelper, make_deps, skip_ahead  # noqa: E402


def seed(prefect: PrefectHelper, pool: str, runs: int) -> None:
    pull = [{"prefect.deployments.steps.git_clone": {"repository": "https://example.com/flows.git"}}]
    deployment = prefect.create_deployment(pool, "flows.py:hello", pull_steps=pull)

    def one(_: int) -> None:
        run_id = prefect.create_run(deployment, tags=[MANAGED_TAG])
        prefect.set_state(run_id, "RUNNING", force=True)
        prefect.set_state(run_id, "COMPLETED", force=True)

    with ThreadPoolExecutor(max_workers=1) as pool_:
        list(pool_.map(one, range(runs)))


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)


def main(runs: int = 1000, repeat: int = 10) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = localserver.start(Path(tmp) / "server")
        try:
            prefect = PrefectHelper(server.api_url, ROOT / "tests" / "flows")
            deps = make_deps(server.api_url, Path(tmp), managed_tier="pro")
            prefect.create_pool("managed-bench", MANAGED_POOL_TYPE, base_job_template={})
            started = time.perf_counter()
            seed(prefect, "managed-bench", runs)
            print(f"seeded {runs} managed runs in {time.perf_counter() - started:.1f} s")
            # As in a month under way, the history ended minutes ago, not just now: the kept reading's fresh read
            # (what ended since it, less the overlap) then holds the runs that ended since, not the whole history.
            skip_ahead(deps, OVERLAP_SECONDS + 60)
            counted = _count_requests(deps)
            found = usage(deps)
            print(f"usage: {found.compute_hours_used * 3600:.1f} s of compute over {runs} runs")

            def cold(fn):
                def run() -> None:
                    deps.finished_runs.forget()  # nothing kept: the month is read in full
                    fn(deps)

                return run

            measures = (
                ("usage() per monitor tick, month read in full", cold(usage)),
                ("quota check per submit, month read in full", cold(quota_refusal)),
                ("quota check per submit, finished runs kept", lambda: quota_refusal(deps)),
            )
            for name, fn in measures:
                quota_refusal(deps)  # the kept reading, for the last measure
                counted.clear()
                times = timed(fn, repeat)
                p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
                print(
                    f"{name}: median {statistics.median(times) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
                    f"{len(counted) / repeat:.0f} API calls ({runs} runs of history, Prefect on SQLite, 2 cores)"
                )
        finally:
            server.stop()


def _count_requests(deps) -> list[str]:
    """Count the orchestration requests the client sends (an httpx event hook)."""
    seen: list[str] = []
    deps.orchestrator._http.event_hooks["request"].append(lambda request: seen.append(request.url.path))
    return seen


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
