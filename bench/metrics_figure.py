"""Draw the Grafana dashboard's panels (docs/grafana-dashboard.json) from serve's /metrics as scraped during a real
`make demo` run, into docs/img/metrics-demo.png, and write a summary of the scrape next to it.

No Grafana runs here: each panel's PromQL is computed the way Prometheus computes it, from the scrapes (one a second,
``PUSHPOOL_DEMO_METRICS=<path>`` of examples/demo/run_demo.py): ``increase``/``rate`` over the panel's window from the
samples inside it, ``histogram_quantile`` by linear interpolation inside the bucket where the rank falls. The panels'
titles and order are read from the dashboard, so the picture and the dashboard cannot drift apart unnoticed.

    PUSHPOOL_DEMO_METRICS=/tmp/demo-metrics.jsonl .venv/bin/python examples/demo/run_demo.py
    .venv-bench/bin/python bench/metrics_figure.py /tmp/demo-metrics.jsonl

The scrapes the committed picture was drawn from are in bench/results/demo-metrics-2026-12-06.jsonl.gz (gzip is
read as it is).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
Key = tuple[str, tuple[tuple[str, str], ...]]


class Scrapes:
    def __init__(self, path: Path) -> None:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        self.t = [line["t"] - lines[0]["t"] for line in lines]
        self.series: dict[Key, list[float]] = defaultdict(lambda: [math.nan] * len(lines))
        for i, line in enumerate(lines):
            for name, labels, value in line["samples"]:
                self.series[(name, tuple(sorted(labels.items())))][i] = value

    def matching(self, name: str, **match: str) -> list[tuple[dict[str, str], list[float]]]:
        return [
            (dict(labels), values)
            for (n, labels), values in self.series.items()
            if n == name and all(dict(labels).get(k) == v for k, v in match.items())
        ]

    def increase(self, values: list[float], window: float) -> list[float]:
        """A counter's increase over the last ``window`` seconds at each scrape (a series not yet there counts 0:
        a counter appears at its first increment)."""
        filled = [0.0 if math.isnan(v) else v for v in values]
        out = []
        for i, now in enumerate(self.t):
            j = i
            while j > 0 and self.t[j - 1] >= now - window:
                j -= 1
            start = filled[j - 1] if j > 0 else 0.0
            out.append(max(0.0, filled[i] - start))
        return out

    def summed(self, name: str, by: tuple[str, ...], window: float | None, per_second: bool = False, **match: str):
        """sum by (``by``) of the increase over ``window`` (None: the gauge's value)."""
        groups: dict[tuple[str, ...], list[float]] = {}
        for labels, values in self.matching(name, **match):
            key = tuple(labels.get(label, "") for label in by)
            got = values if window is None else self.increase(values, window)
            if per_second and window:
                got = [v / window for v in got]
            old = groups.get(key, [0.0] * len(self.t))
            groups[key] = [a + (0.0 if math.isnan(b) else b) for a, b in zip(old, got, strict=True)]
        return groups

    def quantile(self, q: float, name: str, window: float) -> list[float]:
        """histogram_quantile(q, sum by (le) (rate(name_bucket[window]))), as Prometheus computes it."""
        buckets = self.summed(f"{name}_bucket", ("le",), window)
        les = sorted(buckets, key=lambda k: float(k[0]))
        out = []
        for i in range(len(self.t)):
            counts = [(float(le[0]), buckets[le][i]) for le in les]
            total = counts[-1][1] if counts else 0.0
            if total <= 0:
                out.append(math.nan)
                continue
            rank, lower, below = q * total, 0.0, 0.0
            for upper, cumulative in counts:
                if cumulative >= rank:
                    if math.isinf(upper):  # in the +Inf bucket: the largest finite bound
                        out.append(lower)
                    else:
                        inside = cumulative - below
                        out.append(lower + (upper - lower) * ((rank - below) / inside if inside else 1.0))
                    break
                lower, below = upper, cumulative
        return out


def _line(ax, t, values, label, **kw) -> None:
    ax.plot(t, values, label=label, linewidth=1.6, **kw)


def draw(scrapes: Scrapes, out: Path) -> None:
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), dpi=110, sharex=True)
    panels = dict(zip(titles, axes.flat, strict=True))
    t = scrapes.t

    ax = panels["Runs by action and reason"]
    runs = sorted(scrapes.summed("pushpool_runs_total", ("action", "reason"), 60).items())
    if runs:  # stacked, as the dashboard's panel
        ax.stackplot(t, *[v for _, v in runs], labels=[f"{a} {r}".strip() for (a, r), _ in runs], step="post")
    ax.set_ylabel("runs in the last minute")

    ax = panels["Dispatch latency"]
    for q in (0.5, 0.95):
        _line(ax, t, scrapes.quantile(q, "pushpool_dispatch_latency_seconds", 300), f"p{int(q * 100)}")
    ax.set_ylabel("seconds")

    ax = panels["In-flight runs per pool"]
    for (pool,), values in sorted(scrapes.summed("pushpool_runs_in_flight", ("pool",), None).items()):
        _line(ax, t, values, pool, drawstyle="steps-post")
    ax.set_ylabel("runs")

    ax = panels["Monitor tick duration"]
    for q in (0.5, 0.95):
        _line(ax, t, scrapes.quantile(q, "pushpool_monitor_tick_duration_seconds", 300), f"p{int(q * 100)}")
    errors = scrapes.summed("pushpool_monitor_tick_errors_total", (), 60).get((), [0.0] * len(t))
    twin = ax.twinx()  # errors per minute, on their own axis (the dashboard's third query)
    twin.plot(t, errors, color="#c0392b", linestyle=":", label="errors/min")
    twin.set_ylim(0, max(1.0, *errors) * 1.1)
    twin.set_ylabel("tick errors/min")
    ax.set_ylabel("seconds")

    ax = panels["Prefect API calls by route"]
    routes = scrapes.summed("pushpool_prefect_api_calls_total", ("route",), 60, per_second=True)
    for (route,), values in sorted(routes.items(), key=lambda kv: -max(kv[1]))[:6]:
        _line(ax, t, values, route)
    errors = scrapes.summed("pushpool_prefect_api_errors_total", (), 60, per_second=True)
    _line(ax, t, errors.get((), [0.0] * len(t)), "errors", color="#c0392b", linestyle=":")
    ax.set_ylabel("requests/s")

    ax = panels["Backend calls by operation"]
    calls = scrapes.summed("pushpool_backend_calls_total", ("provider", "operation"), 60, per_second=True)
    for (provider, operation), values in sorted(calls.items()):
        _line(ax, t, values, f"{provider} {operation}")
    errors = scrapes.summed("pushpool_backend_errors_total", (), 60, per_second=True)
    _line(ax, t, errors.get((), [0.0] * len(t)), "errors", color="#c0392b", linestyle=":")
    ax.set_ylabel("calls/s")

    for title, ax in panels.items():
        ax.set_title(title, fontsize=11, loc="left")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        handles, labels = ax.get_legend_handles_labels()
        if title == "Monitor tick duration":
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="upper left", ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since serve started (make demo)")
    fig.suptitle(f"pushpool serve /metrics during make demo ({len(t)} scrapes, one a second)", fontsize=12)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def summary(scrapes: Scrapes) -> dict:
    """The last scrape's counters and the histograms' quantiles over the whole run: what the picture shows."""
    last = {key: values[-1] for key, values in scrapes.series.items() if not math.isnan(values[-1])}

    def totals(name: str, *by: str) -> dict[str, float]:
        found: dict[str, float] = defaultdict(float)
        for (n, labels), value in last.items():
            if n == name:
                found[" ".join(dict(labels).get(b, "") for b in by).strip() or "all"] += value
        return dict(sorted(found.items()))

    def quantiles(name: str) -> dict[str, float | None]:
        window = scrapes.t[-1] + 1
        return {
            f"p{int(q * 100)}": (None if math.isnan(v := scrapes.quantile(q, name, window)[-1]) else round(v, 3))
            for q in (0.5, 0.95)
        } | {"count": totals(f"{name}_count").get("all", 0.0)}

    return {
        "scrapes": len(scrapes.t),
        "seconds": round(scrapes.t[-1], 1),
        "runs_by_action_reason": totals("pushpool_runs_total", "action", "reason"),
        "dispatch_latency_seconds": quantiles("pushpool_dispatch_latency_seconds"),
        "monitor_tick_duration_seconds": quantiles("pushpool_monitor_tick_duration_seconds"),
        "monitor_tick_errors": totals("pushpool_monitor_tick_errors_total").get("all", 0.0),
        "prefect_api_calls_by_route": totals("pushpool_prefect_api_calls_total", "method", "route"),
        "prefect_api_calls_by_status": totals("pushpool_prefect_api_calls_total", "status"),
        "prefect_api_errors": totals("pushpool_prefect_api_errors_total", "method", "route", "status"),
        "backend_calls": totals("pushpool_backend_calls_total", "provider", "operation"),
        "backend_errors": totals("pushpool_backend_errors_total", "provider", "operation", "error"),
        "in_flight_max": {
            " ".join(v for _, v in labels): max(x for x in values if not math.isnan(x))
            for (n, labels), values in scrapes.series.items()
            if n == "pushpool_runs_in_flight"
        },
    }


def main(path: str, out: str = "docs/img/metrics-demo.png", summary_out: str = "docs/img/metrics-demo.json") -> None:
    scrapes = Scrapes(Path(path))
    if len(scrapes.t) < 2:
        raise SystemExit(f"{path}: fewer than two scrapes")
    draw(scrapes, Path(out))
    Path(summary_out).write_text(json.dumps(summary(scrapes), indent=2) + "\n")
    print(f"wrote {summary_out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
