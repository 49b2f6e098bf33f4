"""`make demo`: the push path end to end, on this machine, with no worker anywhere.

1. start a local Prefect server (SQLite, its own PREFECT_HOME) and `pushpool serve`;
2. `pushpool work-pool create demo-pool --type process:push` (twice: the second run changes nothing);
3. deploy four flows with the stock Prefect API (`flow.from_source(...).deploy(...)`), one on a 10 s schedule;
4. trigger runs that succeed, fail and get cancelled, then print each run's state timeline;
5. show the scheduled deployment's first two runs (made by Prefect's scheduler, dispatched by pushpool when due;
   its schedule is paused once pushpool has dispatched them);
6. stop everything it started, by pid.

``PUSHPOOL_DEMO_METRICS=<path>``: also scrape serve's ``GET /metrics`` every second while the demo runs, one JSON line
per scrape (``{"t": <unix seconds>, "samples": [[name, {labels}, value], ...]}``, pushpool's series only), for
``bench/metrics_figure.py`` to draw docs/metrics.md's panels from.

``PUSHPOOL_DEMO_PREFECT_DB=<path>``: start the Prefect server on a copy of this SQLite database, one a server of the
same Prefect release migrated and nothing else used, instead of migrating a new one (about 12 CPU-seconds here): the
tests run the demo so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from pushpool import localserver

HERE = Path(__file__).resolve().parent
POOL = "demo-pool"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def pushpool_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pushpool.entrypoints.cli", *args]


def api(client: httpx.Client, method: str, path: str, **kwargs):
    """One Prefect API call, retried while the server is busy: SQLite's "database is locked" arrives as 503, and a
    local server can stall a request for a minute while its background services write (the demo's calls are reads
    and idempotent state proposals)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            if time.monotonic() > deadline:
                raise
            continue
        if response.status_code != 503 or time.monotonic() > deadline:
            response.raise_for_status()
            return response.json() if response.content else None
        time.sleep(0.1)


# The pushpool events each demo run must show on its page: the job's start and end, or its cancellation.
EXPECTED_EVENTS = {
    "etl": {"pushpool.run.submitted", "pushpool.run.job-started", "pushpool.run.job-ended"},
    "broken": {"pushpool.run.submitted", "pushpool.run.job-started", "pushpool.run.job-ended"},
    "long_job": {"pushpool.run.submitted", "pushpool.run.job-started", "pushpool.run.cancelled"},
}


def run_page_events(client: httpx.Client, runs: dict[str, dict], timeout: float = 30) -> bool:
    """Print each run's pushpool events as the run's page in Prefect's UI reads them (any resource is the run), once
    the expected ones are stored (serve posts them every second; the server persists them in batches)."""
    ok = True
    for rid, info in runs.items():
        want = EXPECTED_EVENTS[info["label"]]
        deadline = time.monotonic() + timeout
        while True:
            body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{rid}"]}, "event": {"prefix": ["pushpool."]}}}
            events = api(client, "POST", "/events/filter", json={**body, "limit": 50})["events"]
            names = {e["event"] for e in events}
            if want <= names or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        ok &= want <= names
        for event in sorted(events, key=lambda e: e["occurred"]):
            labels = event["resource"]
            reason = labels.get("pushpool.reason")
            print(f"{info['label']:<9} {event['event']}" + (f" ({reason})" if reason else ""))
        missing = sorted(want - names)
        print(
            f"{'':<9} {len(want & names)} of {len(want)} expected pushpool events"
            + (f"; missing {missing}" if missing else "")
        )
    return ok


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class MetricsScraper(threading.Thread):
    """GET ``url`` every ``interval`` seconds until stopped; each scrape's pushpool series as one JSON line."""

    def __init__(self, url: str, path: Path, interval: float = 1.0) -> None:
        super().__init__(name="demo-metrics", daemon=True)
        self.url, self.path, self.interval = url, path, interval
        self.stopping = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        with self.path.open("w") as out, httpx.Client(timeout=5) as http:
            while not self.stopping.wait(self.interval):
                try:
                    text = http.get(self.url).text
                except httpx.HTTPError:
                    continue
                samples = [
                    [s.name, s.labels, s.value]
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name.startswith("pushpool_")
                ]
                out.write(json.dumps({"t": round(time.time(), 3), "samples": samples}) + "\n")
                out.flush()
                self.scrapes += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class SchedulePauser(threading.Thread):
    """Pause a scheduled deployment as soon as pushpool has dispatched ``count`` of its runs: Prefect then deletes the
    runs it made that are still Scheduled, so the demo runs the ones it shows and no more (on a loaded machine, a
    schedule left on while the other runs are shown dispatched twice as many) and no job outlives it."""

    def __init__(self, api_url: str, deployment_id: str, count: int = 2, timeout: float = 180) -> None:
        super().__init__(name="demo-schedule", daemon=True)
        self.api_url, self.deployment_id, self.count, self.timeout = api_url, deployment_id, count, timeout

    def run(self) -> None:
        query = {"deployments": {"id": {"any_": [self.deployment_id]}}}
        deadline = time.monotonic() + self.timeout
        with httpx.Client(base_url=self.api_url, timeout=30) as client:
            while time.monotonic() < deadline:
                runs = api(client, "POST", "/flow_runs/filter", json=query)
                if sum(r["state"]["type"] != "SCHEDULED" for r in runs) >= self.count:
                    break
                time.sleep(1)
            api(client, "POST", f"/deployments/{self.deployment_id}/pause_deployment")


