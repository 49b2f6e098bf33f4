"""Draw the documentation site's dispatch-latency figure (docs/img/dispatch-latency.png) from a bench report's table.

``make bench`` writes its own plots next to its report (from every sample; not kept in git). The site shows this one,
drawn from the percentiles of the report's section 1 — the committed figures — so it can be redrawn from any report:
``.venv-bench/bin/python bench/docs_figure.py bench/results/<date>.md``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROW = re.compile(
    r"^\| (pushpool [a-z]+|prefect-aws worker, [^|]+?) \| \d+/\d+ \| ([\d.]+) s \| ([\d.]+) s \| ([\d.]+) s \|"
)


def rows(report: str) -> list[tuple[str, float, float, float]]:
    return [(m[1], float(m[2]), float(m[3]), float(m[4])) for m in map(ROW.match, report.splitlines()) if m]


def main(path: str, out: str = "docs/img/dispatch-latency.png") -> None:
    found = rows(Path(path).read_text())
    if not found:
        raise SystemExit(f"{path}: no dispatch-latency table (section 1) found")
    labels = [name.replace("prefect-aws worker, ", "worker, ") for name, *_ in found]
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=120)
    y = range(len(found))
    ax.barh(y, [p95 for _, _, p95, _ in found], color="#cfd8e3", label="p95")
    ax.barh(y, [p50 for _, p50, _, _ in found], color="#2f6db5", label="p50")
    ax.set_xscale("log")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("flow run created → ECS RunTask (s, log scale)")
    ax.set_title(f"Dispatch latency, bench report {Path(path).stem} (100 runs each)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
