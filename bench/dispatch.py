"""Dispatch latency and API economy: flow run created → job accepted by moto's RunTask, per trigger mode.

Every mode gets its own pool and deployment on the same Prefect server and the same moto server, the same arrival
process (runs created one by one, gaps drawn from U(0, 2×interval) with a fixed seed), and only its own actor
running. Orchestration calls are counted in the server's access log (the bench's own run creations excluded), AWS
calls at the moto server, both over the mode's whole window (so a poller's idle polls count against its runs).
"""

from __future__ import annotations

import random
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.provision import provision_pool

CREATES = re.compile(r"/create_flow_run|/work_pools/\{id\}$|^DELETE |/flow_runs/paginate")  # the bench's own


@dataclass
class Phase:
    name: str
    runs: list[str] = field(default_factory=list)
    created: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    own: dict[str, float] = field(default_factory=dict)  # trigger received → job accepted (pushpool only)
    orchestration: Counter = field(default_factory=Counter)
    aws: Counter = field(default_factory=Counter)
    window_seconds: float = 0.0
    idle_calls_per_minute: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [self.accepted[r] - self.created[r] for r in self.runs if r in self.accepted]

    @property
    def missing(self) -> int:
        return sum(1 for r in self.runs if r not in self.accepted)

    def api_calls(self) -> int:
        return sum(v for k, v in self.orchestration.items() if not k.startswith("503"))


class Bed:
    """One Prefect server + one moto server shared by every dispatch mode."""

    def __init__(
        self, api_url: str, moto: harness.Moto, access: harness.AccessLog, work: Path, seed: int, net: harness.Network
    ) -> None:
        self.api_url, self.moto, self.access, self.work = api_url, moto, access, work
        self.api = harness.Api(api_url)
        self.net = net
        self.rng = random.Random(seed)
        self.seed = seed

    def _pushpool_pool(self, name: str, *, webhook_url: str | None, token: str, events: str = "webhook") -> str:
        """A pool provisioned as ``pushpool work-pool create`` does; ``events="stream"`` for a serve reading Prefect's
        event stream (its default: the automation stays disabled)."""
        template = harness.pushpool_template(self.net)
        if webhook_url:
            settings = Settings.of(prefect_api_url=self.api_url, webhook_tokens=(token,), submit_url=webhook_url)
            deps = Deps.from_settings(settings)
            provision_pool(deps, name=name, type_name="ecs:push", events=events)
            deps.orchestrator.close()
            self.api.call("PATCH", f"/work_pools/{name}", json={"base_job_template": template})
        else:
            self.api.call(
                "POST", "/work_pools/", json={"name": name, "type": "ecs:push", "base_job_template": template}
            )
        return self.api.deployment(name, name)

    def _create_runs(self, phase: Phase, deployment: str, runs: int, interval: float) -> None:
        rng = random.Random(self.seed)  # the same arrival process for every mode
        for _ in range(runs):
            run_id, created = self.api.create_run(deployment)
            phase.runs.append(run_id)
            phase.created[run_id] = created
            time.sleep(rng.uniform(0, 2 * interval))  # after the creation: the server is never saturated by it

    def _collect(self, phase: Phase, started: float, timeout: float) -> None:
        harness.wait_for_jobs(self.moto, phase.runs, timeout, self.api)
        phase.window_seconds = time.monotonic() - started
        phase.accepted = {r: self.moto.run_task_at[r] for r in phase.runs if r in self.moto.run_task_at}
        phase.orchestration = self.access.take(exclude=CREATES)
        phase.aws = self.moto.app.take()
        extra = {r: n for r, n in self.moto.run_tasks.items() if r in phase.created and n > 1}
        if extra:
            phase.notes.append(f"{len(extra)} runs got more than one RunTask")

    def _measure(
        self, name: str, deployment: str, runs: int, interval: float, idle_seconds: float, timeout: float
    ) -> Phase:
        """Counters reset; optionally an idle window (calls per minute with no runs); then the runs and their jobs."""
        phase = Phase(name)
        self.access.mark()
        self.moto.app.take()
        if idle_seconds:
            time.sleep(idle_seconds)
            phase.idle_calls_per_minute = sum(self.access.take(exclude=CREATES).values()) * 60 / idle_seconds
            self.moto.app.take()
        started = time.monotonic()
        self._create_runs(phase, deployment, runs, interval)
        self._collect(phase, started, timeout)
        return phase

    def pushpool(self, mode: str, runs: int, interval: float, *, idle_seconds: float = 0.0) -> Phase:
        """mode: webhook (automation → serve, no event stream), events (event stream only), monitor (ticks only)."""
        name = f"bench-{mode}"
        token = harness.token()
        monitor_interval = 5.0 if mode == "monitor" else 3600.0
        child = harness.serve(
            self.api_url,
            self.moto,
            self.work / "logs",
            event_stream=(mode == "events"),
            monitor_interval=monitor_interval,
            token=token,
        )
        try:
            url = child.extra["url"] + "/submit" if mode == "webhook" else None
            deployment = self._pushpool_pool(name, webhook_url=url, token=token)
            time.sleep(2.0)  # the automation is loaded by the server's trigger service; the event stream connects
            phase = self._measure(f"pushpool {mode}", deployment, runs, interval, idle_seconds, timeout=180)
        finally:
            child.stop()
        _own_share(phase, child, mode)
        self.api.delete_pool(name)
        return phase

    def worker(self, query_seconds: float | None, runs: int, interval: float, *, idle_seconds: float = 0.0) -> Phase:
        label = "default (10 s)" if query_seconds is None else f"{query_seconds:g} s"
        name = f"bench-worker-{'default' if query_seconds is None else int(query_seconds)}"
        template = harness.worker_template(self.net, sys.executable)
        self.api.call("POST", "/work_pools/", json={"name": name, "type": "ecs", "base_job_template": template})
        deployment = self.api.deployment(name, name)
        child = harness.worker(self.api_url, self.moto, self.work / "logs", name, query_seconds)
        try:
            _wait_worker(self.api, name, child)
            phase = self._measure(f"prefect-aws worker, poll {label}", deployment, runs, interval, idle_seconds, 150)
        finally:
            child.stop()
        self.api.delete_pool(name)
        return phase


