"""Tables, the cost model and the latency plot for ``bench/run.py``."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

# List prices, us-east-1, as published by AWS (Lambda and Fargate pricing pages); stated in the report.
LAMBDA_GB_SECOND_ARM = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000
FARGATE_VCPU_HOUR_X86 = 0.04048
FARGATE_GB_HOUR_X86 = 0.004445
HOURS_PER_MONTH = 730
LAMBDA_MEMORY_GB = 0.5  # infra/template.yaml: MemorySize 512 for every function
WORKER_VCPU, WORKER_GB = 0.5, 1.0  # a small always-on worker task


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fmt(value: float | None, unit: str = "s", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ms":
        return f"{value * 1000:.0f} ms"
    return f"{value:.{digits}f} s"


def latency_table(phases: list, baseline) -> list[str]:
    base = pct(baseline.latencies, 50) if baseline else math.nan
    lines = [
        "| mode | runs with a job | p50 | p95 | p99 | max | worker p50 ÷ this p50 | pushpool's own share p50 / p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        lat = p.latencies
        own = list(p.own.values())
        ratio = base / pct(lat, 50) if lat and not math.isnan(base) else math.nan
        own_cell = f"{fmt(pct(own, 50), 'ms')} / {fmt(pct(own, 95), 'ms')}" if own else "–"
        lines.append(
            f"| {p.name} | {len(lat)}/{len(p.runs)} | {fmt(pct(lat, 50))} | {fmt(pct(lat, 95))} | {fmt(pct(lat, 99))} "
            f"| {fmt(max(lat) if lat else None)} | {'–' if math.isnan(ratio) else f'{ratio:.1f}×'} | {own_cell} |"
        )
    return lines


def economy_table(phases: list) -> list[str]:
    lines = [
        "| mode | orchestration calls / run | 503 answers | AWS calls / run | RunTask / run | RegisterTaskDefinition "
        "(total) | idle orchestration calls / min | window |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        n = max(1, len(p.runs))
        aws_total = sum(p.aws.values())
        idle = "–" if p.idle_calls_per_minute is None else f"{p.idle_calls_per_minute:.1f}"
        lines.append(
            f"| {p.name} | {p.api_calls() / n:.2f} | {p.orchestration.get('503 answers (retried)', 0)} "
            f"| {aws_total / n:.2f} | {p.aws.get('ecs:RunTask', 0) / n:.2f} "
            f"| {p.aws.get('ecs:RegisterTaskDefinition', 0)} | {idle} | {p.window_seconds:.0f} s |"
        )
    return lines


def breakdown(title: str, counts: Counter, runs: int) -> list[str]:
    lines = [f"<details><summary>{title}</summary>", "", "| call | total | per run |", "|---|---|---|"]
    for name, count in counts.most_common():
        lines.append(f"| `{name}` | {count} | {count / max(1, runs):.2f} |")
    return [*lines, "", "</details>", ""]


def cost_lines(submit_seconds: float, cold_seconds: float, tick_seconds: float) -> list[str]:
    per_1000_warm = 1000 * submit_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_ARM + 1000 * LAMBDA_REQUEST
    per_1000_cold = 1000 * cold_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_ARM + 1000 * LAMBDA_REQUEST
    ticks = 60 * 24 * 30
    monitor = ticks * tick_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_ARM + ticks * LAMBDA_REQUEST
    worker = HOURS_PER_MONTH * (WORKER_VCPU * FARGATE_VCPU_HOUR_X86 + WORKER_GB * FARGATE_GB_HOUR_X86)
    return [
        "| item | measured input | GB-seconds | dollars |",
        "|---|---|---|---|",
        f"| submit, 1,000 runs, warm | {submit_seconds * 1000:.0f} ms per invocation (mean own share, webhook) "
        f"| {1000 * submit_seconds * LAMBDA_MEMORY_GB:.1f} | ${per_1000_warm:.4f} |",
        f"| submit, 1,000 runs, every one cold (upper bound) | {cold_seconds * 1000:.0f} ms (import + first invoke) "
        f"| {1000 * cold_seconds * LAMBDA_MEMORY_GB:.1f} | ${per_1000_cold:.4f} |",
        f"| monitor, one tick a minute for 30 days ({ticks:,} ticks) | {tick_seconds * 1000:.0f} ms per tick "
        f"| {ticks * tick_seconds * LAMBDA_MEMORY_GB:,.0f} | ${monitor:.2f} / month |",
        f"| Prefect worker on Fargate all month ({WORKER_VCPU} vCPU, {WORKER_GB:g} GB, x86) | 730 h | – "
        f"| ${worker:.2f} / month |",
        "",
        f"Prices: Lambda arm64 ${LAMBDA_GB_SECOND_ARM:.10f}/GB-s and $0.20 per million requests; Fargate x86 "
        f"${FARGATE_VCPU_HOUR_X86}/vCPU-hour and ${FARGATE_GB_HOUR_X86}/GB-hour (us-east-1 list prices). Lambda memory "
        f"{LAMBDA_MEMORY_GB * 1024:.0f} MB as in infra/template.yaml. Flow-run tasks cost the same either way and are "
        "left out. A month of pushpool with 10,000 runs (warm) costs "
        f"${monitor + 10 * per_1000_warm:.2f}; the worker costs ${worker:.2f} before it runs anything.",
    ]


def plot(phases: list, path: Path, database: str = "SQLite") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    data = [p.latencies or [math.nan] for p in phases]
    ax.boxplot(data, vert=False, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(phases) + 1), [p.name for p in phases], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("flow run created → ECS RunTask accepted (seconds, log scale; whiskers p1–p99)")
    ax.set_title(f"Dispatch latency on one machine: same Prefect server ({database}), same moto server")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