def scheduled_runs(client: httpx.Client, pauser: SchedulePauser) -> bool:
    """Wait for the schedule to be paused and the runs pushpool dispatched to end; print when each job was accepted
    (the pool's lead, 3 s for process pools, before it was due, so that the flow starts on time)."""
    pauser.join(timeout=pauser.timeout + 30)
    query = {"deployments": {"id": {"any_": [pauser.deployment_id]}}}
    deadline = time.monotonic() + 120
    while True:  # the runs already dispatched finish; no new ones start
        runs = api(client, "POST", "/flow_runs/filter", json=query)
        if all(r["state"]["type"] in FINAL | {"SCHEDULED"} for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    ran = sorted((r for r in runs if r["state"]["type"] in FINAL), key=lambda r: r["expected_start_time"])
    for run in ran:
        history = api(client, "GET", "/flow_run_states/", params={"flow_run_id": run["id"]})
        accepted = next(s for s in history if s["name"] == "InfrastructurePending")
        lateness = (parse_time(accepted["timestamp"]) - parse_time(run["expected_start_time"])).total_seconds()
        due = parse_time(run["expected_start_time"]).strftime("%H:%M:%S")
        when = f"{-lateness:.2f}s before it was due" if lateness < 0 else f"{lateness:.2f}s after it was due"
        print(f"{run['name']:<24} due {due}; job accepted {when}; final {run['state']['type']}")
    completed = sum(r["state"]["type"] == "COMPLETED" for r in ran[: pauser.count])  # the first two: the ones shown
    print(f"{completed} scheduled runs completed (expected {pauser.count}); schedule paused")
    return completed >= pauser.count and not pauser.is_alive()


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--no-event-stream",
        action="store_true",
        help="let only Prefect's automation webhook (and the monitor) trigger submit",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pushpool-demo-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PUSHPOOL_HOME": str(work / "pushpool"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PUSHPOOL_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")})
    started: list[subprocess.Popen] = []
    server = None
    scraper: MetricsScraper | None = None
    try:
        banner("starting a local Prefect server (SQLite)")
        t0 = time.monotonic()
        if os.environ.get("PUSHPOOL_DEMO_PREFECT_DB"):
            (work / "prefect").mkdir(parents=True)
            shutil.copyfile(os.environ["PUSHPOOL_DEMO_PREFECT_DB"], work / "prefect" / "prefect.db")
        server = localserver.start(work / "prefect", late_runs=True, scheduler=True)
        env["PREFECT_API_URL"] = server.api_url
        print(f"Prefect API {server.api_url} ready in {time.monotonic() - t0:.1f}s (pid {server.process.pid})")

        banner("starting pushpool serve (submit + provision over HTTP, monitor every 5s, event stream)")
        port = localserver.free_port()
        serve_log = open(work / "serve.log", "w")  # noqa: SIM115
        serve = subprocess.Popen(
            pushpool_cmd("serve", "--port", str(port), *(["--no-event-stream"] if args.no_event_stream else [])),
            env=env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started.append(serve)
        wait_http(f"http://127.0.0.1:{port}/health")
        print(f"pushpool serve on http://127.0.0.1:{port} (pid {serve.pid}); log: {work / 'serve.log'}")
        if os.environ.get("PUSHPOOL_DEMO_METRICS"):
            scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", Path(os.environ["PUSHPOOL_DEMO_METRICS"]))
            scraper.start()
            print(f"scraping http://127.0.0.1:{port}/metrics every second into {scraper.path}")

        banner(f"pushpool work-pool create {POOL} --type process:push")
        for attempt in (1, 2):
            out = subprocess.run(
                pushpool_cmd("work-pool", "create", POOL, "--type", "process:push", "--port", str(port)),
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            print(f"-- run {attempt}:\n{out.stdout.rstrip()}")

        banner("deploying the sample flows with flow.from_source(...).deploy(...)")
        out = subprocess.run(
            [sys.executable, str(HERE / "deploy.py"), POOL], env=env, capture_output=True, text=True, check=True
        )
        deployments = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        print("\n".join(f"{name}: {dep_id}" for name, dep_id in deployments.items()))
        print("(scheduled: every 10 s; Prefect's scheduler creates its runs, pushpool dispatches them when due;")
        print(" the schedule is paused once pushpool has dispatched two)")
        pauser = SchedulePauser(server.api_url, deployments["scheduled"])
        pauser.start()

        banner("triggering runs: etl (succeeds), broken (fails), long_job (cancelled once running)")
        client = httpx.Client(base_url=server.api_url, timeout=30)
        runs: dict[str, dict] = {}
        for name in ("etl", "broken", "long_job"):
            created = time.time()
            key = f"demo-{name}-{deployments[name]}"  # a retried create (a stalled server) makes no second run
            path = f"/deployments/{deployments[name]}/create_flow_run"
            run = api(client, "POST", path, json={"idempotency_key": key})
            runs[run["id"]] = {"label": name, "created": created, "name": run["name"]}
            print(f"{name}: flow run {run['name']} ({run['id']})")

        cancel_id = next(r for r, v in runs.items() if v["label"] == "long_job")
        deadline = time.monotonic() + 180
        cancelled = False
        while time.monotonic() < deadline:
            states = {rid: api(client, "GET", f"/flow_runs/{rid}")["state"] for rid in runs}
            if not cancelled and states[cancel_id]["type"] == "RUNNING":
                time.sleep(1)
                api(client, "POST", f"/flow_runs/{cancel_id}/set_state", json={"state": {"type": "CANCELLING"}})
                cancelled = True
                print("long_job is Running: cancelling it (as the UI's Cancel button does)")
            if all(s["type"] in FINAL for s in states.values()):
                break
            time.sleep(0.5)

        banner("state timelines (seconds since the run was created)")
        triggers = dict(re.findall(r"claimed run (\S+) \(\S+\) via (\S+)", (work / "serve.log").read_text()))
        ok = True
        expected = {"etl": "COMPLETED", "broken": "FAILED", "long_job": "CANCELLED"}
        for rid, info in runs.items():
            history = api(client, "GET", "/flow_run_states/", params={"flow_run_id": rid})
            history.sort(key=lambda s: s["timestamp"])
            created = parse_time(history[0]["timestamp"])
            steps = " → ".join(
                f"{s['name']} +{(parse_time(s['timestamp']) - created).total_seconds():.2f}s" for s in history
            )
            final = history[-1]["type"]
            ok &= final == expected[info["label"]]
            # The job exists (and its pid is recorded) before submit proposes InfrastructurePending.
            accepted = next(s for s in history if s["name"] == "InfrastructurePending")
            start_delay = (parse_time(accepted["timestamp"]) - created).total_seconds()
            print(f"{info['label']:<9} {steps}")
            print(
                f"{'':<9} submitted via {triggers.get(rid, '?')}; job started {start_delay:.3f}s after creation;"
                f" final {final} (expected {expected[info['label']]})"
            )
        banner("pushpool's events on each run's page (the query Prefect's UI sends: POST /api/events/filter)")
        ok &= run_page_events(client, runs)

        banner("the scheduled deployment: its first two runs (nobody triggered them)")
        ok &= scheduled_runs(client, pauser)

        supervisors = f"pushpool.providers.process.supervisor {work}"
        proc_deadline = time.monotonic() + 20  # a run is final a moment before its process has exited
        while True:
            proc_check = subprocess.run(["pgrep", "-f", supervisors], capture_output=True)
            if not proc_check.stdout.split() or time.monotonic() > proc_deadline:
                break
            time.sleep(0.5)
        print(f"\njob processes still alive: {len(proc_check.stdout.split())}")
        status = subprocess.run(pushpool_cmd("status"), env=env, capture_output=True, text=True)
        print(f"pushpool status: {status.stdout.strip()}")
        print("\nDEMO " + ("PASSED" if ok and not proc_check.stdout.split() else "FAILED"))
        return 0 if ok else 1
    finally:
        banner("stopping everything this demo started")
        if scraper is not None:
            scraper.stop()
            print(f"{scraper.scrapes} scrapes of /metrics in {scraper.path}")
        for proc in started:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # stuck in a call to a stalled server: it has had its chance
                proc.kill()
                proc.wait(timeout=10)
            print(f"stopped pid {proc.pid}")
        if server is not None:
            server.stop()
            print(f"stopped Prefect server pid {server.process.pid}")
        print(f"files kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