def _wait_worker(api: harness.Api, pool: str, child: harness.Child, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"the worker exited; see {child.log_path}")
        workers = api.call("POST", f"/work_pools/{pool}/workers/filter", json={}).json()
        if workers:
            time.sleep(1.0)
            return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not register within {timeout} s; see {child.log_path}")


def _own_share(phase: Phase, child: harness.Child, mode: str) -> None:
    if mode == "monitor":
        ticks = sorted(t["started_at"] for t in harness.served_lines(child, "monitor tick") if "started_at" in t)
        for run_id, accepted in phase.accepted.items():
            before = [t for t in ticks if t <= accepted]
            if before:
                phase.own[run_id] = accepted - before[-1]
        return
    prefix = "submit" if mode == "webhook" else "event"
    for line in harness.served_lines(child, prefix):
        run_id = line.get("flow_run_id")
        if line.get("outcome") == "submitted" and run_id in phase.accepted and line.get("received_at"):
            phase.own[run_id] = phase.accepted[run_id] - float(line["received_at"])


@dataclass
class Burst:
    name: str
    runs: int
    create_seconds: float = 0.0
    all_jobs_seconds: float | None = None  # first creation → the last run's RunTask
    first_job_seconds: float | None = None
    with_jobs: int = 0
    orchestration: Counter = field(default_factory=Counter)
    aws: Counter = field(default_factory=Counter)
    server_cpu_seconds: float | None = None  # the Prefect server's CPU from the insert to the last RunTask
    actor_cpu_seconds: float | None = None  # serve's or the worker's, over the same window


