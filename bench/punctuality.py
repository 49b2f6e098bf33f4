"""Punctuality of scheduled runs (issue 14, item 4), and what a run that is not yet due costs Prefect (item 5).

**Punctuality.** Runs are created through the API in the Scheduled state at known future times: a *spread* (runs
1–3 s apart) and a *burst* (runs scheduled for the same second). Lateness = job accepted (RunTask on moto) − the time
it was due to be accepted: ``scheduled time − lead`` for pushpool (its pool's ``dispatch_lead_seconds``; the ecs:push
template's 30 s for both pushpool targets), ``scheduled time`` for Prefect's worker (reported also against its 10 s
prefetch, i.e. ``scheduled − 10 s``). Targets:

- ``pushpool serve`` at its defaults (event stream, automation webhook, 5 s monitor ticks; its TimerTrigger);
- pushpool as deployed on AWS (``bench/lambdas.py``): the automation's webhook → submit's handler, the monitor
  handler every 60 s (``MonitorSchedule``), the delay queue on moto SQS delivered to submit by pollers that do what
  Lambda's SQS event source mapping does;
- Prefect's ECS worker at its defaults (10 s polls, 10 s prefetch).

Section 7 runs on a Prefect server on PostgreSQL (SQLite stalls for a minute at a time under 200 claims due at
once here), section 8 on the SQLite one. pushpool's actors cannot share a Prefect server at once (each one's monitor
sweeps every ecs:push pool, and serve's event stream sees every pool's runs), so there are two stages: serve with
the worker beside it (the worker only reads its own pool), then the AWS path alone. Each stage first creates all
its runs one at a time with no pushpool running (the worker, already polling, only reads), then starts pushpool;
the runs' times come after that, so the bench's own writes never overlap the dispatch it measures, and pushpool
learns of the runs as it does of runs that Prefect's scheduler created long ahead: from its monitor's look-ahead
(two ticks), which arms their triggers. (The other way, a Scheduled event arming the trigger, is what the not-due
measurement exercises.) Within stage 1 the two targets' spreads interleave and their bursts are 35 s apart.

**Not-due cost.** Creating ``NOT_DUE_RUNS`` runs scheduled 10 minutes ahead, one at a time with no pause, against a
pool served by: nothing; ``pushpool serve``; the AWS path; Prefect's worker. Wall time of the creations, HTTP 503
answers (to the creations, and to the actor's own calls), and what the actor called per run (the server's access log,
the bench's own calls excluded, over the creations plus 5 s for late webhook deliveries).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness
import httpx
from dispatch import CREATES, Bed, _wait_worker

LEAD = 30.0  # pushpool's ECS pools: dispatch_lead_seconds of the ecs:push template, as shipped
WORKER_PREFETCH = 10.0  # PREFECT_WORKER_PREFETCH_SECONDS, default
NOT_DUE_AHEAD = 600.0
SETTLE = 5.0
LATE_AFTER = 15.0  # PREFECT_API_SERVICES_LATE_RUNS_AFTER_SECONDS, default
BURST_GAP = 35.0
ACTORS_START = 25.0  # serve started and a worker registered (seconds, with margin)
AWS_READY = 65.0  # a monitor tick (every 60 s) after the last creation, before the first run is due


@dataclass
class Target:
    name: str
    lead: float  # the job is due at scheduled − lead
    runs: list[str] = field(default_factory=list)
    kind: dict[str, str] = field(default_factory=dict)  # spread | burst
    due: dict[str, float] = field(default_factory=dict)  # when the job should be accepted (epoch)
    created: dict[str, float] = field(default_factory=dict)  # when the bench's creation returned
    accepted: dict[str, float] = field(default_factory=dict)
    late: int = 0  # runs Prefect marked Late
    extra_jobs: int = 0
    paths: Counter = field(default_factory=Counter)  # which trigger dispatched the runs
    shares: dict[str, dict[str, float]] = field(default_factory=dict)  # share name -> run -> seconds
    create_seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average when the stage began and ended
    notes: list[str] = field(default_factory=list)

    def lateness(self, kind: str | None = None, shift: float = 0.0) -> list[float]:
        """accepted − due (− ``shift``: e.g. the worker's prefetch, to measure it against its own target)."""
        return [
            self.accepted[r] - self.due[r] + shift
            for r in self.runs
            if r in self.accepted and kind in (None, self.kind[r])
        ]

    def missing(self, kind: str | None = None) -> int:
        return sum(1 for r in self.runs if r not in self.accepted and kind in (None, self.kind[r]))

    def count(self, kind: str | None = None) -> int:
        return sum(1 for r in self.runs if kind in (None, self.kind[r]))


@dataclass
class NotDue:
    name: str
    runs: int
    seconds: float = 0.0
    create_latencies: list[float] = field(default_factory=list)
    create_503: int = 0  # 503 answers to the bench's creations (retried)
    load: float = 0.0  # the machine's 1-minute load average as the creations began
    orchestration: Counter = field(default_factory=Counter)  # the actor's calls (bench's own excluded)
    aws: Counter = field(default_factory=Counter)

    @property
    def actor_503(self) -> int:
        return self.orchestration.get("503 answers (retried)", 0)

    def calls(self) -> int:
        return sum(v for k, v in self.orchestration.items() if not k.startswith("503"))


@dataclass
class Result:
    targets: list[Target] = field(default_factory=list)
    not_due: list[NotDue] = field(default_factory=list)
    spread: int = 0
    burst: int = 0
    notes: list[str] = field(default_factory=list)


# -- actors -----------------------------------------------------------------------------------------------------


class Lambdas:
    """``bench/lambdas.py`` as a child process, with its own delay queue on moto."""

    def __init__(self, bed: Bed, token: str) -> None:
        import boto3

        sqs = boto3.client("sqs")
        self.queue_url = sqs.create_queue(
            QueueName=f"pushpool-bench-delay-{token[:8]}",
            Attributes={"VisibilityTimeout": "360", "MessageRetentionPeriod": "3600"},  # infra/template.yaml
        )["QueueUrl"]
        port = harness.localserver.free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **bed.moto.env(),
            "PREFECT_API_URL": bed.api_url,
            "PUSHPOOL_WEBHOOK_TOKEN": token,
            "PUSHPOOL_POOL_TYPES": "ecs:push",  # infra/template.yaml, Globals
            "PUSHPOOL_DELAY_QUEUE_URL": self.queue_url,
            "PUSHPOOL_HEARTBEAT_INTERVAL": "60",
            "POWERTOOLS_SERVICE_NAME": "pushpool",
            "POWERTOOLS_METRICS_NAMESPACE": "pushpool-bench",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, str(Path(__file__).with_name("lambdas.py")), "--port", str(port)]
        cmd += ["--queue-url", self.queue_url]
        self.child = harness.spawn(f"lambdas-{port}", cmd, env, bed.work / "logs")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.child.process.poll() is not None:
                raise RuntimeError(f"bench/lambdas.py exited; see {self.child.log_path}")
            if harness.served_lines(self.child, "lambda") and any(
                line.get("kind") == "ready" for line in harness.served_lines(self.child, "lambda")
            ):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"bench/lambdas.py did not start; see {self.child.log_path}")

    def lines(self, kind: str) -> list[dict]:
        return [line for line in harness.served_lines(self.child, "lambda") if line.get("kind") == kind]

    def stop(self) -> None:
        self.child.stop()
        try:  # its execution environments, should any outlive it (the group is the one this bench started)
            os.killpg(self.child.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _plain_pool(bed: Bed, name: str) -> str:
    bed.api.call(
        "POST",
        "/work_pools/",
        json={"name": name, "type": "ecs:push", "base_job_template": harness.pushpool_template(bed.net)},
    )
    return bed.api.deployment(name, name)


def _worker_pool(bed: Bed, name: str) -> str:
    template = harness.worker_template(bed.net, sys.executable)
    bed.api.call("POST", "/work_pools/", json={"name": name, "type": "ecs", "base_job_template": template})
    return bed.api.deployment(name, name)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def _create_scheduled(api: harness.Api, deployment: str, at: float) -> str:
    body = {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": _iso(at)}}}
    return api.call("POST", f"/deployments/{deployment}/create_flow_run", json=body).json()["id"]


# -- not-due cost (item 5) --------------------------------------------------------------------------------------


def not_due(bed: Bed, name: str, deployment: str, runs: int) -> NotDue:
    result = NotDue(name, runs, load=os.getloadavg()[0])
    bed.access.mark()
    bed.moto.app.take()
    bed.api.retried.clear()
    started = time.monotonic()
    for _ in range(runs):
        t = time.monotonic()
        _create_scheduled(bed.api, deployment, time.time() + NOT_DUE_AHEAD)
        result.create_latencies.append(time.monotonic() - t)
    result.seconds = time.monotonic() - started
    result.create_503 = bed.api.retried.get(503, 0)
    time.sleep(SETTLE)
    result.orchestration = bed.access.take(exclude=CREATES)
    result.aws = bed.moto.app.take()
    return result


# -- punctuality ------------------------------------------------------------------------------------------------


def _stage(
    bed: Bed,
    targets: list[tuple[Target, str]],
    spread: int,
    burst: int,
    rate: float,
    start_actors: Callable[[], None],
    seed: int,
    ready: float = ACTORS_START,
) -> None:
    """Create every target's runs (spreads interleaved, then the bursts) one at a time, with no actor running;
    then start the actors (``start_actors``) and wait for the jobs. ``rate``: creations per second expected here
    (sets the first run's time: after the creations and ``ready`` seconds for the actors to start)."""
    rng = random.Random(seed)
    offsets, at = [], 0.0
    for _ in range(spread):
        at += rng.uniform(1.0, 3.0)
        offsets.append(at)
    plan: list[tuple[Target, str, float, str]] = []
    for k, (target, deployment) in enumerate(targets):
        plan += [(target, deployment, o + k * 0.5, "spread") for o in offsets]
    plan.sort(key=lambda p: p[2])
    burst_base = math.ceil(offsets[-1] + 10.0) if offsets else 5.0
    for k, (target, deployment) in enumerate(targets):
        plan += [(target, deployment, burst_base + k * BURST_GAP, "burst")] * burst
    load_before = os.getloadavg()[0]
    start = math.ceil(time.time() + 1.3 * len(plan) / max(rate, 0.5) + ready)  # a whole second
    began = time.monotonic()
    for target, deployment, offset, kind in plan:
        due = start + offset
        run_id = _create_scheduled(bed.api, deployment, due + target.lead)
        target.runs.append(run_id)
        target.kind[run_id] = kind
        target.due[run_id] = due
        target.created[run_id] = time.time()
    for target, _ in targets:
        target.create_seconds = time.monotonic() - began
    start_actors()
    if time.time() > start - 10.0:
        for target, _ in targets:
            target.notes.append(f"the actors were ready only {start - time.time():.1f} s before the first run was due")
    last_due = start + max(p[2] for p in plan)
    everything = [r for target, _ in targets for r in target.runs]
    harness.wait_for_jobs(bed.moto, everything, max(30.0, last_due - time.time() + 75.0), bed.api)
    for target, _ in targets:
        target.load = (load_before, os.getloadavg()[0])
        target.accepted = {r: bed.moto.run_task_at[r] for r in target.runs if r in bed.moto.run_task_at}
        target.extra_jobs = sum(1 for r in target.runs if bed.moto.run_tasks.get(r, 0) > 1)
        target.late = _marked_late(bed.api, target)


def _marked_late(api: harness.Api, target: Target) -> int:
    """Runs whose state history has a Late state: only those whose job came LATE_AFTER s past their scheduled
    time (or never) can have one, so only those are read."""
    late = 0
    for run_id in target.runs:
        scheduled = target.due[run_id] + target.lead
        accepted = target.accepted.get(run_id)
        if accepted is not None and accepted - scheduled < LATE_AFTER - 5.0:
            continue
        try:
            states = api.call("GET", "/flow_run_states/", params={"flow_run_id": run_id}).json()
        except httpx.HTTPError:  # counted as not Late; the server's trouble shows in the lateness
            continue
        late += any(s.get("name") == "Late" for s in states)
    return late


def _serve_shares(target: Target, child: harness.Child) -> None:
    """Which of serve's triggers submitted each run, and the timer's share of the lateness."""
    fired, own = {}, {}
    for line in harness.served_lines(child, "event"):
        run_id = line.get("flow_run_id")
        if line.get("outcome") == "submitted" and run_id in target.accepted and line.get("received_at"):
            fired[run_id] = float(line["received_at"]) - target.due[run_id]
            own[run_id] = target.accepted[run_id] - float(line["received_at"])
    webhook = sum(
        1
        for line in harness.served_lines(child, "submit")
        if line.get("outcome") == "submitted" and line.get("flow_run_id") in target.due
    )
    target.paths.update({"timer": len(fired), "webhook": webhook})
    target.paths["monitor tick"] = max(0, len(target.accepted) - len(fired) - webhook)
    target.shares = {"timer fired − due": fired, "timer fired → RunTask": own}


def _lambda_shares(target: Target, lambdas: Lambdas) -> None:
    """Which path submitted each run (a delayed message whose invocation was running when RunTask accepted the
    job, else the monitor or the webhook), and the queue's and the function's shares of the lateness."""
    rounding, queue, wait, own = {}, {}, {}, {}
    swept = 0
    for line in lambdas.lines("delayed"):
        if line.get("work_pool"):  # a pool trigger: every run whose job was accepted while it swept the pool
            run_ids = [r for r in target.runs if r not in own and r in target.accepted]
        else:
            run_ids = [line.get("flow_run_id")]
        for run_id in run_ids:
            accepted = target.accepted.get(run_id)
            if accepted is None or not line["invoked_at"] - 0.05 <= accepted <= line["done_at"] + 0.05:
                continue
            swept += bool(line.get("work_pool"))
            due = target.due[run_id]
            if line.get(
                "sent_at"
            ):  # SqsTrigger delays whole seconds, rounded down; visible at sent + floor(due − sent)
                visible = line["sent_at"] + max(0, math.floor(due - line["sent_at"]))
                rounding[run_id] = visible - due
                queue[run_id] = line["received_at"] - visible
            wait[run_id] = line["invoked_at"] - line["received_at"]
            own[run_id] = accepted - line["invoked_at"]
    ticks = sum(
        int((line.get("report") or {}).get("dispatched", {}).get("submitted", 0)) for line in lambdas.lines("tick")
    )
    webhook = sum(1 for line in lambdas.lines("webhook") if line.get("outcome") == "submitted")
    target.paths.update(
        {"delay queue": len(own) - swept, "delay queue, pool sweep": swept, "monitor tick": ticks, "webhook": webhook}
    )
    target.shares = {
        "message visible − due (DelaySeconds rounded down: up to 1 s early, waited out)": rounding,
        "message visible → received (moto long poll: wakes once a second)": queue,
        "received → invoked (batch wait)": wait,
        "invoked → RunTask (submit)": own,
    }


def measure_not_due(bed: Bed, result: Result, *, not_due_runs: int, step) -> None:
    """Section 8: each actor alone with a pool; ``not_due_runs`` runs created into it (Prefect on SQLite)."""
    token = harness.token()
    logs = bed.work / "logs"
    step(f"not-due cost: {not_due_runs} scheduled runs, no pushpool")
    deployment = _plain_pool(bed, "bench-nd-none")
    result.not_due.append(not_due(bed, "no pushpool (pool, no actor)", deployment, not_due_runs))
    bed.api.delete_pool("bench-nd-none")

    step(f"not-due cost: {not_due_runs} scheduled runs, prefect-aws worker")
    deployment = _worker_pool(bed, "bench-nd-worker")
    worker = harness.worker(bed.api_url, bed.moto, logs, "bench-nd-worker", None)
    try:
        _wait_worker(bed.api, "bench-nd-worker", worker)
        time.sleep(SETTLE)  # past its start-up
        result.not_due.append(not_due(bed, "prefect-aws worker (defaults)", deployment, not_due_runs))
    finally:
        worker.stop()
    bed.api.delete_pool("bench-nd-worker")

    step(f"not-due cost: {not_due_runs} scheduled runs, pushpool serve")
    serve = harness.serve(bed.api_url, bed.moto, logs, event_stream=True, monitor_interval=5.0, token=token)
    try:
        deployment = bed._pushpool_pool(
            "bench-nd-serve", webhook_url=serve.extra["url"] + "/submit", token=token, events="stream"
        )
        time.sleep(SETTLE)  # the automation is loaded; the event stream connects
        result.not_due.append(not_due(bed, "pushpool serve (defaults)", deployment, not_due_runs))
    finally:
        serve.stop()
    bed.api.delete_pool("bench-nd-serve")

    step(f"not-due cost: {not_due_runs} scheduled runs, pushpool's AWS functions")
    lambdas = Lambdas(bed, token)
    try:
        deployment = bed._pushpool_pool("bench-nd-aws", webhook_url=lambdas.url + "/", token=token)
        time.sleep(SETTLE)
        result.not_due.append(not_due(bed, "pushpool AWS functions", deployment, not_due_runs))
    finally:
        lambdas.stop()
    bed.api.delete_pool("bench-nd-aws")


def measure_punctuality(bed: Bed, result: Result, *, spread: int, burst: int, step) -> None:
    """Section 7: the two stages (serve beside the worker; the AWS functions alone)."""
    result.spread, result.burst = spread, burst
    token = harness.token()
    logs = bed.work / "logs"
    actors: dict[str, harness.Child] = {}
    serve_target = Target("pushpool serve", LEAD)
    worker_target = Target("prefect-aws worker (defaults)", 0.0)
    aws_target = Target("pushpool on AWS (functions)", LEAD)
    try:
        step("punctuality: creation rate with no actor (20 runs, a day ahead)")
        probe = _plain_pool(bed, "bench-pt-probe")
        began = time.monotonic()
        for _ in range(20):
            _create_scheduled(bed.api, probe, time.time() + 86400)
        rate = 20 / max(0.1, time.monotonic() - began)
        bed.api.delete_pool("bench-pt-probe")

        step(f"punctuality, stage 1: pushpool serve and the prefect-aws worker, {spread} + {burst} runs each")
        worker_dep = _worker_pool(bed, "bench-pt-worker")
        actors["worker"] = harness.worker(bed.api_url, bed.moto, logs, "bench-pt-worker", None)
        _wait_worker(bed.api, "bench-pt-worker", actors["worker"])
        serve_dep = _plain_pool(bed, "bench-pt-serve")  # provisioned (automation → serve) once serve runs

        def start_stage_1() -> None:
            actors["serve"] = harness.serve(
                bed.api_url, bed.moto, logs, event_stream=True, monitor_interval=5.0, token=token
            )
            bed._pushpool_pool(
                "bench-pt-serve", webhook_url=actors["serve"].extra["url"] + "/submit", token=token, events="stream"
            )

        _stage(bed, [(serve_target, serve_dep), (worker_target, worker_dep)], spread, burst, rate, start_stage_1, 14)
        serve = actors.pop("serve")
        serve.stop()
        actors.pop("worker").stop()
        _serve_shares(serve_target, serve)
        bed.api.delete_pool("bench-pt-worker")
        bed.api.delete_pool("bench-pt-serve")

        step(
            f"punctuality, stage 2: pushpool's AWS functions (webhook, delay queue, monitor every 60 s), "
            f"{spread} + {burst} runs"
        )
        lambdas = Lambdas(bed, token)
        try:
            aws_dep = _plain_pool(bed, "bench-pt-aws")

            def start_stage_2() -> None:
                bed._pushpool_pool("bench-pt-aws", webhook_url=lambdas.url + "/", token=token)

            # The first run is due a monitor tick (60 s) after the last creation at least, so that the look-ahead
            # (two ticks) has armed every run in time, as it does on AWS for runs created more than 900 s ahead.
            _stage(bed, [(aws_target, aws_dep)], spread, burst, rate, start_stage_2, 14, ready=AWS_READY)
        finally:
            lambdas.stop()
        _lambda_shares(aws_target, lambdas)
        bed.api.delete_pool("bench-pt-aws")
    finally:
        for child in actors.values():
            child.stop()
    result.targets = [serve_target, aws_target, worker_target]


# -- report -----------------------------------------------------------------------------------------------------


def _cells(values: list[float], runs: int) -> str:
    from report import fmt, pct

    if not values:
        return f"0/{runs} | – | – | –"
    return f"{len(values)}/{runs} | {fmt(pct(values, 50))} | {fmt(pct(values, 95))} | {fmt(max(values))}"


def _goals(target: Target, burst: int) -> str:
    from report import pct

    spread, bursts = target.lateness("spread"), target.lateness("burst")
    if not spread:
        return "–"
    ok = pct(spread, 50) <= 0.5 and pct(spread, 95) <= 2.0
    burst_ok = len(bursts) == burst and bool(bursts) and max(bursts) <= 10.0
    return f"{'met' if ok else 'missed'} / {'met' if burst_ok else 'missed'}"


def report_lines(result: Result) -> list[str]:
    from report import breakdown, fmt, pct

    if not result.targets:
        return []
    worker = next((t for t in result.targets if "worker" in t.name), None)
    lines = [
        "## 7. Punctuality of scheduled runs (Prefect on PostgreSQL 15)",
        "",
        f"Per target, {result.spread} runs scheduled 1–3 s apart (*spread*) and {result.burst} runs scheduled for "
        "the same second (*burst*). **Lateness = RunTask accepted (moto) − when the job was due**: for pushpool, "
        "scheduled time − the pool's lead, here the ecs:push template's `dispatch_lead_seconds` as shipped, "
        f"**{LEAD:g} s**, for both pushpool targets; for Prefect's worker, its scheduled time (and, on the last "
        f"row, scheduled time − its {WORKER_PREFETCH:g} s prefetch). Targets: `pushpool serve` at its defaults "
        "(event stream, automation webhook, 5 s monitor ticks, timers in the process); pushpool as deployed on AWS "
        "(`bench/lambdas.py`: the automation's webhook → `functions/submit/app.py`'s handler; "
        "`functions/monitor/app.py` every 60 s as `MonitorSchedule`, which arms delayed messages on the delay queue "
        "(moto SQS) for runs due within two ticks; five pollers do what Lambda's SQS event source mapping does — "
        "long-poll, batches of 10, invoke submit, delete — with 8 warm submit environments, one process each); "
        "Prefect's ECS worker at its defaults (10 s polls, 10 s prefetch). Two stages, because two pushpool actors "
        "on one server would each act on the other's pool: serve with the worker beside it (their spreads "
        f"interleave, their bursts {BURST_GAP:g} s apart), then the AWS path alone. Each stage creates its runs "
        "through the API one at a time *before* pushpool starts (the worker is already polling), and the first is "
        "due after that (on AWS, a monitor tick after the last creation at least): the bench's writes never overlap "
        "the dispatch it measures, and pushpool learns of the runs from its monitor's look-ahead, as it does of "
        "runs Prefect's scheduler creates long ahead (beyond SQS's 900 s delay, the only way on AWS). A run's "
        "Scheduled event arming its trigger is exercised in section 8. *Late* = runs whose state history holds "
        f"Prefect's Late state (set {LATE_AFTER:g} s after the scheduled time).",
        "",
        "| target | due at | spread: with a job | p50 | p95 | max | burst: with a job | p50 | p95 | max "
        "| marked Late | runs with >1 RunTask | goals (spread p50 ≤ 0.5 s & p95 ≤ 2 s / burst all ≤ 10 s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result.targets:
        due = f"scheduled − {t.lead:g} s" if t.lead else "scheduled"
        lines.append(
            f"| {t.name} | {due} | {_cells(t.lateness('spread'), t.count('spread'))} "
            f"| {_cells(t.lateness('burst'), t.count('burst'))} | {t.late} | {t.extra_jobs} "
            f"| {_goals(t, result.burst)} |"
        )
    if worker is not None:
        lines.append(
            f"| {worker.name}, against its prefetch | scheduled − {WORKER_PREFETCH:g} s "
            f"| {_cells(worker.lateness('spread', WORKER_PREFETCH), worker.count('spread'))} "
            f"| {_cells(worker.lateness('burst', WORKER_PREFETCH), worker.count('burst'))} | {worker.late} "
            f"| {worker.extra_jobs} | – |"
        )
    lines += ["", "Where pushpool's lateness goes (p50 / p95 / max; spread, then burst), and which path submitted:", ""]
    lines += ["| target | share | spread | burst |", "|---|---|---|---|"]
    for t in result.targets:
        for share, values in t.shares.items():
            cells = []
            for kind in ("spread", "burst"):
                v = [s for r, s in values.items() if t.kind.get(r) == kind]
                cells.append(f"{fmt(pct(v, 50))} / {fmt(pct(v, 95))} / {fmt(max(v) if v else None)} ({len(v)})")
            lines.append(f"| {t.name} | {share} | {cells[0]} | {cells[1]} |")
        if t.paths:
            lines.append(f"| {t.name} | submitted by | {', '.join(f'{k}: {v}' for k, v in t.paths.items())} | |")
    notes = [f"{t.name}: {'; '.join(t.notes)}" for t in result.targets if t.notes] + result.notes
    if notes:
        lines += ["", "Notes: " + " — ".join(notes)]
    created = ", ".join(
        f"{t.name} {t.create_seconds:.0f} s (load average {t.load[0]:.1f} → {t.load[1]:.1f})" for t in result.targets
    )
    lines += [
        "",
        f"Creating each stage's runs took (and the machine's 1-minute load average as the stage began → ended, "
        f"{os.cpu_count()} cores shared with other work): {created}; stage 1's two targets share one figure.",
        "",
    ]

    if result.not_due:
        base = next((n for n in result.not_due if n.name.startswith("no pushpool")), None)
        lines += [
            "## 8. A run that is not yet due: what it costs Prefect (Prefect on SQLite)",
            "",
            f"{result.not_due[0].runs} runs created through the API one at a time with no pause, scheduled "
            f"{NOT_DUE_AHEAD / 60:g} minutes ahead, into a pool served by each actor in turn (alone on the server). "
            "*503 to creations*: the bench's own create calls answered 503 (SQLite busy) and retried; *503 to the "
            "actor*: the actor's calls answered 503. The actor's calls are counted in the access log over the "
            f"creations plus {SETTLE:g} s (late webhook deliveries), the bench's own excluded; a poller's polls in "
            "that window count.",
            "",
            "| actor | creating them took | ÷ no pushpool | creation p50 / p95 | 503 to creations | 503 to the actor "
            "| actor's orchestration calls / run | AWS calls / run | load average |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n in result.not_due:
            ratio = f"{n.seconds / base.seconds:.2f}×" if base and base.seconds else "–"
            aws = ", ".join(f"{k} {v / n.runs:.2f}" for k, v in n.aws.most_common()) or "0"
            lines.append(
                f"| {n.name} | {n.seconds:.1f} s | {ratio} | {fmt(pct(n.create_latencies, 50), 'ms')} / "
                f"{fmt(pct(n.create_latencies, 95), 'ms')} | {n.create_503} | {n.actor_503} "
                f"| {n.calls() / n.runs:.2f} | {aws} | {n.load:.1f} |"
            )
        lines.append("")
        for n in result.not_due:
            if n.orchestration:
                lines += breakdown(f"{n.name}: calls during the creations", n.orchestration, n.runs)
    return lines


def headline_rows(result: Result) -> list[str]:
    from report import fmt, pct

    by = {t.name: t for t in result.targets}
    serve, aws = by.get("pushpool serve"), by.get("pushpool on AWS (functions)")
    worker = next((t for t in result.targets if "worker" in t.name), None)
    rows = []
    if serve and aws and worker:

        def pp(t: Target, kind: str, shift: float = 0.0) -> str:
            v = t.lateness(kind, shift)
            return f"{fmt(pct(v, 50))} / {fmt(pct(v, 95))}"

        def last(t: Target) -> str:
            v = t.lateness("burst")
            return f"{fmt(max(v) if v else None)} ({len(v)}/{t.count('burst')})"

        rows.append(
            f"| scheduled runs: lateness p50 / p95 (job − due; pushpool lead {LEAD:g} s) "
            f"| serve {pp(serve, 'spread')}; AWS {pp(aws, 'spread')} | {pp(worker, 'spread')} (vs its 10 s prefetch: "
            f"{pp(worker, 'spread', WORKER_PREFETCH)}) |"
        )
        rows.append(
            f"| {result.burst} runs due the same second: last job after it | serve {last(serve)}; AWS {last(aws)} "
            f"| {last(worker)} |"
        )
        rows.append(f"| scheduled runs marked Late | serve {serve.late}; AWS {aws.late} | {worker.late} |")
    base = next((n for n in result.not_due if n.name.startswith("no pushpool")), None)
    if base and base.seconds:
        cells = {
            n.name: f"{n.seconds:.1f} s ({n.seconds / base.seconds:.2f}×, {n.create_503 + n.actor_503} × 503)"
            for n in result.not_due
        }
        pushpool = "; ".join(f"{k.replace('pushpool ', '')} {v}" for k, v in cells.items() if k.startswith("pushpool"))
        worker_cell = next((v for k, v in cells.items() if "worker" in k), "–")
        rows.append(
            f"| creating {base.runs} not-due scheduled runs (÷ no pushpool: {base.seconds:.1f} s) | {pushpool} "
            f"| {worker_cell} |"
        )
    return rows


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, data = [], []
    for t in result.targets:
        for kind in ("spread", "burst"):
            labels.append(f"{t.name}, {kind}")
            data.append(t.lateness(kind) or [math.nan])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.boxplot(data, vert=False, whis=(0, 100), flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"RunTask accepted − due (s); pushpool due = scheduled − {LEAD:g} s, worker due = scheduled")
    ax.set_title("Punctuality of scheduled runs: same Prefect server (PostgreSQL), same moto server")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
