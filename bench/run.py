"""``make bench``: pushpool against Prefect's own ECS worker (prefect-aws) on this machine, in one run.

Writes ``bench/results/<date>.md``, ``bench/results/<date>-latency.png`` and ``<date>-punctuality.png``; prints the
headline table. Asserts nothing. Options: --runs N (per dispatch mode, default 100), --interval S (mean pause after
each run creation, 0.15), --spread N (punctuality: runs 1-3 s apart, 60), --same-second N (punctuality: runs due the
same second, 200), --not-due N (runs created not yet due, 50), --burst N (1000), --scale N (10000),
--latency S (fake backend per call in the scale tick, 0.05), --provider-scale N[,N] (in-flight runs per provider in
the per-provider monitor tick, 100,1000), --dispatch-db postgres|sqlite (sections 1-2; postgres when installed),
--skip SECTION[,SECTION] (cold,dispatch,punctuality,burst,scale,providers), --keep (leave the servers' and actors'
logs), --out DIR.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import coldstart
import dispatch
import harness
import punctuality
import report
import scale

# Long enough for the worker's whole burst (200 s for 1,000 runs on 2026-12-06): the ratio measured, not extrapolated.
BURST_TIMEOUT = 420.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # 100 (was 200) since the punctuality section came: it keeps `make bench` nearer its ~15 minutes.
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.15)
    parser.add_argument("--spread", type=int, default=60)
    parser.add_argument("--same-second", type=int, default=200)
    parser.add_argument("--not-due", type=int, default=50)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=10000)
    parser.add_argument("--latency", type=float, default=0.05, help="fake backend latency per call (s)")
    parser.add_argument("--provider-scale", default="100,1000", help="in-flight runs per provider tick (N[,N])")
    parser.add_argument(
        "--dispatch-db",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="the database behind sections 1-2 (postgres when PostgreSQL 15 is installed, else sqlite)",
    )
    parser.add_argument("--skip", default="")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) and print its path")
    parser.add_argument("--out", default=str(harness.ROOT / "bench" / "results"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pushpool-bench-"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    md: list[str] = []
    headline: list[str] = []

    def step(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {text}", flush=True)

    moto = harness.Moto().start()
    sqlite = pg = pg_server = dpg = dpg_server = None
    phases: list[dispatch.Phase] = []
    colds: list[coldstart.ColdStart] = []
    bursts: list[dispatch.Burst] = []
    ticks: list[scale.Tick] = []
    provider_ticks: list[scale.ProviderTick] = []
    punct = punctuality.Result()
    try:
        step("Prefect server (SQLite) and moto")
        sqlite = harness.start_prefect(work / "prefect-sqlite")
        net = harness.aws_network()
        if "cold" not in skip:
            step("cold start: import and first invocation of each function")
            colds = coldstart.measure(sqlite.api_url, moto, net)
        if args.dispatch_db == "postgres" and not harness.Postgres.available():
            args.dispatch_db = "sqlite"
        if "dispatch" not in skip:
            # Sections 1-2 on PostgreSQL by default: on SQLite, Prefect's own background writes after each
            # get_scheduled_flow_runs stall the server for up to 60 s at a time under the pollers' load ("database is
            # locked"), so those rows measured SQLite's stalls, not the actors, and took 24 minutes (2026-12-01).
            # --dispatch-db sqlite measures them as the anchor's main rows did.
            dispatch_server = sqlite
            if args.dispatch_db == "postgres":
                step("PostgreSQL 15 cluster and a Prefect server on it (dispatch)")
                dpg = harness.Postgres().start()
                dpg_server = dispatch_server = harness.start_prefect(work / "prefect-pg-dispatch", database_url=dpg.url)
            bed = dispatch.Bed(
                dispatch_server.api_url, moto, harness.AccessLog(dispatch_server), work, seed=42, net=net
            )
            plan = [
                (
                    "pushpool, automation webhook",
                    lambda: bed.pushpool("webhook", args.runs, args.interval, idle_seconds=10),
                ),
                ("pushpool, event stream", lambda: bed.pushpool("events", args.runs, args.interval)),
                ("pushpool, monitor dispatch", lambda: bed.pushpool("monitor", args.runs, args.interval)),
                ("worker, 1 s poll", lambda: bed.worker(1, args.runs, args.interval)),
                ("worker, default poll", lambda: bed.worker(None, args.runs, args.interval, idle_seconds=10)),
            ]
            for label, run in plan:
                step(f"dispatch latency: {label}, {args.runs} runs")
                phases.append(run())
                p = phases[-1]
                step(f"  p50 {report.fmt(report.pct(p.latencies, 50))}, {p.missing} without a job")
            if dpg_server is not None:
                dpg_server.stop()
                dpg_server = None
                dpg.stop()
                dpg = None
        pnet = harness.aws_network("bench-punct")
        if "punctuality" not in skip:  # section 8 (the cost of a not-due run) on SQLite, where the 503s come from
            nbed = dispatch.Bed(sqlite.api_url, moto, harness.AccessLog(sqlite), work, seed=14, net=pnet)
            punctuality.measure_not_due(nbed, punct, not_due_runs=args.not_due, step=step)
        sqlite.stop()
        sqlite = None

        if "punctuality" not in skip and harness.Postgres.available():
            # Section 7 on PostgreSQL: 200 claims due the same second (and the worker's at once) stall SQLite for
            # a minute at a time ("database is locked") on this machine, which measures SQLite, not the actors.
            step("PostgreSQL 15 cluster and a Prefect server on it (punctuality)")
            ppg = harness.Postgres().start()
            try:
                ppg_server = harness.start_prefect(work / "prefect-pg-punct", database_url=ppg.url)
                try:
                    pbed = dispatch.Bed(ppg_server.api_url, moto, harness.AccessLog(ppg_server), work, 14, pnet)
                    punctuality.measure_punctuality(pbed, punct, spread=args.spread, burst=args.same_second, step=step)
                finally:
                    ppg_server.stop()
            finally:
                ppg.stop()
            for t in punct.targets:
                late = t.lateness()
                step(
                    f"  {t.name}: p50 {report.fmt(report.pct(late, 50))}, max {report.fmt(max(late) if late else None)}"
                    f", {t.missing()} without a job, {t.late} marked Late"
                )

        if ("burst" not in skip or "scale" not in skip) and harness.Postgres.available():
            step("PostgreSQL 15 cluster and a Prefect server on it")
            pg = harness.Postgres().start()
            pg_server = harness.start_prefect(work / "prefect-pg", database_url=pg.url)
            pbed_net = harness.aws_network("bench-pg")
            pbed = dispatch.Bed(pg_server.api_url, moto, harness.AccessLog(pg_server), work, seed=7, net=pbed_net)
            if "burst" not in skip:
                step(f"burst: {args.burst} runs, pushpool serve")
                result, _ids, pool = dispatch.burst(
                    pbed, pg, "pushpool", args.burst, timeout=BURST_TIMEOUT, server_pid=pg_server.process.pid
                )
                bursts.append(result)
                if "scale" not in skip and result.with_jobs:
                    step(f"monitor scale: one tick over {result.with_jobs} real in-flight runs (Prefect + moto)")
                    ticks.append(
                        scale.one_tick(
                            "real: Prefect (PostgreSQL) + moto ECS",
                            result.with_jobs,
                            pg_server.api_url,
                            pool,
                            moto,
                            "ecs",
                        )
                    )
                step(f"burst: {args.burst} runs, prefect-aws worker")
                bursts.append(
                    dispatch.burst(
                        pbed, pg, "worker", args.burst, timeout=BURST_TIMEOUT, server_pid=pg_server.process.pid
                    )[0]
                )
            if "scale" not in skip:
                step(f"monitor scale: seeding {args.scale} in-flight runs")
                ids_file = scale.seed_running_runs(pbed.api, pg, "bench-scale", pbed.net, args.scale)
                step(
                    f"monitor scale: one tick over {args.scale + 1} runs, fake backend, "
                    f"{args.latency * 1000:.0f} ms/call"
                )
                ticks.append(
                    scale.one_tick(
                        f"fake backend, {args.latency * 1000:.0f} ms per call",
                        args.scale + 1,
                        pg_server.api_url,
                        "bench-scale",
                        moto,
                        "fake",
                        str(args.latency),
                        ids_file,
                    )
                )
        if "providers" not in skip:
            for runs in [int(n) for n in args.provider_scale.split(",") if n.strip()]:
                for provider in scale.PROVIDERS:
                    step(f"monitor scale per provider: {provider}, {runs} in-flight runs on its emulator")
                    provider_ticks.append(scale.provider_tick(provider, runs))
                    row = provider_ticks[-1]
                    if row.error:
                        step(f"  failed: {row.error[-300:]}")
                    else:
                        step(
                            "  "
                            + "; ".join(
                                f"tick {i + 1}: {t['seconds'] * 1000:.0f} ms, {t['calls']['list']} list, "
                                f"{t['calls']['job']} per-job, {t['calls']['other']} other calls"
                                for i, t in enumerate(row.ticks)
                            )
                        )
    finally:
        for server in (sqlite, pg_server, dpg_server):
            if server is not None:
                server.stop()
        for cluster in (pg, dpg):
            if cluster is not None:
                cluster.stop()
        moto.stop()

    step("writing the report")
    write_report(
        out_dir, date, args, phases, colds, bursts, ticks, punct, md, headline, time.monotonic() - began, provider_ticks
    )
    if args.keep:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(headline))
    print(f"\nreport: {out_dir / (date + '.md')}")


def write_report(
    out_dir, date, args, phases, colds, bursts, ticks, punct, md, headline, elapsed, provider_ticks=()
) -> None:
    worker_default = next((p for p in phases if "default" in p.name), None)
    md += [
        f"# pushpool benchmarks — {date}",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores. Everything on 127.0.0.1: Prefect 3.8.8 servers (one per group of "
        f"sections: SQLite for 3, 8{' and 1-2' if args.dispatch_db == 'sqlite' else ''}, PostgreSQL 15 for the "
        "others), one moto 5.2.5 server (in the bench process; "
        "RunTask is timestamped there since moto returns no `createdAt`), "
        "prefect-aws 0.7.12. Made by `make bench` "
        f"(`bench/run.py --runs {args.runs} --interval {args.interval} --spread {args.spread} "
        f"--same-second {args.same_second} --not-due {args.not_due} --burst {args.burst} --scale {args.scale} "
        f"--provider-scale {args.provider_scale} "
        f"--dispatch-db {args.dispatch_db}"
        f"{' --skip ' + args.skip if args.skip else ''}`) "
        f"in {elapsed / 60:.1f} minutes. Nothing here is asserted; figures vary with the machine's load.",
        "",
    ]
    if phases:
        png = f"{date}-latency.png"
        report.plot(phases, out_dir / png, "PostgreSQL 15" if args.dispatch_db == "postgres" else "SQLite")
        md += [
            "## 1. Dispatch latency (flow run created → RunTask accepted), Prefect on "
            + ("PostgreSQL 15" if args.dispatch_db == "postgres" else "SQLite"),
            "",
            f"{args.runs} runs per mode, created one at a time, each followed by a pause from U(0, "
            f"{2 * args.interval:g} s) (the same seed for every mode; a closed loop, so the bench's own creations "
            "never saturate the server). A worker's run without a job 150 s after the last creation counts as such. "
            "Modes: the Prefect automation's webhook → `pushpool serve` (event stream off); the "
            "event stream only (no automation); the monitor only (5 s ticks in serve; the Lambda monitor ticks every "
            "minute); Prefect's ECS worker at `PREFECT_WORKER_QUERY_SECONDS=1` and at its default (10 s). "
            "*Own share* = pushpool received the trigger (webhook request, event, monitor tick start) → RunTask.",
            "",
            *report.latency_table(phases, worker_default),
            "",
            f"![latency distributions]({png})",
            "",
            "## 2. API economy (same windows)",
            "",
            "Orchestration calls counted in the Prefect server's access log (the bench's own `create_flow_run` "
            "calls excluded), AWS calls at moto. A poller's idle polls are part of its window.",
            "",
            *report.economy_table(phases),
            "",
        ]
        for p in phases:
            md += report.breakdown(f"{p.name}: orchestration calls", p.orchestration, len(p.runs))
            md += report.breakdown(f"{p.name}: AWS calls", p.aws, len(p.runs))
            if p.notes:
                md += [f"Note ({p.name}): " + "; ".join(p.notes), ""]
    if colds:
        md += [
            "## 3. Cold start (each function's `app.py`, fresh interpreter)",
            "",
            "| function | import (perf_counter, the invoked process) | import (`-X importtime`, median of 5) "
            "| heaviest imports "
            "| first invocation "
            "(incl. boto3 client) | peak RSS | cloud SDKs imported |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in colds:
            inv = c.invoke
            heavy = ", ".join(f"`{n}` {ms:.0f}" for n, ms in c.heaviest[:3])
            md.append(
                f"| {c.function} | {inv.get('import_ms', float('nan')):.0f} ms | {c.import_ms:.0f} ms | {heavy} "
                f"| {inv.get('first_invoke_ms', float('nan')):.0f} ms | {inv.get('peak_rss_mb', float('nan')):.0f} MB "
                f"| {', '.join(inv.get('sdks_after_invoke', [])) or inv.get('error', '')} |"
            )
        be = colds[0].backend_import_ms
        md += [
            "",
            "Backend modules are imported lazily, on first use: "
            + ", ".join(f"`pushpool.providers.{k}.backend` {v:.0f} ms (importtime)" for k, v in be.items())
            + ". First-invocation answers: "
            + "; ".join(f"{c.function}: `{str(c.invoke.get('answer', ''))[:80]}`" for c in colds),
            "",
        ]
    if bursts:
        md += [
            "## 4. Burst (Prefect on PostgreSQL 15)",
            "",
            f"{args.burst} due runs appear at once in front of a running actor: copies of a real run inserted in one "
            "SQL transaction (creating them through the API takes minutes on this machine and measures Prefect). "
            "Such runs emit no events, so pushpool dispatches them from its monitor sweep — its path for any "
            "backlog. pushpool: `serve` as by default (event stream, webhook, 5 s monitor ticks, 8 submits at "
            "once). Worker: defaults (10 s poll). Times from the commit of the insert. CPU: the Prefect server's "
            "process and the actor's (with its children) from the insert to the last RunTask, per run; one Prefect "
            "server process cannot use more than one core.",
            "",
            "| actor | runs | inserting them took | first task | all runs have a task | runs with a task | "
            "orchestration calls / run | RunTask / run | Prefect server CPU / run | actor CPU / run |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b in bursts:
            n = max(1, b.runs)
            calls = sum(v for k, v in b.orchestration.items() if not k.startswith("503"))
            done = (
                report.fmt(b.all_jobs_seconds, digits=1) if b.all_jobs_seconds else f"not within {BURST_TIMEOUT:.0f} s"
            )
            md.append(
                f"| {b.name} | {b.runs} | {b.create_seconds:.1f} s | {report.fmt(b.first_job_seconds, digits=1)} "
                f"| {done} "
                f"| {b.with_jobs} | {calls / n:.2f} | {b.aws.get('ecs:RunTask', 0) / n:.2f} "
                f"| {_ms_per_run(b.server_cpu_seconds, n)} | {_ms_per_run(b.actor_cpu_seconds, n)} |"
            )
        md.append("")
    if ticks:
        md += [
            "## 5. Monitor scale: one tick",
            "",
            "| tick over | in-flight runs | time | orchestration calls | DescribeTasks / status calls | RSS before → "
            "peak | outcome |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in ticks:
            status_calls = t.describe_tasks or t.backend_calls.get("status", 0)
            outcome = t.error[-200:].replace("\n", " ") if t.error else json.dumps(t.report.get("reconciled", {}))
            md.append(
                f"| {t.name} | {t.runs} | {t.seconds:.2f} s | {t.orchestration_calls} | {status_calls} "
                f"| {t.rss_before_mb:.0f} → {t.peak_rss_mb:.0f} MB | {outcome} |"
            )
        md.append("")
    if provider_ticks:
        md += [
            "## 5b. Monitor scale per provider: one tick over N in-flight runs on each provider's emulator",
            "",
            "Each provider's emulator from tests/ on 127.0.0.1 (ECS: moto server; Cloud Run: the Admin API emulator; "
            "ACI: the ARM endpoint; Modal: the gRPC control plane; Coiled: the REST API; process: `sleep` on this "
            "machine), reached by pushpool's backend through the provider's real SDK. The runs are submitted through "
            "pushpool's submit use-case (8 at once) against the orchestration fake (tests/fake_prefect.py, held to a "
            "real Prefect server by its contract suite) and set Running; every job is alive, so nothing changed: the "
            "calls are the monitor's steady-state cost. Calls are counted where the emulator receives them, by kind: "
            "*list* = one call about many jobs (a listing page, or ECS DescribeTasks of up to 100 tasks), *per-job* = "
            "one call about one job, *other*. Tick 1 is a fresh process's first tick (a cold function's), tick 2 the "
            "same process's next. The time is pushpool plus the emulator on this machine (no network latency), "
            "the orchestration fake's share negligible.",
            "",
            *scale.provider_lines(list(provider_ticks)),
            "",
        ]
    if punct.targets or punct.not_due:
        md += punctuality.report_lines(punct)
        if punct.targets:
            png = f"{date}-punctuality.png"
            punctuality.plot(punct, out_dir / png)
            md += [f"![punctuality]({png})", ""]
    webhook = next((p for p in phases if "webhook" in p.name), None)
    submit_cold = next((c for c in colds if c.function == "submit"), None)
    monitor_cold = next((c for c in colds if c.function == "monitor"), None)
    if webhook and webhook.own and submit_cold and monitor_cold and "import_ms" in submit_cold.invoke:
        own = list(webhook.own.values())
        md += [
            "## 6. Cost model",
            "",
            *report.cost_lines(
                sum(own) / len(own),
                (submit_cold.invoke["import_ms"] + submit_cold.invoke["first_invoke_ms"]) / 1000,
                monitor_cold.invoke["first_invoke_ms"] / 1000,
            ),
            "",
        ]
    # Headline.
    headline += ["| figure | pushpool | Prefect ECS worker |", "|---|---|---|"]
    by = {p.name: p for p in phases}
    ev = next((p for p in phases if "event" in p.name), None)
    w1 = next((p for p in phases if "1 s" in p.name), None)
    if webhook and worker_default:
        headline.append(
            f"| dispatch p50 / p95 (webhook vs worker default) | {report.fmt(report.pct(webhook.latencies, 50))} / "
            f"{report.fmt(report.pct(webhook.latencies, 95))} | {report.fmt(report.pct(worker_default.latencies, 50))}"
            f" / {report.fmt(report.pct(worker_default.latencies, 95))} |"
        )
    if ev and w1:
        headline.append(
            f"| dispatch p50 / p95 (event stream vs worker 1 s poll) | {report.fmt(report.pct(ev.latencies, 50))} / "
            f"{report.fmt(report.pct(ev.latencies, 95))} | {report.fmt(report.pct(w1.latencies, 50))} / "
            f"{report.fmt(report.pct(w1.latencies, 95))} |"
        )
    if webhook and webhook.own:
        headline.append(
            f"| pushpool's own share p50 (webhook) "
            f"| {report.fmt(report.pct(list(webhook.own.values()), 50), 'ms')} | – |"
        )
    if ev and ev.own:
        headline.append(
            f"| pushpool's own share p50 (event stream) "
            f"| {report.fmt(report.pct(list(ev.own.values()), 50), 'ms')} | – |"
        )
    if webhook and worker_default:
        headline.append(
            f"| orchestration calls per run | {webhook.api_calls() / len(webhook.runs):.2f} | "
            f"{worker_default.api_calls() / len(worker_default.runs):.2f} |"
        )
        headline.append(
            f"| AWS calls per run (RunTask) | {sum(webhook.aws.values()) / len(webhook.runs):.2f} "
            f"({webhook.aws.get('ecs:RunTask', 0) / len(webhook.runs):.2f}) | "
            f"{sum(worker_default.aws.values()) / len(worker_default.runs):.2f} "
            f"({worker_default.aws.get('ecs:RunTask', 0) / len(worker_default.runs):.2f}) |"
        )
    if submit_cold:
        headline.append(f"| submit import (cold, `-X importtime`, median of 5) | {submit_cold.import_ms:.0f} ms | – |")
    if len(bursts) == 2:

        def burst_cell(b: dispatch.Burst) -> str:
            if b.all_jobs_seconds:
                return report.fmt(b.all_jobs_seconds, digits=1)
            return f"{b.with_jobs} of {b.runs} within {BURST_TIMEOUT:.0f} s"

        pushpool_s, worker_s = bursts[0].all_jobs_seconds, bursts[1].all_jobs_seconds
        ratio = f" ({worker_s / pushpool_s:.1f}× faster)" if pushpool_s and worker_s else ""
        headline.append(
            f"| burst: {bursts[0].runs} due runs at once → all have tasks | {burst_cell(bursts[0])}{ratio} "
            f"| {burst_cell(bursts[1])} |"
        )
    headline += punctuality.headline_rows(punct)
    for t in ticks:
        headline.append(
            f"| monitor tick, {t.runs} runs ({t.name}) | {t.seconds:.2f} s, peak {t.peak_rss_mb:.0f} MB | – |"
        )
    for r in provider_ticks:
        if not r.error and r.ticks:
            c = r.ticks[0]["calls"]
            headline.append(
                f"| monitor tick, {r.in_flight} runs on {r.provider} (emulator, fresh process) "
                f"| {r.ticks[0]['seconds'] * 1000:.0f} ms, {c['list']} list + {c['job']} per-job calls | – |"
            )
    _ = by
    md[2:2] = ["## Headline", "", *headline, ""]
    (out_dir / f"{date}.md").write_text("\n".join(md) + "\n")


def _ms_per_run(seconds: float | None, runs: int) -> str:
    return "–" if seconds is None else f"{1000 * seconds / runs:.0f} ms"


if __name__ == "__main__":
    main()