def _cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) of a process and its children so far; None if it cannot be read."""
    import psutil

    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return None


def burst(
    bed: Bed, pg: harness.Postgres, actor: str, runs: int, timeout: float, *, server_pid: int | None = None
) -> tuple[Burst, list[str], str]:
    """``runs`` due runs appear at once (one SQL transaction, copies of a real run) in front of a running actor:
    "pushpool" (``serve`` as by default: event stream, webhook, 5 s monitor) or "worker" (defaults, 10 s poll).

    ``server_pid``: the Prefect server's process, whose CPU over the burst is reported (none given: not reported).

    Runs copied in SQL emit no events, so pushpool dispatches them from its monitor sweep — the path for any backlog
    (an outage, a scheduler burst). Creating 1,000 runs through the API would take minutes here and measure Prefect.
    """
    import scale

    name = f"bench-burst-{actor}"
    token = harness.token()
    if actor == "pushpool":
        child = harness.serve(
            bed.api_url, bed.moto, bed.work / "logs", event_stream=True, monitor_interval=5.0, token=token
        )
        deployment = bed._pushpool_pool(name, webhook_url=child.extra["url"] + "/submit", token=token, events="stream")
    else:
        template = harness.worker_template(bed.net, sys.executable)
        bed.api.call("POST", "/work_pools/", json={"name": name, "type": "ecs", "base_job_template": template})
        deployment = bed.api.deployment(name, name)
        child = None
    # The run to copy: scheduled a day ahead, so no actor takes it.
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    model = bed.api.call(
        "POST",
        f"/deployments/{deployment}/create_flow_run",
        json={"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}},
    ).json()["id"]
    if child is None:
        child = harness.worker(bed.api_url, bed.moto, bed.work / "logs", name, None)
        _wait_worker(bed.api, name, child)
    else:
        time.sleep(3.0)  # the event stream connects; the first monitor tick has passed
    result = Burst(f"{'pushpool serve' if actor == 'pushpool' else 'prefect-aws worker (10 s poll)'}", runs)
    ids = [str(uuid.uuid4()) for _ in range(runs)]
    kind = pg.psql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'flow_run_state' "
        "AND column_name = 'state_details'"
    ).strip()
    now = "now()"
    actor_pid = child.process.pid
    try:
        bed.access.mark()
        bed.moto.app.take()
        cpu_before = _cpu_seconds(server_pid), _cpu_seconds(actor_pid)
        started = time.time()
        scale.copy_runs(
            pg,
            model,
            ids,
            run_values={
                "name": f"'{name}-' || ids.g",
                **{
                    c: now
                    for c in (
                        "created",
                        "updated",
                        "expected_start_time",
                        "next_scheduled_start_time",
                        "state_timestamp",
                    )
                },
            },
            state_values={
                "timestamp": now,
                "created": now,
                "updated": now,
                "state_details": f"jsonb_set(s.state_details::jsonb, '{{scheduled_time}}', to_jsonb({now}))::{kind}",
            },
        )
        result.create_seconds = time.time() - started
        harness.wait_for_jobs(bed.moto, ids, timeout, bed.api)
        cpu_after = _cpu_seconds(server_pid), _cpu_seconds(actor_pid)
        if None not in cpu_before and None not in cpu_after:
            result.server_cpu_seconds = cpu_after[0] - cpu_before[0]
            result.actor_cpu_seconds = cpu_after[1] - cpu_before[1]
        stamps = [bed.moto.run_task_at[r] for r in ids if r in bed.moto.run_task_at]
        result.with_jobs = len(stamps)
        if stamps:
            result.first_job_seconds = min(stamps) - started
        if len(stamps) == len(ids):
            result.all_jobs_seconds = max(stamps) - started
        result.orchestration = bed.access.take(exclude=CREATES)
        result.aws = bed.moto.app.take()
    finally:
        child.stop()
    return result, ids, name
